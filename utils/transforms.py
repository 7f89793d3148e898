"""The reference torchvision transforms that notebook 1 teaches."""

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
    """Mean and standard deviation of all pixels, scaled to [0, 1], as Python floats."""
    pixels = images_uint8.double() / 255
    return pixels.mean().item(), pixels.std().item()
