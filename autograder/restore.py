"""Read a submitted notebook safely, and give back the nbgrader metadata an editor dropped.

nbgrader finds the cells it grades by their metadata. Colab and some editors strip it, and
nbgrader then gives the notebook 0 without a word. Here each graded or locked cell of the
release notebook is found again in the submission -- by cell id, then by content, then by
its place between cells already found -- and its metadata is copied back. An answer cell
that cannot be found is reported (:class:`CannotRestore`), never silently scored as zero.

A *locked* cell (a test, the set-up cell, read-only text) belongs to the release, not to the
student: one that was edited, turned into markdown or deleted is put back as the release has
it, in its place, and reported (:attr:`Restored.tampered`). nbgrader's own OverwriteCells
would restore an edited cell silently when its metadata survived; here it is also named.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field

import nbformat
from nbformat.notebooknode import NotebookNode


class Malformed(Exception):
    """The file is not a notebook that can be graded (the message says why, for the student)."""


class CannotRestore(Exception):
    """nbgrader metadata is missing and some graded cells cannot be found again."""


def read(path) -> NotebookNode:
    """Parse a submission as an nbformat-4 notebook; an old nbformat is converted, not rejected."""
    return load(path)[0]


def load(path) -> tuple[NotebookNode, str]:
    """:func:`read`, and a note for the student when the file needed converting (else "")."""
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
        if not isinstance(cell.get("metadata", {}), dict):
            raise Malformed("a cell's metadata is not a mapping")
    version = data.get("nbformat")
    note = (f"the notebook was in the old format nbformat {version} and was converted to nbformat 4"
            if isinstance(version, int) and version < 4 else "")
    return nb, note


def _grade_id(cell) -> str | None:
    nbgrader = cell.get("metadata", {}).get("nbgrader", {})
    return nbgrader.get("grade_id") if isinstance(nbgrader, dict) else None


def _locked(cell) -> bool:
    """A cell the student may not change: nbgrader's locked cells and the tests (graded, no answer)."""
    nbgrader = cell.metadata["nbgrader"]
    return bool(nbgrader.get("locked") or (nbgrader.get("grade") and not nbgrader.get("solution")))


def _copy(node):
    return nbformat.from_dict(json.loads(json.dumps(node)))


def _fresh(release_cell, cell_id: str | None):
    """A copy of a release cell, unexecuted, to stand where a tampered one was."""
    cell = _copy(release_cell)
    if cell.cell_type == "code":
        cell.outputs, cell.execution_count = [], None
    if cell_id:
        cell["id"] = cell_id
    else:
        cell.pop("id", None)
    return cell


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
    tampered: list[str] = field(default_factory=list)  # locked cells put back as the release has them


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

    def free(j: int, cell_type: str | None) -> bool:
        c = sub.cells[j]
        return j not in taken and cell_type in (None, c.cell_type) and not _grade_id(c)

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
    def window(i: int) -> range:
        before = max((match[k] for k in match if k < i), default=-1)
        after = min((match[k] for k in match if k > i), default=len(sub.cells))
        return range(before + 1, after)

    for i, cell in wanted:
        if i in match or _locked(cell):
            continue
        nbgrader = cell.metadata["nbgrader"]
        signature = _signature(cell.source) if nbgrader.get("solution") else None
        candidates = [j for j in window(i) if free(j, cell.cell_type)
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

    # 4. a locked cell still missing was edited (or turned into another type) without its
    # metadata, or deleted: the most similar free cell in its place, of any type, if it is
    # clearly that cell; otherwise it is put back in its place as a new cell.
    missing: list[int] = []
    for i, cell in wanted:
        if i in match:
            continue

        def likeness(j: int, reference: str = cell.source) -> float:
            return difflib.SequenceMatcher(None, _normal(sub.cells[j].source), _normal(reference)).ratio()

        candidates = [j for j in window(i) if free(j, None) and likeness(j) >= 0.6]
        if candidates:
            match[i] = max(candidates, key=likeness)
            taken.add(match[i])
        else:
            missing.append(i)

    restored, tampered = [], []
    for i, j in match.items():
        release_cell = release.cells[i]
        metadata = release_cell.metadata["nbgrader"]
        if _locked(release_cell) and (sub.cells[j].cell_type != release_cell.cell_type
                                      or _normal(sub.cells[j].source) != _normal(release_cell.source)):
            tampered.append(metadata["grade_id"])
            sub.cells[j] = _fresh(release_cell, sub.cells[j].get("id"))
            continue
        if sub.cells[j].metadata.get("nbgrader") != metadata:
            if _grade_id(sub.cells[j]) is None:
                restored.append(metadata["grade_id"])
            sub.cells[j].metadata["nbgrader"] = _copy(metadata)
    if missing:
        with_ids = sub.nbformat_minor >= 5 and all(c.get("id") for c in sub.cells)
        used = {c.get("id") for c in sub.cells}
        inserts: dict[int, list] = {}
        for i in missing:
            after = max((match[k] for k in match if k < i), default=-1)
            gid = _grade_id(release.cells[i])
            cell_id = release.cells[i].get("id") or gid
            if cell_id in used:
                cell_id = f"restored-{gid}"[:64]
            used.add(cell_id)
            inserts.setdefault(after, []).append(_fresh(release.cells[i], cell_id if with_ids else None))
            tampered.append(gid)
        cells = list(inserts.get(-1, []))
        for j, cell in enumerate(sub.cells):
            cells.append(cell)
            cells.extend(inserts.get(j, []))
        sub.cells = cells
    return Restored(sub, sorted(restored), sorted(tampered))
