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
# # 5. Results
#
# This notebook trains nothing. It reads what notebook 4 wrote to the run folder, plots the
# training and test curves, reports the final and best test accuracy, and shows the test
# digits the trained model gets wrong.

# %% [markdown]
# ## Parameters
#
# Every notebook of the course starts with the same parameters cell, so one command can pass
# the same values to all five. This one uses the run folder (to read what
# notebook 4 wrote) and the data folder (for the test images).

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
import torch
from IPython.display import Markdown, display

import utils.runtime as runtime
from utils.checkpoint import load_trained_model
from utils.data import load_split
from utils.fast_batches import FastBatches
from utils.plots import plot_history, save_figure, show_digits
from utils.training import autocast_context, evaluate, read_run_results

config = runtime.Settings(epochs, batch_size, learning_rate, momentum, seed, max_degrees,
                          dropout, mean_std, train_subset, device, precision, data_dir, run_dir,
                          quick, resume)
print(runtime.environment_report(config.device))

# %% [markdown]
# ## What notebook 4 wrote
#
# The run folder holds the history of every step and epoch, a metrics summary and the final
# checkpoint. We check the history is complete: one training record per step of every epoch.

# %% tags=["nbval-check-output"]
history, metrics = read_run_results(config.run_dir)
epochs_run = len(history["test_accuracy"])
steps_per_epoch = len(history["step_train_loss"]) // epochs_run
print("history:", sorted(history))
print("one training record per step of every epoch:",
      len(history["step_train_loss"]) == epochs_run * steps_per_epoch
      == len(history["step_train_accuracy"]))
print("values are plain floats:",
      all(isinstance(v, float) for v in history["step_train_loss"] + history["test_accuracy"]))

# %% [markdown]
# ## Training and test curves
#
# Training loss and accuracy are recorded every step, test loss and accuracy after every epoch;
# both are plotted against epochs, so the curves line up. Training accuracy is measured with
# dropout on and on rotated images, so it can sit below test accuracy.

# %%
figure = plot_history(history)
save_figure(figure, config.run_dir / "metrics.png")

# %% [markdown]
# ## Final and best test accuracy

# %%
final, best = metrics["final_test_accuracy"], metrics["best_test_accuracy"]
display(Markdown(
    f"After {metrics['epochs']} epochs on {metrics['train_images']:,} training images, the model "
    f"classifies **{final:.2f}%** of the {metrics['test_images']:,} test images correctly "
    f"(best {best:.2f}%, after epoch {metrics['best_epoch']}). Training took "
    f"{metrics['wall_seconds'] / 60:.1f} minutes. The course's target of 99.4% is "
    f"{'reached' if final >= 99.4 else 'not reached'} in the final epoch."
))

# %% [markdown]
# The summary must agree with the history it was computed from:

# %% tags=["nbval-check-output"]
print("final is the last epoch's accuracy:", final == history["test_accuracy"][-1])
print("best is the highest epoch's accuracy:", best == max(history["test_accuracy"]))
print("epochs in the summary match the history:", metrics["epochs"] == epochs_run)

# %% [markdown]
# The lines below are the run's headline numbers; the README quotes them and a test checks
# that the two agree.

# %% tags=["results"]
print(f"final test accuracy: {final:.2f}%")
print(f"best test accuracy: {best:.2f}% (epoch {metrics['best_epoch']})")
print(f"epochs: {metrics['epochs']}")
print(f"training wall time: {metrics['wall_seconds']:.0f} s")

# %% [markdown]
# ## The digits it gets wrong
#
# We load the final checkpoint and run the test set through it once more. The checkpoint loads
# with `weights_only=True` on any machine, GPU-saved or not; evaluating again, in the precision
# the run was trained in (from its `parameters.json`), must reproduce the accuracy notebook 4
# recorded, because evaluation is deterministic.

# %% tags=["nbval-check-output"]
model = load_trained_model(config.run_dir / "checkpoint.pt", config.device, dropout=config.dropout)
model = model.to(memory_format=torch.channels_last)  # as in training, so results match exactly
test_images, test_labels = load_split(config.data_dir, "test")
mean, std = metrics["normalisation"]  # the statistics the model was trained with
test_batches = FastBatches(test_images, test_labels, 1000, mean, std, device=config.device,
                           channels_last=True)
run_precision = (runtime.saved_run_parameters(config.run_dir) or {}).get("precision", "fp32")
if run_precision == "bf16" and not runtime.bf16_supported(config.device):
    run_precision = "fp32"  # this machine has no bfloat16: the accuracy may differ slightly
eval_dtype = runtime.autocast_dtype(run_precision, config.device)
test_loss, test_accuracy = evaluate(model, test_batches, config.device, eval_dtype)
print(f"loaded {type(model).__name__} with {sum(p.numel() for p in model.parameters()):,} "
      f"parameters, in {'training' if model.training else 'eval'} mode")
print("re-evaluated accuracy equals the recorded final accuracy:",
      test_accuracy == metrics["final_test_accuracy"])

# %% [markdown]
# Every test image the model misclassifies, up to the first thirty, titled "true → predicted".
# Many are digits a person would hesitate over too.

# %%
with torch.no_grad(), autocast_context(config.device, eval_dtype):
    predictions = torch.cat([model(images).argmax(dim=1).cpu() for images, _ in test_batches])
wrong = (predictions != test_labels).nonzero().flatten()
print(f"{len(wrong)} of {len(test_labels):,} test images misclassified")

# %% tags=["nbval-check-output"]
print("as many mistakes as the accuracy implies:",
      len(wrong) == round(len(test_labels) * (100 - test_accuracy) / 100))
shown = wrong[:30]
figure = show_digits(test_images[shown],
                     [f"{test_labels[i]} → {predictions[i]}" for i in shown.tolist()],
                     suptitle="Misclassified test digits: true → predicted")
save_figure(figure, config.run_dir / "misclassified.png")

# %% [markdown]
# The figures are in the run folder beside the metrics: `metrics.png`, `misclassified.png`, and
# from notebook 1 `digits.png` and `augmentation.png`.
