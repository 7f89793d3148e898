"""Loading and checking MNIST: small files written here, then the real local copy."""

import gzip
import hashlib
import shutil
import struct

import pytest
import torch
from torchvision import datasets, transforms

from utils.data import (
    CANONICAL_FILES,
    MNISTDataError,
    MNISTImages,
    find_mnist_files,
    load_mnist,
    load_split,
    read_idx_images,
    read_idx_labels,
)

# Facts from /work/shared/datasets/README.md, counted per digit 0-9.
TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FIRST_TEN_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
TRAIN_SIZE, TEST_SIZE = 60000, 10000  # images (and labels) per split, from the same README

# The last sentence of a message about a bad file: what to do about it.
FETCH_AGAIN = "Fetch or copy the file again."
CHECK_NAMES = "Check which file is under which name."


# ---------------------------------------------------------------------------------------------
# small files written by the tests


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
@pytest.mark.parametrize("dotted", [False, True], ids=["canonical", "dotted"])
def test_load_split_reads_back_what_was_written(tmp_path, tiny_mnist, gz, dotted):
    tiny_mnist.write(tmp_path, gz=gz, dotted=dotted)
    for split in ("train", "test"):
        images, labels = load_split(tmp_path, split, verify_checksums=False)
        written_images, written_labels = tiny_mnist.splits[split]
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64
        assert torch.equal(images, written_images)
        assert torch.equal(labels, written_labels)
    assert load_split(tmp_path, "train", verify_checksums=False)[0][0, 0, 0] == 200


@pytest.mark.parametrize("gz, dotted", [(False, False), (True, True), (False, True)],
                         ids=["plain", "dotted-gz", "dotted-plain"])
def test_files_in_any_accepted_form_are_used_not_downloaded_again(
    tmp_path, tiny_mnist, monkeypatch, snapshot, gz, dotted
):
    """`make run` without DATA_DIR calls load_mnist(download=True): files already there, under
    any accepted name, must be read as they are, with no request to a mirror."""
    import utils.data

    def no_download(*args, **kwargs):
        raise AssertionError("download_mnist was called although the files are there")

    monkeypatch.setattr(utils.data, "download_mnist", no_download)
    tiny_mnist.write(tmp_path, gz=gz, dotted=dotted)
    before = snapshot(tmp_path)
    loaded = load_mnist(tmp_path, download=True, verify_checksums=False)
    assert torch.equal(loaded["test"][1], tiny_mnist.splits["test"][1])
    assert snapshot(tmp_path) == before


def test_read_idx_functions_give_shapes_and_dtypes(tmp_path, tiny_mnist):
    tiny_mnist.write(tmp_path)
    images = read_idx_images(tmp_path / "train-images-idx3-ubyte.gz")
    labels = read_idx_labels(tmp_path / "train-labels-idx1-ubyte.gz")
    assert images.shape == (5, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (5,) and labels.dtype == torch.int64
    assert images[0, 0, 0].item() == 200


def test_torchvision_layout_matches_torchvision_reader(tmp_path, tiny_mnist):
    # torchvision's own MNIST reads plain files from root/MNIST/raw: a trusted second reader
    tiny_mnist.write(tmp_path / "MNIST" / "raw", gz=False)
    found = find_mnist_files(tmp_path)
    assert all(path.parent == tmp_path / "MNIST" / "raw" for path in found.values())

    images, labels = load_split(tmp_path, "train", verify_checksums=False)
    reference = datasets.MNIST(tmp_path, train=True, download=False)
    assert torch.equal(images, reference.data)
    assert torch.equal(labels, reference.targets)


def test_plain_file_is_preferred_over_gz_when_both_exist(tmp_path, tiny_mnist):
    tiny_mnist.write(tmp_path, gz=True)
    tiny_mnist.write(tmp_path, gz=False)
    assert find_mnist_files(tmp_path)["train-images"].name == "train-images-idx3-ubyte"


def test_missing_files_message_says_where_what_and_how(tmp_path):
    with pytest.raises(MNISTDataError) as caught:
        find_mnist_files(tmp_path)
    message = str(caught.value)
    assert str(tmp_path) in message
    assert str(tmp_path / "MNIST" / "raw") in message
    for canonical in CANONICAL_FILES.values():
        assert canonical.name + ".gz" in message
    assert "download_mnist" in message and "make run DATA_DIR=" in message
    assert "does not exist" not in message  # the folder is there, only the files are not


def test_missing_message_names_only_the_missing_files(tmp_path, tiny_mnist):
    tiny_mnist.write(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MNISTDataError) as caught:
        load_mnist(tmp_path, verify_checksums=False)
    missing_line = next(line for line in str(caught.value).splitlines() if "Missing" in line)
    assert "t10k-labels-idx1-ubyte" in missing_line
    assert "train-images" not in missing_line


def test_missing_folder_gets_the_same_message(tmp_path):
    with pytest.raises(MNISTDataError, match="not found in.*folder does not exist"):
        load_mnist(tmp_path / "no-such-folder")


def test_missing_folder_is_named_as_the_one_that_does_not_exist(tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(MNISTDataError) as caught:
        find_mnist_files(missing)
    assert f"the folder {missing} does not exist" in str(caught.value)


def test_data_dir_that_is_a_file_is_called_a_file(tmp_path, tiny_mnist, snapshot):
    tiny_mnist.write(tmp_path)
    a_file = tmp_path / "train-images-idx3-ubyte.gz"
    before = snapshot(tmp_path)
    with pytest.raises(MNISTDataError) as caught:
        load_mnist(a_file, verify_checksums=False)
    message = str(caught.value)
    assert message.startswith(f"{a_file} is a file, not a folder.")
    assert "not found" not in message
    assert message.endswith("make run DATA_DIR=folder")
    assert snapshot(tmp_path) == before


def test_unknown_split_is_refused(tmp_path, tiny_mnist):
    tiny_mnist.write(tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_split(tmp_path, "val")


# Each maker spoils one file of a tiny folder and returns the path the message must name.


def gz_without_suffix(folder, tiny):
    (folder / "train-images-idx3-ubyte.gz").unlink()
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(tiny.gz_bytes("train-images"))
    return path


def empty_gz(folder, tiny):
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"")
    return path


def empty_plain(folder, tiny):
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    path = folder / "train-labels-idx1-ubyte"
    path.write_bytes(b"")
    return path


def idx_saved_as_gz(folder, tiny):
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(tiny.files["train-images"])
    return path


def html_saved_as_gz(folder, tiny):
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"<!DOCTYPE html>\n<html><body>403 Forbidden</body></html>\n")
    return path


def cut_gz(folder, tiny):
    path = folder / "train-images-idx3-ubyte.gz"
    whole = tiny.gz_bytes("train-images")
    path.write_bytes(whole[: len(whole) // 2])
    return path


def damaged_gz(folder, tiny):
    path = folder / "train-images-idx3-ubyte.gz"
    damaged = bytearray(tiny.gz_bytes("train-images"))
    damaged[-6] ^= 0xFF  # inside the CRC-32 of the trailer
    path.write_bytes(bytes(damaged))
    return path


def labels_in_images_file(folder, tiny):
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(tiny.gz_bytes("train-labels"))
    return path


def images_in_labels_file(folder, tiny):
    path = folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(tiny.gz_bytes("train-images"))
    return path


def write_gz(path, data):
    path.write_bytes(gzip.compress(data, mtime=0))
    return path


def images_27_by_28(folder, tiny):
    data = struct.pack(">IIII", 2051, 5, 27, 28) + bytes(5 * 27 * 28)
    return write_gz(folder / "train-images-idx3-ubyte.gz", data)


def header_count_too_big(folder, tiny):
    data = struct.pack(">IIII", 2051, 5, 28, 28) + bytes(3 * 28 * 28)
    return write_gz(folder / "train-images-idx3-ubyte.gz", data)


def extra_bytes_after_items(folder, tiny):
    data = tiny.files["train-labels"] + b"\x00\x01"
    return write_gz(folder / "train-labels-idx1-ubyte.gz", data)


def shorter_than_header(folder, tiny):
    return write_gz(folder / "train-images-idx3-ubyte.gz", b"\x00\x00\x08")


def shorter_than_images_header(folder, tiny):
    # the magic number and count are there; the rows and columns are not
    return write_gz(folder / "train-images-idx3-ubyte.gz", struct.pack(">II", 2051, 5))


def wrong_magic(folder, tiny):
    data = struct.pack(">IIII", 1234, 5, 28, 28) + bytes(5 * 28 * 28)
    return write_gz(folder / "train-images-idx3-ubyte.gz", data)


def label_out_of_range(folder, tiny):
    data = struct.pack(">I", 2049) + struct.pack(">I", 5) + bytes([0, 1, 12, 3, 4])
    return write_gz(folder / "train-labels-idx1-ubyte.gz", data)


def one_label_short(folder, tiny):
    data = struct.pack(">I", 2049) + struct.pack(">I", 4) + bytes([0, 1, 2, 3])
    return write_gz(folder / "train-labels-idx1-ubyte.gz", data)


# (maker, phrases the message must hold, the fix it must end with)
BAD_FILES = [
    (gz_without_suffix, ["still gzip-compressed"],
     "Rename it to train-images-idx3-ubyte.gz; it is then read as it is."),
    (empty_gz, ["empty file (0 bytes)"], FETCH_AGAIN),
    (empty_plain, ["empty file (0 bytes)"], FETCH_AGAIN),
    (idx_saved_as_gz, ["not a gzip file", "uncompressed IDX"], "remove the .gz from its name."),
    (html_saved_as_gz, ["not a gzip file", "HTML page"], FETCH_AGAIN),
    (cut_gz, ["corrupt gzip"], FETCH_AGAIN),
    (damaged_gz, ["corrupt gzip"], FETCH_AGAIN),
    (labels_in_images_file, ["labels file where images were expected"], CHECK_NAMES),
    (images_in_labels_file, ["images file where labels were expected"], CHECK_NAMES),
    (images_27_by_28, ["images are 27x28, expected 28x28"], FETCH_AGAIN),
    (header_count_too_big, ["header says 5 items, file holds 3", "truncated"], FETCH_AGAIN),
    (extra_bytes_after_items, ["header says 5 items", "extra bytes"], FETCH_AGAIN),
    (shorter_than_header, ["truncated"], FETCH_AGAIN),
    (shorter_than_images_header, ["truncated"], FETCH_AGAIN),
    (wrong_magic, ["not an IDX file", "magic number 1234"], FETCH_AGAIN),
    (label_out_of_range, ["label 12"], FETCH_AGAIN),
    (one_label_short, ["holds 5 images but", "holds 4 labels"], "Fetch or copy both files again."),
]
BAD_FILE_IDS = [spoil.__name__ for spoil, _, _ in BAD_FILES]


def spoiled_split_error(folder, tiny, spoil):
    """Write the tiny files, spoil one, and return its path and the message loading gives."""
    tiny.write(folder)
    bad_path = spoil(folder, tiny)
    with pytest.raises(MNISTDataError) as caught:
        load_split(folder, "train", verify_checksums=False)
    return bad_path, str(caught.value)


@pytest.mark.parametrize("spoil, phrases, fix", BAD_FILES, ids=BAD_FILE_IDS)
def test_bad_file_is_named_and_left_untouched(
    tmp_path, tiny_mnist, snapshot, spoil, phrases, fix
):
    tiny_mnist.write(tmp_path)
    bad_path = spoil(tmp_path, tiny_mnist)
    before = snapshot(tmp_path)

    with pytest.raises(MNISTDataError) as caught:
        load_split(tmp_path, "train", verify_checksums=False)
    message = str(caught.value)
    assert str(bad_path) in message
    for phrase in phrases:
        assert phrase in message
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("spoil, phrases, fix", BAD_FILES, ids=BAD_FILE_IDS)
def test_bad_file_message_ends_with_the_fix(tmp_path, tiny_mnist, spoil, phrases, fix):
    _, message = spoiled_split_error(tmp_path, tiny_mnist, spoil)
    assert message.endswith(fix), message


def test_a_zero_length_file_is_called_empty_not_gzip(tmp_path, tiny_mnist):
    bad_path, message = spoiled_split_error(tmp_path, tiny_mnist, empty_gz)
    assert message == f"{bad_path}: empty file (0 bytes). {FETCH_AGAIN}"


@pytest.mark.parametrize("split", ["train", "test"])
def test_counts_of_the_other_split_suggest_a_train_test_swap(tmp_path, tiny_mnist, split):
    # test-sized images beside train-sized labels, as when one file of each split is swapped
    tiny_mnist.write(tmp_path)
    images = struct.pack(">IIII", 2051, TEST_SIZE, 28, 28) + bytes(TEST_SIZE * 28 * 28)
    labels = struct.pack(">II", 2049, TRAIN_SIZE) + bytes(TRAIN_SIZE)
    images_path = write_gz(tmp_path / f"{CANONICAL_FILES[f'{split}-images'].name}.gz", images)
    labels_path = write_gz(tmp_path / f"{CANONICAL_FILES[f'{split}-labels'].name}.gz", labels)

    with pytest.raises(MNISTDataError) as caught:
        load_split(tmp_path, split, verify_checksums=False)
    message = str(caught.value)
    assert f"{images_path} holds 10000 images but {labels_path} holds 60000 labels" in message
    assert "10000 is the test split's size and 60000 the training split's" in message
    assert "the train and test files may be swapped" in message
    assert message.endswith(CHECK_NAMES)


def test_other_count_mismatches_suggest_no_swap(tmp_path, tiny_mnist):
    _, message = spoiled_split_error(tmp_path, tiny_mnist, one_label_short)
    assert "swapped" not in message


def test_checksum_mismatch_gives_expected_and_actual(tmp_path, tiny_mnist, snapshot):
    tiny_mnist.write(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(MNISTDataError) as caught:
        load_split(tmp_path, "test")
    message = str(caught.value)
    assert "checksum mismatch" in message
    assert str(tmp_path / "t10k-images-idx3-ubyte.gz") in message
    assert CANONICAL_FILES["test-images"].md5 in message
    assert hashlib.md5(tiny_mnist.files["test-images"]).hexdigest() in message
    assert message.endswith(FETCH_AGAIN)
    assert snapshot(tmp_path) == before


def test_verify_checksums_false_skips_only_the_md5(tmp_path, tiny_mnist):
    tiny_mnist.write(tmp_path)
    label_out_of_range(tmp_path, tiny_mnist)
    with pytest.raises(MNISTDataError, match="label 12"):
        load_split(tmp_path, "train", verify_checksums=False)


def test_dataset_yields_what_torchvision_mnist_yields(tmp_path, tiny_mnist):
    tiny_mnist.write(tmp_path / "MNIST" / "raw", gz=False)
    to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.2,))])
    reference = datasets.MNIST(tmp_path, train=True, download=False, transform=to_tensor)
    images, labels = load_split(tmp_path, "train", verify_checksums=False)
    dataset = MNISTImages(images, labels, transform=to_tensor)

    assert len(dataset) == len(reference) == 5
    for index in range(len(dataset)):
        image, label = dataset[index]
        reference_image, reference_label = reference[index]
        assert torch.equal(image, reference_image)
        assert label == reference_label and type(label) is int


def test_dataset_without_transform_gives_grey_pil_images(tiny_mnist):
    images, labels = tiny_mnist.splits["train"]
    image, label = MNISTImages(images, labels)[0]
    assert image.mode == "L" and image.size == (28, 28)
    assert image.getpixel((0, 0)) == 200
    assert transforms.ToTensor()(image)[0, 0, 0].item() == pytest.approx(200 / 255)


def test_dataset_refuses_unequal_lengths(tiny_mnist):
    images, labels = tiny_mnist.splits["train"]
    with pytest.raises(ValueError, match="5 images but 4 labels"):
        MNISTImages(images, labels[:4])


# ---------------------------------------------------------------------------------------------
# the real local copy


@pytest.fixture(scope="module")
def real_mnist(mnist_dir):
    """Both real splits, loaded once for the module, checksums verified."""
    return load_mnist(mnist_dir)


def test_real_shapes_and_dtypes(real_mnist):
    train_images, train_labels = real_mnist["train"]
    test_images, test_labels = real_mnist["test"]
    assert train_images.shape == (60000, 28, 28) and train_images.dtype == torch.uint8
    assert test_images.shape == (10000, 28, 28) and test_images.dtype == torch.uint8
    assert train_labels.shape == (60000,) and train_labels.dtype == torch.int64
    assert test_labels.shape == (10000,) and test_labels.dtype == torch.int64


def test_real_label_counts(real_mnist):
    assert torch.bincount(real_mnist["train"][1]).tolist() == TRAIN_LABEL_COUNTS
    assert torch.bincount(real_mnist["test"][1]).tolist() == TEST_LABEL_COUNTS


def test_real_first_ten_training_labels(real_mnist):
    assert real_mnist["train"][1][:10].tolist() == FIRST_TEN_TRAIN_LABELS


def test_real_training_pixel_mean_and_std(real_mnist):
    # exact statistics from the 256-bin histogram, in float64, without a 47M-element float copy
    counts = torch.bincount(real_mnist["train"][0].flatten(), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255
    mean = (counts * values).sum() / counts.sum()
    std = ((counts * (values - mean) ** 2).sum() / counts.sum()).sqrt()
    assert round(mean.item(), 4) == 0.1307
    assert round(std.item(), 4) == 0.3081


def test_real_test_split_matches_torchvision_reader(tmp_path, mnist_dir, real_mnist):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for key in ("test-images", "test-labels"):
        name = CANONICAL_FILES[key].name
        (raw / name).write_bytes(gzip.decompress((mnist_dir / f"{name}.gz").read_bytes()))
    # torchvision looks for all four files but reads only the split asked for
    for key in ("train-images", "train-labels"):
        (raw / CANONICAL_FILES[key].name).touch()
    reference = datasets.MNIST(tmp_path, train=False, download=False)
    assert torch.equal(real_mnist["test"][0], reference.data)
    assert torch.equal(real_mnist["test"][1], reference.targets)


def test_one_changed_real_label_fails_the_checksum(tmp_path, mnist_dir):
    # a swapped digit keeps the file well-formed; only the MD5 can tell
    for key in ("test-images", "train-images", "train-labels"):
        name = CANONICAL_FILES[key].name + ".gz"
        (tmp_path / name).symlink_to(mnist_dir / name)
    labels = bytearray(gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    labels[8] = (labels[8] + 1) % 10
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(bytes(labels))

    with pytest.raises(MNISTDataError, match="checksum mismatch") as caught:
        load_split(tmp_path, "test")
    assert "t10k-labels-idx1-ubyte" in str(caught.value)
    assert CANONICAL_FILES["test-labels"].md5 in str(caught.value)


def test_real_folder_copied_with_dotted_names_loads(tmp_path, mnist_dir):
    for key in ("test-images", "test-labels"):
        name = CANONICAL_FILES[key].name
        shutil.copy(mnist_dir / f"{name}.gz", tmp_path / f"{name.replace('-idx', '.idx')}.gz")
    for key in ("train-images", "train-labels"):
        name = CANONICAL_FILES[key].name + ".gz"
        (tmp_path / name).symlink_to(mnist_dir / name)
    images, labels = load_split(tmp_path, "test")
    assert torch.bincount(labels).tolist() == TEST_LABEL_COUNTS
