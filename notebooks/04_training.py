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
# # 4. Training and evaluation
#
# Here the model learns. Each *epoch* is one pass over the training set in batches; each *step*
# is one optimizer update on one batch. After every epoch we evaluate on the test set. The
# notebook writes its results to the run folder: the history of every step and epoch, a
# checkpoint, the resolved parameters and a metrics summary, which notebook 5 reads.

# %% [markdown]
# ## Parameters
#
# Every notebook of the course starts with the same parameters cell, so one command can pass
# the same values to all five. This is the notebook that uses them all.

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
import json

import torch

import utils.runtime as runtime
import utils.training
from utils.data import MNISTImages, load_mnist
from utils.fast_batches import FastBatches
from utils.fast_dropout import FastDropout, use_fast_dropout
from utils.model import Net
from utils.training import WARMUP_FRACTION, fit, make_schedule
from utils.transforms import pixel_mean_std, train_transforms

config = runtime.Settings(epochs, batch_size, learning_rate, momentum, seed, max_degrees,
                          dropout, mean_std, train_subset, device, precision, data_dir, run_dir,
                          quick, resume)
print(runtime.environment_report(config.device))
print(f"precision    {config.precision}")

# %% [markdown]
# ## Seeding
#
# The initial weights, the dropout masks, the order of the batches and the random rotations
# all come from random number generators. Seeding them makes a run repeatable: on the same
# machine, the same seed gives the same numbers, bit for bit.

# %%
runtime.seed_everything(config.seed)

# %% [markdown]
# ## The data, held in memory
#
# The training set is small enough to keep in memory as unsigned bytes, one byte per pixel (the
# cell below prints its size). We normalise with the statistics of notebook 1, derived again
# here from the training pixels. A quick run uses only the first `train_subset` images.

# %%
mnist = load_mnist(config.data_dir, download=config.may_download)
train_images, train_labels = mnist["train"]
test_images, test_labels = mnist["test"]
if config.train_subset:
    train_images = train_images[:config.train_subset]
    train_labels = train_labels[:config.train_subset]
mean, std = config.mean_std or pixel_mean_std(mnist["train"][0])
print(f"training on {len(train_labels):,} images, testing on {len(test_labels):,}; "
      f"normalising with mean {mean:.4f}, std {std:.4f}")
print(f"the training images in memory: {train_images.numel() / 1e6:.1f} MB as uint8")

# %% [markdown]
# ## Batches, augmented a batch at a time
#
# Notebook 1's `train_transforms` is the standard recipe: a `DataLoader` turns each image into a
# PIL image, rotates it, converts it to a tensor and normalises it, one image at a time. On a
# laptop CPU that costs more than the training step itself. `FastBatches` does the same work on
# a whole batch with a few tensor operations: pick the batch's images, scale them to [0, 1],
# rotate each by its own random angle (one `grid_sample` call with one rotation matrix per
# image), normalise. The test batches are the same without rotation.

# %%
train_batches = FastBatches(train_images, train_labels, config.batch_size, mean, std,
                            max_degrees=config.max_degrees, shuffle=True, seed=config.seed,
                            device=config.device, channels_last=True)
test_batches = FastBatches(test_images, test_labels, 1000, mean, std, device=config.device,
                           channels_last=True)

# %% [markdown]
# Is it the same augmentation? We push the same training images (a thousand, or all of a
# smaller subset) through both paths,
# each with its own random angles, and compare the per-pixel mean and spread of what comes out.
# They agree to within sampling noise (the test suite checks this with a stated tolerance):

# %% tags=["nbval-check-output"]
torch.manual_seed(config.seed)
sample = min(1000, len(train_labels))
reference = MNISTImages(train_images[:sample], train_labels[:sample],
                        transform=train_transforms(mean, std, config.max_degrees))
reference_batch = torch.stack([reference[i][0] for i in range(sample)])
fast_batch = FastBatches(train_images[:sample], train_labels[:sample], sample, mean, std,
                         max_degrees=config.max_degrees, seed=config.seed).augment(
                             train_images[:sample].unsqueeze(1))
for name, batch in [("reference", reference_batch), ("fast", fast_batch)]:
    print(f"{name:<10} shape {tuple(batch.shape)}  mean {batch.mean():+.2f}  "
          f"std {batch.std():.2f}  per-pixel std of the mean image {batch.mean(0).std():.2f}")
runtime.seed_everything(config.seed)  # the comparison drew random numbers: start afresh

# %% [markdown]
# Two further speed-ups are standard: *channels-last* memory order (the channels of one pixel
# next to each other), which suits the CPU's convolution kernels, and *bfloat16 autocast*: the
# convolutions run in 16-bit floating point where the hardware supports it, while the weights,
# the loss and the optimizer stay in 32-bit.
#
# A third is particular to small models on a CPU. `nn.Dropout` draws one random number per
# activation, one after another, and this model has many activations and little arithmetic per
# activation, so drawing the dropout masks can take longer than the convolutions themselves.
# `use_fast_dropout` swaps each `nn.Dropout` of the model for a `FastDropout`, which is the
# same dropout (each activation dropped on its own with probability p, the survivors scaled by
# 1/(1 - p)) with its mask made from 16 random bits per activation, four activations per 64-bit
# draw. The weights, the checkpoint and the evaluation are unchanged; the one difference is
# that p is rounded to a multiple of 1/65,536. `make bench` measures what `FastDropout` gains
# on its own and what the fast path gains in all; the README quotes the figures.

# %% tags=["nbval-check-output"]
fast_dropout = FastDropout(config.dropout)
print(f"dropout p = {config.dropout}: FastDropout drops with probability "
      f"{fast_dropout.drop_levels}/65536 = {fast_dropout.drawn_p:.7f}")

# %% [markdown]
# ## Model, optimizer, schedule
#
# Stochastic gradient descent with momentum: each step moves the weights against the gradient
# of the batch's loss, plus a fraction `momentum` of the previous step. The learning rate
# follows a *one-cycle* schedule: it rises from a small value to `learning_rate` during a
# warm-up (its share of all steps is printed below) and then falls smoothly to almost zero,
# which lets a short run use a large learning rate without diverging.

# %% tags=["nbval-check-output"]
model = use_fast_dropout(Net(dropout=config.dropout))
model = model.to(config.device, memory_format=torch.channels_last)
optimizer = torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=config.momentum)
scheduler = make_schedule(optimizer, config.learning_rate, config.epochs, len(train_batches))
print(f"{sum(p.numel() for p in model.parameters()):,} parameters to train; dropout layers: "
      f"{sorted({type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.Dropout)})}")
print(f"SGD, momentum {optimizer.param_groups[0]['momentum']}, peak learning rate "
      f"{scheduler.optimizer.param_groups[0]['max_lr']}, starting at "
      f"{optimizer.param_groups[0]['lr']:.4f}, warm-up {WARMUP_FRACTION:.0%} of the steps")

# %% [markdown]
# ## The training and test functions
#
# One training epoch, in paragraphs: forward pass, loss, backward pass, optimizer step, then
# recording the batch's loss and accuracy as plain floats. The test function runs the model in
# eval mode (dropout off, batch norm on its running statistics) without gradients, and averages
# the loss per image over all test images.

# %% tags=["nbval-check-output"]
print(inspect.getsource(utils.training.train_one_epoch))
print(inspect.getsource(utils.training.evaluate))

# %% [markdown]
# `fit` runs the epochs: train, evaluate, log one line, write a checkpoint. The checkpoint
# (model, optimizer, schedule, history and random state) is replaced after every epoch, by
# writing a new file and renaming it, so a crash never leaves a half-written one.
#
# With the parameter `resume = True`, an interrupted run continues where it stopped: `fit`
# restores the last checkpoint in the run folder and trains the remaining epochs, ending with
# the numbers the uninterrupted run would have given. The run's parameters are written first,
# so that a resume with other values is refused (by the settings cell, before any data is read).

# %%
(config.run_dir / "parameters.json").write_text(json.dumps(config.as_dict(), indent=2) + "\n")
history, epoch_seconds = fit(model, train_batches, test_batches, optimizer, scheduler,
                             config.epochs, config.device, config.autocast_dtype,
                             checkpoint_path=config.checkpoint_path, resume=config.resume)
wall_seconds = sum(epoch_seconds)  # training and testing, every epoch, resumed ones included

# %% [markdown]
# ## Results, written to the run folder
#
# The history (every step and epoch) is deterministic for a seed; the metrics summary adds the
# timings, which are not, and the parameters are already there.

# %%
best_epoch = max(range(config.epochs), key=lambda e: history["test_accuracy"][e]) + 1
metrics = {
    "final_test_accuracy": history["test_accuracy"][-1],
    "best_test_accuracy": history["test_accuracy"][best_epoch - 1],
    "best_epoch": best_epoch,
    "final_test_loss": history["test_loss"][-1],
    "epochs": config.epochs,
    "train_images": len(train_labels),
    "test_images": len(test_labels),
    "parameters": sum(p.numel() for p in model.parameters()),
    "normalisation": [mean, std],
    "wall_seconds": round(wall_seconds, 1),
    "epoch_seconds": [round(s, 1) for s in epoch_seconds],
    "test_accuracy": history["test_accuracy"],
    "test_loss": history["test_loss"],
    "train_accuracy": history["epoch_train_accuracy"],
    "train_loss": history["epoch_train_loss"],
    "learning_rate": history["learning_rate"],
}
(config.run_dir / "history.json").write_text(json.dumps(history) + "\n")
(config.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
print(f"final test accuracy {metrics['final_test_accuracy']:.2f}%, best "
      f"{metrics['best_test_accuracy']:.2f}% (epoch {best_epoch}), "
      f"{config.epochs} epochs in {wall_seconds / 60:.1f} min")

# %% [markdown]
# What the checkpoint holds: only tensors and plain Python types, so it loads with
# `torch.load(..., weights_only=True)`, which refuses to run code hidden in a file.

# %% tags=["nbval-check-output"]
saved = torch.load(config.checkpoint_path, map_location="cpu", weights_only=True)
print(sorted(saved))
print(f"model tensors: {len(saved['model'])}; "
      f"written after the last epoch: {saved['epoch'] == config.epochs}")

# %% [markdown]
# Notebook 5 plots these results.
