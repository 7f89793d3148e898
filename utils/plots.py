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


def plot_history(history):
    """The 2x2 figure: training loss and accuracy per step, test loss and accuracy per epoch."""
    figure, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    step_x = step_epochs(history)
    epoch_x = list(range(1, len(history["test_loss"]) + 1))
    panels = [
        (axes[0, 0], step_x, history["step_train_loss"], "Training loss (per step)", "NLL loss"),
        (axes[0, 1], step_x, history["step_train_accuracy"], "Training accuracy (per step)",
         "accuracy (%)"),
        (axes[1, 0], epoch_x, history["test_loss"], "Test loss (per epoch)", "NLL loss"),
        (axes[1, 1], epoch_x, history["test_accuracy"], "Test accuracy (per epoch)",
         "accuracy (%)"),
    ]
    for axis, x, y, title, ylabel in panels:
        marker = "o" if x is epoch_x else None
        axis.plot(x, y, marker=marker, linewidth=1 if marker is None else 1.5)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
    figure.suptitle("Training and test metrics")
    figure.tight_layout()
    return figure
