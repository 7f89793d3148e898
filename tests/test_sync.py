"""`make sync` copies each notebook pair from the side edited since the last commit, and never
over an edit. Each test works in a throwaway git repository holding a copy of notebooks/."""

import os
import shutil
import subprocess

import nbformat
import pytest
from jupytext.cli import jupytext as jupytext_command

from utils import REPO_ROOT
from utils.pairs import expected_twin_text, main, pair_problems

THROWAWAY_USER = ["-c", "user.name=Sync Test", "-c", "user.email=sync-test@example.invalid",
                  "-c", "commit.gpgsign=false"]
NOTEBOOK = "02_model.ipynb"
CODE_EDIT = "edited_in_the_notebook = True"
PROSE_EDIT = "A sentence written in the notebook."

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="sync asks git; none here")


def git(folder, *arguments):
    subprocess.run(["git", "-C", str(folder), *THROWAWAY_USER, *arguments],
                   check=True, capture_output=True)


def read(notebook_path):
    return nbformat.read(notebook_path, as_version=4)


def outputs(notebook_path):
    return [cell.get("outputs") for cell in read(notebook_path).cells]


def edit_notebook_cell(notebook_path, cell_type, added_line):
    """Add a line to the first cell of this type, as an editor that knows nothing of the .py."""
    notebook = read(notebook_path)
    cell = next(cell for cell in notebook.cells if cell.cell_type == cell_type)
    cell.source += "\n" + added_line
    nbformat.write(notebook, notebook_path)


def edit_twin_cell_with_outputs(notebook_path):
    """In the .py, edit a code cell whose outputs the .ipynb stores; returns the edited line."""
    twin = notebook_path.with_suffix(".py")
    lines = twin.read_text(encoding="utf-8").split("\n")
    first_lines = [cell.source.splitlines()[0] for cell in read(notebook_path).cells
                   if cell.cell_type == "code" and cell.outputs]
    # a line the .py holds once, and as it stands (jupytext comments out magics)
    line = next(line for line in first_lines if lines.count(line) == 1)
    edited = line + "  # edited in the .py"
    lines[lines.index(line)] = edited
    twin.write_text("\n".join(lines), encoding="utf-8")
    return edited


def sync(folder, *flags):
    return main(["--sync", *flags, str(folder)])


@pytest.fixture(scope="module")
def committed_course(tmp_path_factory):
    """A repository holding notebooks/, committed with every pair in agreement."""
    root = tmp_path_factory.mktemp("course")
    folder = root / "notebooks"
    shutil.copytree(REPO_ROOT / "notebooks", folder)
    # the working tree's .py twins may be mid-edit: commit the ones the .ipynb files give
    for notebook_path in folder.glob("*.ipynb"):
        twin = notebook_path.with_suffix(".py")
        twin.write_text(expected_twin_text(notebook_path), encoding="utf-8")
    git(root, "init", "--quiet")
    git(root, "add", ".")
    git(root, "commit", "--quiet", "--no-verify", "-m", "the notebooks, in agreement")
    assert pair_problems(folder) == []
    return root


@pytest.fixture
def notebooks(committed_course, tmp_path):
    """The notebooks/ folder of a fresh copy of the committed repository."""
    root = tmp_path / "course"
    shutil.copytree(committed_course, root)
    return root / "notebooks"


def test_an_edit_in_the_notebook_reaches_the_py(notebooks, capsys):
    notebook_path = notebooks / NOTEBOOK
    edit_notebook_cell(notebook_path, "code", CODE_EDIT)
    edit_notebook_cell(notebook_path, "markdown", PROSE_EDIT)
    edited_notebook = notebook_path.read_bytes()

    assert sync(notebooks) == 0
    twin_text = notebook_path.with_suffix(".py").read_text(encoding="utf-8")
    assert CODE_EDIT in twin_text and f"# {PROSE_EDIT}" in twin_text
    assert notebook_path.read_bytes() == edited_notebook
    assert pair_problems(notebooks) == []
    report = capsys.readouterr().out
    assert "02_model.ipynb -> 02_model.py (only the .ipynb's text changed since" in report


def test_an_edit_in_the_py_reaches_the_notebook_which_keeps_its_outputs(notebooks, tmp_path):
    notebook_path = notebooks / NOTEBOOK
    stored_outputs = outputs(notebook_path)
    assert any(stored_outputs)
    edited_line = edit_twin_cell_with_outputs(notebook_path)
    # the reference: what `jupytext --to ipynb --update` makes of the same pair
    reference = tmp_path / "reference"
    reference.mkdir()
    for name in (NOTEBOOK, "02_model.py", "jupytext.toml"):
        shutil.copy(notebooks / name, reference / name)
    jupytext_command(["--quiet", "--to", "ipynb", "--update", str(reference / "02_model.py")])

    assert sync(notebooks) == 0
    assert outputs(notebook_path) == stored_outputs
    assert any(edited_line in cell.source for cell in read(notebook_path).cells)
    assert notebook_path.read_bytes() == (reference / NOTEBOOK).read_bytes()
    assert pair_problems(notebooks) == []


def test_new_outputs_alone_are_no_edit_of_the_notebook(notebooks):
    # as after `make store`: a new run's outputs in the .ipynb, and an edit in the .py
    notebook_path = notebooks / NOTEBOOK
    notebook = read(notebook_path)
    cell = next(cell for cell in notebook.cells if cell.cell_type == "code" and cell.outputs)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="a new run\n")]
    nbformat.write(notebook, notebook_path)
    new_outputs = outputs(notebook_path)
    edited_line = edit_twin_cell_with_outputs(notebook_path)

    assert sync(notebooks) == 0
    assert outputs(notebook_path) == new_outputs
    assert any(edited_line in cell.source for cell in read(notebook_path).cells)


def test_edits_on_both_sides_are_refused_and_both_files_kept(notebooks, capsys):
    notebook_path = notebooks / NOTEBOOK
    twin = notebook_path.with_suffix(".py")
    edit_twin_cell_with_outputs(notebook_path)
    edit_notebook_cell(notebook_path, "code", CODE_EDIT)
    edited = {path: path.read_bytes() for path in (notebook_path, twin)}

    assert sync(notebooks) == 1
    assert {path: path.read_bytes() for path in (notebook_path, twin)} == edited
    report = capsys.readouterr().out
    assert f"{notebook_path} and {twin} were both edited since the last commit" in report
    assert f"git checkout -- {notebook_path}" in report

    # told the side that holds every edit, sync takes it
    assert sync(notebooks, "--from", "ipynb") == 0
    assert notebook_path.read_bytes() == edited[notebook_path]
    assert CODE_EDIT in twin.read_text(encoding="utf-8")


def test_a_pair_committed_disagreeing_is_refused(notebooks, capsys):
    edit_twin_cell_with_outputs(notebooks / NOTEBOOK)
    git(notebooks, "commit", "--quiet", "--no-verify", "--all", "-m", "only the .py")
    assert sync(notebooks) == 1
    assert "neither changed since the last commit" in capsys.readouterr().out


def test_pairs_that_agree_are_not_rewritten(notebooks, capsys):
    a_while_ago = 1_000_000_000 * 10**9  # in 2001: a rewrite could not keep this time
    for path in notebooks.iterdir():
        os.utime(path, ns=(a_while_ago, a_while_ago))
    edit_twin_cell_with_outputs(notebooks / NOTEBOOK)  # one pair for sync to work on
    others = [path for path in notebooks.iterdir() if path.stem != "02_model"]
    assert len(others) >= 5

    def state():
        return {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in others}

    before = state()
    assert sync(notebooks) == 0
    assert state() == before
    changed = [line for line in capsys.readouterr().out.splitlines() if " -> " in line]
    assert changed == ["02_model.py -> 02_model.ipynb (only the .py changed since the last commit)"]


def test_a_missing_twin_is_written_from_its_notebook(notebooks, capsys):
    (notebooks / "05_results.py").unlink()
    assert sync(notebooks) == 0
    assert pair_problems(notebooks) == []
    assert "05_results.ipynb -> 05_results.py (there was no .py)" in capsys.readouterr().out


@pytest.mark.parametrize("missing", ["repository", "git"])
def test_without_git_history_sync_refuses_to_guess_unless_told(
        missing, committed_course, tmp_path, monkeypatch, capsys):
    notebooks = tmp_path / "notebooks"
    if missing == "repository":
        shutil.copytree(committed_course / "notebooks", notebooks)
        monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no repository above it
    else:
        shutil.copytree(committed_course, tmp_path, dirs_exist_ok=True)
        monkeypatch.setenv("PATH", str(tmp_path / "no-programs-here"))
    notebook_path = notebooks / NOTEBOOK
    edited_line = edit_twin_cell_with_outputs(notebook_path)
    notebook_before = notebook_path.read_bytes()

    assert sync(notebooks) == 1
    assert notebook_path.read_bytes() == notebook_before
    assert "no git history says which one was edited" in capsys.readouterr().out

    assert sync(notebooks, "--from", "py") == 0
    assert any(edited_line in cell.source for cell in read(notebook_path).cells)
    assert pair_problems(notebooks) == []
    assert "02_model.py -> 02_model.ipynb (--from py)" in capsys.readouterr().out
