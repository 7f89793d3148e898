"""Training throughput of the plain input pipeline against the notebooks' fast one.

    python -m utils.benchmark [--data-dir D] [--images N] [--repeats R] [--full]

Both train the same Net with the same batch size, optimizer and augmentation, in one process,
for the same number of images after a warm-up that is not timed:

- plain: MNISTImages + the reference torchvision transforms, one PIL image at a time, through a
  DataLoader with 2 worker processes (a typical recipe), fp32, contiguous memory;
- fast: FastBatches (a batch at a time, in memory), channels-last memory, bfloat16 autocast
  where the CPU runs it natively, else fp32, and FastDropout: notebook 4's path;
- fast, nn.Dropout: the same with torch's own dropout, to show what FastDropout adds.

The paths alternate (plain, fast, fast with nn.Dropout, plain, ...) and their medians are
compared, so that a burst of load from other work on a shared machine hits all of them. The
last line printed is the speedup of fast over plain.
"""

import argparse
import itertools
import math
import os
import resource
import statistics
import time

import torch
from torch.utils.data import DataLoader

from utils import runtime, training
from utils.data import MNISTImages, load_mnist
from utils.fast_batches import FastBatches
from utils.fast_dropout import use_fast_dropout
from utils.model import Net
from utils.transforms import pixel_mean_std, train_transforms

BATCH_SIZE = 128
TEST_BATCH_SIZE = 1000
LEARNING_RATE, MOMENTUM = 0.05, 0.9  # constant while measuring: the schedule costs no time
FULL_RUN_PEAK_LEARNING_RATE = 0.1  # notebook 4's, with its one-cycle schedule
LOADER_WORKERS = 2
TARGET_ACCURACY = 99.4  # percent on the test set, for --full
DEVICE = torch.device("cpu")


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(prog="python -m utils.benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="",
                        help="folder with the four MNIST files (default: MNIST_DATA_DIR, else "
                             "data/mnist in the repository)")
    parser.add_argument("--images", type=int, default=12_800,
                        help="training images timed per measurement (default: %(default)s)")
    parser.add_argument("--warmup-images", type=int, default=1_280,
                        help="training images before each timing, not timed (default: "
                             "%(default)s)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="measurements of each path, alternating (default: %(default)s)")
    parser.add_argument("--max-degrees", type=float, default=7.0,
                        help="random rotation range of the augmentation (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for training (default: torch's own choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true",
                        help="also list the operations that take the fast path's time")
    parser.add_argument("--full", action="store_true",
                        help="then train with the fast path until --epochs, reporting when the "
                             f"test accuracy first reaches {TARGET_ACCURACY}%%")
    parser.add_argument("--epochs", type=int, default=15, help="for --full (default: %(default)s)")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------
# the two input pipelines


def plain_batches(train, max_degrees, seed):
    """The reference recipe: torchvision transforms per PIL image, in DataLoader workers."""
    mean, std = pixel_mean_std(train[0])
    dataset = MNISTImages(*train, transform=train_transforms(mean, std, max_degrees))
    return DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=LOADER_WORKERS,
                      generator=torch.Generator().manual_seed(seed))


def fast_batches(train, max_degrees, seed):
    """The notebooks' recipe: the same augmentation on whole batches of in-memory tensors."""
    mean, std = pixel_mean_std(train[0])
    return FastBatches(*train, BATCH_SIZE, mean, std, max_degrees=max_degrees, shuffle=True,
                       seed=seed, device=DEVICE, channels_last=True)


def endless(batches):
    """Pass after pass over `batches`, so that a measurement may run past one epoch."""
    while True:
        yield from batches


class NextBatches:
    """The next `count` batches of a running stream, as one pass for train_one_epoch.

    Several of these share one stream, so DataLoader workers started during the warm-up keep
    running into the timed part, as they would through one epoch. It counts the images it passes.
    """

    def __init__(self, stream, count):
        self.stream, self.count = stream, count
        self.images_seen = 0

    def __len__(self):
        return self.count

    def __iter__(self):
        for images, labels in itertools.islice(self.stream, self.count):
            self.images_seen += len(labels)
            yield images, labels


# --------------------------------------------------------------------------------------------
# measuring


def new_model_and_optimizer(seed, fast, fast_dropout=True):
    """Net and SGD; with `fast`, as notebook 4 trains it: channels-last, FastDropout."""
    torch.manual_seed(seed)
    model = Net().to(DEVICE)
    if fast:
        model = model.to(memory_format=torch.channels_last)
    if fast and fast_dropout:
        model = use_fast_dropout(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    return model, optimizer


def training_throughput(batches, fast, autocast_dtype, images, warmup_images, seed,
                        fast_dropout=True):
    """Images per second of train_one_epoch over `images` images, after an untimed warm-up."""
    model, optimizer = new_model_and_optimizer(seed, fast, fast_dropout)
    stream = endless(batches)

    def train(count):
        steps = NextBatches(stream, math.ceil(count / BATCH_SIZE))
        training.train_one_epoch(model, steps, optimizer, device=DEVICE,
                                 autocast_dtype=autocast_dtype, progress=False)
        return steps.images_seen

    train(warmup_images)
    started = time.perf_counter()
    seen = train(images)
    seconds = time.perf_counter() - started
    stream.close()  # lets the DataLoader shut its workers down before the next measurement
    return seen / seconds


def input_only_throughput(batches, images):
    """Images per second of making batches alone, without training on them."""
    stream = endless(batches)
    next(stream)  # start-up (DataLoader workers) is not timed
    started = time.perf_counter()
    seen = sum(len(labels) for _, labels in NextBatches(stream, math.ceil(images / BATCH_SIZE)))
    seconds = time.perf_counter() - started
    stream.close()
    return seen / seconds


def fast_path_profile(train, args, autocast_dtype, steps=10):
    """Lines naming the operations that take the fast path's time, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile  # only --profile needs it

    model, optimizer = new_model_and_optimizer(args.seed, fast=True)
    stream = endless(fast_batches(train, args.max_degrees, args.seed))

    def train(count):
        training.train_one_epoch(model, NextBatches(stream, count), optimizer, device=DEVICE,
                                 autocast_dtype=autocast_dtype, progress=False)

    train(2)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        train(steps)
    stream.close()
    events = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(event.self_cpu_time_total for event in events)
    lines = [f"where the fast path's time goes ({steps} steps, torch.profiler, self time; "
             f"{total / 1000 / steps:.1f} ms/step in all):"]
    for event in events[:10]:
        lines.append(f"  {event.key:<40} {event.self_cpu_time_total / 1000 / steps:7.2f} ms/step "
                     f"{100 * event.self_cpu_time_total / total:5.1f}%")
    return lines


def alternate_measurements(train, args, autocast_dtype):
    """Throughput of plain, fast, and fast with nn.Dropout, in turn, `args.repeats` times each.

    The third path is the fast one with torch's own dropout: the gap to "fast" is what
    FastDropout gains, the gap to "plain" what the batches, channels-last and bfloat16 gain.
    """
    rates = {"plain": [], "fast": [], "fast, nn.Dropout": []}
    for repeat in range(1, args.repeats + 1):
        common = (args.images, args.warmup_images, args.seed)
        plain = plain_batches(train, args.max_degrees, args.seed + repeat)
        rates["plain"].append(training_throughput(plain, False, None, *common))
        fast = fast_batches(train, args.max_degrees, args.seed + repeat)
        rates["fast"].append(training_throughput(fast, True, autocast_dtype, *common))
        fast = fast_batches(train, args.max_degrees, args.seed + repeat)
        rates["fast, nn.Dropout"].append(training_throughput(fast, True, autocast_dtype, *common,
                                                             fast_dropout=False))
        print(f"  round {repeat}/{args.repeats}:  " + "  ".join(
            f"{path} {values[-1]:5.0f} img/s" for path, values in rates.items()), flush=True)
    return rates


def load_average():
    """The machine's load over the last minute: other work running beside the benchmark."""
    return f"load average {os.getloadavg()[0]:.1f} (1 min)"


def peak_memory_lines():
    """Peak resident memory so far: this process (all paths together) and its largest child."""
    # ru_maxrss is in KiB on Linux
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return [f"peak resident memory, whole process (all paths together): {own:.0f} MiB",
            f"peak resident memory, largest DataLoader worker: {child:.0f} MiB"]


# --------------------------------------------------------------------------------------------
# a full training run with the fast path


def schedule_for(optimizer, epochs, steps_per_epoch):
    """The notebooks' one-cycle schedule, peaking at their learning rate."""
    return training.make_schedule(optimizer, FULL_RUN_PEAK_LEARNING_RATE, epochs, steps_per_epoch)


def full_training_run(data, args, autocast_dtype):
    """Train to the end with the fast path; return when the test accuracy reached the target."""
    train_batches = fast_batches(data["train"], args.max_degrees, args.seed)
    mean, std = pixel_mean_std(data["train"][0])  # normalised with the training statistics
    test_batches = FastBatches(*data["test"], TEST_BATCH_SIZE, mean, std, device=DEVICE,
                               channels_last=True)
    model, optimizer = new_model_and_optimizer(args.seed, fast=True)
    scheduler = schedule_for(optimizer, args.epochs, len(train_batches))
    history, epoch_seconds = training.fit(model, train_batches, test_batches, optimizer,
                                          scheduler, args.epochs, DEVICE, autocast_dtype,
                                          progress=False, log=lambda line: print("  " + line))
    accuracies = history["test_accuracy"]
    reached = next((i for i, acc in enumerate(accuracies) if acc >= TARGET_ACCURACY), None)
    if reached is None:
        return (f"full run: test accuracy never reached {TARGET_ACCURACY}% in {args.epochs} "
                f"epochs (best {max(accuracies):.2f}%, {sum(epoch_seconds):.0f} s in all)")
    return (f"full run: test accuracy first reached {TARGET_ACCURACY}% at epoch {reached + 1} "
            f"({accuracies[reached]:.2f}%) after {sum(epoch_seconds[:reached + 1]):.0f} s "
            f"(training and testing); {sum(epoch_seconds):.0f} s for all {args.epochs} epochs")


# --------------------------------------------------------------------------------------------
# the report


def main(argv=None):
    args = parse_arguments(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir, download = runtime.resolve_data_dir(args.data_dir)
    data = load_mnist(data_dir, download=download)
    autocast_dtype = runtime.autocast_dtype("auto", DEVICE)
    precision = "bf16 autocast" if autocast_dtype is torch.bfloat16 else "fp32 (no native bf16)"

    print(f"MNIST from {data_dir}; Net, batch {BATCH_SIZE}, SGD lr {LEARNING_RATE} momentum "
          f"{MOMENTUM}, random rotation up to {args.max_degrees} degrees")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads for training, "
          f"{os.cpu_count()} CPUs, {load_average()}")
    print(f"plain: MNISTImages + torchvision transforms, DataLoader with {LOADER_WORKERS} "
          "workers, fp32, contiguous")
    print(f"fast:  FastBatches, channels-last, {precision}, FastDropout (notebook 4's path)")
    print(f"each measurement: {args.warmup_images} images warm-up (not timed), then "
          f"{args.images} images timed; {args.repeats} rounds, alternating", flush=True)

    rates = alternate_measurements(data["train"], args, autocast_dtype)
    medians = {path: statistics.median(values) for path, values in rates.items()}
    plain, fast = medians["plain"], medians["fast"]

    inputs_plain = input_only_throughput(plain_batches(data["train"], args.max_degrees, 0),
                                         args.images)
    inputs_fast = input_only_throughput(fast_batches(data["train"], args.max_degrees, 0),
                                        args.images)
    print(f"making batches alone (no training): plain {inputs_plain:.0f} img/s, "
          f"fast {inputs_fast:.0f} img/s "
          f"({1000 * BATCH_SIZE / inputs_fast:.1f} ms per fast batch)")
    for line in peak_memory_lines():
        print(line)
    if args.profile:
        print("\n".join(fast_path_profile(data["train"], args, autocast_dtype)))

    if args.full:
        print(f"full run, fast path, {args.epochs} epochs, one-cycle schedule peaking at "
              f"lr {FULL_RUN_PEAK_LEARNING_RATE}:", flush=True)
        print(full_training_run(data, args, autocast_dtype))

    print(f"after the measurements: {load_average()}")
    print(f"training throughput, median of {args.repeats}: " + ", ".join(
        f"{path} {rate:.0f} img/s" for path, rate in medians.items()))
    print(f"FastDropout alone: {fast / medians['fast, nn.Dropout']:.2f}x over nn.Dropout on "
          "the fast path")
    print(f"speedup: {fast / plain:.2f}x (fast {fast:.0f} img/s / plain {plain:.0f} img/s)")


if __name__ == "__main__":
    main()
