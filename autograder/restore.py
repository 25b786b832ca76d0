"""Read a submitted notebook safely, and give back the nbgrader metadata an editor dropped.

nbgrader finds the cells it grades by their metadata. Colab and some editors strip it, and
nbgrader then gives the notebook 0 without a word. Here each graded or locked cell of the
release notebook is found again in the submission -- by cell id, then by content, then by
its place between cells already found -- and its metadata is copied back. A cell that
cannot be found is reported (:class:`CannotRestore`), never silently scored as zero.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass

import nbformat
from nbformat.notebooknode import NotebookNode


class Malformed(Exception):
    """The file is not a notebook that can be graded (the message says why, for the student)."""


class CannotRestore(Exception):
    """nbgrader metadata is missing and some graded cells cannot be found again."""


def read(path) -> NotebookNode:
    """Parse a submission as an nbformat-4 notebook; an old nbformat is converted, not rejected."""
    raw = path.read_bytes()
    if not raw.strip():
        raise Malformed("the file is empty")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise Malformed("the file is not text (is it really a notebook?)") from None
    except json.JSONDecodeError as error:
        raise Malformed(f"the file is not valid JSON (truncated or edited by hand?): {error}") from None
    if not isinstance(data, dict) or "cells" not in data and "worksheets" not in data:
        raise Malformed("the file is JSON but not a Jupyter notebook")
    try:
        nb = nbformat.reads(json.dumps(data), as_version=4)
    except Exception as error:  # nbformat raises a variety of errors on odd input
        raise Malformed(f"the notebook cannot be read: {error}") from None
    for cell in nb.cells:
        if not isinstance(cell.get("source", ""), str):
            raise Malformed("a cell's source is not text")
    return nb


def _grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def _normal(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def _signature(source: str) -> str | None:
    """The first `def` or `class` line of a cell, normalised, or None when it has none."""
    for line in _normal(source).splitlines():
        if line.startswith(("def ", "class ", "async def ")):
            return line
    return None


@dataclass
class Restored:
    notebook: NotebookNode
    restored: list[str]  # grade ids whose metadata was put back


def restore(submission: NotebookNode, release: NotebookNode) -> Restored:
    """Return a copy of ``submission`` whose nbgrader cells carry their release metadata."""
    sub = nbformat.from_dict(json.loads(json.dumps(submission)))
    wanted = [(i, c) for i, c in enumerate(release.cells) if _grade_id(c)]
    present = {_grade_id(c): j for j, c in enumerate(sub.cells) if _grade_id(c)}
    match: dict[int, int] = {}  # release index -> submission index
    for i, cell in wanted:
        if _grade_id(cell) in present:
            match[i] = present[_grade_id(cell)]
    taken = set(match.values())

    def free(j: int, cell_type: str) -> bool:
        c = sub.cells[j]
        return j not in taken and c.cell_type == cell_type and not _grade_id(c)

    # 1. by cell id; 2. by identical content (locked cells: set-up, tests, read-only text)
    ids = {c.get("id"): j for j, c in enumerate(sub.cells) if c.get("id")}
    for i, cell in wanted:
        if i in match:
            continue
        j = ids.get(cell.get("id"))
        if j is not None and free(j, cell.cell_type):
            match[i] = j
            taken.add(j)
    for i, cell in wanted:
        if i in match:
            continue
        for j in range(len(sub.cells)):
            if free(j, cell.cell_type) and _normal(sub.cells[j].source) == _normal(cell.source):
                match[i] = j
                taken.add(j)
                break

    # 3. by place: between the cells already matched, the most similar free cell of its type.
    # A test cell is never placed this way: its content is fixed, so one not found by id or
    # content was deleted or rewritten. An answer cell is placed only on a cell that still
    # holds its function's or class's first line (students keep the signature they were given).
    for i, cell in wanted:
        if i in match:
            continue
        before = max((match[k] for k in match if k < i), default=-1)
        after = min((match[k] for k in match if k > i), default=len(sub.cells))
        nbgrader = cell.metadata["nbgrader"]
        signature = _signature(cell.source) if nbgrader.get("solution") else None
        candidates = [j for j in range(before + 1, after) if free(j, cell.cell_type)
                      and not (nbgrader.get("grade") and not nbgrader.get("solution"))
                      and (signature is None or signature in _normal(sub.cells[j].source))]
        if not candidates:
            raise CannotRestore(
                f"the cell '{_grade_id(cell)}' ({cell.cell_type}, starting "
                f"{cell.source.strip().splitlines()[0][:60] if cell.source.strip() else '(empty)'!r})"
                " was deleted, moved or rewritten, and its nbgrader metadata is gone: it cannot be "
                "graded. Ask the student to copy their answers into a fresh copy of the release notebook."
            )

        def similarity(j: int, reference: str = cell.source) -> float:
            return difflib.SequenceMatcher(None, sub.cells[j].source, reference).ratio()

        j = max(candidates, key=similarity)
        match[i] = j
        taken.add(j)

    restored = []
    for i, j in match.items():
        metadata = release.cells[i].metadata["nbgrader"]
        if sub.cells[j].metadata.get("nbgrader") != metadata:
            if _grade_id(sub.cells[j]) is None:
                restored.append(metadata["grade_id"])
            sub.cells[j].metadata["nbgrader"] = nbformat.from_dict(json.loads(json.dumps(metadata)))
    return Restored(sub, sorted(restored))
