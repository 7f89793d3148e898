"""pytest settings for the whole repository, loaded whatever is collected (tests/ or a notebook).

nbval starts each notebook's kernel in the notebook's own folder and cannot pass parameters, so
the notebooks read quick mode and their run folder from the environment. Quick mode is forced,
whatever MNIST_QUICK said before: nbval must never train for the full 15 epochs. The run folder
is a fresh temporary one, shared by the notebooks of one session (notebook 5 reads what
notebook 4 wrote) and removed at the end.
"""

import os
import shutil
import tempfile


def pytest_configure(config):
    if getattr(config.option, "nbval_lax", False) or getattr(config.option, "nbval", False):
        os.environ["MNIST_QUICK"] = "1"
        config.nbval_run_dir = tempfile.mkdtemp(prefix="mnist-nbval-")
        os.environ["MNIST_RUN_DIR"] = config.nbval_run_dir


def pytest_unconfigure(config):
    made = getattr(config, "nbval_run_dir", None)
    if made:
        shutil.rmtree(made, ignore_errors=True)
