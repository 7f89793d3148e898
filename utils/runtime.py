"""Device, seeding, the environment report, and checks on a notebook's parameters."""

import json
import math
import os
import platform
import random
from pathlib import Path

import torch
import torchvision

from utils import REPO_ROOT, cpu_name

DEFAULT_DATA_DIR = REPO_ROOT / "data" / "mnist"
DEFAULT_RUN_DIR = REPO_ROOT / "runs" / "interactive"
DEVICE_KINDS = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "bf16", "fp32")

# Quick mode: a smoke run of every cell in seconds, for tests and CI. MNIST_QUICK=1 turns it on
# in any runner (nbval cannot pass parameters); papermill can also pass quick=True.
QUICK_EPOCHS = 2
QUICK_TRAIN_SUBSET = 2000


class ParameterError(ValueError):
    """A notebook parameter outside what is allowed; the message names it and the allowed range."""


QUICK_WORDS = {"1": True, "true": True, "yes": True, "on": True,
               "": False, "0": False, "false": False, "no": False, "off": False}


def quick_mode_requested():
    """Whether MNIST_QUICK asks for quick mode: 1/true/yes/on, or 0/false/no/off/empty."""
    value = os.environ.get("MNIST_QUICK", "")
    if value.strip().lower() not in QUICK_WORDS:
        raise ParameterError(f"MNIST_QUICK={value!r} is not understood; use 1 (quick mode) or "
                             "0 (the full run), or leave it unset.")
    return QUICK_WORDS[value.strip().lower()]


def resolve_data_dir(data_dir=""):
    """The folder to read MNIST from, and whether downloading into it is allowed.

    An explicit folder (the parameter, or MNIST_DATA_DIR) must already hold the four files: it is
    the user's, so nothing is downloaded into it. Without one, the course downloads into data/.
    """
    chosen = data_dir or os.environ.get("MNIST_DATA_DIR", "")
    if chosen:
        return Path(chosen).expanduser().resolve(), False
    return DEFAULT_DATA_DIR, True


def resolve_run_dir(run_dir=""):
    """The run folder: the parameter, else MNIST_RUN_DIR, else runs/interactive in the repo."""
    chosen = run_dir or os.environ.get("MNIST_RUN_DIR", "")
    path = Path(chosen).expanduser().resolve() if chosen else DEFAULT_RUN_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def choose_device(requested="auto"):
    """CUDA, then Apple MPS, then CPU for "auto"; a named device must exist on this machine."""
    kind = str(requested).split(":")[0]
    if kind not in DEVICE_KINDS:
        raise ParameterError(f"device={requested!r} is unknown; use one of {DEVICE_KINDS} "
                             "(optionally with an index, such as 'cuda:1').")
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(),
                 "cpu": True}
    if kind == "auto":
        return torch.device(next(k for k in ("cuda", "mps", "cpu") if available[k]))
    if not available[kind]:
        raise ParameterError(f"device={requested!r} was requested but this machine has no "
                             f"{kind.upper()} device; use device='auto' or 'cpu'.")
    return torch.device(requested)


def bf16_supported(device):
    """Whether bfloat16 autocast runs natively (not emulated) on this device."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return False


def autocast_dtype(precision, device):
    """The autocast dtype for a precision parameter: bfloat16, or None for plain fp32."""
    if precision not in PRECISIONS:
        raise ParameterError(f"precision={precision!r} is unknown; use one of {PRECISIONS}.")
    if precision == "fp32" or (precision == "auto" and not bf16_supported(device)):
        return None
    if not bf16_supported(device):
        raise ParameterError(f"precision='bf16' was requested but {device} has no native "
                             "bfloat16 support; use precision='auto' or 'fp32'.")
    return torch.bfloat16


def seed_everything(seed):
    """Seed Python's and torch's generators, and ask for deterministic kernels."""
    random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def environment_report(device):
    """One line each for Python, torch, torchvision, the device, the CPU and its threads used."""
    return "\n".join([
        f"Python       {platform.python_version()}",
        f"torch        {torch.__version__}",
        f"torchvision  {torchvision.__version__}",
        f"device       {device}",
        f"CPU          {cpu_name()}",
        f"CPU threads  {torch.get_num_threads()}",
    ])


def require(condition, name, value, allowed):
    if not condition:
        raise ParameterError(f"parameter {name}={value!r} is not allowed: {allowed}.")


def is_whole_number(value):
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value):
    """A finite int or float; True, False, NaN and infinity are not numbers here."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def check_training_parameters(epochs, batch_size, learning_rate, momentum, seed, train_subset,
                              max_degrees):
    """Stop before any data is read when a training parameter is outside its allowed range."""
    require(is_whole_number(epochs) and epochs >= 1, "epochs", epochs, "a whole number >= 1")
    require(is_whole_number(batch_size) and batch_size >= 1, "batch_size", batch_size,
            "a whole number >= 1")
    require(is_number(learning_rate) and learning_rate > 0, "learning_rate",
            learning_rate, "a number > 0")
    require(is_number(momentum) and 0 <= momentum < 1, "momentum", momentum,
            "a number in [0, 1)")
    require(is_whole_number(seed) and 0 <= seed < 2 ** 63, "seed", seed,
            "a whole number from 0 to 2**63 - 1")
    require(is_whole_number(train_subset) and train_subset >= 0, "train_subset", train_subset,
            "0 (all 60,000 images) or a positive number of images")
    require(is_number(max_degrees) and 0 <= max_degrees <= 180, "max_degrees",
            max_degrees, "a number of degrees in [0, 180]")


def check_normalisation(mean_std):
    """`mean_std` is None (derive from the training pixels) or two numbers, the std positive."""
    if mean_std is None:
        return
    require(isinstance(mean_std, (list, tuple)) and len(mean_std) == 2, "mean_std", mean_std,
            "None, or a list of two numbers [mean, std] for the one grey channel")
    mean, std = mean_std
    require(is_number(mean) and is_number(std) and std > 0,
            "mean_std", mean_std, "two numbers [mean, std] with std > 0")


class Settings:
    """The course parameters after checking, with the values derived from them.

    Built from the parameters cell that every notebook shares; the checks run here, before any
    data is read, so a bad parameter stops a notebook in its first cells.
    """

    def __init__(self, epochs, batch_size, learning_rate, momentum, seed, max_degrees,
                 dropout, mean_std, train_subset, device, precision, data_dir, run_dir, quick,
                 resume=False):
        require(isinstance(quick, bool), "quick", quick, "True or False (a string such as "
                "'False' would count as true)")
        self.quick = quick or quick_mode_requested()
        if self.quick:
            epochs = min(epochs, QUICK_EPOCHS) if is_whole_number(epochs) else epochs
            train_subset = QUICK_TRAIN_SUBSET
        check_training_parameters(epochs, batch_size, learning_rate, momentum, seed,
                                  train_subset, max_degrees)
        require(is_number(dropout) and 0 <= dropout < 1, "dropout", dropout,
                "a probability in [0, 1)")
        check_normalisation(mean_std)
        self.epochs, self.batch_size = epochs, batch_size
        self.learning_rate, self.momentum, self.seed = learning_rate, momentum, seed
        self.max_degrees, self.dropout, self.mean_std = max_degrees, dropout, mean_std
        self.train_subset = train_subset
        self.device = choose_device(device)
        self.autocast_dtype = autocast_dtype(precision, self.device)
        self.precision = "bf16" if self.autocast_dtype is torch.bfloat16 else "fp32"
        require(isinstance(resume, bool), "resume", resume, "True or False")
        for name, folder in (("data_dir", data_dir), ("run_dir", run_dir)):
            require(isinstance(folder, (str, Path)), name, folder, "a folder path, as a string")
        self.resume = resume
        self.data_dir, self.may_download = resolve_data_dir(data_dir)
        self.run_dir = resolve_run_dir(run_dir)
        if resume and self.checkpoint_path.is_file():
            check_resumable(self, saved_run_parameters(self.run_dir))

    @property
    def checkpoint_path(self):
        """Where notebook 4 keeps the run's latest training state."""
        return self.run_dir / "checkpoint.pt"

    def as_dict(self):
        """Plain types only, for parameters.json."""
        return {key: (str(value) if isinstance(value, (Path, torch.device)) else value)
                for key, value in vars(self).items() if key != "autocast_dtype"}

    def __repr__(self):
        return "\n".join(f"{key:<14} {value}" for key, value in self.as_dict().items())


# What a run is: resuming with other values of these would not continue the same run.
RUN_DEFINING_PARAMETERS = ("epochs", "batch_size", "learning_rate", "momentum", "seed",
                           "max_degrees", "dropout", "mean_std", "train_subset", "precision")


def saved_run_parameters(run_dir):
    """The parameters.json notebook 4 wrote when the run in `run_dir` started, or None."""
    path = Path(run_dir) / "parameters.json"
    return json.loads(path.read_text()) if path.is_file() else None


def check_resumable(settings, saved_parameters):
    """Stop a resume whose parameters differ from those the run folder's run started with.

    `saved_parameters` is that run's parameters.json (None when there is none). Where the data
    comes from, where the run folder is and the device may change; what defines the run may not.
    """
    if saved_parameters is None:
        raise ParameterError(
            f"resume=True, but {settings.run_dir} has a checkpoint and no parameters.json, so "
            "whether it is the same run cannot be checked; set resume=False to start afresh.")
    current = json.loads(json.dumps(settings.as_dict()))  # as parameters.json holds them
    changed = [f"{name}={saved_parameters.get(name)!r} there, {current[name]!r} here"
               for name in RUN_DEFINING_PARAMETERS if saved_parameters.get(name) != current[name]]
    if changed:
        raise ParameterError(
            f"resume=True, but the run in {settings.run_dir} was started with other parameters ("
            + "; ".join(changed) + "). Resume with the same values, or set resume=False (or "
            "use another run_dir) to start afresh.")
