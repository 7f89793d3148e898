"""The training loop: losses fall, histories hold floats averaged per image, divergence stops it.

Runs on a few hundred real MNIST images on the CPU. Batch sizes are chosen so that the last
batch of every pass is smaller than the others, since that is where per-batch averaging goes
wrong.
"""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from utils.data import load_split
from utils.fast_batches import FastBatches
from utils.model import Net
from utils.runtime import seed_everything
from utils.training import (
    RunFolderError,
    TrainingDiverged,
    evaluate,
    fit,
    make_schedule,
    read_run_results,
    train_one_epoch,
)

MEAN, STD = 0.1307, 0.3081  # the training pixels' mean and std (shared/datasets/README.md)
TRAIN_IMAGES = 160          # 3 batches of 48 and one of 16
TEST_IMAGES = 100           # 2 batches of 48 and one of 4
BATCH_SIZE = 48
PEAK_LEARNING_RATE = 0.1


@pytest.fixture(scope="module")
def mnist_subset(mnist_dir):
    """The first training images and labels, and the first test ones, as small copies."""
    train_images, train_labels = load_split(mnist_dir, "train")
    test_images, test_labels = load_split(mnist_dir, "test")
    return {
        "train": (train_images[:TRAIN_IMAGES].clone(), train_labels[:TRAIN_IMAGES].clone()),
        "test": (test_images[:TEST_IMAGES].clone(), test_labels[:TEST_IMAGES].clone()),
    }


def training_run(subset, seed, epochs, learning_rate=PEAK_LEARNING_RATE, schedule=True):
    """Model, batches, optimizer and scheduler built the way the course builds them."""
    seed_everything(seed)
    model = Net()
    train_batches = FastBatches(*subset["train"], BATCH_SIZE, MEAN, STD, max_degrees=7.0,
                                shuffle=True, seed=seed)
    test_batches = FastBatches(*subset["test"], BATCH_SIZE, MEAN, STD)
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.9)
    scheduler = (make_schedule(optimizer, learning_rate, epochs, len(train_batches))
                 if schedule else None)
    return model, train_batches, test_batches, optimizer, scheduler


def quiet_fit(run, epochs, **options):
    """fit() without the progress bar, its log lines kept in a list instead of printed."""
    lines = []
    history, epoch_seconds = fit(*run, epochs, progress=False, log=lines.append, **options)
    return history, epoch_seconds, lines


def test_two_epochs_lower_the_loss_and_record_plain_floats(mnist_subset):
    run = training_run(mnist_subset, seed=0, epochs=2)
    history, epoch_seconds, lines = quiet_fit(run, epochs=2)

    steps_per_epoch = math.ceil(TRAIN_IMAGES / BATCH_SIZE)  # the partial last batch counts
    assert len(history["step_train_loss"]) == steps_per_epoch * 2
    assert len(history["step_train_accuracy"]) == steps_per_epoch * 2
    for key in ("epoch_train_loss", "epoch_train_accuracy", "test_loss", "test_accuracy",
                "learning_rate"):
        assert len(history[key]) == 2, key
    assert len(epoch_seconds) == 2 and len(lines) == 2
    for key, values in history.items():
        assert all(type(value) is float for value in values), key

    # untrained, the loss is about ln 10 = 2.30; eight steps at this rate bring it well below
    assert history["epoch_train_loss"][0] > 2.0
    assert history["epoch_train_loss"][1] < history["epoch_train_loss"][0] - 0.1
    first_steps = history["step_train_loss"][:2]
    last_steps = history["step_train_loss"][-2:]
    assert sum(last_steps) < sum(first_steps) - 0.2


def test_epoch_loss_is_averaged_per_image_including_the_partial_batch(mnist_subset):
    # with no learning and no dropout, every batch loss can be recomputed afterwards by hand
    seed_everything(0)
    model = Net(dropout=0.0)
    batches = FastBatches(*mnist_subset["train"], BATCH_SIZE, MEAN, STD)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    result = train_one_epoch(model, batches, optimizer, progress=False)

    sizes = [len(labels) for _, labels in batches]
    assert sizes[-1] == TRAIN_IMAGES % BATCH_SIZE
    weighted = sum(loss * size for loss, size in zip(result["batch_losses"], sizes))
    assert result["loss"] == pytest.approx(weighted / TRAIN_IMAGES, rel=1e-12)
    assert type(result["loss"]) is float

    # the hand computation: summed per-image losses over all 160 images, then divided once
    model.train()  # batch norm in training mode normalises by each batch, as it did above
    with torch.no_grad():
        loss_sum = sum(F.nll_loss(model(images), labels, reduction="sum").item()
                       for images, labels in batches)
    assert result["loss"] == pytest.approx(loss_sum / TRAIN_IMAGES, rel=1e-5)

    # a plain mean over batches weighs the 16 images of the last batch like 48: not the same
    plain_mean = sum(result["batch_losses"]) / len(sizes)
    assert abs(plain_mean - result["loss"]) > 1e-5

    correct = sum(accuracy * size / 100 for accuracy, size in zip(result["batch_accuracies"],
                                                                  sizes))
    assert result["accuracy"] == pytest.approx(100 * correct / TRAIN_IMAGES)


def test_evaluate_averages_per_image_in_eval_mode_and_repeats_exactly(mnist_subset):
    seed_everything(0)
    model = Net(dropout=0.5)  # large, so dropout left on would change every output
    batches = FastBatches(*mnist_subset["test"], BATCH_SIZE, MEAN, STD)
    images, labels = next(iter(FastBatches(*mnist_subset["test"], TEST_IMAGES, MEAN, STD)))

    model.train()
    with torch.no_grad():
        assert not torch.equal(model(images), model(images)), "dropout should be on in train"

    test_loss, test_accuracy = evaluate(model, batches)
    assert not model.training

    # the same images in one batch, by hand: summed per-image losses over N
    with torch.no_grad():
        log_probs = model(images)
        expected_loss = F.nll_loss(log_probs, labels, reduction="sum").item() / TEST_IMAGES
        expected_accuracy = 100.0 * (log_probs.argmax(dim=1) == labels).sum().item() / TEST_IMAGES
        assert torch.equal(log_probs, model(images))
    assert test_loss == pytest.approx(expected_loss, rel=1e-5)
    assert test_accuracy == pytest.approx(expected_accuracy)
    assert type(test_loss) is float and type(test_accuracy) is float

    model.train()
    assert evaluate(model, batches) == (test_loss, test_accuracy)


def all_tensors(state):
    """Every tensor in a nested checkpoint of dicts and lists."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        state = list(state.values())
    if isinstance(state, (list, tuple)):
        return [tensor for item in state for tensor in all_tensors(item)]
    return []


def assert_checkpoint_is_sound(path, epochs_done):
    """The checkpoint at `path` holds `epochs_done` finite epochs and finite tensors."""
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == epochs_done
    assert len(state["history"]["test_loss"]) == epochs_done
    assert all(math.isfinite(value) for values in state["history"].values() for value in values)
    floating = [tensor for tensor in all_tensors(state["model"]) if tensor.is_floating_point()]
    assert floating and all(torch.isfinite(tensor).all() for tensor in floating)


def test_huge_learning_rate_stops_training_before_a_broken_checkpoint(mnist_subset, tmp_path):
    run = training_run(mnist_subset, seed=0, epochs=3, learning_rate=1e6, schedule=False)
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(TrainingDiverged) as caught:
        quiet_fit(run, epochs=3, checkpoint_path=checkpoint)

    message = str(caught.value)
    assert "learning rate 1e+06" in message
    words = message.replace(",", "").split()
    epoch = int(words[words.index("epoch") + 1])
    assert words[words.index("step") + 1].isdigit()
    # NOTE: at this rate the training loss of epoch 1 stays finite (about 1e20) while batch
    # norm's running variances overflow; the check on the test loss has to catch that epoch
    if checkpoint.exists():
        assert_checkpoint_is_sound(checkpoint, epochs_done=epoch - 1)
    else:
        assert epoch == 1
    assert not list(tmp_path.glob("*.partial"))


def test_nan_in_epoch_two_names_where_and_keeps_the_epoch_one_checkpoint(mnist_subset, tmp_path):
    model, *rest = run = training_run(mnist_subset, seed=0, epochs=3, learning_rate=0.05,
                                      schedule=False)
    checkpoint = tmp_path / "checkpoint.pt"
    steps_per_epoch = math.ceil(TRAIN_IMAGES / BATCH_SIZE)
    poisoned_step = steps_per_epoch + 2  # epoch 2, step 2
    seen = {"steps": 0, "checkpoint_bytes": None}

    def poison(module, inputs, output):
        """Turn the output into NaN at one training step, first keeping the checkpoint's bytes."""
        if not module.training:
            return None
        seen["steps"] += 1
        if seen["steps"] == poisoned_step:
            seen["checkpoint_bytes"] = checkpoint.read_bytes()
            return torch.full_like(output, float("nan"))
        return None

    model.classifier.register_forward_hook(poison)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 2 \(learning rate 0\.05\)"):
        quiet_fit(run, epochs=3, checkpoint_path=checkpoint)

    assert seen["steps"] == poisoned_step, "training went on after the NaN"
    assert checkpoint.read_bytes() == seen["checkpoint_bytes"]
    assert_checkpoint_is_sound(checkpoint, epochs_done=1)
    assert not list(tmp_path.glob("*.partial"))


def test_same_seed_repeats_the_history_and_another_seed_does_not(mnist_subset):
    # fewer images, as this trains three times: 48 + 32 for training, 48 for testing
    subset = {"train": [tensor[:80] for tensor in mnist_subset["train"]],
              "test": [tensor[:48] for tensor in mnist_subset["test"]]}
    first, _, _ = quiet_fit(training_run(subset, seed=3, epochs=2), epochs=2)
    again, _, _ = quiet_fit(training_run(subset, seed=3, epochs=2), epochs=2)
    other, _, _ = quiet_fit(training_run(subset, seed=4, epochs=2), epochs=2)
    assert len(first["step_train_loss"]) == 4
    assert again == first  # exact: the same floats, not approximately
    assert other["step_train_loss"] != first["step_train_loss"]
    assert other["test_loss"] != first["test_loss"]


def test_run_results_are_read_back_as_written(tmp_path):
    history, metrics = {"test_accuracy": [97.5, 98.25]}, {"epochs": 2}
    (tmp_path / "history.json").write_text(json.dumps(history))
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    assert read_run_results(tmp_path) == (history, metrics)


@pytest.mark.parametrize("missing", ["history.json", "metrics.json"])
def test_a_run_folder_without_results_says_to_run_notebook_4(tmp_path, missing):
    for name in {"history.json", "metrics.json"} - {missing}:
        (tmp_path / name).write_text("{}")
    with pytest.raises(RunFolderError, match=f"{missing} is missing: notebook 4"):
        read_run_results(tmp_path)


@pytest.mark.parametrize("content", [b"", b"{\"test_accuracy\": [97.", b"\xff\xfe"])
def test_damaged_results_are_named_and_left_alone(tmp_path, content):
    (tmp_path / "history.json").write_bytes(content)
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(RunFolderError, match="history.json is damaged"):
        read_run_results(tmp_path)
    assert (tmp_path / "history.json").read_bytes() == content
