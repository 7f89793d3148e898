"""Checkpoints that survive crashes, other machines and `torch.load(weights_only=True)`."""

import os
import pickle
from pathlib import Path

import torch

from utils.model import Net


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model."""


def save_atomically(obj, path):
    """Write with torch.save to a temporary file beside `path`, then rename it into place.

    A crash mid-write leaves the previous checkpoint intact, because the rename is atomic.
    """
    path = Path(path)
    temporary = path.with_name(path.name + ".partial")
    try:
        with open(temporary, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())  # on disk before the rename, so a power cut cannot lose both
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def random_state(batches):
    """The random-number state that decides the rest of training: global torch, batch order."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    generator = getattr(batches, "generator", None)
    if generator is not None:
        state["batches"] = generator.get_state()
    return state


def restore_random_state(state, batches):
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator = getattr(batches, "generator", None)
    if generator is not None and "batches" in state:
        generator.set_state(state["batches"])


def save_training_state(path, model, optimizer, scheduler, epoch, history, epoch_seconds,
                        batches=None):
    """Everything needed to continue training after `epoch`, as tensors and plain types only."""
    state = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "history": history,
        "epoch_seconds": epoch_seconds,
        "random_state": random_state(batches),
    }
    save_atomically(state, path)


def read_checkpoint(path):
    """Load a checkpoint onto the CPU with weights_only=True, or explain why it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: run the training notebook first "
                              "(notebooks/04_training.ipynb) or pass the right run folder.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message advises weights_only=False, which would run code from the file: the
        # course never does that, so the advice is left out
        if "Unsupported global" in str(error):
            raise CheckpointError(f"checkpoint {path} holds objects other than tensors and plain "
                                  "types, so this course did not write it and will not load it. "
                                  "Retrain to replace it.") from error
        raise CheckpointError(f"checkpoint {path} cannot be read (not a pickle torch can "
                              "parse); it is damaged or not a checkpoint. Retrain to replace "
                              "it.") from error
    except Exception as error:  # torch raises several types for a damaged file
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(error).__name__}: "
                              f"{error}); it is damaged or not a checkpoint. Retrain to replace "
                              "it.") from error


def strip_parallel_prefix(state_dict):
    """Drop the `module.` prefix that DataParallel and DistributedDataParallel add to every key."""
    if state_dict and all(key.startswith("module.") for key in state_dict):
        return {key[len("module."):]: value for key, value in state_dict.items()}
    return state_dict


def load_model_weights(model, state_dict, source="checkpoint"):
    """Load weights into `model`, listing every missing, unexpected or mis-shaped key on failure."""
    state_dict = strip_parallel_prefix(state_dict)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshaped = sorted(f"{key}: {tuple(state_dict[key].shape)} in {source}, "
                       f"{tuple(expected[key].shape)} in the model"
                       for key in set(expected) & set(state_dict)
                       if state_dict[key].shape != expected[key].shape)
    if missing or unexpected or misshaped:
        lines = ([f"missing: {key}" for key in missing]
                 + [f"unexpected: {key}" for key in unexpected]
                 + [f"shape mismatch: {line}" for line in misshaped])
        raise CheckpointError(f"{source} does not fit {type(model).__name__} (a different "
                              "architecture?):\n  " + "\n  ".join(lines))
    model.load_state_dict(state_dict)


def resume_training(path, model, optimizer, scheduler, batches=None):
    """Restore a training state saved by save_training_state; returns history, seconds, epoch."""
    state = read_checkpoint(path)
    load_model_weights(model, state["model"], source=str(path))
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    restore_random_state(state["random_state"], batches)
    return state["history"], state["epoch_seconds"], state["epoch"]


def load_trained_model(path, device="cpu", **net_options):
    """A `Net` with the weights of the checkpoint at `path`, in eval mode, on `device`."""
    state = read_checkpoint(path)
    model = Net(**net_options)
    load_model_weights(model, state.get("model", state), source=str(path))
    return model.to(device).eval()
