"""Figures for the notebooks; each is saved as a PNG in the run folder as well as shown."""

from pathlib import Path

import matplotlib.pyplot as plt


def save_figure(figure, path):
    """Write `figure` to `path` as a PNG and say so by file name; the notebook shows it inline.

    The line names the file only, not the run folder, so that it reads the same in every run.
    """
    path = Path(path)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    print(f"saved {path.name} in the run folder")


def show_digits(images, titles, columns=10, scale=1.0, suptitle=None):
    """A grid of grey 28x28 digits (a tensor or list of 2-d arrays) with one title each."""
    rows = -(-len(images) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * scale, rows * 1.2 * scale),
                                squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < len(images):
            axis.imshow(images[index], cmap="gray_r")
            axis.set_title(titles[index], fontsize=9)
    if suptitle:
        figure.suptitle(suptitle)
    figure.tight_layout()
    return figure


def step_epochs(history):
    """The x position, in epochs, of every recorded training step (step k of n ends at k/n)."""
    steps = len(history["step_train_loss"])
    epochs = len(history["test_loss"])
    return [(step + 1) * epochs / steps for step in range(steps)]


def running_mean(values, window):
    """The mean of each `window` consecutive values, one per window end (len - window + 1)."""
    totals = [0.0]
    for value in values:
        totals.append(totals[-1] + value)
    return [(totals[end] - totals[end - window]) / window for end in range(window, len(totals))]


def plot_steps(axis, x, values, window, log_scale=False):
    """Every step faintly, and the running mean over `window` steps on top of it.

    Per-step values scatter widely; the mean shows the trend. On a log scale (for the loss)
    the late, small values stay readable; on a linear one (for accuracy) the axis starts at the
    second percentile of the steps, so the first epoch's climb does not flatten the rest.
    """
    axis.plot(x, values, linewidth=0.5, alpha=0.35, label="each step")
    axis.plot(x[window - 1:], running_mean(values, window), linewidth=1.5,
              label=f"mean of {window} steps")
    if log_scale:
        axis.set_yscale("log")
    else:
        ordered = sorted(values)
        axis.set_ylim(bottom=ordered[len(ordered) // 50] - 1, top=100.5)
    axis.legend(loc="best", fontsize="small")


def plot_history(history):
    """The 2x2 figure: training loss and accuracy per step, test loss and accuracy per epoch.

    All four share the x axis in epochs, so the training and test curves line up.
    """
    figure, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    step_x = step_epochs(history)
    epoch_x = list(range(1, len(history["test_loss"]) + 1))
    window = max(1, len(step_x) // len(epoch_x) // 5)  # a fifth of an epoch
    plot_steps(axes[0, 0], step_x, history["step_train_loss"], window, log_scale=True)
    plot_steps(axes[0, 1], step_x, history["step_train_accuracy"], window)
    axes[1, 0].plot(epoch_x, history["test_loss"], marker="o")
    axes[1, 1].plot(epoch_x, history["test_accuracy"], marker="o")
    labels = [(axes[0, 0], "Training loss (per step, log scale)", "NLL loss"),
              (axes[0, 1], "Training accuracy (per step)", "accuracy (%)"),
              (axes[1, 0], "Test loss (per epoch)", "NLL loss"),
              (axes[1, 1], "Test accuracy (per epoch)", "accuracy (%)")]
    for axis, title, ylabel in labels:
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
    figure.suptitle("Training and test metrics")
    figure.tight_layout()
    return figure
