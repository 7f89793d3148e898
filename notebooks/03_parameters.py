# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. The parameter count, derived
#
# Notebook 2 read the total from torchsummary. Here we derive it: every learned number in the
# model belongs to a convolution's weights or to a batch norm's scale and shift, and each count
# follows from the layer's shape. The same walk over the layers then gives the size of every
# feature map and how much of the image each one can see.

# %% [markdown]
# ## Parameters
#
# Every notebook of the course starts with the same parameters cell, so one command can pass
# the same values to all five. This one uses none of them but the device
# report: counting needs no data.

# %% tags=["parameters"]
epochs = 15              # passes over the training set
batch_size = 128         # images per optimizer step
learning_rate = 0.1      # peak learning rate of the one-cycle schedule
momentum = 0.9           # SGD momentum
seed = 1                 # seeds torch and Python for a repeatable run
max_degrees = 7.0        # training images are rotated by up to this many degrees either way
dropout = 0.05           # dropout probability after each convolution block
mean_std = None          # None: derive the normalisation from the training pixels
train_subset = 0         # 0: all 60,000 training images; N: the first N, for quick runs
device = "auto"          # "auto" (CUDA, then Apple MPS, then CPU), "cuda", "mps" or "cpu"
precision = "auto"       # "auto" (bfloat16 where the hardware has it), "bf16" or "fp32"
data_dir = ""            # "": download into data/mnist; else a folder with the four files
run_dir = ""             # "": runs/interactive; `make run` passes a new folder
quick = False            # True: a smoke run in seconds; so does MNIST_QUICK in the environment
resume = False           # True: continue the run in run_dir from its last checkpoint

# %%
from IPython.display import Markdown, display
from torch import nn

import utils.runtime as runtime
from utils.anatomy import (
    buffer_names,
    format_table,
    parameter_table,
    parameter_total_with_biases,
    read_reference_summary,
    receptive_field_table,
)
from utils.model import Net

config = runtime.Settings(epochs, batch_size, learning_rate, momentum, seed, max_degrees,
                          dropout, mean_std, train_subset, device, precision, data_dir, run_dir,
                          quick, resume)
print(runtime.environment_report(config.device))

# %% [markdown]
# ## Counting, layer by layer
#
# A convolution with a k x k kernel from C_in to C_out channels learns one k x k filter for every
# pair of input and output channel: k x k x C_in x C_out weights. Ours have no bias, so nothing
# more. A batch norm over C channels learns a scale and a shift per channel: 2 x C. ReLU,
# dropout and the pooling layers learn nothing. The table is built from the modules' own
# attributes (kernel size, channels), not typed:

# %% tags=["nbval-check-output"]
model = Net(dropout=config.dropout)
rows = parameter_table(model)
print(format_table(rows))

# %% [markdown]
# Its sum must equal the number of elements in all of the model's parameter tensors, and the
# total the reference document gives:

# %% tags=["nbval-check-output"]
derived_total = sum(row["params"] for row in rows)
tensor_total = sum(p.numel() for p in model.parameters())
reference_total = read_reference_summary()["total"]
print(f"derived {derived_total:,}  tensors {tensor_total:,}  reference {reference_total:,}")
assert derived_total == tensor_total == reference_total

# %% [markdown]
# Where the parameters sit:

# %% tags=["nbval-check-output"]
conv_total = sum(row["params"] for row in rows if row["kind"] == "Conv2d")
norm_total = sum(row["params"] for row in rows if row["kind"] == "BatchNorm2d")
largest = max(rows, key=lambda row: row["params"])
display(Markdown(
    f"The convolutions hold {conv_total:,} weights and the batch norms {norm_total:,} scales and "
    f"shifts. The largest layer, `{largest['layer']}` ({largest['formula']}), alone holds "
    f"{largest['params']:,}, {100 * largest['params'] / derived_total:.0f}% of the model: the "
    "widest layer at the largest resolution is where a small model's budget goes."
))

# %% [markdown]
# ## Buffers are not parameters
#
# Batch norm also keeps a running mean and variance of each channel, used instead of the batch's
# own statistics at test time, and a counter of the batches seen. They are saved with the model
# and move with it to the GPU, but no gradient updates them: they are *buffers*, not parameters,
# and do not count towards the total.

# %% tags=["nbval-check-output"]
buffers = dict(model.named_buffers())
print(f"{len(buffers)} buffers, {sum(b.numel() for b in buffers.values()):,} numbers, e.g.")
print("  " + "\n  ".join(name for name in buffer_names(model) if name.startswith("block1.")))
print("in the parameter total:", any(name in dict(model.named_parameters()) for name in buffers))

# %% [markdown]
# ## Corrections to the original text
#
# Besides leaving the buffers unexplained, the document this course grew from made two mistakes
# in its arithmetic.
#
# **Biases that are not there.** Its formulas add the output channels as a bias term to each
# convolution's count, yet every count in its own table is bias-free, as here. If every
# convolution did have a bias, the total would be:

# %% tags=["nbval-check-output"]
with_biases = parameter_total_with_biases(model)
biased = Net(dropout=config.dropout)
for name, conv in list(biased.named_modules()):
    if isinstance(conv, nn.Conv2d):  # rebuild each convolution with a bias to check the sum
        parent = biased.get_submodule(name.rpartition(".")[0]) if "." in name else biased
        setattr(parent, name.rpartition(".")[2],
                nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                          padding=conv.padding, bias=True))
print(f"with a bias in every convolution: {with_biases:,} "
      f"(a model built that way has {sum(p.numel() for p in biased.parameters()):,}); "
      f"without, as here: {derived_total:,}")
assert with_biases == sum(p.numel() for p in biased.parameters())

# %% [markdown]
# **The transition's input.** It gives the 1x1 transition's input as 12x12. The transition
# comes *before* the max pooling, so it works on the full-size map of the second block, and the
# pooling halves what it produces. The shapes around it, from a forward pass:

# %% tags=["nbval-check-output"]
import torch

shapes = {}


def record_shapes(name):
    return lambda module, inputs, output: shapes.update({name: (inputs[0].shape, output.shape)})


hooks = [getattr(model, name).register_forward_hook(record_shapes(name))
         for name in ["transition", "pool"]]
with torch.no_grad():
    model.eval()(torch.zeros(1, 1, 28, 28))
for hook in hooks:
    hook.remove()
for name, (shape_in, shape_out) in shapes.items():
    print(f"{name:<11} in {tuple(shape_in[1:])} -> out {tuple(shape_out[1:])}")

# %% [markdown]
# ## Output size and receptive field
#
# A layer's *receptive field* is the patch of the input image that can affect one of its output
# values. Start with one pixel (r = 1) and a jump of one pixel between neighbouring outputs
# (j = 1). A layer with kernel k, stride s and padding p then gives
#
# - output size: n_out = floor((n_in + 2p - k) / s) + 1,
# - receptive field: r_out = r_in + (k - 1) * j_in,
# - jump: j_out = j_in * s.
#
# Layers that do not change geometry (ReLU, batch norm, dropout) are left out.

# %% tags=["nbval-check-output"]
fields = receptive_field_table(model, input_size=28)
print(format_table(fields))

# %% tags=["nbval-check-output"]
last_conv = [row for row in fields if row["kind"] == "Conv2d"][-2]
display(Markdown(
    f"The last 3x3 convolution (`{last_conv['layer']}`) sees {last_conv['receptive_field']}x"
    f"{last_conv['receptive_field']} pixels of the 28x28 image. By the formula the classifier "
    f"sees {fields[-1]['receptive_field']}x{fields[-1]['receptive_field']}: more than the image "
    "itself, because global average pooling takes in every position of the map before it. "
    "In effect the classifier sees the whole digit."
))
