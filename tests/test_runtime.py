"""Notebook parameters: bad values stop with a message that says what is allowed; quick mode."""

import json

import pytest
import torch

from utils import runtime
from utils.runtime import (
    QUICK_EPOCHS,
    QUICK_TRAIN_SUBSET,
    ParameterError,
    Settings,
    check_training_parameters,
    choose_device,
)

NO_CUDA = not torch.cuda.is_available()
NO_MPS = not torch.backends.mps.is_available()


@pytest.fixture(autouse=True)
def no_quick_mode_from_outside(monkeypatch):
    """A runner's MNIST_QUICK (CI sets it for the notebooks) must not change these tests."""
    monkeypatch.delenv("MNIST_QUICK", raising=False)


def good_parameters(run_dir, **changes):
    """The parameters cell's values, with `changes` applied."""
    parameters = dict(epochs=15, batch_size=128, learning_rate=0.05, momentum=0.9, seed=1,
                      max_degrees=7.0, dropout=0.05, mean_std=None, train_subset=0,
                      device="cpu", precision="fp32", data_dir="", run_dir=str(run_dir),
                      quick=False)
    parameters.update(changes)
    return parameters


def test_good_parameters_pass_and_are_kept(tmp_path):
    run_dir = tmp_path / "run"
    settings = Settings(**good_parameters(run_dir, mean_std=[0.1307, 0.3081], precision="auto"))
    assert (settings.epochs, settings.batch_size, settings.train_subset) == (15, 128, 0)
    assert settings.learning_rate == 0.05 and settings.momentum == 0.9
    assert settings.mean_std == [0.1307, 0.3081]
    assert settings.device == torch.device("cpu")
    assert settings.precision in ("bf16", "fp32")
    assert settings.run_dir == run_dir.resolve() and run_dir.is_dir()
    assert not settings.quick


@pytest.mark.parametrize("name, value, allowed", [
    ("epochs", 0, "a whole number >= 1"),
    ("epochs", -1, "a whole number >= 1"),
    ("epochs", 1.5, "a whole number >= 1"),
    ("batch_size", 0, "a whole number >= 1"),
    ("learning_rate", 0, "a number > 0"),
    ("learning_rate", -0.1, "a number > 0"),
    ("momentum", -0.1, "a number in [0, 1)"),
    ("momentum", 1.0, "a number in [0, 1)"),
    ("mean_std", [0.1], "a list of two numbers [mean, std]"),
    ("mean_std", [0.1, 0.2, 0.3], "a list of two numbers [mean, std]"),
    ("mean_std", [0.1, 0.0], "std > 0"),
])
def test_bad_parameter_is_named_with_what_is_allowed(tmp_path, name, value, allowed):
    run_dir = tmp_path / "run"
    with pytest.raises(ParameterError) as caught:
        Settings(**good_parameters(run_dir, **{name: value}))
    message = str(caught.value)
    assert f"{name}={value!r}" in message
    assert allowed in message
    assert not run_dir.exists(), "a bad parameter should stop before anything is written"


def test_unknown_device_lists_the_known_ones(tmp_path):
    with pytest.raises(ParameterError) as caught:
        Settings(**good_parameters(tmp_path, device="tpu"))
    message = str(caught.value)
    assert "device='tpu'" in message
    for kind in ("auto", "cuda", "mps", "cpu"):
        assert f"'{kind}'" in message


@pytest.mark.parametrize("device", [
    pytest.param("cuda", marks=pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")),
    pytest.param("mps", marks=pytest.mark.skipif(not NO_MPS, reason="this machine has MPS")),
])
def test_absent_device_is_refused(tmp_path, device):
    with pytest.raises(ParameterError) as caught:
        Settings(**good_parameters(tmp_path, device=device))
    message = str(caught.value)
    assert f"device={device!r}" in message
    assert f"no {device.upper()} device" in message and "'auto' or 'cpu'" in message


def pretend_devices(monkeypatch, cuda=False, mps=False):
    """Make torch report CUDA and MPS as present or absent, whatever this machine has."""
    monkeypatch.setattr(runtime.torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(runtime.torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_absent_device_is_refused_on_any_machine(monkeypatch, device):
    pretend_devices(monkeypatch)
    with pytest.raises(ParameterError, match="was requested but this machine has no"):
        choose_device(device)


@pytest.mark.parametrize("cuda, mps, expected", [
    (True, True, "cuda"), (False, True, "mps"), (False, False, "cpu"),
])
def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    pretend_devices(monkeypatch, cuda=cuda, mps=mps)
    assert choose_device("auto") == torch.device(expected)


@pytest.mark.skipif(not (NO_CUDA and NO_MPS), reason="this machine has an accelerator")
def test_auto_is_the_cpu_here():
    assert choose_device("auto") == torch.device("cpu")
    assert choose_device("cpu") == torch.device("cpu")


def test_quick_parameter_caps_epochs_and_sets_the_subset(tmp_path):
    settings = Settings(**good_parameters(tmp_path, quick=True))
    assert settings.quick
    assert settings.epochs == QUICK_EPOCHS < 15
    assert settings.train_subset == QUICK_TRAIN_SUBSET

    one_epoch = Settings(**good_parameters(tmp_path, quick=True, epochs=1))
    assert one_epoch.epochs == 1  # a cap, not a fixed number


def test_mnist_quick_1_turns_quick_mode_on(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_QUICK", "1")
    settings = Settings(**good_parameters(tmp_path))
    assert settings.quick
    assert (settings.epochs, settings.train_subset) == (QUICK_EPOCHS, QUICK_TRAIN_SUBSET)


@pytest.mark.parametrize("value", ["true", "Yes", " on "])
def test_mnist_quick_words_for_yes_turn_it_on(tmp_path, monkeypatch, value):
    monkeypatch.setenv("MNIST_QUICK", value)
    assert Settings(**good_parameters(tmp_path)).quick


@pytest.mark.parametrize("value", ["perhaps", "2"])
def test_mnist_quick_that_is_neither_yes_nor_no_is_refused(tmp_path, monkeypatch, value):
    monkeypatch.setenv("MNIST_QUICK", value)
    with pytest.raises(ParameterError, match=f"MNIST_QUICK='{value}' is not understood"):
        Settings(**good_parameters(tmp_path))


@pytest.mark.parametrize("value", ["False", "yes", 1, None])
def test_quick_must_be_true_or_false(tmp_path, value):
    with pytest.raises(ParameterError, match="parameter quick="):
        Settings(**good_parameters(tmp_path, quick=value))


def test_a_seed_torch_cannot_take_is_refused(tmp_path):
    with pytest.raises(ParameterError, match="seed=99999999999999999999"):
        Settings(**good_parameters(tmp_path, seed=99999999999999999999))
    assert Settings(**good_parameters(tmp_path, seed=2 ** 63 - 1)).seed == 2 ** 63 - 1


@pytest.mark.parametrize("value", ["0", "", "false", "NO", "off"])
def test_mnist_quick_0_or_empty_leaves_it_off(tmp_path, monkeypatch, value):
    monkeypatch.setenv("MNIST_QUICK", value)
    settings = Settings(**good_parameters(tmp_path))
    assert not settings.quick
    assert (settings.epochs, settings.train_subset) == (15, 0)


def test_quick_mode_still_rejects_bad_epochs(tmp_path):
    with pytest.raises(ParameterError, match="epochs=0"):
        Settings(**good_parameters(tmp_path, quick=True, epochs=0))


@pytest.mark.parametrize("value", [True, float("inf"), float("nan")])
def test_learning_rate_must_be_a_finite_number(value):
    with pytest.raises(ParameterError, match="learning_rate="):
        check_training_parameters(epochs=1, batch_size=1, learning_rate=value, momentum=0.9,
                                  seed=0, train_subset=0, max_degrees=7.0)


def started_run(tmp_path, **changes):
    """A run folder holding a checkpoint and the parameters.json of a run with these values."""
    settings = Settings(**good_parameters(tmp_path / "run", **changes))
    (settings.run_dir / "parameters.json").write_text(json.dumps(settings.as_dict()))
    settings.checkpoint_path.write_bytes(b"a checkpoint")
    return settings.run_dir


def test_resume_with_the_same_parameters_passes(tmp_path):
    run_dir = started_run(tmp_path)
    settings = Settings(**good_parameters(run_dir, resume=True, data_dir=str(tmp_path)))
    assert settings.resume and settings.checkpoint_path.read_bytes() == b"a checkpoint"


def test_resume_with_other_parameters_names_them_and_changes_nothing(tmp_path):
    run_dir = started_run(tmp_path, epochs=15, mean_std=[0.1307, 0.3081])
    with pytest.raises(ParameterError) as caught:
        Settings(**good_parameters(run_dir, resume=True, epochs=5, learning_rate=0.1,
                                   mean_std=[0.1307, 0.3081]))
    message = str(caught.value)
    assert "epochs=15 there, 5 here" in message and "learning_rate=0.05 there, 0.1 here" in message
    assert "mean_std" not in message  # a list that came back from JSON is the same list
    assert (run_dir / "checkpoint.pt").read_bytes() == b"a checkpoint"


def test_resume_without_the_run_s_parameters_is_refused(tmp_path):
    run_dir = started_run(tmp_path)
    (run_dir / "parameters.json").unlink()
    with pytest.raises(ParameterError, match="no parameters.json"):
        Settings(**good_parameters(run_dir, resume=True))


def test_resume_in_a_folder_without_a_checkpoint_starts_afresh(tmp_path):
    settings = Settings(**good_parameters(tmp_path / "new", resume=True))
    assert settings.resume and not settings.checkpoint_path.exists()


@pytest.mark.parametrize("value", ["True", 1])
def test_resume_must_be_true_or_false(tmp_path, value):
    with pytest.raises(ParameterError, match="parameter resume="):
        Settings(**good_parameters(tmp_path, resume=value))


@pytest.mark.parametrize("name", ["data_dir", "run_dir"])
def test_folders_must_be_paths(tmp_path, name):
    parameters = {**good_parameters(tmp_path), name: 5}
    with pytest.raises(ParameterError, match=f"parameter {name}=5 is not allowed"):
        Settings(**parameters)
