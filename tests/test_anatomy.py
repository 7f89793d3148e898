"""Tests for utils.anatomy, checked against the project's reference table and against the model.

The reference is the markdown document ../shared/reference/model_summary.md (or the file named
by MNIST_REFERENCE_SUMMARY), falling back to the copy utils/model_summary.md, so a clone without
../shared still tests. Its numbers are parsed here, not typed into the tests.
"""

import contextlib
import os

import pytest
import torch
from torch import nn
from torchsummary import summary

from utils import anatomy
from utils.model import Net, conv_block


@pytest.fixture(scope="module")
def reference():
    try:
        return anatomy.read_reference_summary()
    except FileNotFoundError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def reference_rows(reference):
    return reference["rows"]


@pytest.fixture(scope="module")
def reference_totals(reference):
    return {key: reference[key] for key in ("total", "trainable", "non_trainable")}


@pytest.fixture(scope="module")
def reference_total_with_biases(reference):
    return reference["total_with_biases"]


def widened_net():
    """Net with its first convolution one channel wider (17), and its neighbours made to fit."""
    model = Net()
    model.block1 = conv_block(1, 17, dropout=0.05)
    model.block2[0] = nn.Conv2d(17, 32, kernel_size=3, bias=False)
    return model


def trained_a_little():
    """A Net in train mode whose batch-norm running statistics are no longer the defaults."""
    torch.manual_seed(0)
    model = Net().train()
    for _ in range(3):
        model(torch.rand(8, 1, 28, 28) * 3 + 1)
    return model


def cloned_state(model):
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# the reference document itself


def test_in_repo_reference_copy_matches_shared_one():
    if not anatomy.SHARED_REFERENCE.is_file():
        pytest.skip(f"{anatomy.SHARED_REFERENCE} is absent; nothing to compare the copy with")
    assert anatomy.IN_REPO_REFERENCE.read_bytes() == anatomy.SHARED_REFERENCE.read_bytes(), (
        f"{anatomy.IN_REPO_REFERENCE} has drifted from {anatomy.SHARED_REFERENCE}; copy it again"
    )


def test_reference_falls_back_to_the_in_repo_copy(monkeypatch, tmp_path):
    monkeypatch.delenv("MNIST_REFERENCE_SUMMARY", raising=False)
    monkeypatch.setattr(anatomy, "SHARED_REFERENCE", tmp_path / "absent.md")
    assert anatomy.reference_path() == anatomy.IN_REPO_REFERENCE


# ---------------------------------------------------------------------------------------------
# torchsummary table


def test_summary_rows_equal_the_reference_row_for_row(reference_rows):
    rows = anatomy.summary_rows(Net())
    assert len(rows) == len(reference_rows)
    for row, expected in zip(rows, reference_rows):
        assert row == expected


def test_summary_totals_equal_the_reference(reference_totals):
    assert anatomy.summary_totals(Net()) == reference_totals


def test_summary_rows_differ_for_a_widened_convolution(reference_rows, reference_totals):
    rows = anatomy.summary_rows(widened_net())
    assert rows != reference_rows
    assert rows[0] == {"layer": "Conv2d-1", "output_shape": [-1, 17, 26, 26], "params": 153}
    assert anatomy.summary_totals(widened_net())["total"] != reference_totals["total"]


def test_summary_text_has_the_table_but_no_memory_estimates(reference_rows):
    text = anatomy.summary_text(Net())
    assert "(MB)" not in text
    assert "Total params: 13,808" in text
    conv_rows = [row for row in reference_rows if row["layer"].startswith("Conv2d-")]
    assert text.count("Conv2d-") == len(conv_rows)
    assert "----\n----" not in text
    assert text.endswith("-\n")


def test_summary_text_is_the_same_twice_and_for_a_model_that_changed_mode():
    assert anatomy.summary_text(Net().eval()) == anatomy.summary_text(trained_a_little())


def test_torchsummary_alone_would_change_running_stats():
    # Shows why summary_rows works on a copy: the guard below has something to guard against.
    model = trained_a_little()
    before = model.block1[2].running_mean.clone()
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        summary(model, (1, 28, 28), device="cpu")
    assert not torch.equal(model.block1[2].running_mean, before)


def test_summary_leaves_the_model_and_random_stream_exactly_as_they_were():
    model = trained_a_little()
    state_before = cloned_state(model)
    modes_before = [module.training for module in model.modules()]
    rng_before = torch.random.get_rng_state()

    anatomy.summary_rows(model)
    anatomy.summary_text(model)
    anatomy.summary_totals(model)
    anatomy.receptive_field_table(model)

    state_after = model.state_dict()
    assert state_after.keys() == state_before.keys()
    for name, tensor in state_before.items():
        assert torch.equal(state_after[name], tensor), name
    assert [module.training for module in model.modules()] == modes_before
    assert model.training
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert not any(module._forward_hooks for module in model.modules())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_summary_of_a_gpu_model_leaves_it_on_the_gpu(reference_rows):
    model = Net().cuda()
    assert anatomy.summary_rows(model) == reference_rows
    assert all(p.device.type == "cuda" for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# parameters and buffers


def test_parameter_table_sums_to_the_model_and_the_reference(reference_totals):
    model = Net()
    table = anatomy.parameter_table(model)
    total = sum(row["params"] for row in table)
    assert total == sum(p.numel() for p in model.parameters())
    assert total == reference_totals["total"]


def test_parameter_table_rows_match_each_modules_own_tensors():
    model = Net()
    modules = dict(model.named_modules())
    table = anatomy.parameter_table(model)
    owners = [name for name, m in modules.items() if list(m.parameters(recurse=False))]
    assert [row["layer"] for row in table] == owners
    for row in table:
        module = modules[row["layer"]]
        assert row["kind"] == type(module).__name__
        assert row["params"] == sum(p.numel() for p in module.parameters(recurse=False))


def test_parameter_table_formulas_read_as_written():
    rows = {row["layer"]: row for row in anatomy.parameter_table(Net())}
    assert rows["block1.0"]["formula"] == "3 x 3 x 1 x 16"
    assert rows["block1.2"]["formula"] == "2 x 16"
    assert rows["transition"]["formula"] == "1 x 1 x 32 x 10"
    biased = anatomy.parameter_table(nn.Conv2d(1, 16, kernel_size=3))
    assert biased == [
        {"layer": "", "kind": "Conv2d", "formula": "3 x 3 x 1 x 16 + 16", "params": 160}
    ]


def test_parameter_total_with_biases(reference_totals, reference_total_with_biases):
    model = Net()
    conv_out_channels = sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
    with_biases = anatomy.parameter_total_with_biases(model)
    assert with_biases == reference_totals["total"] + conv_out_channels
    assert with_biases == reference_total_with_biases


def test_parameter_total_with_biases_equals_a_net_built_with_biases():
    model = Net()
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.bias = nn.Parameter(torch.zeros(module.out_channels))
    assert anatomy.parameter_total_with_biases(Net()) == sum(p.numel() for p in model.parameters())


def test_buffer_names_are_the_state_that_is_not_parameters():
    model = Net()
    names = anatomy.buffer_names(model)
    parameter_names = {name for name, _ in model.named_parameters()}
    assert set(names) == set(model.state_dict()) - parameter_names
    norms = [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    expected = {
        f"{norm}.{buffer}"
        for norm in norms
        for buffer in ("running_mean", "running_var", "num_batches_tracked")
    }
    assert set(names) == expected


# ---------------------------------------------------------------------------------------------
# receptive field, against an empirical measurement


def positive_double_net():
    """Net in float64 and eval mode, every weight positive, so no input change can cancel out.

    With a positive constant input every activation is positive, ReLU passes changes through and
    max pooling's tied windows move whenever any member grows. Weights 1 / fan-in keep the values
    near one; float64 keeps the smallest corner contributions far above rounding.
    """
    model = Net().double().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.fill_(1.0 / fan_in)
    return model


def measured_fields(model, layer_names, size=28):
    """For each named layer, the widest span of input pixels any single output depends on.

    Pushes one constant image and, in the same batch, one copy per pixel with that pixel raised,
    records every layer's output with forward hooks, and looks at which outputs moved.
    """
    base = torch.ones(1, 1, size, size, dtype=torch.float64)
    bumped = base.repeat(size * size, 1, 1, 1)
    bumped.view(size * size, -1)[torch.arange(size * size), torch.arange(size * size)] += 1.0
    images = torch.cat([base, bumped])

    outputs = {}
    modules = dict(model.named_modules())
    hooks = [
        modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: outputs.__setitem__(name, out)
        )
        for name in layer_names
    ]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for hook in hooks:
            hook.remove()

    fields = {}
    for name in layer_names:
        out = outputs[name]
        moved = ((out[1:] - out[:1]).abs() > 1e-12).any(dim=1)  # (pixels, H, W)
        moved = moved.view(size, size, *moved.shape[1:])  # (in_row, in_col, H, W)
        rows_hit = moved.any(dim=1)  # (in_row, H, W)
        fields[name] = _widest_span(rows_hit)
    return fields


def _widest_span(hit):
    """Largest last-minus-first+1 along dim 0 of a boolean (n, ...) tensor, over the other dims."""
    index = torch.arange(hit.shape[0]).view(-1, *[1] * (hit.dim() - 1))
    first = torch.where(hit, index, hit.shape[0]).amin(dim=0)
    last = torch.where(hit, index, -1).amax(dim=0)
    return int((last - first + 1).clamp(min=0).max())


@pytest.fixture(scope="module")
def net_fields():
    """The receptive-field table of Net and, for each of its layers, the measured field."""
    table = anatomy.receptive_field_table(Net(), input_size=28)
    measured = measured_fields(positive_double_net(), [row["layer"] for row in table], size=28)
    return table, measured


def test_receptive_fields_match_a_perturbation_measurement(net_fields):
    table, measured = net_fields
    for row in table:
        expected = min(row["receptive_field"], 28)  # a field wider than the image is the image
        assert measured[row["layer"]] == expected, row


def test_receptive_field_output_sizes_match_the_real_forward_pass():
    model = Net().eval()
    table = anatomy.receptive_field_table(model)
    shapes = {}
    modules = dict(model.named_modules())
    for row in table:
        modules[row["layer"]].register_forward_hook(
            lambda _m, _i, out, name=row["layer"]: shapes.__setitem__(name, tuple(out.shape[2:]))
        )
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    for row in table:
        assert shapes[row["layer"]] == (row["output_size"], row["output_size"]), row


def test_classifier_sees_every_pixel_though_the_arithmetic_says_more(net_fields):
    table, measured = net_fields
    last_conv_before_gap = next(row for row in table if row["layer"] == "block6.0")
    assert last_conv_before_gap["receptive_field"] == measured["block6.0"] < 28
    assert table[-1]["layer"] == "classifier"
    assert table[-1]["receptive_field"] > 28
    assert measured["classifier"] == 28


def test_receptive_field_refuses_a_model_not_run_in_registration_order():
    class Reversed(nn.Module):
        def __init__(self):
            super().__init__()
            self.second = nn.Conv2d(1, 1, kernel_size=3)
            self.first = nn.Conv2d(1, 1, kernel_size=5)

        def forward(self, images):
            return self.second(self.first(images))

    with pytest.raises(ValueError, match="registration order"):
        anatomy.receptive_field_table(Reversed())


def test_receptive_field_refuses_ceil_mode():
    model = nn.Sequential(nn.Conv2d(1, 1, 3), nn.MaxPool2d(2, ceil_mode=True))
    with pytest.raises(ValueError, match="ceil_mode"):
        anatomy.receptive_field_table(model)


# ---------------------------------------------------------------------------------------------
# text tables


def test_format_table_is_fixed_width_text():
    rows = [
        {"layer": "block1.0", "params": 144},
        {"layer": "block2.0", "params": 4608},
    ]
    expected = "layer     params\n--------  ------\nblock1.0     144\nblock2.0   4,608\n"
    assert anatomy.format_table(rows) == expected


def test_format_table_picks_and_orders_columns():
    rows = [{"a": "x", "b": 1, "c": "long text"}]
    expected = "c          a\n---------  -\nlong text  x\n"
    assert anatomy.format_table(rows, columns=["c", "a"]) == expected
    with pytest.raises(KeyError):
        anatomy.format_table(rows, columns=["missing"])
