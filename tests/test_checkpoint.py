"""Checkpoints: written atomically, plain enough for weights_only, resumable, and loud when wrong.

Training states come from a few steps on synthetic or the first real MNIST images, on the CPU.
"""

import io

import pytest
import torch

from utils import checkpoint as ckpt
from utils.checkpoint import CheckpointError, load_trained_model, save_training_state
from utils.data import load_split
from utils.fast_batches import FastBatches
from utils.model import Net, conv_block
from utils.runtime import seed_everything
from utils.training import fit, make_schedule

MEAN, STD = 0.1307, 0.3081  # the training pixels' mean and std (shared/datasets/README.md)
BATCH_SIZE = 32
PEAK_LEARNING_RATE = 0.05
CHECKPOINT_KEYS = {"epoch", "model", "optimizer", "scheduler", "history", "epoch_seconds",
                   "random_state"}


def synthetic_batches(count=40, seed=0):
    """Random uint8 digits with labels, in shuffled, rotated batches of 32 and a smaller one."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    return FastBatches(images, labels, 32, MEAN, STD, max_degrees=5.0, shuffle=True, seed=seed)


def training_run(train_batches, test_batches, seed, epochs):
    """Model, optimizer and scheduler built the same way on every call, for `epochs` in all."""
    seed_everything(seed)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=PEAK_LEARNING_RATE, momentum=0.9)
    scheduler = make_schedule(optimizer, PEAK_LEARNING_RATE, epochs, len(train_batches))
    return model, train_batches, test_batches, optimizer, scheduler


def quiet_fit(run, epochs, **options):
    """fit() without the progress bar, its log lines kept in a list instead of printed."""
    lines = []
    history, _ = fit(*run, epochs, progress=False, log=lines.append, **options)
    return history, lines


@pytest.fixture
def trained_checkpoint(tmp_path):
    """A checkpoint written by fit after one epoch on synthetic data, and its model."""
    run = training_run(synthetic_batches(), synthetic_batches(count=20, seed=1), seed=0, epochs=2)
    path = tmp_path / "checkpoint.pt"
    quiet_fit(run, epochs=1, checkpoint_path=path)
    return path, run[0]


def assert_same_weights(model, other):
    first, second = model.state_dict(), other.state_dict()
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_crash_mid_write_leaves_the_previous_checkpoint_whole(trained_checkpoint, monkeypatch):
    path, model = trained_checkpoint
    before = path.read_bytes()
    real_save = torch.save

    def crash_halfway(obj, destination, *args, **kwargs):
        """Write the first half of what torch.save would write, then fail as a full disk does."""
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        destination.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", crash_halfway)
    with pytest.raises(OSError, match="No space left"):
        save_training_state(path, Net(), torch.optim.SGD(model.parameters(), lr=0.1), None,
                            epoch=2, history={}, epoch_seconds=[])
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert [entry.name for entry in path.parent.iterdir()] == [path.name]  # no .partial left
    assert_same_weights(load_trained_model(path), model)


def test_checkpoint_holds_only_tensors_and_plain_types(trained_checkpoint):
    path, model = trained_checkpoint
    state = torch.load(path, weights_only=True)  # refuses anything that needs unpickling code

    assert set(state) == CHECKPOINT_KEYS
    assert state["epoch"] == 1
    assert state["model"].keys() == model.state_dict().keys()
    momentum_buffers = [entry["momentum_buffer"] for entry in state["optimizer"]["state"].values()]
    assert len(momentum_buffers) == len(list(model.parameters()))
    assert state["scheduler"]["total_steps"] == 2 * 2  # 40 images in 2 batches, for 2 epochs
    assert state["scheduler"]["last_epoch"] == 2
    assert len(state["history"]["step_train_loss"]) == 2
    assert all(type(value) is float for values in state["history"].values() for value in values)
    assert isinstance(state["random_state"]["torch"], torch.Tensor)
    assert isinstance(state["random_state"]["batches"], torch.Tensor)


def test_resumed_run_ends_exactly_as_an_uninterrupted_one(mnist_dir, tmp_path):
    images, labels = load_split(mnist_dir, "train")
    # 48 training images: a batch of 32 and one of 16; 32 test images from further on
    train_images, train_labels = images[:48].clone(), labels[:48].clone()
    test_images, test_labels = images[-32:].clone(), labels[-32:].clone()

    def fresh_run():
        """Everything built anew, as a new Python session would build it."""
        train_batches = FastBatches(train_images, train_labels, BATCH_SIZE, MEAN, STD,
                                    max_degrees=7.0, shuffle=True, seed=5)
        test_batches = FastBatches(test_images, test_labels, BATCH_SIZE, MEAN, STD)
        return training_run(train_batches, test_batches, seed=5, epochs=3)  # for all 3 epochs

    whole_run = fresh_run()
    whole_history, _ = quiet_fit(whole_run, epochs=3, checkpoint_path=tmp_path / "whole.pt")

    interrupted = tmp_path / "interrupted.pt"
    quiet_fit(fresh_run(), epochs=1, checkpoint_path=interrupted)
    torch.manual_seed(1234)  # what happens to the global generator in between must not matter
    resumed_run = fresh_run()
    resumed_history, lines = quiet_fit(resumed_run, epochs=3, checkpoint_path=interrupted,
                                       resume=True)

    assert lines[0] == "resumed from interrupted.pt after epoch 1"
    assert len(lines) == 3  # the resume line and epochs 2 and 3, not epoch 1 again
    assert len(whole_history["step_train_loss"]) == 3 * 2
    assert resumed_history == whole_history  # exact: the same floats, not approximately
    assert_same_weights(resumed_run[0], whole_run[0])
    assert torch.load(interrupted, weights_only=True)["epoch"] == 3


def test_dataparallel_prefix_is_stripped_on_load(tmp_path):
    model = Net()
    prefixed = {f"module.{key}": value for key, value in model.state_dict().items()}
    path = tmp_path / "parallel.pt"
    torch.save({"model": prefixed}, path)
    assert_same_weights(load_trained_model(path), model)


def test_checkpoint_is_read_onto_the_cpu_with_weights_only(trained_checkpoint, monkeypatch):
    path, _ = trained_checkpoint
    real_load, calls = torch.load, []

    def recording_load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "load", recording_load)
    load_trained_model(path)
    assert len(calls) == 1
    assert calls[0]["map_location"] == "cpu"
    assert calls[0]["weights_only"] is True


def test_a_file_whose_tensors_are_tagged_cuda_loads_on_the_cpu(tmp_path, monkeypatch):
    """No GPU needed: torch.save records each tensor's device as a tag ("cuda:0" for a tensor
    saved from a GPU), and the tag alone decides where torch.load puts it. Tagging every tensor
    "cuda:0" while saving writes the file a GPU run writes."""
    model = Net()
    path = tmp_path / "tagged-cuda.pt"
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save({"model": model.state_dict()}, path)
    if not torch.cuda.is_available():  # the file really is a GPU one: a plain load refuses it
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    loaded = load_trained_model(path)
    assert all(tensor.device.type == "cpu" for tensor in loaded.state_dict().values())
    assert_same_weights(loaded, model)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to save tensors from it")
def test_checkpoint_saved_on_cuda_loads_on_the_cpu(tmp_path):
    model = Net().cuda()
    path = tmp_path / "cuda.pt"
    torch.save({"model": model.state_dict()}, path)
    loaded = load_trained_model(path)
    assert all(tensor.device.type == "cpu" for tensor in loaded.state_dict().values())
    assert_same_weights(loaded, model.cpu())


def test_other_architecture_is_refused_naming_the_keys(tmp_path):
    wider = Net()
    wider.block6 = conv_block(16, 24, dropout=0.05, padding=1)   # 16 -> 24 channels
    wider.classifier = torch.nn.Conv2d(24, 10, kernel_size=1, bias=False)
    path = tmp_path / "wider.pt"
    torch.save({"model": wider.state_dict()}, path)

    with pytest.raises(CheckpointError) as caught:
        load_trained_model(path)
    message = str(caught.value)
    assert str(path) in message
    assert "block6.0.weight: (24, 16, 3, 3)" in message
    assert "classifier.weight: (10, 24, 1, 1)" in message
    assert "block5" not in message  # only the keys that differ


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    state = Net().state_dict()
    del state["classifier.weight"]
    state["head.bias"] = torch.zeros(10)
    path = tmp_path / "edited.pt"
    torch.save({"model": state}, path)

    with pytest.raises(CheckpointError, match="missing: classifier.weight") as caught:
        load_trained_model(path)
    assert "unexpected: head.bias" in str(caught.value)


@pytest.mark.parametrize("damage", ["random bytes", "truncated"])
def test_damaged_file_is_named_and_left_alone(trained_checkpoint, damage):
    path, _ = trained_checkpoint
    if damage == "random bytes":
        generator = torch.Generator().manual_seed(0)
        path.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=generator).tolist()))
    else:
        path.write_bytes(path.read_bytes()[:1000])
    damaged = path.read_bytes()

    with pytest.raises(CheckpointError) as caught:
        load_trained_model(path)
    message = str(caught.value)
    assert str(path) in message
    assert "damaged" in message and "Retrain" in message
    assert path.read_bytes() == damaged


class NotATensor:
    """A class a checkpoint could pickle, which weights_only=True must refuse to rebuild."""


def test_file_holding_other_objects_is_refused_without_advice_to_load_it_anyway(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"model": NotATensor()}, path)
    with pytest.raises(CheckpointError) as caught:
        load_trained_model(path)
    message = str(caught.value)
    assert str(path) in message and "did not write it" in message and "Retrain" in message
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message


@pytest.mark.parametrize("damage", ["random bytes", "truncated"])
def test_damaged_file_message_gives_no_advice_to_load_it_unsafely(trained_checkpoint, damage):
    path, _ = trained_checkpoint
    path.write_bytes(bytes(range(256)) * 16 if damage == "random bytes"
                     else path.read_bytes()[:1000])
    with pytest.raises(CheckpointError) as caught:
        load_trained_model(path)
    assert "False" not in str(caught.value)


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "run" / "checkpoint.pt"
    with pytest.raises(CheckpointError) as caught:
        load_trained_model(path)
    message = str(caught.value)
    assert str(path) in message
    assert "04_training" in message  # the fix: run the training notebook
    assert not path.parent.exists()
