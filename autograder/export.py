"""Export ``gradschool/engine/`` from the solution notebooks of Part 2 (the engine's one source),
each Part 3 implementation ``gradschool/projects/<project>_<framework>.py`` and each Part 4
module ``gradschool/practice/<topic>_<framework>.py`` from its notebook.

A notebook that builds part of the engine names its module in its metadata::

    "gradschool": {"export": "gradschool/engine/tensor.py", "doc": "What the module is, and why."}

and marks the cells that belong to it with ``# export`` as their first line. Those cells are
copied into the module in notebook order, less the ``# export`` line and nbgrader's solution
markers (the solution stays: the reference engine *is* the solution). Top-level imports are
gathered at the top. ``make release`` runs this, and a test fails when a module differs
from what its notebook exports, so the engine's code lives once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from autograder.course import ROOT, SOLUTIONS

EXPORT_MARK = "# export"
FIRST_PARTY = {"gradschool", "autograder"}
SOLUTION_MARKS = {"### BEGIN SOLUTION", "### END SOLUTION"}


def exporting_notebooks() -> list[Path]:
    """The solution notebooks that export a module, in course order."""
    return [p for p in sorted(SOLUTIONS.glob("*/*.ipynb"))
            if nbformat.read(p, as_version=4).metadata.get("gradschool", {}).get("export")]


def module_source(notebook: Path) -> tuple[Path, str]:
    """(target file, its text) for one exporting notebook."""
    nb = nbformat.read(notebook, as_version=4)
    settings = nb.metadata["gradschool"]
    target = ROOT / settings["export"]
    imports: list[str] = []
    blocks: list[str] = []
    for cell in nb.cells:
        lines = cell.source.splitlines()
        if cell.cell_type != "code" or not lines or lines[0].strip() != EXPORT_MARK:
            continue
        body = []
        for line in lines[1:]:
            if line.strip() in SOLUTION_MARKS:
                continue
            if line.startswith(("import ", "from ")):
                if line.rstrip().endswith(("(", "\\")):
                    raise ValueError(f"{notebook}: write the import {line.strip()!r} on one line "
                                     "(export gathers imports line by line)")
                if line not in imports:
                    imports.append(line)
                continue
            body.append(line)
        text = "\n".join(body).strip("\n")
        if text:
            blocks.append(text)
    future = [i for i in imports if i.startswith("from __future__")]
    groups = _import_groups([i for i in imports if i not in future])
    doc = settings.get("doc", "").strip()
    source = notebook.relative_to(ROOT) if notebook.is_relative_to(ROOT) else notebook.name
    header = (f'"""{doc}\n\nGenerated from {source} by `make export`:\n'
              'edit the notebook, not this file.\n"""\n')
    sections = [header.rstrip("\n")]
    sections += ["\n".join(group) for group in (future, *groups) if group]
    return target, "\n\n".join(sections) + "\n\n\n" + "\n\n\n".join(blocks) + "\n"


def _import_groups(lines: list[str]) -> list[list[str]]:
    """Imports in the sections ruff (isort) expects: standard library, third party, the course."""
    groups: list[list[str]] = [[], [], []]
    for line in lines:
        top = line.split()[1].split(".")[0]
        groups[0 if top in sys.stdlib_module_names else 2 if top in FIRST_PARTY else 1].append(line)
    # within a section: plain imports first, then from-imports, each by module name
    return [sorted(g, key=lambda i: (i.startswith("from "), i.split()[1])) for g in groups]


def drift() -> list[str]:
    """Engine modules that differ from a fresh export, or that no notebook exports."""
    problems = []
    exported = set()
    for notebook in exporting_notebooks():
        target, text = module_source(notebook)
        exported.add(target)
        if not target.exists():
            problems.append(f"{target.relative_to(ROOT)} is missing (run make export)")
        elif target.read_text() != text:
            problems.append(f"{target.relative_to(ROOT)} differs from what "
                            f"{notebook.relative_to(ROOT)} exports (run make export)")
    for module in generated_modules():
        if module not in exported:
            problems.append(f"{module.relative_to(ROOT)} is exported by no notebook")
    return problems


PRACTICE_HAND_WRITTEN = {"__init__.py", "events.py"}  # events: shared by the 11_debug notebooks


def generated_modules() -> list[Path]:
    """The files that only an export may write: the engine's modules (not its hand-written
    ``__init__``), the projects' implementation modules, ``<project>_<framework>.py``, and
    Part 4's modules in ``gradschool/practice/``."""
    from gradschool.projects.spec import FRAMEWORKS

    engine = sorted(p for p in (ROOT / "gradschool" / "engine").glob("*.py") if p.name != "__init__.py")
    projects = sorted(p for p in (ROOT / "gradschool" / "projects").glob("*_*.py")
                      if p.stem.rsplit("_", 1)[1] in FRAMEWORKS)
    practice = sorted(p for p in (ROOT / "gradschool" / "practice").glob("*.py")
                      if p.name not in PRACTICE_HAND_WRITTEN)
    return engine + projects + practice


def export() -> list[Path]:
    """Write every exported module; returns the ones that changed."""
    changed = []
    for notebook in exporting_notebooks():
        target, text = module_source(notebook)
        if not target.exists() or target.read_text() != text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            changed.append(target)
    return changed
