"""Build submissions from the release, the way students make them, and grade them by the CLI."""

from __future__ import annotations

import copy
import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import nbformat

from conftest import CURRICULUM, ROOT, SOLUTIONS


def release(assignment: str, name: str):
    return nbformat.read(CURRICULUM / assignment / f"{name}.ipynb", as_version=4)


def solution(assignment: str, name: str):
    return nbformat.read(SOLUTIONS / assignment / f"{name}.ipynb", as_version=4)


def grade_id(cell):
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def exercises(nb) -> list[tuple[str, float]]:
    """(exercise grade id, points of the test right after it), in notebook order."""
    out = []
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution") and not meta.get("grade"):
            test = nb.cells[i + 1].metadata["nbgrader"]
            out.append((meta["grade_id"], float(test["points"])))
    return out


def answered(assignment: str, name: str, solved: set[str] | None = None):
    """The release notebook with the given exercises (default: all) answered as in solutions/."""
    nb = copy.deepcopy(release(assignment, name))
    answers = {grade_id(c): c.source for c in solution(assignment, name).cells if grade_id(c)}
    for cell in nb.cells:
        gid = grade_id(cell)
        if cell.metadata.get("nbgrader", {}).get("solution") and (solved is None or gid in solved):
            cell.source = answers[gid]
    return nb


def strip_metadata(nb):
    """What Colab and some editors do: nbgrader metadata and cell ids gone."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        cell.metadata.pop("nbgrader", None)
        cell["id"] = uuid.uuid4().hex[:8]
    return nb


def write(nb, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def grader_command(assignment: str, submissions: Path, out: Path, gradebook: Path, *extra: str):
    """(command, env) of the instructor's command, with an interpreter whose folder is *not* on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV",)}
    env["PATH"] = "/usr/bin:/bin"
    command = [sys.executable, "-m", "autograder", "grade", assignment, str(submissions),
               "--out", str(out), "--gradebook", str(gradebook), "--quiet", *extra]
    return command, env


def run_grader(assignment: str, submissions: Path, out: Path, gradebook: Path, *extra: str,
               check: bool = True):
    """The instructor's command, run to the end."""
    command, env = grader_command(assignment, submissions, out, gradebook, *extra)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if check:
        assert done.returncode == 0, f"grader failed:\n{done.stdout}\n{done.stderr}"
    return done


def with_code(nb, grade_id_: str, code: str, *, before: bool = False):
    """A copy of ``nb`` where the cell ``grade_id_`` also runs ``code`` (before or after its own)."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if grade_id(cell) == grade_id_:
            cell.source = f"{code}\n{cell.source}" if before else f"{cell.source}\n{code}"
            return nb
    raise KeyError(grade_id_)


def cell_index(nb, grade_id_: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if grade_id(c) == grade_id_)


def as_nbformat3(nb) -> str:
    """The notebook in the old nbformat 3, as a file of 2014 would hold it."""
    return nbformat.writes(nbformat.convert(copy.deepcopy(nb), 3), version=3)
