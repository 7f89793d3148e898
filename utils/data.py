"""Find, check, load and (when asked) download the MNIST files the course trains on.

The four files are read straight from the IDX format the dataset is published in, gzip-compressed
or not, and checked before use: every problem raises `MNISTDataError` with a message that names
the file, says what is wrong and how to fix it. Nothing in the data folder is changed by a failed
check; only `download_mnist` writes there, and only files it has verified.
"""

import gzip
import hashlib
import http.client
import itertools
import os
import struct
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image


class MNISTDataError(RuntimeError):
    """A data file is missing, malformed or not the canonical release; the message says which."""


class CanonicalFile(NamedTuple):
    """One file of the MNIST release, as it is once decompressed."""

    name: str
    size: int  # bytes
    md5: str


# From /work/shared/datasets/README.md: the decompressed files are checked, not the archives,
# because a re-compressed .gz holds the same bytes under a different checksum.
CANONICAL_FILES = {
    "train-images": CanonicalFile(
        "train-images-idx3-ubyte", 47040016, "6bbc9ace898e44ae57da46a324031adb"
    ),
    "train-labels": CanonicalFile(
        "train-labels-idx1-ubyte", 60008, "a25bea736e30d166cdddb491f175f624"
    ),
    "test-images": CanonicalFile(
        "t10k-images-idx3-ubyte", 7840016, "2646ac647ad5339dbf082846283269ea"
    ),
    "test-labels": CanonicalFile(
        "t10k-labels-idx1-ubyte", 10008, "27ae3e4e09519cfbb04c329615203637"
    ),
}

SPLITS = ("train", "test")
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
IMAGES_HEADER_SIZE = 16  # bytes: magic number, count, rows, columns
LABELS_HEADER_SIZE = 8  # bytes: magic number, count
IMAGE_SIDE = 28
NUM_CLASSES = 10
GZIP_MAGIC = b"\x1f\x8b"
TORCHVISION_SUBDIR = Path("MNIST", "raw")
# How a message about a damaged or wrong file ends: what the user should do about it.
FETCH_AGAIN = "Fetch or copy the file again."


# ---------------------------------------------------------------------------------------------
# finding the files


def _folders_to_search(data_dir):
    """The data folder itself, then the layout torchvision.datasets.MNIST writes inside it."""
    data_dir = Path(data_dir)
    return [data_dir, data_dir / TORCHVISION_SUBDIR]


def _accepted_names(canonical_name):
    """File names taken for one file, plain ones first since they need no decompression."""
    # Some unzip tools write "train-images.idx3-ubyte": a dot where the release has a dash.
    dotted = canonical_name.replace("-idx", ".idx")
    return [canonical_name, canonical_name + ".gz", dotted, dotted + ".gz"]


def _missing_files_message(folders, missing_keys):
    """Say where we looked, which files are expected there, and the ways to put them there."""
    missing = ", ".join(CANONICAL_FILES[key].name + "[.gz]" for key in missing_keys)
    expected = "\n".join(f"    {f.name}.gz  (or {f.name})" for f in CANONICAL_FILES.values())
    absent = "" if folders[0].is_dir() else f": the folder {folders[0]} does not exist"
    return (
        f"MNIST files not found in {folders[0]} (also looked in {folders[1]}){absent}.\n"
        f"Missing: {missing}\n"
        f"Expected the four files of the MNIST release there, gzip-compressed or not:\n"
        f"{expected}\n"
        "To supply them, either:\n"
        "  - on a machine with internet, run\n"
        "      python -c \"from utils.data import download_mnist; download_mnist('mnist')\"\n"
        "    (it fetches them from torchvision's mirrors and checks them), then copy the four\n"
        f"    files into {folders[0]}; or\n"
        "  - copy the four files into any folder and point the course at it:\n"
        "      make run DATA_DIR=folder"
    )


def _refuse_a_file_as_folder(data_dir):
    """Raise when the data folder given is a file, which would otherwise read as files missing."""
    if Path(data_dir).is_file():
        raise MNISTDataError(
            f"{data_dir} is a file, not a folder. Point the course at the folder that holds the "
            "four MNIST files: make run DATA_DIR=folder"
        )


def find_mnist_files(data_dir):
    """Locate the four MNIST files in `data_dir`, keyed "train-images", ..., "test-labels".

    Accepts the canonical names and the dotted variant, gzip-compressed or not, in `data_dir`
    itself or in `data_dir/MNIST/raw` (torchvision's layout). Raises MNISTDataError naming the
    folders searched, the files expected and how to supply them when any file is missing.
    """
    _refuse_a_file_as_folder(data_dir)
    folders = _folders_to_search(data_dir)
    found, missing_keys = {}, []
    for key, canonical in CANONICAL_FILES.items():
        candidates = [
            folder / name for folder in folders for name in _accepted_names(canonical.name)
        ]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            missing_keys.append(key)
        else:
            found[key] = path
    if missing_keys:
        raise MNISTDataError(_missing_files_message(folders, missing_keys))
    return found


# ---------------------------------------------------------------------------------------------
# reading and checking one file


def _looks_like_html(data):
    return data[:200].lstrip().lower().startswith((b"<!doctype html", b"<html", b"<?xml"))


def _refuse_empty(raw, path):
    """Raise for a file of 0 bytes, which no later check would describe plainly."""
    if not raw:
        raise MNISTDataError(f"{path}: empty file (0 bytes). {FETCH_AGAIN}")


def _decompress_gzip(raw, path):
    """Return the bytes inside a gzip file, or say why they cannot be read."""
    _refuse_empty(raw, path)
    if not raw.startswith(GZIP_MAGIC):
        if _looks_like_html(raw):
            what = f"an HTML page (an error page saved in place of the data?). {FETCH_AGAIN}"
        elif raw[:4] in (struct.pack(">I", IMAGES_MAGIC), struct.pack(">I", LABELS_MAGIC)):
            what = "an uncompressed IDX file; remove the .gz from its name."
        else:
            what = f"first bytes {raw[:8]!r}. {FETCH_AGAIN}"
        raise MNISTDataError(f"{path}: not a gzip file: {what}")
    try:
        return gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise MNISTDataError(
            f"{path}: corrupt gzip, truncated or damaged ({error}). {FETCH_AGAIN}"
        ) from error


def read_idx_bytes(path):
    """The IDX bytes of a file, decompressed if its name ends in .gz."""
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        return _decompress_gzip(raw, path)
    _refuse_empty(raw, path)
    if raw.startswith(GZIP_MAGIC):
        raise MNISTDataError(
            f"{path}: still gzip-compressed, though its name does not end in .gz. "
            f"Rename it to {path.name}.gz; it is then read as it is."
        )
    return raw


def _check_magic(data, path, expected_magic):
    """Raise unless the IDX header starts with the magic number of the expected kind of file."""
    kinds = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}
    if len(data) < 8:
        raise MNISTDataError(
            f"{path}: truncated: {len(data)} bytes, shorter than an IDX header. {FETCH_AGAIN}"
        )
    magic = struct.unpack(">I", data[:4])[0]
    if magic == expected_magic:
        return
    if magic in kinds:
        raise MNISTDataError(
            f"{path}: {kinds[magic]} file where {kinds[expected_magic]} were expected "
            f"(magic number {magic}). Check which file is under which name."
        )
    hint = " It looks like an HTML page." if _looks_like_html(data) else ""
    raise MNISTDataError(
        f"{path}: not an IDX file: magic number {magic}, expected {expected_magic} "
        f"for {kinds[expected_magic]}.{hint} {FETCH_AGAIN}"
    )


def _check_item_count(data, path, header_size, item_size, count):
    """Raise unless the file holds exactly as many items as its header says."""
    body = len(data) - header_size
    if body == count * item_size:
        return
    held = max(body, 0) // item_size
    problem = "truncated" if body < count * item_size else "extra bytes after the last item"
    raise MNISTDataError(
        f"{path}: header says {count} items, file holds {held} ({problem}). {FETCH_AGAIN}"
    )


def images_from_idx(data, path="<bytes>"):
    """Parse IDX image bytes into a uint8 tensor of shape (N, 28, 28), checking the header."""
    _check_magic(data, path, IMAGES_MAGIC)
    if len(data) < IMAGES_HEADER_SIZE:
        raise MNISTDataError(
            f"{path}: truncated: {len(data)} bytes, shorter than its header. {FETCH_AGAIN}"
        )
    count, rows, cols = struct.unpack(">III", data[4:IMAGES_HEADER_SIZE])
    if (rows, cols) != (IMAGE_SIDE, IMAGE_SIDE):
        raise MNISTDataError(
            f"{path}: images are {rows}x{cols}, expected {IMAGE_SIDE}x{IMAGE_SIDE}. "
            f"This is not the MNIST release. {FETCH_AGAIN}"
        )
    _check_item_count(data, path, IMAGES_HEADER_SIZE, rows * cols, count)
    # bytearray: torch.frombuffer wants a writable buffer, and the tensor then owns its memory
    pixels = torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=IMAGES_HEADER_SIZE)
    return pixels.view(count, rows, cols)


def labels_from_idx(data, path="<bytes>"):
    """Parse IDX label bytes into an int64 tensor of shape (N,), checking header and values."""
    _check_magic(data, path, LABELS_MAGIC)
    count = struct.unpack(">I", data[4:LABELS_HEADER_SIZE])[0]
    _check_item_count(data, path, LABELS_HEADER_SIZE, 1, count)
    labels = torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=LABELS_HEADER_SIZE)
    labels = labels.long()
    if count and labels.max() >= NUM_CLASSES:
        raise MNISTDataError(
            f"{path}: holds label {int(labels.max())}; MNIST labels are digits 0-9. {FETCH_AGAIN}"
        )
    return labels


def read_idx_images(path):
    """Read an IDX images file (.gz or not) into a uint8 tensor of shape (N, 28, 28)."""
    return images_from_idx(read_idx_bytes(path), path)


def read_idx_labels(path):
    """Read an IDX labels file (.gz or not) into an int64 tensor of shape (N,)."""
    return labels_from_idx(read_idx_bytes(path), path)


def check_canonical(data, path, canonical):
    """Raise unless decompressed bytes are the release's file: same size, same MD5."""
    actual_md5 = hashlib.md5(data).hexdigest()
    if len(data) == canonical.size and actual_md5 == canonical.md5:
        return
    raise MNISTDataError(
        f"{path}: checksum mismatch with the MNIST release file {canonical.name}: "
        f"expected MD5 {canonical.md5} ({canonical.size} bytes), "
        f"got {actual_md5} ({len(data)} bytes). {FETCH_AGAIN}"
    )


# ---------------------------------------------------------------------------------------------
# loading a split


def _split_sizes():
    """Images per split in the release: {"train": 60000, "test": 10000}, from CANONICAL_FILES."""
    # a labels file holds one byte per item after its header
    return {split: CANONICAL_FILES[f"{split}-labels"].size - LABELS_HEADER_SIZE for split in SPLITS}


def _count_mismatch_message(images_path, image_count, labels_path, label_count):
    """Say that a split's two files disagree and how to fix it.

    Counts that are the two splits' sizes are what a train file swapped with a test file gives,
    so the message then says the files may be swapped.
    """
    sizes = _split_sizes()
    problem = (
        f"{images_path} holds {image_count} images but {labels_path} holds {label_count} "
        "labels; the two files of a split must match."
    )
    if sorted([image_count, label_count]) != sorted(sizes.values()):
        return f"{problem} Fetch or copy both files again."
    return (
        f"{problem} {sizes['test']} is the test split's size and {sizes['train']} the training "
        "split's, so the train and test files may be swapped. Check which file is under which name."
    )


def load_split(data_dir, split, verify_checksums=True):
    """Load one split from `data_dir` as (images uint8 (N, 28, 28), labels int64 (N,)).

    Every file is checked before use (gzip, IDX header, size, item counts); with
    `verify_checksums` also its MD5 against the canonical release (tests on small hand-made
    files turn that off). Each file is read and decompressed once.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    paths = find_mnist_files(data_dir)
    images_path, labels_path = paths[f"{split}-images"], paths[f"{split}-labels"]

    images_bytes = read_idx_bytes(images_path)
    labels_bytes = read_idx_bytes(labels_path)
    images = images_from_idx(images_bytes, images_path)
    labels = labels_from_idx(labels_bytes, labels_path)
    if len(images) != len(labels):
        raise MNISTDataError(
            _count_mismatch_message(images_path, len(images), labels_path, len(labels))
        )
    if verify_checksums:
        check_canonical(images_bytes, images_path, CANONICAL_FILES[f"{split}-images"])
        check_canonical(labels_bytes, labels_path, CANONICAL_FILES[f"{split}-labels"])
    return images, labels


def load_mnist(data_dir, download=False, verify_checksums=True):
    """Load both splits: {"train": (images, labels), "test": (images, labels)}.

    When files are missing and `download` is true, `download_mnist` fetches them first;
    otherwise the MNISTDataError from `find_mnist_files` says how to supply them.
    """
    try:
        find_mnist_files(data_dir)
    except MNISTDataError:
        if not download:
            raise
        download_mnist(data_dir)
    return {split: load_split(data_dir, split, verify_checksums) for split in SPLITS}


class MNISTImages(torch.utils.data.Dataset):
    """Images and labels as a Dataset that yields what torchvision.datasets.MNIST yields.

    Each item is (transform(PIL image of mode "L"), int label), so torchvision transforms such
    as ToTensor and Normalize apply unchanged.
    """

    def __init__(self, images, labels, transform=None):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = Image.fromarray(self.images[index].numpy())  # uint8 2-D array -> mode "L"
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


# ---------------------------------------------------------------------------------------------
# downloading


class _MirrorFailed(Exception):
    """One mirror could not deliver one file; the message says what happened."""


def _torchvision_tables():
    """The mirrors and (file name, MD5 of the .gz) pairs torchvision's MNIST downloads from."""
    # Imported here: torchvision takes a while to import and only downloading needs it.
    from torchvision.datasets import MNIST

    return list(MNIST.mirrors), list(MNIST.resources)


def _key_for(filename, expected):
    """The key ("train-images", ...) of a .gz file name from the resources table."""
    for key, canonical in expected.items():
        if filename in (canonical.name, canonical.name + ".gz"):
            return key
    raise ValueError(f"{filename} is not one of the MNIST files {list(expected)}")


def _fetch(url, destination, timeout, deadline):
    """Stream `url` into the open file `destination`; raise _MirrorFailed on any failure.

    `timeout` bounds each wait for data, so a mirror that stops sending is abandoned; `deadline`
    bounds the whole transfer, so one that trickles a few bytes at a time is abandoned too.
    """
    stalled = f"stalled: no data for {timeout} s"
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            announced = response.headers.get("Content-Length")
            received = 0
            # read1 returns what has arrived, so the deadline is checked however slow the flow
            while chunk := response.read1(1 << 16):
                destination.write(chunk)
                received += len(chunk)
                if time.monotonic() - started > deadline:
                    raise _MirrorFailed(f"too slow: {received:,} bytes in {deadline:g} s, the "
                                        "time allowed for the whole file")
    except urllib.error.HTTPError as error:
        raise _MirrorFailed(f"HTTP {error.code} {error.reason}") from error
    except TimeoutError as error:
        raise _MirrorFailed(stalled) from error
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            raise _MirrorFailed(stalled) from error
        raise _MirrorFailed(f"unreachable: {error.reason}") from error
    except http.client.IncompleteRead as error:
        raise _MirrorFailed(
            f"truncated: connection closed after {len(error.partial)} more "
            f"bytes, {error.expected} still expected"
        ) from error
    except (OSError, http.client.HTTPException) as error:
        raise _MirrorFailed(f"connection failed: {error!r}") from error
    if announced is not None and received != int(announced):
        raise _MirrorFailed(f"truncated: received {received} of {announced} bytes")


def _check_download(path, key, gz_md5, expected):
    """Raise _MirrorFailed unless the fetched .gz is whole, IDX, and matches both checksums."""
    raw = path.read_bytes()
    try:
        data = _decompress_gzip(raw, path)
        parse = images_from_idx if key.endswith("images") else labels_from_idx
        parse(data, path)
    except MNISTDataError as error:
        raise _MirrorFailed(_without_path(error, path)) from error
    actual = hashlib.md5(raw).hexdigest()
    if actual != gz_md5:
        raise _MirrorFailed(f"MD5 of the .gz mismatch: expected {gz_md5}, got {actual}")
    try:
        check_canonical(data, path, expected[key])
    except MNISTDataError as error:
        raise _MirrorFailed(_without_path(error, path)) from error


def _without_path(error, path):
    """A check's message as a mirror's reason: the temporary file's name and advice dropped."""
    return str(error).replace(f"{path}: ", "").replace(f" {FETCH_AGAIN}", "")


def _check_existing(path, key, expected):
    """Raise unless a file already in place holds the release's bytes, checked decompressed.

    The .gz checksum is not used: a file compressed elsewhere is as good as the mirror's. A bad
    file is left alone, since it is the user's, not one this module wrote.
    """
    try:
        data = read_idx_bytes(path)
        parse = images_from_idx if key.endswith("images") else labels_from_idx
        parse(data, path)
        check_canonical(data, path, expected[key])
    except MNISTDataError as error:
        raise MNISTDataError(
            f"{error}\n{path} is already there but fails the check above; download_mnist "
            "does not overwrite it. Move or delete it, then run again."
        ) from error


def _download_one(data_dir, filename, gz_md5, key, mirrors, timeout, deadline, expected):
    """Try each mirror in turn for one file and rename the first verified copy into place.

    Raises MNISTDataError listing every URL tried and what happened when all of them fail.
    """
    target = data_dir / filename
    attempts = []
    for mirror in mirrors:
        url = mirror if mirror.endswith("/") else mirror + "/"
        url += filename
        # a temporary file in the same folder, so the final rename cannot cross file systems
        handle = tempfile.NamedTemporaryFile(
            dir=data_dir, prefix=f".{filename}.", suffix=".part", delete=False
        )
        part = Path(handle.name)
        try:
            with handle:
                _fetch(url, handle, timeout, deadline)
            _check_download(part, key, gz_md5, expected)
            os.replace(part, target)
            return
        except _MirrorFailed as failure:
            attempts.append((url, str(failure)))
        finally:
            part.unlink(missing_ok=True)
    tried = "\n".join(f"  {url}: {what}" for url, what in attempts)
    raise MNISTDataError(
        f"Could not download {filename}; every mirror failed:\n{tried}\n"
        "To place the files by hand: on a machine with internet, run download_mnist there (or "
        "fetch the four .gz files from one of the mirrors above), then copy them into "
        f"{data_dir}, or point the course at their folder with: make run DATA_DIR=folder"
    )


def _create_folder(data_dir):
    """Create `data_dir` and any missing parents; return the folders created, deepest first."""
    missing = itertools.takewhile(lambda folder: not folder.exists(), [data_dir, *data_dir.parents])
    created = list(missing)
    data_dir.mkdir(parents=True, exist_ok=True)
    return created


def _remove_if_empty(created):
    """Remove folders created by `_create_folder`, deepest first, up to one that holds anything."""
    for folder in created:
        try:
            folder.rmdir()  # refuses a folder that is not empty, so nothing in it is ever lost
        except OSError:
            return


def download_mnist(data_dir, mirrors=None, timeout=20.0, deadline=600.0, resources=None,
                   expected=None):
    """Fetch the four MNIST .gz files into `data_dir` and return its path.

    Mirrors and file names come from torchvision.datasets.MNIST unless `mirrors` and
    `resources` ([(file name, MD5 of the .gz)]) override them; `expected` overrides the table of
    decompressed sizes and MD5s (CANONICAL_FILES). Each mirror is tried in turn, with `timeout`
    seconds for any stalled read and `deadline` seconds for a whole file. A file is written
    under a temporary name and renamed only once gzip, IDX and both checksums agree; files
    already present and valid are kept as they are. When a download fails, the folders this call
    created are removed if they are still empty.
    """
    data_dir = Path(data_dir)
    _refuse_a_file_as_folder(data_dir)
    if mirrors is None or resources is None:
        known_mirrors, known_resources = _torchvision_tables()
        mirrors = known_mirrors if mirrors is None else mirrors
        resources = known_resources if resources is None else resources
    expected = CANONICAL_FILES if expected is None else expected

    created = _create_folder(data_dir)
    try:
        for filename, gz_md5 in resources:
            key = _key_for(filename, expected)
            target = data_dir / filename
            if target.exists():
                _check_existing(target, key, expected)
                continue
            _download_one(data_dir, filename, gz_md5, key, mirrors, timeout, deadline, expected)
    except BaseException:
        # also on Ctrl-C: a failed first run leaves no empty data/mnist to puzzle over
        _remove_if_empty(created)
        raise
    return data_dir
