"""Check, and sync, each notebook's .ipynb and its jupytext .py twin, which hold the same notebook.

    python -m utils.pairs [FOLDER]                    # check: exit 1 and list each problem
    python -m utils.pairs --sync [FOLDER]             # make each pair agree from its edited side
    python -m utils.pairs --sync --from py [FOLDER]   # ... or from this side (py, ipynb) always

The check regenerates the .py text from the .ipynb with jupytext and compares it with the .py
on disk, character for character; file timestamps are never consulted (a clone resets them).

Sync tells the edited side from git, not from timestamps: a side is edited when it differs from
the last commit (HEAD), or is not in it. The .ipynb counts as edited only when the .py text it
regenerates changed, so new outputs alone are no edit. From the .py, the .ipynb's cells are
rewritten and its outputs kept, as `jupytext --update` does; from the .ipynb, the .py is
regenerated. A pair edited on both sides, or with no git history to ask, is left as it is, and
the exit status is 1; --from names the source for every pair instead.
"""

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
from jupytext.combine import combine_inputs_with_outputs

from utils import REPO_ROOT

TWIN_FORMAT = "py:percent"
FROM_PY, FROM_IPYNB = "py", "ipynb"
CHOOSE_A_SIDE = "sync with --from py or --from ipynb (`make sync FROM=py`) to choose"


def folder_config(folder):
    """The jupytext settings of this folder (its jupytext.toml)."""
    return jupytext.config.load_jupytext_config(str(folder))


def twin_text(notebook, folder):
    """The .py twin jupytext writes for this notebook, with the folder's jupytext.toml settings."""
    return jupytext.writes(notebook, fmt=TWIN_FORMAT, config=folder_config(folder))


def expected_twin_text(notebook_path):
    """The .py twin jupytext writes for this .ipynb, with the folder's jupytext.toml settings."""
    return twin_text(jupytext.read(notebook_path), notebook_path.parent)


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
        notebook = jupytext.read(notebook_path)  # once: a notebook with figures reads slowly
        if twin_text(notebook, folder) != twin.read_text(encoding="utf-8"):
            problems.append(f"{notebook_path.name} and {twin.name} differ: edit one, then run "
                            "`make sync` (it copies the side edited since the last commit)")
        if "kernelspec" not in notebook.metadata:
            problems.append(f"{notebook_path.name}: no kernelspec stored; papermill would ask")
    for twin in twins:
        if not twin.with_suffix(".ipynb").is_file():
            problems.append(f"{twin.name}: no .ipynb (run `make sync`)")
    return problems


# ---------------------------------------------------------------------------------------------
# which side was edited: git's last commit is the common ancestor of both sides

class Refused(Exception):
    """A pair whose source can't be told safely; the message says why and how to go on."""


def in_git_work_tree(folder):
    """Whether git is installed and this folder lies in a repository's working tree."""
    try:
        answer = subprocess.run(["git", "-C", str(folder), "rev-parse", "--is-inside-work-tree"],
                                capture_output=True, text=True)
    except FileNotFoundError:
        return False
    return answer.returncode == 0 and answer.stdout.strip() == "true"


def committed_text(path):
    """The file's text in the last commit (HEAD) of its folder's repository; None when not there."""
    # `HEAD:./name` is read from git's working folder, wherever the repository's root is; text
    # mode turns CRLF into LF, as read_text does with the file on disk (autocrlf checkouts)
    shown = subprocess.run(["git", "-C", str(path.parent), "show", f"HEAD:./{path.name}"],
                           capture_output=True, encoding="utf-8", errors="replace")
    return shown.stdout if shown.returncode == 0 else None


def notebook_text_edited(notebook_path, twin_from_notebook):
    """Whether the .ipynb's cells (or the metadata the .py keeps) changed since the last commit."""
    committed = committed_text(notebook_path)
    if committed is None:
        return True
    committed_notebook = jupytext.reads(committed, fmt="ipynb")
    return twin_text(committed_notebook, notebook_path.parent) != twin_from_notebook


def choose_source(notebook_path, forced_source, has_history):
    """The side to copy this pair from and why, as (FROM_PY or FROM_IPYNB, reason); None when the
    pair already agrees. Raises Refused when the side can't be told."""
    twin = notebook_path.with_suffix(".py")
    if not twin.is_file():
        return FROM_IPYNB, "there was no .py"
    if not notebook_path.is_file():
        return FROM_PY, "there was no .ipynb"
    twin_on_disk = twin.read_text(encoding="utf-8")
    twin_from_notebook = expected_twin_text(notebook_path)
    if twin_on_disk == twin_from_notebook:
        return None
    if forced_source:
        return forced_source, f"--from {forced_source}"
    if not has_history:
        raise Refused(f"{notebook_path} and {twin} differ, and no git history says which one was "
                      f"edited (the folder is in no git repository, or git is missing); left "
                      f"as they are: {CHOOSE_A_SIDE}")
    twin_edited = committed_text(twin) != twin_on_disk
    notebook_edited = notebook_text_edited(notebook_path, twin_from_notebook)
    if twin_edited and notebook_edited:
        raise Refused(f"{notebook_path} and {twin} were both edited since the last commit; left "
                      f"as they are. Drop one side's edit (`git checkout -- {notebook_path}` drops "
                      f"the notebook's), then sync again; or, if one side holds every edit, "
                      f"{CHOOSE_A_SIDE}")
    if twin_edited:
        return FROM_PY, "only the .py changed since the last commit"
    if notebook_edited:
        return FROM_IPYNB, "only the .ipynb's text changed since the last commit"
    raise Refused(f"{notebook_path} and {twin} differ, but neither changed since the last commit "
                  f"(they were committed disagreeing); left as they are: {CHOOSE_A_SIDE}")


# ---------------------------------------------------------------------------------------------
# writing a pair

def write_if_changed(path, text):
    """Replace the file's text in one step (a crash leaves the old file or the new), unless the
    file already holds that text: an untouched file keeps its time."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    partial = path.with_name(f".{path.name}.sync-partial")
    partial.write_text(text, encoding="utf-8")
    if path.is_file():
        shutil.copymode(path, partial)
    os.replace(partial, path)


def update_notebook_from_twin(notebook_path, twin):
    """Rewrite the .ipynb's cells from the .py, keeping its stored outputs (`jupytext --update`)."""
    config = folder_config(notebook_path.parent)
    notebook = jupytext.read(twin, fmt=TWIN_FORMAT, config=config)
    if notebook_path.is_file():
        stored = jupytext.read(notebook_path)
        notebook = combine_inputs_with_outputs(notebook, stored, fmt=TWIN_FORMAT)
    text = jupytext.writes(notebook, fmt="ipynb", config=config)
    write_if_changed(notebook_path, text if text.endswith("\n") else text + "\n")


def copy_pair(notebook_path, source):
    """Make the pair agree from its source side. The .py is regenerated from the .ipynb last in
    either case, so it is exactly the text the check expects."""
    twin = notebook_path.with_suffix(".py")
    if source == FROM_PY:
        update_notebook_from_twin(notebook_path, twin)
    write_if_changed(twin, expected_twin_text(notebook_path))


def pair_notebooks(folder):
    """The .ipynb path of every pair in the folder, whichever of its two files exist."""
    paths = [*folder.glob("*.ipynb"), *folder.glob("*.py")]
    return sorted({path.with_suffix(".ipynb") for path in paths})


def sync(folder, forced_source=None):
    """Make each disagreeing pair agree, printing one line per pair changed. Returns the refusals
    (pairs left as they were), one message each."""
    folder = Path(folder)
    has_history = in_git_work_tree(folder)
    refusals = []
    for notebook_path in pair_notebooks(folder):
        try:
            choice = choose_source(notebook_path, forced_source, has_history)
        except Refused as refusal:
            refusals.append(str(refusal))
            continue
        if choice is None:
            continue
        twin = notebook_path.with_suffix(".py")
        source, reason = choice
        copy_pair(notebook_path, source)
        copied, written = ((twin.name, notebook_path.name) if source == FROM_PY
                           else (notebook_path.name, twin.name))
        print(f"{copied} -> {written} ({reason})")
    return refusals


def check(folder):
    """Print the folder's pair problems, or that the pairs agree; the exit status."""
    problems = pair_problems(folder)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{len(list(folder.glob('*.ipynb')))} notebook pairs agree")
    return 1 if problems else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, default=REPO_ROOT / "notebooks")
    parser.add_argument("--sync", action="store_true",
                        help="make each disagreeing pair agree from the side edited since HEAD")
    parser.add_argument("--from", dest="source", choices=[FROM_PY, FROM_IPYNB],
                        help="with --sync: copy every disagreeing pair from this side")
    args = parser.parse_args(argv)
    if args.source and not args.sync:
        parser.error("--from goes with --sync")
    if not args.sync:
        return check(args.folder)
    refusals = sync(args.folder, args.source)
    for refusal in refusals:
        print(refusal)
    # the check confirms the result, and names what sync can't mend (a missing kernelspec)
    return 1 if refusals else check(args.folder)


if __name__ == "__main__":
    sys.exit(main())
