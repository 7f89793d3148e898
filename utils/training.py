"""The training and test loops, and the epoch loop that records history and checkpoints."""

import contextlib
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from utils import checkpoint as ckpt


class TrainingDiverged(FloatingPointError):
    """Raised when a training loss stops being a finite number."""


def autocast_context(device, dtype):
    """Mixed precision for the forward pass when `dtype` is given, a no-op context otherwise."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def current_learning_rate(optimizer):
    return optimizer.param_groups[0]["lr"]


def train_one_epoch(model, batches, optimizer, scheduler=None, device="cpu", autocast_dtype=None,
                    epoch=1, progress=True):
    """One pass over the training batches; returns per-batch and per-epoch loss and accuracy.

    The scheduler, if given, is stepped after every optimizer step (a per-step schedule such as
    OneCycleLR). Losses are averaged per image over the images actually seen.
    """
    model.train()
    batch_losses, batch_accuracies = [], []
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not progress, mininterval=2)
    for step, (images, labels) in enumerate(bar, start=1):
        images, labels = images.to(device), labels.to(device)

        # forward
        with autocast_context(device, autocast_dtype):
            log_probs = model(images)
        loss = F.nll_loss(log_probs.float(), labels)
        check_finite(loss, epoch, step, current_learning_rate(optimizer))

        # backward and update
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()

        # record, as plain floats
        batch_size = labels.numel()
        batch_correct = int((log_probs.argmax(dim=1) == labels).sum())
        batch_losses.append(loss.item())
        batch_accuracies.append(100.0 * batch_correct / batch_size)
        loss_sum += loss.item() * batch_size
        correct += batch_correct
        seen += batch_size
        # refresh=False: the bar redraws at its own pace (mininterval), not on every step
        bar.set_postfix(loss=f"{batch_losses[-1]:.4f}", acc=f"{batch_accuracies[-1]:.1f}",
                        refresh=False)
    return {
        "batch_losses": batch_losses,
        "batch_accuracies": batch_accuracies,
        "loss": loss_sum / seen,
        "accuracy": 100.0 * correct / seen,
    }


def check_finite(loss, epoch, step, learning_rate, name="training loss"):
    """Stop training with a message that says where, when the loss is NaN or infinite."""
    value = loss.item() if torch.is_tensor(loss) else float(loss)
    if not math.isfinite(value):
        raise TrainingDiverged(
            f"{name} became {value} at epoch {epoch}, step {step} "
            f"(learning rate {learning_rate:.4g}); no checkpoint was written for this epoch. "
            "Lower the learning rate or check the input normalisation."
        )


@torch.no_grad()
def evaluate(model, batches, device="cpu", autocast_dtype=None):
    """Test loss averaged per image over every image, and accuracy in percent, in eval mode."""
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    for images, labels in batches:
        images, labels = images.to(device), labels.to(device)
        with autocast_context(device, autocast_dtype):
            log_probs = model(images)
        loss_sum += F.nll_loss(log_probs.float(), labels, reduction="sum").item()
        correct += int((log_probs.argmax(dim=1) == labels).sum())
        seen += labels.numel()
    return loss_sum / seen, 100.0 * correct / seen


def new_history():
    """Empty history: per-step lists for training, per-epoch lists for both splits."""
    keys = ["step_train_loss", "step_train_accuracy", "epoch_train_loss", "epoch_train_accuracy",
            "test_loss", "test_accuracy", "learning_rate"]
    return {key: [] for key in keys}


def fit(model, train_batches, test_batches, optimizer, scheduler, epochs, device="cpu",
        autocast_dtype=None, checkpoint_path=None, resume=False, progress=True, log=print):
    """Train for `epochs`, evaluating on the test set after each.

    Returns the history (deterministic for a seed on one machine) and, apart from it because
    timings never repeat, the wall-clock seconds of each epoch.

    After every epoch a checkpoint (model, optimizer, scheduler, history, random state) is written
    atomically to `checkpoint_path`. With `resume=True` and a checkpoint there, training continues
    from the epoch after the one it holds and ends with the same numbers as an uninterrupted run.
    """
    history, epoch_seconds, first_epoch = new_history(), [], 1
    if resume and checkpoint_path is not None and checkpoint_path.exists():
        history, epoch_seconds, done = ckpt.resume_training(checkpoint_path, model, optimizer,
                                                            scheduler, train_batches)
        first_epoch = done + 1
        log(f"resumed from {checkpoint_path.name} after epoch {done}")
    for epoch in range(first_epoch, epochs + 1):
        started = time.perf_counter()
        learning_rate = current_learning_rate(optimizer)
        train = train_one_epoch(model, train_batches, optimizer, scheduler, device,
                                autocast_dtype, epoch, progress)
        test_loss, test_accuracy = evaluate(model, test_batches, device, autocast_dtype)
        # the epoch's last update is seen by no training loss: a finite loss can still leave
        # overflowed weights or batch-norm statistics, which must not reach the checkpoint
        check_finite(test_loss, epoch, len(train["batch_losses"]),
                     current_learning_rate(optimizer), name="test loss")
        record_epoch(history, train, test_loss, test_accuracy, learning_rate)
        epoch_seconds.append(time.perf_counter() - started)
        log(epoch_line(epoch, epochs, history, epoch_seconds[-1]))
        if checkpoint_path is not None:
            ckpt.save_training_state(checkpoint_path, model, optimizer, scheduler, epoch, history,
                                     epoch_seconds, train_batches)
    return history, epoch_seconds


def record_epoch(history, train, test_loss, test_accuracy, learning_rate):
    history["step_train_loss"] += train["batch_losses"]
    history["step_train_accuracy"] += train["batch_accuracies"]
    history["epoch_train_loss"].append(train["loss"])
    history["epoch_train_accuracy"].append(train["accuracy"])
    history["test_loss"].append(test_loss)
    history["test_accuracy"].append(test_accuracy)
    history["learning_rate"].append(learning_rate)


def epoch_line(epoch, epochs, history, seconds):
    """One fixed-column log line for the epoch just recorded."""
    return (f"epoch {epoch:>2}/{epochs}  lr {history['learning_rate'][-1]:.4f}  "
            f"train loss {history['epoch_train_loss'][-1]:.4f}  "
            f"train acc {history['epoch_train_accuracy'][-1]:6.2f}%  "
            f"test loss {history['test_loss'][-1]:.4f}  "
            f"test acc {history['test_accuracy'][-1]:6.2f}%  "
            f"({seconds:.1f} s)")


WARMUP_FRACTION = 0.2  # of all steps, rising to the peak learning rate


def make_schedule(optimizer, peak_learning_rate, epochs, steps_per_epoch):
    """One-cycle learning rate: warm up to the peak over WARMUP_FRACTION of the steps, then
    anneal to ~0.

    Stepped once per optimizer step. Momentum is left at the optimizer's value (no cycling), so
    the momentum parameter means what it says.
    """
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=peak_learning_rate, epochs=epochs, steps_per_epoch=steps_per_epoch,
        pct_start=WARMUP_FRACTION, cycle_momentum=False,
    )


class RunFolderError(RuntimeError):
    """A run folder without the results notebook 4 writes; the message says how to get them."""


def read_run_results(run_dir):
    """The history and metrics notebook 4 wrote into `run_dir`, as (history, metrics)."""
    results = []
    for name in ("history.json", "metrics.json"):
        path = Path(run_dir) / name
        if not path.is_file():
            raise RunFolderError(f"{path} is missing: notebook 4 (04_training.ipynb) writes it "
                                 "when training ends. Run notebook 4 with the same run_dir first.")
        try:
            results.append(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RunFolderError(f"{path} is damaged ({error}); run notebook 4 again to "
                                 "rewrite it.") from error
    return tuple(results)
