"""Check that each notebook's .ipynb and its jupytext .py twin hold the same notebook.

    python -m utils.pairs [FOLDER]     # exit 1 and list the problems when a pair disagrees

The check regenerates the .py text from the .ipynb with jupytext and compares it with the .py
on disk, character for character; file timestamps are never consulted (a clone resets them).
"""

import sys
from pathlib import Path

import jupytext

from utils import REPO_ROOT

TWIN_FORMAT = "py:percent"


def expected_twin_text(notebook_path):
    """The .py twin jupytext writes for this .ipynb, with the folder's jupytext.toml settings."""
    notebook = jupytext.read(notebook_path)
    config = jupytext.config.load_jupytext_config(str(notebook_path.parent))
    return jupytext.writes(notebook, fmt=TWIN_FORMAT, config=config)


def pair_problems(folder):
    """One line per problem: a missing twin, a twin that differs, a notebook without kernelspec."""
    folder = Path(folder)
    problems = []
    notebooks = sorted(folder.glob("*.ipynb"))
    twins = sorted(folder.glob("*.py"))
    for notebook_path in notebooks:
        twin = notebook_path.with_suffix(".py")
        if not twin.is_file():
            problems.append(f"{notebook_path.name}: no .py twin (run `make sync`)")
            continue
        if expected_twin_text(notebook_path) != twin.read_text(encoding="utf-8"):
            problems.append(f"{notebook_path.name} and {twin.name} differ: edit one, then run "
                            "`make sync` (it regenerates the .ipynb code from the .py)")
        if "kernelspec" not in jupytext.read(notebook_path).metadata:
            problems.append(f"{notebook_path.name}: no kernelspec stored; papermill would ask")
    for twin in twins:
        if not twin.with_suffix(".ipynb").is_file():
            problems.append(f"{twin.name}: no .ipynb (run `make sync`)")
    return problems


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0]) if argv else REPO_ROOT / "notebooks"
    problems = pair_problems(folder)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{len(list(folder.glob('*.ipynb')))} notebook pairs agree")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
