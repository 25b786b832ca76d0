"""Make curriculum/ from solutions/: stamp the shared cells, then nbgrader's generate_assignment.

``curriculum/`` is never edited by hand. ``release()`` rewrites it; ``drift()`` regenerates
into a temporary folder and lists every notebook that differs from the committed one, which
is what the release-integrity test asserts is empty.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import nbformat

from autograder.course import (
    CURRICULUM,
    SOLUTIONS,
    assignments,
    course_config,
    nbgrader_environment,
)
from gradschool import runtime

BADGE_PREFIX = "[![Open In Colab]"


def release_path(notebook: Path) -> str:
    """``solutions/00_start/start.ipynb`` -> ``curriculum/00_start/start.ipynb`` (for badges)."""
    return f"{CURRICULUM.name}/{notebook.parent.name}/{notebook.name}"


def stamp(path: Path) -> bool:
    """Rewrite the badge line and the set-up cell from ``runtime.COURSE``; True if changed.

    Both are generated from one setting, so a fork changes one line and runs
    ``make release``.
    """
    nb = nbformat.read(path, as_version=4)
    changed = False
    header, setup = nb.cells[0], nb.cells[1] if len(nb.cells) > 1 else None
    lines = header.source.splitlines()
    badge = runtime.badges(release_path(path))
    for i, line in enumerate(lines):
        if line.startswith(BADGE_PREFIX) and line != badge:
            lines[i], changed = badge, True
    header.source = "\n".join(lines)
    if setup is not None and setup.cell_type == "code" and "runtime.setup(" in setup.source:
        if setup.source != runtime.setup_cell_source():
            setup.source, changed = runtime.setup_cell_source(), True
    if changed:
        nbformat.write(nb, path)
    return changed


def generate(destination: Path, which: list[str] | None = None) -> None:
    """Run nbgrader's generate_assignment for each assignment into ``destination``."""
    from nbgrader.converters import GenerateAssignment
    from nbgrader.coursedir import CourseDirectory

    for assignment in which or assignments():
        config = course_config(
            CourseDirectory={"release_directory": str(destination), "assignment_id": assignment},
            GenerateAssignment={"no_database": True, "force": True},
            SaveCells={"enabled": False},
        )
        with nbgrader_environment():
            coursedir = CourseDirectory(config=config)
            converter = GenerateAssignment(coursedir=coursedir, config=config)
            converter.log.setLevel(logging.WARNING)
            converter.start()


def _canonical(path: Path) -> dict:
    """A notebook as JSON with what may vary between machines removed."""
    nb = json.loads(path.read_text())
    nb.get("metadata", {}).pop("language_info", None)
    for cell in nb.get("cells", []):
        cell.get("metadata", {}).pop("execution", None)
    return nb


def drift() -> list[str]:
    """What differs between the committed curriculum/ and a fresh generation (empty = in sync)."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        expected = {p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file()}
        actual = {p.relative_to(CURRICULUM) for p in CURRICULUM.rglob("*") if p.is_file()}
        actual = {p for p in actual if "__pycache__" not in p.parts and p.name != "README.md"}
        problems += [f"missing from curriculum/: {p}" for p in sorted(expected - actual)]
        problems += [f"not generated from solutions/: curriculum/{p}" for p in sorted(actual - expected)]
        for rel in sorted(expected & actual):
            a, b = fresh / rel, CURRICULUM / rel
            same = (_canonical(a) == _canonical(b)) if rel.suffix == ".ipynb" else (
                a.read_bytes() == b.read_bytes())
            if not same:
                problems.append(f"curriculum/{rel} differs from a fresh release (run make release)")
    return problems


def release() -> list[Path]:
    """Stamp every solution notebook, then regenerate curriculum/ from scratch."""
    stamped = [p for p in sorted(SOLUTIONS.glob("*/*.ipynb")) if stamp(p)]
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "curriculum"
        generate(fresh)
        for assignment in assignments():
            target = CURRICULUM / assignment
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(fresh / assignment, target)
    return stamped
