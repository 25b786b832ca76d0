"""Find the submissions of one assignment, whatever shape the instructor collected them in.

Two layouts are read:

* nbgrader's: ``SUBMISSIONS/<student>/<assignment>/<notebook>.ipynb``
* a flat folder: ``SUBMISSIONS/<student>--<notebook>.ipynb``

File names pass through :func:`notebook_name`, which undoes what browsers and Colab do to
them (``Copy of X.ipynb``, ``X (1).ipynb``), so a file maps back to its release notebook.
Nothing here opens a notebook: reading and repairing them is :mod:`autograder.restore`'s job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FLAT_SEPARATOR = "--"
_COPY_OF = re.compile(r"^(copy of\s+)+", re.IGNORECASE)
_DUPLICATE = re.compile(r"(\s*\(\d+\))+$")


def notebook_name(filename: str) -> str:
    """``"Copy of start (2).ipynb"`` -> ``"start"``."""
    stem = filename[: -len(".ipynb")] if filename.lower().endswith(".ipynb") else filename
    return _DUPLICATE.sub("", _COPY_OF.sub("", stem.strip())).strip()


@dataclass(frozen=True)
class Submitted:
    """One file handed in: who, for which notebook (None if it matches none), and where."""

    student: str
    notebook: str | None
    path: Path
    original_name: str  # the file's name as handed in, less the student prefix of a flat folder


def _match(name: str, known: list[str]) -> str | None:
    if name in known:
        return name
    folded = {k.casefold(): k for k in known}
    return folded.get(name.casefold())


def find(submissions: Path, assignment: str, known: list[str]) -> list[Submitted]:
    """Every notebook file handed in for ``assignment``, in a stable order."""
    submissions = Path(submissions)
    if not submissions.is_dir():
        raise SystemExit(f"error: {submissions} is not a folder of submissions")
    nbgrader_layout = [d for d in submissions.iterdir() if (d / assignment).is_dir()]
    found: list[Submitted] = []
    if nbgrader_layout:
        for student_dir in sorted(nbgrader_layout):
            for path in sorted((student_dir / assignment).glob("*.ipynb")):
                found.append(Submitted(student_dir.name, _match(notebook_name(path.name), known),
                                       path, path.name))
    else:
        for path in sorted(submissions.glob("*.ipynb")):
            student, sep, rest = path.name.partition(FLAT_SEPARATOR)
            if not sep or not student.strip():
                raise SystemExit(
                    f"error: cannot tell whose file {path.name!r} is. Name flat submissions "
                    f"'<student>{FLAT_SEPARATOR}<notebook>.ipynb', or use nbgrader's layout "
                    f"<student>/{assignment}/<notebook>.ipynb."
                )
            found.append(Submitted(student.strip(), _match(notebook_name(rest), known),
                                   path, rest))
    return found
