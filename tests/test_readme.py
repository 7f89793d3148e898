"""The README's numbers are the stored outputs' numbers, and the prose says nothing untrue.

The committed notebooks carry the outputs of the full run the README reports. Notebook 5's cell
tagged "results" prints the headline lines; the README's results table must quote them.
"""

import re

import nbformat
import pytest

from utils import REPO_ROOT
from utils.fast_dropout import FastDropout
from utils.model import Net
from utils.runtime import QUICK_EPOCHS, QUICK_TRAIN_SUBSET

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
RESULTS_NOTEBOOK = REPO_ROOT / "notebooks" / "05_results.ipynb"
TRAINING_NOTEBOOK = REPO_ROOT / "notebooks" / "04_training.ipynb"


def tagged_output(path, tag):
    """The printed text of the one cell carrying `tag` in a stored notebook."""
    cells = [cell for cell in nbformat.read(path, as_version=4).cells
             if tag in cell.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path.name} has {len(cells)} cells tagged {tag!r}"
    return "".join(out.get("text", "") for out in cells[0].outputs if out.output_type == "stream")


def readme_row(label):
    """The value cell of the README results-table row whose first cell is `label`."""
    match = re.search(rf"^\| {re.escape(label)} \| ([^|]+) \|", README, re.MULTILINE)
    assert match, f"README has no results row {label!r}"
    return match.group(1).strip()


@pytest.fixture(scope="module")
def stored_results():
    text = tagged_output(RESULTS_NOTEBOOK, "results")
    assert text, "05_results.ipynb has no stored results: run `make run`, then `make store`"
    return dict(line.split(": ", 1) for line in text.strip().splitlines())


def test_readme_quotes_the_stored_final_and_best_accuracy(stored_results):
    assert readme_row("Final test accuracy") == stored_results["final test accuracy"]
    assert readme_row("Best test accuracy") == stored_results["best test accuracy"]


def test_readme_quotes_the_stored_epochs_and_training_time(stored_results):
    assert readme_row("Epochs") == stored_results["epochs"]
    assert readme_row("Training wall time") == stored_results["training wall time"]


def test_stored_outputs_come_from_a_full_run_that_meets_the_target(stored_results):
    final = float(stored_results["final test accuracy"].rstrip("%"))
    assert final >= 99.4
    assert int(stored_results["epochs"]) <= 15
    log = "".join(out.get("text", "") for cell in nbformat.read(TRAINING_NOTEBOOK, 4).cells
                  for out in cell.get("outputs", []) if out.output_type == "stream")
    assert "training on 60,000 images" in log, "the stored notebook 4 is not a full run"


def test_readme_parameter_count_is_the_model_s():
    total = sum(p.numel() for p in Net().parameters())
    assert readme_row("Parameters") == f"{total:,}"
    claimed = {int(n.replace(",", "")) for n in re.findall(r"\b(1[34],\d{3})\b", README)}
    with_biases = total + sum(m.out_channels for m in Net().modules() if hasattr(m, "out_channels")
                              and getattr(m, "bias", 0) is None)
    assert claimed <= {total, with_biases}, f"README quotes other totals: {claimed}"


def notebook_defaults():
    """The values of the parameters cell every notebook starts with, as the notebooks run it."""
    cell = next(cell for cell in nbformat.read(TRAINING_NOTEBOOK, as_version=4).cells
                if "parameters" in cell.metadata.get("tags", []))
    defaults = {}
    exec(cell.source, {}, defaults)  # the cell only assigns literals
    return defaults


def test_readme_numbers_that_the_code_computes_are_the_code_s():
    flat = " ".join(README.split())  # the README wraps its lines anywhere
    defaults = notebook_defaults()
    assert f"{QUICK_EPOCHS} epochs on {QUICK_TRAIN_SUBSET:,} training images" in flat
    assert f"random rotation of up to {defaults['max_degrees']:g} degrees" in flat
    dropout = defaults["dropout"]
    assert f"{dropout} becomes {FastDropout(dropout).drawn_p:.7f}" in flat
