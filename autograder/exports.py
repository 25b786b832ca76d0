"""Grades in the column shapes that LMSs import: one row per student, the assignment's total.

``grades.csv`` has a row per student *and notebook*; an LMS wants one score per student and
assignment. Both files below sum a student's notebooks (missing ones count 0) and are written
whole, then renamed, like every output of the grader.

- ``canvas.csv``: Canvas's gradebook import shape, ``Student, ID, SIS User ID, SIS Login ID,
  Section, <assignment>``, with a first row of points possible. ``ID`` is the student id of
  ``grades.csv``, which for a Canvas zip is Canvas's numeric user id, the column Canvas matches
  on. Canvas updates an existing assignment when the last header reads like its own export's
  (``Name (12345)``): pass ``canvas_column`` for that, else it offers to create a new column.
- ``gradescope.csv``: ``SID, Total Score``, for Gradescope's score upload matched on the
  roster's student id (SID).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

FORMATS = ("canvas", "gradescope")


def totals(rows: Iterable) -> tuple[dict[str, float], float]:
    """Each student's total over the assignment's notebooks, and the most a student could get."""
    score: dict[str, float] = defaultdict(float)
    best: dict[str, float] = {}
    for r in rows:
        score[r.student] += r.score
        best[r.notebook] = max(best.get(r.notebook, 0.0), r.max_score)
    return dict(score), sum(best.values())


def _write(path: Path, header: list[str], lines: list[list]) -> Path:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(lines)
    tmp.replace(path)
    return path


def _number(value: float) -> str:
    return f"{value:g}"


def write(kind: str, rows: list, out: Path, assignment: str, canvas_column: str | None = None) -> Path:
    """Write ``OUT/<kind>.csv`` (:data:`FORMATS`) from the rows of ``grades.csv``."""
    if kind not in FORMATS:
        raise SystemExit(f"error: --export {kind!r} is not known (known: {', '.join(FORMATS)})")
    score, possible = totals(rows)
    students = sorted(score)
    if kind == "canvas":
        header = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", canvas_column or assignment]
        lines = [["Points Possible", "", "", "", "", _number(possible)]]
        lines += [["", student, "", "", "", _number(score[student])] for student in students]
    else:
        header = ["SID", "Total Score"]
        lines = [[student, _number(score[student])] for student in students]
    return _write(out / f"{kind}.csv", header, lines)
