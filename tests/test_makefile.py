"""The Makefile hands the notebooks a data folder they can find from notebooks/, where nbval and
papermill start their kernels: a relative DATA_DIR is made absolute from the repository root."""

import os
import subprocess

import pytest

from utils import REPO_ROOT

# what an outer `make test DATA_DIR=...` passes down, which would override these tests' values
OUTER_MAKE_VARIABLES = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "DATA_DIR",
                        "MNIST_DATA_DIR")


def exported_data_dir(*make_arguments, **environment):
    """MNIST_DATA_DIR as `make` exports it to its recipes, for these arguments and variables."""
    clean = {k: v for k, v in os.environ.items() if k not in OUTER_MAKE_VARIABLES}
    result = subprocess.run(
        ["make", "--no-print-directory", "-s", "--eval",
         'show-data:;@printenv MNIST_DATA_DIR || echo "(unset)"', "show-data", *make_arguments],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, env={**clean, **environment},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.rstrip("\n")


@pytest.mark.parametrize("given, exported", [
    ("../shared/datasets/mnist", f"{REPO_ROOT}/../shared/datasets/mnist"),
    ("my data/mnist", f"{REPO_ROOT}/my data/mnist"),
    ("/srv/mnist files", "/srv/mnist files"),
    ("", "(unset)"),
])
def test_data_dir_is_exported_absolute(given, exported):
    assert exported_data_dir(f"DATA_DIR={given}") == exported


def test_mnist_data_dir_in_the_environment_is_the_default():
    assert exported_data_dir(MNIST_DATA_DIR="from/environment") == f"{REPO_ROOT}/from/environment"
    assert exported_data_dir() == "(unset)"  # not exported empty: unset means "the default"
