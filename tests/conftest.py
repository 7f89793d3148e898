"""Fixtures about data: the real MNIST folder, and small MNIST-shaped files written by hand."""

import gzip
import hashlib
import os
import struct
from pathlib import Path

import pytest
import torch

import utils
from utils.data import CANONICAL_FILES, CanonicalFile, MNISTDataError, find_mnist_files

# Where the real MNIST files may be, after $MNIST_DATA_DIR: the folder `make run` downloads
# into, then the copy beside this checkout that the project's own machines have.
MNIST_CANDIDATES = [utils.REPO_ROOT / "data" / "mnist",
                    utils.REPO_ROOT.parent / "shared" / "datasets" / "mnist"]


@pytest.fixture(scope="session")
def mnist_dir():
    """The folder holding the real MNIST files.

    $MNIST_DATA_DIR when set and not empty: a folder asked for must hold them, else the tests
    that use it fail with the loader's message. Otherwise the first of MNIST_CANDIDATES that
    holds them, and without one those tests are skipped.
    """
    chosen = os.environ.get("MNIST_DATA_DIR", "").strip()
    if chosen:
        folder = Path(chosen).expanduser().resolve()
        find_mnist_files(folder)
        return folder
    for folder in MNIST_CANDIDATES:
        try:
            find_mnist_files(folder)
            return folder.resolve()
        except MNISTDataError:
            continue
    pytest.skip(f"real MNIST files not found in {' or '.join(map(str, MNIST_CANDIDATES))}; "
                "set MNIST_DATA_DIR (or make test DATA_DIR=...) to their folder")


def idx_images_bytes(images):
    """IDX bytes for a uint8 tensor (N, rows, cols), written the way the MNIST release is."""
    count, rows, cols = images.shape
    return struct.pack(">IIII", 2051, count, rows, cols) + images.numpy().tobytes()


def idx_labels_bytes(labels):
    """IDX bytes for a tensor of labels (N,)."""
    return struct.pack(">II", 2049, len(labels)) + labels.to(torch.uint8).numpy().tobytes()


class TinyMNIST:
    """Five training and three test images with labels, small enough to write in every test.

    `files` maps each key ("train-images", ...) to its decompressed IDX bytes; `expected` is the
    matching table of sizes and MD5s, in the form of utils.data.CANONICAL_FILES.
    """

    def __init__(self):
        generator = torch.Generator().manual_seed(0)
        self.splits = {}
        for split, count in (("train", 5), ("test", 3)):
            images = torch.randint(0, 256, (count, 28, 28), dtype=torch.uint8, generator=generator)
            labels = torch.arange(count) % 10
            self.splits[split] = (images, labels)
        self.splits["train"][0][0, 0, 0] = 200  # a pixel that a signed byte would turn negative
        self.files = {}
        for split, (images, labels) in self.splits.items():
            self.files[f"{split}-images"] = idx_images_bytes(images)
            self.files[f"{split}-labels"] = idx_labels_bytes(labels)
        self.expected = {
            key: CanonicalFile(CANONICAL_FILES[key].name, len(data), hashlib.md5(data).hexdigest())
            for key, data in self.files.items()
        }

    def file_name(self, key, gz=True, dotted=False):
        """The name a file is written under: canonical or dotted, with .gz or without."""
        name = CANONICAL_FILES[key].name
        if dotted:
            name = name.replace("-idx", ".idx")
        return name + ".gz" if gz else name

    def gz_bytes(self, key):
        """The gzip-compressed bytes of one file, the same on every call."""
        return gzip.compress(self.files[key], mtime=0)

    def write(self, folder, gz=True, dotted=False):
        """Write the four files into `folder` (created if needed) and return the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for key, data in self.files.items():
            content = self.gz_bytes(key) if gz else data
            (folder / self.file_name(key, gz, dotted)).write_bytes(content)
        return folder


@pytest.fixture(scope="session")
def tiny_mnist():
    """Small hand-made MNIST files; see TinyMNIST."""
    return TinyMNIST()


def folder_snapshot(folder):
    """Every entry under `folder` with its bytes (None for a folder), to show nothing changed."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes() if path.is_file() else None
        for path in sorted(Path(folder).rglob("*"))
    }


@pytest.fixture(scope="session")
def snapshot():
    """The `folder_snapshot` function, for tests that check a folder was left untouched."""
    return folder_snapshot
