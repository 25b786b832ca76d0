"""Shared fixtures, and the marker that `make test-fast` uses to skip notebook execution."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
CURRICULUM = ROOT / "curriculum"
SOLUTION_NOTEBOOKS = sorted(SOLUTIONS.glob("*/*.ipynb"))

os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_collection_modifyitems(config, items):
    """nbval's notebook items (and tests that grade notebooks) carry the `notebooks` marker."""
    for item in items:
        if str(item.fspath).endswith(".ipynb"):
            item.add_marker(pytest.mark.notebooks)


def notebook_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"
