"""The grader on a messy class: a flat folder of Colab downloads, broken files, a runaway loop,
stderr noise. Every file gets a row and a message; nothing is silently zero; nothing is changed."""

from __future__ import annotations

import re

import pytest

from autograder.grade import read_csv
from grading_helpers import answered, checksums, exercises, run_grader, solution, write

pytestmark = pytest.mark.notebooks
ASSIGNMENT, NOTEBOOK = "00_start", "start"


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    base = tmp_path_factory.mktemp("edges")
    subs = base / "flat"
    exs = exercises(solution(ASSIGNMENT, NOTEBOOK))
    total = sum(p for _, p in exs)

    noisy = answered(ASSIGNMENT, NOTEBOOK)
    for cell in noisy.cells:  # every answer also writes to stderr, as frameworks and tqdm do
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = ("import sys, warnings\nprint('progress 10/10', file=sys.stderr)\n"
                           "warnings.warn('a framework warning')\n" + cell.source)
    for cell in noisy.cells:  # and so does every call of an answer, inside the (locked) tests
        if cell.metadata.get("nbgrader", {}).get("solution"):
            name = re.search(r"^def (\w+)", cell.source, re.MULTILINE).group(1)
            cell.source += (f"\n\n_{name} = {name}\n\ndef {name}(*args, **kwargs):\n"
                            f"    print('computing', file=sys.stderr)\n    return _{name}(*args, **kwargs)\n")
    write(noisy, subs / f"amy--Copy of {NOTEBOOK} (1).ipynb")

    (subs / f"bob--{NOTEBOOK}.ipynb").write_text('{"cells": [{"cell_type": "code", "sour')
    write(answered(ASSIGNMENT, NOTEBOOK), subs / "bob--notes.ipynb")
    (subs / f"cat--{NOTEBOOK}.ipynb").write_bytes(b"")

    looping = answered(ASSIGNMENT, NOTEBOOK)
    first = exs[0][0]
    for cell in looping.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == first:
            cell.source = "while True:\n    pass\n" + cell.source
    write(looping, subs / f"dan--{NOTEBOOK} (2).ipynb")
    write(answered(ASSIGNMENT, NOTEBOOK), subs / "fay--homework.ipynb")
    hungry = answered(ASSIGNMENT, NOTEBOOK)
    for cell in hungry.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == first:
            cell.source = "hoard = bytearray(3 * 1024**3)  # 3 GB, every page touched\n" + cell.source
    write(hungry, subs / f"gus--{NOTEBOOK}.ipynb")
    (subs / "notes.txt").write_text("not a notebook, not a submission")

    before = checksums(subs)
    run_grader(ASSIGNMENT, subs, base / "out", base / "gradebook.db", "--timeout", "15",
               "--memory-mb", "1500")
    rows = read_csv(base / "out" / "grades.csv")
    return base, rows, before, total, exs


def row(rows, student, notebook=NOTEBOOK):
    found = [r for r in rows if r["student"] == student and r["notebook"] == notebook]
    assert len(found) == 1, f"expected one row for {student}/{notebook}, got {found}"
    return found[0]


def test_colab_copy_with_stderr_noise_scores_full_marks(graded):
    _, rows, _, total, _ = graded
    amy = row(rows, "amy")
    assert (amy["status"], float(amy["score"]), float(amy["max_score"])) == ("graded", total, total)
    assert f"Copy of {NOTEBOOK} (1).ipynb" in amy["message"]


def test_broken_files_are_malformed_with_a_reason(graded):
    _, rows, _, total, _ = graded
    bob, cat = row(rows, "bob"), row(rows, "cat")
    assert (bob["status"], float(bob["score"]), float(bob["max_score"])) == ("malformed", 0, total)
    assert "not valid JSON" in bob["message"]
    assert cat["status"] == "malformed" and "empty" in cat["message"]


def test_unknown_and_missing_notebooks_are_reported(graded):
    _, rows, _, _, _ = graded
    assert row(rows, "bob", "notes")["status"] == "unknown_notebook"
    assert row(rows, "fay", "homework")["status"] == "unknown_notebook"
    fay = row(rows, "fay")
    assert fay["status"] == "missing" and float(fay["score"]) == 0


def test_a_runaway_cell_is_stopped_and_the_rest_still_counts(graded):
    _, rows, _, total, exs = graded
    dan = row(rows, "dan")
    assert dan["status"] == "timeout", dan
    assert float(dan["score"]) == total - exs[0][1], "only the looping exercise loses its points"
    assert "15 s" in dan["message"]


def test_a_notebook_over_the_memory_limit_is_stopped(graded):
    _, rows, _, _, _ = graded
    gus = row(rows, "gus")
    assert (gus["status"], float(gus["score"])) == ("memory_exceeded", 0), gus
    assert "1500 MB" in gus["message"]


def test_every_file_has_a_row_and_nothing_was_changed(graded):
    base, rows, before, _, _ = graded
    assert sorted((r["student"], r["notebook"]) for r in rows) == sorted([
        ("amy", NOTEBOOK), ("bob", NOTEBOOK), ("bob", "notes"), ("cat", NOTEBOOK),
        ("dan", NOTEBOOK), ("fay", NOTEBOOK), ("fay", "homework"), ("gus", NOTEBOOK)])
    assert checksums(base / "flat") == before
    assert all(r["message"] or r["status"] == "graded" for r in rows)


def test_lms_exports_sum_each_students_notebooks(tmp_path):
    from autograder import exports
    from autograder.grade import Row

    rows = [Row("1001", "a", "one", 3.0, 4.0, "graded", ""), Row("1001", "a", "two", 1.0, 2.0, "graded", ""),
            Row("1002", "a", "one", 4.0, 4.0, "graded", ""),
            Row("1002", "a", "two", 0.0, 2.0, "missing", "no two.ipynb was handed in")]
    canvas = exports.write("canvas", rows, tmp_path, "a")
    assert canvas.read_text().splitlines() == [
        "Student,ID,SIS User ID,SIS Login ID,Section,a", "Points Possible,,,,,6", ",1001,,,,4", ",1002,,,,4"]
    gradescope = exports.write("gradescope", rows, tmp_path, "a")
    assert gradescope.read_text().splitlines() == ["SID,Total Score", "1001,4", "1002,4"]
    with pytest.raises(SystemExit, match="not known"):
        exports.write("moodle", rows, tmp_path, "a")
