"""Where the course's pieces live, and nbgrader's configuration as an object."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
CURRICULUM = ROOT / "curriculum"
CONFIG_FILE = Path(__file__).resolve().parent / "nbgrader_config.py"
DEFAULT_GRADEBOOK = ROOT / "gradebook.db"

# jsonschema (which nbformat and nbgrader import) validates the "iri" format with rfc3987_syntax
# when that is installed (a Jupyter dependency): importing it builds dozens of parsers, over a
# second of CPU in every grader process. Notebooks have no IRIs to check; the import is skipped.
SKIPPED_IMPORTS = ("rfc3987_syntax",)
for _name in SKIPPED_IMPORTS:
    sys.modules.setdefault(_name, None)  # `import rfc3987_syntax` now raises ImportError


def assignments() -> list[str]:
    """The assignments: the folders of solutions/ that hold notebooks, in course order."""
    return sorted(p.name for p in SOLUTIONS.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def notebooks(assignment: str, root: Path = SOLUTIONS) -> list[str]:
    """The notebook names (without .ipynb) of an assignment."""
    folder = root / assignment
    if not folder.is_dir():
        known = ", ".join(assignments()) or "none"
        raise SystemExit(f"error: no assignment {assignment!r} in {root} (known: {known})")
    return sorted(p.stem for p in folder.glob("*.ipynb"))


def course_config(**sections: dict) -> Config:
    """nbgrader's configuration from autograder/nbgrader_config.py, then ``sections`` on top.

    ``course_config(CourseDirectory={"root": "/tmp/x"})`` overrides one trait.
    """
    config = PyFileConfigLoader(CONFIG_FILE.name, path=str(CONFIG_FILE.parent)).load_config()
    config.merge(Config(sections))
    return config


@contextlib.contextmanager
def nbgrader_environment() -> Iterator[None]:
    """nbgrader changes directory and starts ``alembic`` by name: keep both in hand.

    The interpreter's own folder goes on PATH, so that ``.venv/bin/python -m autograder``
    finds alembic without an activated environment.
    """
    cwd = os.getcwd()
    path = os.environ.get("PATH", "")
    bindir = str(Path(sys.executable).parent)
    if bindir not in path.split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + path
    try:
        yield
    finally:
        os.chdir(cwd)
        os.environ["PATH"] = path
