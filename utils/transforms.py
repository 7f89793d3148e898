"""The reference torchvision transforms that notebook 1 teaches."""

import torch
from torchvision import transforms


def train_transforms(mean, std, max_degrees):
    """Augmentation for training: a small random rotation, then to tensor and normalise."""
    return transforms.Compose([
        transforms.RandomRotation((-max_degrees, max_degrees), fill=0),
        transforms.ToTensor(),
        transforms.Normalize((mean,), (std,)),
    ])


def test_transforms(mean, std):
    """No augmentation for testing: only to tensor and the same normalisation as training."""
    return transforms.Compose([
        transforms.ToTensor(),
        transforms.Normalize((mean,), (std,)),
    ])


def pixel_mean_std(images_uint8):
    """Mean and (sample) standard deviation of all pixels scaled to [0, 1], as Python floats.

    Computed exactly in float64 from the histogram of the 256 grey levels, so no float copy of
    the images is made (the training set as float64 would take 376 MB).
    """
    counts = torch.bincount(images_uint8.flatten(), minlength=256).double()
    levels = torch.arange(256, dtype=torch.float64) / 255
    total = counts.sum()
    mean = (counts * levels).sum() / total
    variance = (counts * (levels - mean) ** 2).sum() / (total - 1)
    return mean.item(), variance.sqrt().item()
