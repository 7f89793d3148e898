"""The figures' arithmetic, checked by hand, and the 2x2 metrics figure's layout."""

import matplotlib

matplotlib.use("Agg")  # no screen needed

from utils.plots import plot_history, running_mean, save_figure, step_epochs  # noqa: E402


def small_history(epochs=3, steps_per_epoch=10):
    steps = epochs * steps_per_epoch
    return {
        "step_train_loss": [2.0 / (1 + step) for step in range(steps)],
        "step_train_accuracy": [min(99.0, 10.0 + 3 * step) for step in range(steps)],
        "test_loss": [1.0 / (1 + epoch) for epoch in range(epochs)],
        "test_accuracy": [90.0 + epoch for epoch in range(epochs)],
    }


def test_running_mean_by_hand():
    assert running_mean([1, 2, 3, 4], 2) == [1.5, 2.5, 3.5]
    assert running_mean([1, 2, 3, 4], 4) == [2.5]
    assert running_mean([5, 7], 1) == [5, 7]


def test_steps_are_placed_in_epoch_units():
    x = step_epochs(small_history(epochs=3, steps_per_epoch=10))
    assert len(x) == 30 and x[9] == 1.0 and x[-1] == 3.0


def test_metrics_figure_has_four_labelled_panels_and_is_saved(tmp_path, capsys):
    figure = plot_history(small_history())
    titles = [axis.get_title() for axis in figure.axes]
    assert titles == ["Training loss (per step, log scale)", "Training accuracy (per step)",
                      "Test loss (per epoch)", "Test accuracy (per epoch)"]
    assert all(axis.get_xlabel() == "epoch" for axis in figure.axes)
    assert figure.axes[0].get_yscale() == "log"
    # the running mean over a fifth of an epoch (2 of 10 steps) is the second line drawn
    mean_line = figure.axes[0].get_lines()[1]
    assert list(mean_line.get_ydata()) == running_mean(small_history()["step_train_loss"], 2)
    save_figure(figure, tmp_path / "metrics.png")
    assert (tmp_path / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out == "saved metrics.png in the run folder\n"
