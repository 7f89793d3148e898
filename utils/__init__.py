"""Thin helpers shared by the MNIST CNN notebooks.

The notebooks import this package as ``utils``; ``make venv`` installs it into the course's
virtual environment in editable mode, so the import works from any folder and in any runner.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
