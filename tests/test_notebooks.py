"""The notebooks as a course: their pairs, their shared parameters, and real headless runs.

The quick runs execute every cell of every notebook with papermill (a smoke run: 2 epochs on
2,000 training images, the full test set), once started from the repository root and once from
another folder, with the same seed; they must agree bit for bit.
"""

import json
import shutil
import subprocess
import sys

import nbformat
import papermill
import pytest
import torch

from utils import REPO_ROOT, course
from utils.pairs import pair_problems, twin_text

NOTEBOOKS = [REPO_ROOT / "notebooks" / name for name in course.NOTEBOOKS]
TIMING_KEYS = {"wall_seconds", "epoch_seconds"}
FIGURES = ["digits.png", "augmentation.png", "metrics.png", "misclassified.png"]


def code_cells(path):
    return [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]


def test_every_notebook_is_listed_and_paired():
    on_disk = sorted(path.name for path in (REPO_ROOT / "notebooks").glob("*.ipynb"))
    assert on_disk == course.NOTEBOOKS
    assert pair_problems(REPO_ROOT / "notebooks") == []


def test_a_desynchronised_pair_is_caught(tmp_path):
    copy = tmp_path / "notebooks"
    shutil.copytree(REPO_ROOT / "notebooks", copy)
    twin = copy / "02_model.py"
    twin.write_text(twin.read_text().replace("model = Net(", "model  =  Net(", 1))
    problems = pair_problems(copy)
    assert len(problems) == 1 and "02_model" in problems[0]


def test_a_missing_twin_is_caught(tmp_path):
    copy = tmp_path / "notebooks"
    shutil.copytree(REPO_ROOT / "notebooks", copy)
    (copy / "05_results.py").unlink()
    assert any("05_results.ipynb: no .py twin" in problem for problem in pair_problems(copy))


def test_every_notebook_starts_with_the_same_parameters_cell():
    first_cells = [code_cells(path)[0] for path in NOTEBOOKS]
    assert all("parameters" in cell.metadata.get("tags", []) for cell in first_cells)
    assert len({cell.source for cell in first_cells}) == 1
    names = {line.split("=")[0].strip() for line in first_cells[0].source.splitlines()}
    assert {"epochs", "batch_size", "learning_rate", "momentum", "seed", "data_dir", "run_dir",
            "train_subset", "quick"} <= names


def test_every_notebook_stores_its_kernelspec():
    for path in NOTEBOOKS:
        assert nbformat.read(path, as_version=4).metadata["kernelspec"]["name"] == "python3"


def test_stored_outputs_name_no_folder_of_the_machine_that_ran_them():
    """A reader's copy shows results, not where the run folder happened to be."""
    for path in NOTEBOOKS:
        for cell in code_cells(path):
            text = json.dumps(cell.outputs)
            for folder in (str(REPO_ROOT), "/tmp/", "runs/", "PosixPath("):
                assert folder not in text, f"{path.name}: an output shows {folder!r}"


def test_every_notebook_compares_at_least_three_cells():
    for path in NOTEBOOKS:
        checked = [cell for cell in code_cells(path)
                   if "nbval-check-output" in cell.metadata.get("tags", [])]
        assert len(checked) >= 3, f"{path.name} compares only {len(checked)} cells"


def folders_in(path):
    return sorted(entry for entry in path.iterdir() if entry.is_dir())


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory, mnist_dir):
    """Two quick main jobs, same seed: one in-process, one as a command started in another
    folder with a relative --runs-dir. Returns both run folders and the command's last line."""
    notebooks_before = folders_in(REPO_ROOT / "notebooks")
    here = course.run(data_dir=mnist_dir, runs_dir=tmp_path_factory.mktemp("from-root"),
                      quick=True)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    result = subprocess.run(
        [sys.executable, "-m", "utils.course", "run", "--quick", "--data-dir", str(mnist_dir),
         "--runs-dir", "runs"],
        cwd=elsewhere, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert folders_in(REPO_ROOT / "notebooks") == notebooks_before  # nothing written there
    (run_from_elsewhere,) = folders_in(elsewhere / "runs")
    return here, run_from_elsewhere, result.stdout.strip().splitlines()[-1]


def test_the_main_job_prints_its_run_folder_last(quick_runs):
    _, elsewhere, printed_last = quick_runs
    assert printed_last == str(elsewhere) and elsewhere.is_absolute()


def test_a_quick_run_writes_notebooks_metrics_figures_checkpoint(quick_runs):
    run_dir = quick_runs[0]
    for name in course.NOTEBOOKS + FIGURES + ["history.json", "parameters.json", "job.json"]:
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == len(metrics["test_accuracy"]) == 2
    assert metrics["final_test_accuracy"] == metrics["test_accuracy"][-1]
    assert metrics["best_test_accuracy"] == max(metrics["test_accuracy"])
    assert metrics["wall_seconds"] > 0 and metrics["parameters"] == 13808
    checkpoint = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 2
    job = json.loads((run_dir / "job.json").read_text())
    assert set(job["notebook_seconds"]) == set(course.NOTEBOOKS) and job["quick"] is True
    assert job["peak_memory_mb"] > 0 and job["cpu"] and job["cpu_count"] >= 1


def test_the_job_driver_does_not_load_torch():
    """The job's peak memory is the driver's plus the largest child's; torch lives in the child."""
    result = subprocess.run([sys.executable, "-c", "import sys, utils.course; "
                             "print(sorted({'torch', 'torchvision'} & set(sys.modules)))"],
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_executed_notebooks_keep_no_error_and_every_cell_ran(quick_runs):
    for run_dir in quick_runs[:2]:
        for name in course.NOTEBOOKS:
            for cell in code_cells(run_dir / name):
                assert cell.execution_count is not None, f"{name}: a cell did not run"
                assert all(out.output_type != "error" for out in cell.outputs), name


def test_a_stored_run_pairs_with_the_committed_twins_unchanged(quick_runs):
    """What `make store` writes differs from the committed notebooks in outputs only."""
    for name in course.NOTEBOOKS:
        stored = course.strip_run_metadata(nbformat.read(quick_runs[0] / name, as_version=4))
        twin = (REPO_ROOT / "notebooks" / name).with_suffix(".py")
        assert twin_text(stored, twin.parent) == twin.read_text(), name


def test_a_relative_runs_dir_keeps_the_whole_run_in_one_folder(quick_runs):
    run_dir = quick_runs[1]
    for name in course.NOTEBOOKS + FIGURES + ["history.json", "metrics.json", "checkpoint.pt",
                                              "parameters.json", "job.json"]:
        assert (run_dir / name).is_file(), name


def test_store_refuses_a_quick_run_and_an_incomplete_one_and_writes_nothing(quick_runs,
                                                                            tmp_path):
    stored_before = {path: path.read_bytes() for path in NOTEBOOKS}
    with pytest.raises(course.NotStorable, match="quick or subset run"):
        course.store(quick_runs[0])
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in course.NOTEBOOKS[:3]:
        shutil.copy(quick_runs[0] / name, partial / name)
    with pytest.raises(course.NotStorable, match="lacks 04_training.ipynb, 05_results.ipynb"):
        course.store(partial)
    assert {path: path.read_bytes() for path in NOTEBOOKS} == stored_before


def test_store_refuses_a_run_of_other_notebook_text_and_writes_nothing(quick_runs, tmp_path):
    """Store brings outputs, never text: a run made before an edit would undo the edit."""
    stored_before = {path: path.read_bytes() for path in NOTEBOOKS}
    old_run = tmp_path / "old-run"
    shutil.copytree(quick_runs[0], old_run)
    parameters = json.loads((old_run / "parameters.json").read_text())
    parameters.update(quick=False, train_subset=0)  # passes for a full run, to reach the text
    (old_run / "parameters.json").write_text(json.dumps(parameters))
    notebook = nbformat.read(old_run / "02_model.ipynb", as_version=4)
    notebook.cells[0].source += "\nA sentence the notebook has since lost."
    nbformat.write(notebook, old_run / "02_model.ipynb")
    with pytest.raises(course.NotStorable, match="run from other text than notebooks/02_model"):
        course.store(old_run)
    assert {path: path.read_bytes() for path in NOTEBOOKS} == stored_before


def test_same_seed_gives_identical_runs_whichever_folder_starts_the_job(quick_runs):
    here, elsewhere, _ = quick_runs
    assert (here / "history.json").read_bytes() == (elsewhere / "history.json").read_bytes()
    strip = lambda path: {k: v for k, v in json.loads(path.read_text()).items()  # noqa: E731
                          if k not in TIMING_KEYS}
    assert strip(here / "metrics.json") == strip(elsewhere / "metrics.json")
    weights = [torch.load(run / "checkpoint.pt", weights_only=True)["model"]
               for run in (here, elsewhere)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_a_different_seed_gives_different_numbers(quick_runs, mnist_dir, tmp_path):
    """Also a kernel started outside notebooks/: the notebook needs no particular folder."""
    papermill.execute_notebook(
        NOTEBOOKS[3], tmp_path / "04.ipynb", cwd=tmp_path, progress_bar=False,
        parameters={"seed": 2, "quick": True, "data_dir": str(mnist_dir), "run_dir": str(tmp_path)},
    )
    other = json.loads((tmp_path / "history.json").read_text())
    first = json.loads((quick_runs[0] / "history.json").read_text())
    assert other["test_accuracy"] != first["test_accuracy"]
    assert other["step_train_loss"] != first["step_train_loss"]


def test_resume_continues_from_the_checkpoint_and_refuses_other_parameters(quick_runs,
                                                                            mnist_dir, tmp_path):
    """Notebook 4 with resume=True on a finished quick run: it restores the last checkpoint,
    trains no epoch again and writes the same history. (That a resume from the middle of a run
    ends as the uninterrupted run does is shown by test_checkpoint's resume test.)"""
    run_dir = tmp_path / "run"
    shutil.copytree(quick_runs[0], run_dir)
    parameters = {"quick": True, "data_dir": str(mnist_dir), "run_dir": str(run_dir),
                  "resume": True}
    output = tmp_path / "04.ipynb"
    papermill.execute_notebook(NOTEBOOKS[3], output, cwd=tmp_path, progress_bar=False,
                               parameters=parameters)
    log = "".join(out.get("text", "") for cell in code_cells(output) for out in cell.outputs
                  if out.output_type == "stream")
    assert "resumed from checkpoint.pt after epoch 2" in log
    assert (run_dir / "history.json").read_bytes() == (quick_runs[0] / "history.json").read_bytes()

    with pytest.raises(papermill.PapermillExecutionError) as failure:
        papermill.execute_notebook(NOTEBOOKS[3], output, cwd=tmp_path, progress_bar=False,
                                   parameters={**parameters, "epochs": 1})
    assert failure.value.ename == "ParameterError" and "epochs=2 there, 1 here" in str(
        failure.value.evalue)


@pytest.mark.parametrize("name, value, fragment", [
    ("epochs", 0, "epochs=0"),
    ("learning_rate", -0.1, "learning_rate=-0.1"),
    ("momentum", 1.0, "momentum=1.0"),
    ("device", "tpu", "device='tpu' is unknown"),
    ("mean_std", [0.1], "mean_std=[0.1]"),
])
def test_a_bad_parameter_stops_the_notebook_before_any_data(tmp_path, name, value, fragment):
    output = tmp_path / "out.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        papermill.execute_notebook(
            NOTEBOOKS[3], output, cwd=NOTEBOOKS[3].parent, progress_bar=False,
            parameters={name: value, "data_dir": str(tmp_path / "no-data"),
                        "run_dir": str(tmp_path / "run")},
        )
    assert failure.value.ename == "ParameterError" and fragment in failure.value.evalue
    cells = code_cells(output)
    failed = next(i for i, cell in enumerate(cells)
                  if any(out.output_type == "error" for out in cell.outputs))
    assert "Settings(" in cells[failed].source  # the settings cell, before the data is read
    assert all(cell.execution_count is None for cell in cells[failed + 1:])


def test_missing_data_fails_with_one_message_and_leaves_no_run_folder(tmp_path):
    empty, runs = tmp_path / "empty", tmp_path / "runs"
    empty.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "utils.course", "run", "--data-dir", str(empty), "--runs-dir",
         str(runs)], capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert str(empty) in result.stderr and "train-images-idx3-ubyte" in result.stderr
    assert "DATA_DIR" in result.stderr
    assert not runs.exists() and list(empty.iterdir()) == []


def test_a_jupyterlab_kernel_imports_utils_from_this_repository(tmp_path):
    """The kernel JupyterLab starts for the stored kernelspec, in a notebook's folder."""
    from jupyter_client.manager import start_new_kernel

    printed = []
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        reply = client.execute_interactive(
            "import sys, utils; print(sys.executable); print(utils.REPO_ROOT)", timeout=60,
            output_hook=lambda message: printed.append(message["content"].get("text", "")))
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "ok"
    executable, root = "".join(printed).split()
    assert executable == sys.executable and root == str(REPO_ROOT)
