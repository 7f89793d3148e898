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
# # 2. The model
#
# A small convolutional network: blocks of convolution, ReLU, batch norm and dropout; a 1x1
# "transition" convolution that cuts the channels before max pooling halves the image; more
# blocks; global average pooling down to one value per channel; and a 1x1 convolution that
# turns those into ten class scores. This notebook shows its one definition, traces a batch
# through it, and checks its summary against the reference table.

# %% [markdown]
# ## Parameters
#
# Every notebook of the course starts with the same parameters cell, so one command can pass
# the same values to all five. This one uses the data folder and the dropout
# probability.

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
import inspect

import torch

import utils.model
import utils.runtime as runtime
from utils.anatomy import read_reference_summary, summary_rows, summary_text
from utils.data import load_split
from utils.model import Net
from utils.transforms import pixel_mean_std, test_transforms

# %%
config = runtime.Settings(epochs, batch_size, learning_rate, momentum, seed, max_degrees,
                          dropout, mean_std, train_subset, device, precision, data_dir, run_dir,
                          quick, resume)
print(runtime.environment_report(config.device))

# %% [markdown]
# ## The definition
#
# This is the code every notebook, test and benchmark uses. A block is a bias-free 3x3
# convolution followed by ReLU, batch norm and dropout. The convolutions have no bias because
# batch norm, right after them, adds its own shift per channel; a bias would only be undone.

# %% tags=["nbval-check-output"]
print(inspect.getsource(utils.model))

# %% [markdown]
# PyTorch lists the modules in the order they were registered:

# %% tags=["nbval-check-output"]
runtime.seed_everything(config.seed)  # the initial weights are random: seed them
model = Net(dropout=config.dropout)
print(model)

# %% [markdown]
# ## A batch through the model, stage by stage
#
# We take eight test images, normalised as in notebook 1, and apply the stages of `forward` one
# at a time, printing the shape after each: (batch, channels, height, width). A 3x3 convolution
# without padding trims one pixel from each border (28 to 26); the padded one keeps the size;
# the 1x1 convolutions change only the channels; pooling halves the size, and global average
# pooling takes it to 1x1.

# %%
test_images, test_labels = load_split(config.data_dir, "test")
mean, std = config.mean_std or pixel_mean_std(load_split(config.data_dir, "train")[0])
transform = test_transforms(mean, std)
batch = torch.stack([transform(image.numpy()) for image in test_images[:8]])

# %% tags=["nbval-check-output"]
model.eval()
with torch.no_grad():
    x = batch
    print(f"{'input':<12} {tuple(x.shape)}")
    for name in ["block1", "block2", "transition", "pool", "block3", "block4", "block5",
                 "block6", "gap", "classifier"]:
        x = getattr(model, name)(x)
        print(f"{name:<12} {tuple(x.shape)}")
    logits = x.flatten(1)
    print(f"{'flatten':<12} {tuple(logits.shape)}")
    log_probs = model(batch)
    print(f"{'log_softmax':<12} {tuple(log_probs.shape)}")
    assert torch.allclose(torch.log_softmax(logits, dim=1), log_probs)

# %% [markdown]
# The last step, log-softmax, turns the ten scores into log-probabilities: exponentiated, each
# row sums to one. Training pairs them with the negative log-likelihood loss, which together
# make the usual cross-entropy. An untrained model's guesses are close to uniform, so each
# probability is near one tenth:

# %% tags=["nbval-check-output"]
probabilities = log_probs.exp()
print("row sums:", [round(total, 4) for total in probabilities.sum(dim=1).tolist()])
print(f"largest probability of an untrained model: {probabilities.max():.2f}")

# %% [markdown]
# ## The summary table
#
# torchsummary runs a dummy batch through the model and prints, for every layer, its output
# shape and its number of parameters. We print it from a copy of the model in eval mode, so the
# model itself (its batch-norm statistics, its mode) is left exactly as it was. The memory
# estimates it also prints depend on the machine and are left out.

# %% tags=["nbval-check-output"]
print(summary_text(model))

# %% [markdown]
# ## Checked against the reference
#
# The course's reference document (`utils/model_summary.md`, a copy of the project's
# `shared/reference/model_summary.md`) gives the table this
# model must produce. We compare it row by row: layer names, output shapes and parameter counts.

# %% tags=["nbval-check-output"]
reference = read_reference_summary()
rows = summary_rows(model)
mismatches = [(ours, theirs) for ours, theirs in zip(rows, reference["rows"]) if ours != theirs]
print(f"rows: {len(rows)} here, {len(reference['rows'])} in the reference; "
      f"mismatched rows: {len(mismatches)}")
total = sum(p.numel() for p in model.parameters())
print(f"total parameters: {total:,} here, {reference['total']:,} in the reference")
assert not mismatches and len(rows) == len(reference["rows"]) and total == reference["total"]

# %% [markdown]
# Notebook 3 derives that total by hand, layer by layer.
