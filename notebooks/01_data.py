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
# # 1. The data and its transforms
#
# MNIST holds grey 28x28 images of handwritten digits: a training set to learn from and a test
# set to measure on. This notebook loads both, looks at them, derives the normalisation
# statistics from the training pixels, and defines the transforms that training and testing
# apply to every image.

# %% [markdown]
# ## Parameters
#
# Every notebook of the course starts with the same parameters cell, so one command can pass
# the same values to all five. This one uses the data folder, the run folder, the seed and the
# rotation range; the rest matter in notebook 4.

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

# %% [markdown]
# The next cell checks the parameters and derives what follows from them: the device, the data
# folder and the run folder. A parameter outside its allowed range stops the notebook here,
# before any data is read. The report below it says what this notebook runs on.

# %%
import torch

import utils.runtime as runtime
from utils.data import MNISTImages, load_mnist
from utils.plots import save_figure, show_digits
from utils.transforms import pixel_mean_std, test_transforms, train_transforms

config = runtime.Settings(epochs, batch_size, learning_rate, momentum, seed, max_degrees,
                          dropout, mean_std, train_subset, device, precision, data_dir, run_dir,
                          quick, resume)
print(runtime.environment_report(config.device))

# %% [markdown]
# ## Loading the images
#
# `load_mnist` finds the four IDX files in the data folder (compressed or not), checks each one
# (header, sizes, checksum against the canonical release) and returns the pixels as unsigned
# bytes and the labels as integers. torchvision's own `datasets.MNIST` would download and parse
# the same files; checking them first means a damaged or misplaced file gets a message that
# names it, instead of a strange error later.

# %%
mnist = load_mnist(config.data_dir, download=config.may_download)
train_images, train_labels = mnist["train"]
test_images, test_labels = mnist["test"]

# %% tags=["nbval-check-output"]
for split, (images, labels) in mnist.items():
    print(f"{split:<5} images {tuple(images.shape)} {images.dtype}, "
          f"labels {tuple(labels.shape)} {labels.dtype}, "
          f"pixel range {images.min()}..{images.max()}")

# %% [markdown]
# ## What the digits look like
#
# The first twenty training images, each titled with its label.

# %%
figure = show_digits(train_images[:20], [str(int(label)) for label in train_labels[:20]],
                     suptitle="The first 20 training images and their labels")
save_figure(figure, config.run_dir / "digits.png")

# %% tags=["nbval-check-output"]
print("first ten training labels:", train_labels[:10].tolist())

# %% [markdown]
# ## How many of each digit
#
# A classifier trained on a very unbalanced set can score well by favouring the common classes.
# Counting the labels shows whether that is a worry here.

# %% tags=["nbval-check-output"]
train_counts = torch.bincount(train_labels, minlength=10)
test_counts = torch.bincount(test_labels, minlength=10)
print("digit  train   test")
for digit in range(10):
    print(f"{digit:>5}  {train_counts[digit]:>5}  {test_counts[digit]:>5}")
print(f"total  {train_counts.sum():>5}  {test_counts.sum():>5}")
print(f"rarest/commonest training digit: {train_counts.min() / train_counts.max():.2f}")

# %% [markdown]
# The last line compares the rarest digit with the commonest: the classes are close enough in
# size that plain accuracy is a fair summary of the classifier.
#
# ## Normalisation statistics
#
# Networks train more easily when their inputs have mean 0 and standard deviation 1. We scale
# the pixels to [0, 1] and compute the mean and standard deviation over every pixel of every
# training image. Only the training set is used: the test set stands for images not seen yet.

# %% tags=["nbval-check-output"]
pixels = train_images.float().div_(255)  # scaled in place: one float copy of every pixel
mean, std = pixels.mean().item(), pixels.std().item()
del pixels
print(f"training pixels: mean {mean:.4f}, standard deviation {std:.4f}")

# %% [markdown]
# These are the two numbers the MNIST examples of most libraries type in by hand; here they
# come from the data. The other notebooks call `pixel_mean_std`, which gets the same numbers
# exactly, without a float copy of the images, from how often each of the 256 grey levels
# occurs:

# %% tags=["nbval-check-output"]
exact_mean, exact_std = pixel_mean_std(train_images)
print(f"from the grey-level histogram: mean {exact_mean:.4f}, standard deviation {exact_std:.4f}")
assert abs(exact_mean - mean) < 1e-5 and abs(exact_std - std) < 1e-5

# %% [markdown]
# From here on we use the exact values. The `mean_std` parameter overrides them, for instance
# to train on another data set with the statistics of this one.

# %%
mean, std = config.mean_std or (exact_mean, exact_std)

# %% [markdown]
# ## The transforms
#
# A transform turns one stored image into what the model sees. For training we add
# augmentation: each time an image is used it is rotated by a random angle of up to
# `max_degrees` either way, so the model learns that a slightly tilted digit is still the same
# digit. The test transform has no augmentation: we measure on the images as they are. Both
# end with the same normalisation. Their definitions, used by every notebook:

# %% tags=["nbval-check-output"]
import inspect

import utils.transforms

print(inspect.getsource(utils.transforms.train_transforms))
print(inspect.getsource(utils.transforms.test_transforms))

# %%
train_transform = train_transforms(mean, std, config.max_degrees)
test_transform = test_transforms(mean, std)
train_set = MNISTImages(train_images, train_labels, transform=train_transform)
test_set = MNISTImages(test_images, test_labels, transform=test_transform)

# %% [markdown]
# After the test transform the training pixels should have mean 0 and standard deviation 1.
# We check it on the first thousand training images (a sample, so close to, not exactly, 0
# and 1):

# %% tags=["nbval-check-output"]
sample = torch.stack([test_transform(MNISTImages(train_images, train_labels)[i][0])
                      for i in range(1000)])
print(f"tensor shape per image {tuple(sample.shape[1:])}, dtype {sample.dtype}")
print(f"after normalisation: mean {sample.mean():.2f}, standard deviation {sample.std():.2f}")

# %% [markdown]
# ## Before and after augmentation
#
# The same ten digits, first as stored, then as the training transform delivers them (undoing
# the normalisation for display). The rotations are small: the digits stay readable.

# %%
torch.manual_seed(config.seed)
originals = [train_images[i] for i in range(10)]
augmented = [train_set[i][0][0] * std + mean for i in range(10)]
figure = show_digits(originals + augmented, ["stored"] * 10 + ["augmented"] * 10,
                     suptitle=f"Training augmentation: rotations of up to ±{config.max_degrees}°")
save_figure(figure, config.run_dir / "augmentation.png")

# %% [markdown]
# Next, notebook 2 defines the model these images are fed to.
