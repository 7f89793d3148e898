"""Explain a model's anatomy: its torchsummary table, where its parameters come from, and what
each layer can see (its receptive field).

Every helper here works on a deep copy or only reads the model, so calling one never changes the
model a notebook is training: not its weights, batch-norm running statistics, train/eval mode or
device, nor the global random number generator.
"""

import ast
import contextlib
import copy
import io
import math
import os
import re
from pathlib import Path

import torch
from torch import nn
from torchsummary import summary

from utils import REPO_ROOT

# Lines of the torchsummary footer whose numbers depend on assumptions about memory, not on the
# model's structure; summary_text drops them so notebook outputs compare equal run after run.
MEMORY_LINE_PREFIXES = (
    "Input size (MB)",
    "Forward/backward pass size (MB)",
    "Params size (MB)",
    "Estimated Total Size (MB)",
)

# A torchsummary layer row: "   Conv2d-1   [-1, 16, 26, 26]   144".
SUMMARY_ROW = re.compile(r"^\s*(?P<layer>\S+-\d+)\s+(?P<shape>\[.*\])\s+(?P<params>[\d,]+)\s*$")

SUMMARY_TOTALS = {
    "total": re.compile(r"^Total params: ([\d,]+)$", re.MULTILINE),
    "trainable": re.compile(r"^Trainable params: ([\d,]+)$", re.MULTILINE),
    "non_trainable": re.compile(r"^Non-trainable params: ([\d,]+)$", re.MULTILINE),
}

GEOMETRY_KINDS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


# ---------------------------------------------------------------------------------------------
# torchsummary, captured and parsed


def _captured_summary(model, input_size):
    """Run torchsummary on a CPU, eval-mode deep copy of `model` and return what it printed.

    torchsummary pushes a random batch of two through the model it is given. On the model itself
    that would update batch-norm running statistics in train mode and leave hooks behind if the
    forward pass failed, so it gets a copy; fork_rng keeps its torch.rand from shifting the
    caller's random stream.
    """
    model_copy = copy.deepcopy(model).cpu().eval()
    printed = io.StringIO()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        with contextlib.redirect_stdout(printed):
            summary(model_copy, tuple(input_size), device="cpu")
    return printed.getvalue()


def _parse_summary_rows(text):
    """Turn the layer lines of a torchsummary table into dicts; fail if none are found."""
    rows = []
    for line in text.splitlines():
        match = SUMMARY_ROW.match(line)
        if match:
            rows.append(
                {
                    "layer": match["layer"],
                    "output_shape": ast.literal_eval(match["shape"]),
                    "params": int(match["params"].replace(",", "")),
                }
            )
    if not rows:
        raise ValueError(f"no layer rows found in the torchsummary output:\n{text}")
    return rows


def _parse_summary_totals(text):
    """Read the total, trainable and non-trainable parameter counts torchsummary printed."""
    totals = {}
    for key, pattern in SUMMARY_TOTALS.items():
        match = pattern.search(text)
        if match is None:
            raise ValueError(f"no {pattern.pattern!r} line in the torchsummary output:\n{text}")
        totals[key] = int(match.group(1).replace(",", ""))
    return totals


def summary_rows(model, input_size=(1, 28, 28)):
    """The torchsummary table of `model` as a list of dicts, one per layer, in the order printed.

    Each row is {"layer": "Conv2d-1", "output_shape": [-1, 16, 26, 26], "params": 144}; -1 stands
    for the batch dimension. `model` itself is left untouched (see _captured_summary).
    """
    return _parse_summary_rows(_captured_summary(model, input_size))


def summary_totals(model, input_size=(1, 28, 28)):
    """The totals under the torchsummary table: {"total", "trainable", "non_trainable"}."""
    return _parse_summary_totals(_captured_summary(model, input_size))


def summary_text(model, input_size=(1, 28, 28)):
    """The torchsummary table as text, without its memory estimates, so it reads the same anywhere.

    Removing the memory lines leaves two dashed rules in a row; only one is kept.
    """
    kept = []
    for line in _captured_summary(model, input_size).splitlines():
        if line.startswith(MEMORY_LINE_PREFIXES):
            continue
        if kept and _is_rule(line) and _is_rule(kept[-1]):
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def _is_rule(line):
    """Whether a line is one of torchsummary's dashed separators."""
    return bool(line) and set(line) == {"-"}


# ---------------------------------------------------------------------------------------------
# where the parameters come from


def _conv_formula(conv):
    """The weight count of a convolution as a product, k_h x k_w x in x out, plus out for a bias."""
    kernel_h, kernel_w = conv.kernel_size
    inputs_per_filter = conv.in_channels // conv.groups
    factors = (kernel_h, kernel_w, inputs_per_filter, conv.out_channels)
    formula = " x ".join(str(factor) for factor in factors)
    params = math.prod(factors)
    if conv.bias is not None:
        formula += f" + {conv.out_channels}"
        params += conv.out_channels
    return formula, params


def _batch_norm_formula(norm):
    """A batch norm learns a scale and a shift per channel: 2 x C (nothing when not affine)."""
    if not norm.affine:
        return "0", 0
    return f"2 x {norm.num_features}", 2 * norm.num_features


def _shape_formula(module):
    """Fallback for other kinds: each own parameter's shape as a product, summed."""
    own = list(module.parameters(recurse=False))
    formula = " + ".join(" x ".join(str(size) for size in p.shape) for p in own)
    return formula, sum(math.prod(p.shape) for p in own)


def parameter_table(model):
    """One row per module that owns parameters: where its parameter count comes from.

    Rows read {"layer": "block1.0", "kind": "Conv2d", "formula": "3 x 3 x 1 x 16", "params": 144}.
    Convolutions and batch norms are derived from their hyperparameters (channels, kernel size),
    not from the weight tensors, so the table can be checked against the tensors' sizes.
    """
    rows = []
    for name, module in model.named_modules():
        if not list(module.parameters(recurse=False)):
            continue
        if isinstance(module, nn.Conv2d):
            formula, params = _conv_formula(module)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            formula, params = _batch_norm_formula(module)
        else:
            formula, params = _shape_formula(module)
        rows.append(
            {
                "layer": name,
                "kind": type(module).__name__,
                "formula": formula,
                "params": params,
            }
        )
    return rows


def parameter_total_with_biases(model):
    """The parameter total if every bias-free convolution had a bias: one more per out channel."""
    missing_biases = sum(
        module.out_channels
        for module in model.modules()
        if isinstance(module, nn.Conv2d) and module.bias is None
    )
    return sum(p.numel() for p in model.parameters()) + missing_biases


def buffer_names(model):
    """Qualified names of the model's buffers: state it keeps and saves but does not learn.

    For batch norm these are running_mean, running_var and num_batches_tracked; they are in the
    state dict and a checkpoint, yet not in the parameter total.
    """
    return [name for name, _ in model.named_buffers()]


# ---------------------------------------------------------------------------------------------
# receptive field


def _square(value, what, name):
    """One number from an int or a square pair; the arithmetic below follows one image axis."""
    if isinstance(value, int):
        return value
    if len(set(value)) != 1:
        raise ValueError(f"{name}: {what} {value} is not square; only square layers are handled")
    return value[0]


def _layer_geometry(name, module):
    """Kernel, stride and padding of a geometry-changing layer, refusing what the table ignores."""
    if getattr(module, "ceil_mode", False):
        raise ValueError(f"{name}: ceil_mode is not handled (the table assumes floor)")
    if _square(getattr(module, "dilation", 1), "dilation", name) != 1:
        raise ValueError(f"{name}: dilation is not handled")
    kernel = _square(module.kernel_size, "kernel", name)
    stride = _square(module.stride, "stride", name)
    padding = module.padding
    if isinstance(padding, str):
        raise ValueError(f"{name}: padding={padding!r} is not handled; give it as numbers")
    return kernel, stride, _square(padding, "padding", name)


def _geometry_layers(model):
    """(name, module) for each Conv2d, MaxPool2d and AvgPool2d, in registration order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, GEOMETRY_KINDS)]


def _forward_order(model, names, input_size):
    """Names of the given modules in the order a forward pass calls them (on a CPU copy)."""
    model_copy = copy.deepcopy(model).cpu().eval()
    modules = dict(model_copy.named_modules())
    first_conv = next((m for m in model_copy.modules() if isinstance(m, nn.Conv2d)), None)
    channels = first_conv.in_channels if first_conv is not None else 1
    called = []
    hooks = [
        modules[name].register_forward_hook(lambda *_, name=name: called.append(name))
        for name in names
    ]
    try:
        images = torch.zeros(1, channels, input_size, input_size)
        with torch.no_grad():
            model_copy(images)
    finally:
        for hook in hooks:
            hook.remove()
    return called


def receptive_field_table(model, input_size=28):
    """Layer by layer: output size, jump and receptive field, for a square single-channel input.

    Walks the Conv2d, MaxPool2d and AvgPool2d layers in registration order; ReLU, batch norm and
    dropout do not change geometry. Starting from n = input_size, j = 1, r = 1, each layer of
    kernel k, stride s and padding p gives
        n_out = floor((n_in + 2p - k) / s) + 1   (output size)
        j_out = j_in * s                         (jump: input pixels between adjacent outputs)
        r_out = r_in + (k - 1) * j_in            (receptive field, in input pixels)

    For Net the arithmetic ends at r = 32 for the classifier, wider than the 28-pixel image; the
    last convolution before global average pooling sees 22 x 22. Global average pooling mixes
    every position, so the classifier's effective field is the whole image whatever the number.

    NOTE: registration order is only forward order for a model that is a chain of its layers, as
    Net is. The order is checked with a forward pass and a mismatch raises ValueError; branches or
    skips would need a graph walk instead.
    """
    layers = _geometry_layers(model)
    names = [name for name, _ in layers]
    called = _forward_order(model, names, input_size)
    if called != names:
        raise ValueError(
            f"layers are called in the order {called}, not in registration order {names}; "
            "receptive_field_table only handles models that run their layers as a chain"
        )

    size, jump, field = input_size, 1, 1
    rows = []
    for name, module in layers:
        kernel, stride, padding = _layer_geometry(name, module)
        size = (size + 2 * padding - kernel) // stride + 1
        field = field + (kernel - 1) * jump
        jump = jump * stride
        rows.append(
            {
                "layer": name,
                "kind": type(module).__name__,
                "kernel": kernel,
                "stride": stride,
                "padding": padding,
                "output_size": size,
                "jump": jump,
                "receptive_field": field,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# text output


def _cell_text(value):
    """How a value prints in a table: integers with thousands separators, the rest as str()."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def format_table(rows, columns=None):
    """A fixed-width plain-text table of `rows` (dicts), deterministic so notebooks can compare it.

    `columns` picks and orders the keys; by default those of the first row. Numbers are aligned
    right, everything else left, two spaces between columns, a dashed rule under the header.
    """
    if columns is None:
        columns = list(rows[0]) if rows else []
    if not columns:
        return ""
    cells = [[_cell_text(row[column]) for column in columns] for row in rows]
    widths = [
        max([len(column)] + [len(line[i]) for line in cells]) for i, column in enumerate(columns)
    ]
    numeric = [
        bool(rows) and all(isinstance(row[c], (int, float)) for row in rows) for c in columns
    ]

    def render(line):
        padded = [
            text.rjust(width) if right else text.ljust(width)
            for text, width, right in zip(line, widths, numeric)
        ]
        return "  ".join(padded).rstrip()

    lines = [render(columns), "  ".join("-" * width for width in widths)]
    lines += [render(line) for line in cells]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# the reference document

SHARED_REFERENCE = REPO_ROOT.parent / "shared" / "reference" / "model_summary.md"
IN_REPO_REFERENCE = Path(__file__).parent / "model_summary.md"

# "| 1  | Conv2d      | [-1, 16, 26, 26] | 144    | 1 -> 16, 3x3, no padding |"
REFERENCE_ROW = re.compile(
    r"^\|\s*(?P<index>\d+)\s*\|\s*(?P<kind>\w+)\s*\|\s*(?P<shape>\[[^\]]*\])\s*\|"
    r"\s*(?P<params>[\d,]+)\s*\|"
)
REFERENCE_TOTALS = re.compile(
    r"Total params: (?P<total>[\d,]+); trainable: (?P<trainable>[\d,]+); "
    r"non-trainable: (?P<non_trainable>[\d,]+)"
)
REFERENCE_WITH_BIASES = re.compile(r"With biases\s+the total would be[^=]*=\s*(?P<total>[\d,]+)")


def _count(text):
    """An integer written with thousands separators, e.g. "13,808"."""
    return int(text.replace(",", ""))


def reference_path():
    """The reference document: $MNIST_REFERENCE_SUMMARY, else ../shared, else the in-repo copy."""
    override = os.environ.get("MNIST_REFERENCE_SUMMARY")
    if override:
        if not Path(override).is_file():
            raise FileNotFoundError(f"MNIST_REFERENCE_SUMMARY={override} names no file")
        return Path(override)
    return SHARED_REFERENCE if SHARED_REFERENCE.is_file() else IN_REPO_REFERENCE


def read_reference_summary(path=None):
    """The reference table, parsed: rows as summary_rows gives them, and the stated totals.

    Returns {"rows": [...], "total", "trainable", "non_trainable", "total_with_biases"}.
    """
    text = Path(path or reference_path()).read_text(encoding="utf-8")
    rows = [
        {
            "layer": f"{match['kind']}-{match['index']}",
            "output_shape": ast.literal_eval(match["shape"]),
            "params": _count(match["params"]),
        }
        for match in map(REFERENCE_ROW.match, text.splitlines())
        if match
    ]
    totals = REFERENCE_TOTALS.search(text)
    with_biases = REFERENCE_WITH_BIASES.search(text)
    if not rows or totals is None or with_biases is None:
        raise ValueError(f"{path or reference_path()} has no layer table, totals line or "
                         "total with biases; is it the model summary document?")
    reference = {key: _count(value) for key, value in totals.groupdict().items()}
    reference.update(rows=rows, total_with_biases=_count(with_biases["total"]))
    return reference
