"""The main job: execute the five notebooks in order with papermill into one new run folder.

    python -m utils.course run [--data-dir DIR] [--quick]    # what `make run` does
    python -m utils.course store RUN_DIR                      # keep a run's outputs in notebooks/
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import nbformat

from utils import REPO_ROOT, cpu_name
from utils.pairs import pair_problems, twin_text

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = ["01_data.ipynb", "02_model.ipynb", "03_parameters.ipynb", "04_training.ipynb",
             "05_results.ipynb"]
KERNEL_NAME = "python3"


def new_run_dir(runs_dir):
    """A fresh folder named by the start time; never an existing one."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for suffix in [""] + [f"-{n}" for n in range(2, 100)]:
        candidate = Path(runs_dir) / (stamp + suffix)
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run folder in {runs_dir}")


class DataNotReady(RuntimeError):
    """The data check before the run failed; its message says what is wrong and how to fix it."""


def prepare_data(data_dir):
    """Check (or, in the default folder, download) MNIST, in a child process; returns the folder.

    The check imports torch; doing it in a child keeps this driver small, so the job's memory is
    the kernel's. It runs before any run folder exists, so a failure leaves nothing behind.
    """
    code = ("import sys\n"
            "from utils.data import MNISTDataError, load_mnist\n"
            "from utils.runtime import ParameterError, quick_mode_requested, resolve_data_dir\n"
            "folder, may_download = resolve_data_dir(sys.argv[1])\n"
            "try:\n"
            "    quick_mode_requested()  # a bad MNIST_QUICK stops here, before any run folder\n"
            "    load_mnist(folder, download=may_download)  # downloads only what is missing\n"
            "except (MNISTDataError, ParameterError) as error:\n"
            "    sys.exit(str(error))\n"
            "print(folder)\n")
    result = subprocess.run([sys.executable, "-c", code, str(data_dir)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise DataNotReady(result.stderr.strip())
    return Path(result.stdout.strip().splitlines()[-1])


def peak_memory_mb():
    """Resident-memory peak of the job: this driver's own plus the largest child's.

    The children (the data check, then one notebook kernel at a time) run one after another, so
    this bounds what the job ever held at once.
    """
    kilobytes = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                 + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return kilobytes / 1024


def execute_notebooks(run_dir, data_dir, quick=False, extra_parameters=None):
    """Run each notebook with papermill, from the notebooks folder; returns seconds per notebook."""
    import papermill

    parameters = {"data_dir": str(data_dir), "run_dir": str(run_dir), "quick": quick}
    parameters.update(extra_parameters or {})
    seconds = {}
    for name in NOTEBOOKS:
        started = time.perf_counter()
        print(f"running {name} ...", flush=True)
        papermill.execute_notebook(
            NOTEBOOKS_DIR / name, run_dir / name, parameters=parameters,
            cwd=NOTEBOOKS_DIR, kernel_name=KERNEL_NAME, progress_bar=False,
        )
        seconds[name] = round(time.perf_counter() - started, 1)
        print(f"  done in {seconds[name]} s", flush=True)
    return seconds


def run(data_dir="", runs_dir=REPO_ROOT / "runs", quick=False, extra_parameters=None):
    """The main job; returns the run folder. Prints the folder's path as its last line."""
    started = time.perf_counter()
    folder = prepare_data(data_dir)
    # absolute: the notebooks run in notebooks/, where a relative folder would be another one
    run_dir = new_run_dir(Path(runs_dir).resolve())
    print(f"run folder: {run_dir}", flush=True)
    seconds = execute_notebooks(run_dir, folder, quick, extra_parameters)
    job = {
        "wall_seconds": round(time.perf_counter() - started, 1),
        "peak_memory_mb": round(peak_memory_mb(), 1),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "notebook_seconds": seconds,
        # as the notebooks resolved it: MNIST_QUICK in the environment also turns it on
        "quick": json.loads((run_dir / "parameters.json").read_text())["quick"],
    }
    (run_dir / "job.json").write_text(json.dumps(job, indent=2) + "\n")
    print(f"main job: {job['wall_seconds']} s, peak resident memory {job['peak_memory_mb']} MB")
    return run_dir


def strip_run_metadata(notebook):
    """Drop papermill's injected-parameters cell and its per-run metadata, keeping outputs."""
    notebook.cells = [cell for cell in notebook.cells
                      if "injected-parameters" not in cell.metadata.get("tags", [])]
    notebook.metadata.pop("papermill", None)
    for cell in notebook.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if not cell.metadata.get("tags", True):  # papermill gives every cell an empty list
            cell.metadata.pop("tags")
    return notebook


class NotStorable(RuntimeError):
    """The folder is not a complete full run; the message says what is missing or wrong."""


def executed_notebooks(run_dir):
    """The five executed notebooks of a complete, full run, read into memory and stripped of
    papermill's run metadata; else NotStorable.

    Every check runs before anything is written, so a refused store changes no notebook.
    """
    run_dir = Path(run_dir)
    missing = [name for name in NOTEBOOKS + ["parameters.json"] if not (run_dir / name).is_file()]
    if missing:
        raise NotStorable(f"{run_dir} lacks {', '.join(missing)}: store only a folder that "
                          "`make run` completed")
    parameters = json.loads((run_dir / "parameters.json").read_text())
    if parameters.get("quick") or parameters.get("train_subset"):
        raise NotStorable(f"{run_dir} is a quick or subset run (quick={parameters.get('quick')}, "
                          f"train_subset={parameters.get('train_subset')}); the stored outputs "
                          "must come from a full run")
    notebooks = {name: nbformat.read(run_dir / name, as_version=4) for name in NOTEBOOKS}
    for name, notebook in notebooks.items():
        for cell in notebook.cells:
            if cell.cell_type == "code" and (cell.execution_count is None or any(
                    output.output_type == "error" for output in cell.outputs)):
                raise NotStorable(f"{run_dir / name}: a cell did not run or failed")
    # store brings outputs only: the text must be the current notebooks', on both sides
    problems = pair_problems(NOTEBOOKS_DIR)
    if problems:
        raise NotStorable("the notebook pairs disagree (" + "; ".join(problems) + "); run "
                          "`make sync` and commit, so that storing cannot overwrite an edit")
    for name, notebook in notebooks.items():
        twin = (NOTEBOOKS_DIR / name).with_suffix(".py")
        if twin_text(strip_run_metadata(notebook), NOTEBOOKS_DIR) != twin.read_text():
            raise NotStorable(f"{run_dir / name} was run from other text than notebooks/{name}: "
                              "`make run` again with the current notebooks, then store that run")
    return notebooks


def store(run_dir):
    """Copy a run's executed notebooks over notebooks/*.ipynb, so readers see real outputs."""
    for name, notebook in executed_notebooks(run_dir).items():
        nbformat.write(notebook, NOTEBOOKS_DIR / name)
        print(f"stored {name}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="execute all notebooks into a new run folder")
    run_parser.add_argument("--data-dir", default="", help="folder holding the four MNIST files")
    run_parser.add_argument("--runs-dir", default=str(REPO_ROOT / "runs"))
    run_parser.add_argument("--quick", action="store_true", help="a smoke run in seconds")
    store_parser = commands.add_parser("store", help="keep a run's outputs in notebooks/")
    store_parser.add_argument("run_dir")
    args = parser.parse_args(argv)
    if args.command == "store":
        try:
            store(args.run_dir)
        except NotStorable as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0
    try:
        run_dir = run(args.data_dir, args.runs_dir, args.quick)
    except DataNotReady as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
