"""Thin helpers shared by the MNIST CNN notebooks.

The notebooks import this package as ``utils``; ``make venv`` installs it into the course's
virtual environment in editable mode, so the import works from any folder and in any runner.
"""

import platform
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cpu_name():
    """The processor's model name where the system tells it (Linux), else what Python knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"
