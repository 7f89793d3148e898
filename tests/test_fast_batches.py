"""FastBatches makes the same batches as the reference torchvision pipeline, only faster.

Checked against torchvision itself: its rotation of the same image by the same angle, its
test transforms pixel for pixel, and the per-pixel statistics of its augmented images.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from utils import REPO_ROOT
from utils import transforms as reference_transforms  # not test_transforms: pytest would run it
from utils.data import MNISTDataError, MNISTImages, load_split
from utils.fast_batches import FastBatches, rotate_batch

MEAN, STD = 0.1307, 0.3081  # the training pixels' mean and std (shared/datasets/README.md)

# A rotation large enough that the augmented statistics differ clearly from unaugmented ones;
# the notebooks' smaller angles are covered by the angle-for-angle comparison.
STATISTICS_DEGREES = 30.0
STATISTICS_IMAGES = 4000

# Mean over the 784 pixels of |difference| between two per-pixel maps (mean, std) of normalised
# augmented images. Two reference runs that differ only in their seed already differ by about
# 0.008 (mean map) and 0.014 (std map) on 4000 images at 30 degrees, since every image draws its
# own angle. The tolerances sit about 35% above that spread; a rotation range 25% too small
# measures 0.014 and 0.020, no augmentation 0.032 and 0.043, so both would fail.
MEAN_MAP_TOLERANCE = 0.011
STD_MAP_TOLERANCE = 0.018

# Nearest-neighbour sampling picks a different pixel only where a sampling point falls within
# rounding error of a pixel boundary; PIL and grid_sample round differently there. Measured:
# 3 pixels in 100,000 on real digits.
MISMATCHED_PIXEL_FRACTION = 1e-3


@pytest.fixture(scope="module")
def mnist_train():
    """The first few thousand real training images and labels, or a skip saying why not."""
    data_dir = Path(os.environ.get("MNIST_DATA_DIR", REPO_ROOT.parent / "shared/datasets/mnist"))
    try:
        images, labels = load_split(data_dir, "train")
    except MNISTDataError as error:
        pytest.skip(f"real MNIST not available in {data_dir} (set MNIST_DATA_DIR): {error}")
    return images[:STATISTICS_IMAGES], labels[:STATISTICS_IMAGES]


def synthetic_digit():
    """A 28x28 uint8 image with no symmetry, so a turn the wrong way cannot match."""
    image = torch.zeros(28, 28, dtype=torch.uint8)
    image[3:10, 14:20] = 255
    image[12:24, 6:9] = 180
    image[20, 18] = 90
    return image


def torchvision_rotate(image_uint8, degrees):
    """The reference: torchvision's rotate on a PIL image, its RandomRotation defaults."""
    rotated = TF.rotate(Image.fromarray(image_uint8.numpy()), float(degrees), fill=0)
    return torch.from_numpy(np.array(rotated))


def fast_rotate(images_uint8, degrees):
    """rotate_batch on (N, 28, 28) uint8 images, back to uint8 values (as float)."""
    return rotate_batch(images_uint8.unsqueeze(1).float(), torch.as_tensor(degrees)).squeeze(1)


# --------------------------------------------------------------------------------------------
# rotation


@pytest.mark.parametrize("degrees", [-30.0, 7.0, 45.0, 90.0])
def test_rotation_matches_torchvision_on_a_synthetic_image(degrees):
    image = synthetic_digit()
    expected = torchvision_rotate(image, degrees).float()

    rotated = fast_rotate(image[None], [degrees])[0]
    turned_the_other_way = fast_rotate(image[None], [-degrees])[0]

    assert int((rotated != expected).sum()) == 0
    # the image has no symmetry, so the test would notice a rotation in the wrong direction
    assert int((turned_the_other_way != expected).sum()) > 10


def test_rotation_matches_torchvision_angle_for_angle_on_real_digits(mnist_train):
    images = mnist_train[0][:1000]
    angles = torch.linspace(-15.0, 15.0, len(images), dtype=torch.float64)
    expected = torch.stack([torchvision_rotate(image, a) for image, a in zip(images, angles)])

    mismatched = (fast_rotate(images, angles) != expected.float()).float().mean().item()

    assert mismatched < MISMATCHED_PIXEL_FRACTION


def test_sampled_angles_stay_in_range_and_cover_it():
    batches = FastBatches(torch.zeros(1, 28, 28, dtype=torch.uint8), torch.zeros(1), 1,
                          MEAN, STD, max_degrees=12.5, seed=3)

    angles = batches.random_angles(20_000)

    assert angles.min() >= -12.5 and angles.max() <= 12.5
    assert angles.min() < -12.0 and angles.max() > 12.0
    assert abs(angles.mean().item()) < 0.2  # symmetric: standard error 7.2 / sqrt(20000)


# --------------------------------------------------------------------------------------------
# values against the reference pipeline


def test_without_rotation_batches_equal_test_transforms(mnist_train):
    images, labels = mnist_train[0][:500], mnist_train[1][:500]
    dataset = MNISTImages(images, labels, reference_transforms.test_transforms(MEAN, STD))
    expected = torch.stack([dataset[i][0] for i in range(len(images))])

    batches = FastBatches(images, labels, 128, MEAN, STD, max_degrees=0.0, channels_last=True)
    produced = torch.cat([batch for batch, _ in batches])
    produced_labels = torch.cat([batch_labels for _, batch_labels in batches])

    assert produced.shape == expected.shape == (500, 1, 28, 28)
    assert produced.dtype == torch.float32
    assert (produced - expected).abs().max().item() <= 1e-6
    assert torch.equal(produced_labels, labels)


def pixel_statistics(images):
    """Per-pixel mean and standard deviation over a stack of images (N, 1, 28, 28)."""
    return images.mean(dim=0), images.std(dim=0)


def reference_statistics(images, labels, degrees, seed=0):
    torch.manual_seed(seed)  # RandomRotation draws its angles from the global generator
    augment = reference_transforms.train_transforms(MEAN, STD, degrees)
    dataset = MNISTImages(images, labels, augment)
    return pixel_statistics(torch.stack([dataset[i][0] for i in range(len(images))]))


def fast_statistics(images, labels, degrees, seed=0):
    batches = FastBatches(images, labels, 500, MEAN, STD, max_degrees=degrees, seed=seed)
    return pixel_statistics(torch.cat([batch for batch, _ in batches]))


def map_distance(map_a, map_b):
    return (map_a - map_b).abs().mean().item()


@pytest.fixture(scope="module")
def augmented_reference_statistics(mnist_train):
    return reference_statistics(*mnist_train, STATISTICS_DEGREES)


def test_augmented_pixel_statistics_match_the_reference(mnist_train,
                                                        augmented_reference_statistics):
    reference_mean, reference_std = augmented_reference_statistics

    fast_mean, fast_std = fast_statistics(*mnist_train, STATISTICS_DEGREES)

    assert map_distance(fast_mean, reference_mean) < MEAN_MAP_TOLERANCE
    assert map_distance(fast_std, reference_std) < STD_MAP_TOLERANCE


@pytest.mark.parametrize("wrong_degrees", [0.0, 0.75 * STATISTICS_DEGREES])
def test_pixel_statistics_notice_a_wrong_rotation_range(mnist_train,
                                                        augmented_reference_statistics,
                                                        wrong_degrees):
    """The tolerances above are tight enough to fail for no rotation or a range 25% short."""
    reference_mean, reference_std = augmented_reference_statistics

    wrong_mean, wrong_std = fast_statistics(*mnist_train, wrong_degrees)

    assert map_distance(wrong_mean, reference_mean) > MEAN_MAP_TOLERANCE
    assert map_distance(wrong_std, reference_std) > STD_MAP_TOLERANCE


# --------------------------------------------------------------------------------------------
# batching, order and determinism


def numbered_images(count):
    """Random uint8 images whose labels are their positions, to trace every image."""
    images = torch.randint(0, 256, (count, 28, 28), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    return images, torch.arange(count)


def one_epoch(batches):
    """All images and labels of one pass, concatenated."""
    pairs = list(batches)
    return torch.cat([images for images, _ in pairs]), torch.cat([labels for _, labels in pairs])


def test_last_partial_batch_is_kept():
    batches = FastBatches(*numbered_images(300), 128, MEAN, STD, max_degrees=10.0, shuffle=True)

    sizes = [len(labels) for _, labels in batches]

    assert sizes == [128, 128, 44]
    assert len(batches) == 3
    assert torch.equal(one_epoch(batches)[1].sort().values, torch.arange(300))


def test_without_shuffle_the_order_is_the_stored_order():
    batches = FastBatches(*numbered_images(300), 128, MEAN, STD)

    assert torch.equal(one_epoch(batches)[1], torch.arange(300))


def test_each_epoch_draws_a_new_order():
    batches = FastBatches(*numbered_images(300), 128, MEAN, STD, shuffle=True)

    first, second = one_epoch(batches)[1], one_epoch(batches)[1]

    assert not torch.equal(first, second)
    assert torch.equal(first.sort().values, second.sort().values)


def test_same_seed_gives_identical_batches_and_another_seed_does_not():
    def two_epochs(seed):
        batches = FastBatches(*numbered_images(300), 128, MEAN, STD, max_degrees=15.0,
                              shuffle=True, seed=seed)
        return [one_epoch(batches) for _ in range(2)]

    first, again, other = two_epochs(seed=1), two_epochs(seed=1), two_epochs(seed=2)

    for (images, labels), (images_again, labels_again) in zip(first, again):
        assert torch.equal(images, images_again) and torch.equal(labels, labels_again)
    assert not torch.equal(first[0][1], other[0][1])


def test_same_order_gets_different_rotations_with_another_seed():
    def rotated(seed):
        return one_epoch(FastBatches(*numbered_images(64), 64, MEAN, STD, max_degrees=15.0,
                                     seed=seed))[0]

    assert not torch.equal(rotated(1), rotated(2))


def test_restoring_the_generator_state_repeats_the_next_epoch():
    """What the checkpoint code relies on to resume training mid-run with the same batches."""
    batches = FastBatches(*numbered_images(300), 128, MEAN, STD, max_degrees=15.0, shuffle=True)
    one_epoch(batches)
    saved = batches.generator.get_state()
    expected_images, expected_labels = one_epoch(batches)

    restored = FastBatches(*numbered_images(300), 128, MEAN, STD, max_degrees=15.0, shuffle=True,
                           seed=99)
    restored.generator.set_state(saved)
    images, labels = one_epoch(restored)

    assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


def test_channels_last_changes_the_layout_not_the_values():
    images, labels = numbered_images(10)
    plain = list(FastBatches(images, labels, 4, MEAN, STD, max_degrees=9.0))
    channels_last = list(FastBatches(images, labels, 4, MEAN, STD, max_degrees=9.0,
                                     channels_last=True))

    for (plain_images, _), (images_last, _) in zip(plain, channels_last):
        # NOTE: with one channel, a contiguous batch already counts as channels-last to torch
        assert images_last.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(images_last, plain_images)
