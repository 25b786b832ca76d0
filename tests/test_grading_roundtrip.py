"""The autograding round trip, for every assignment: answers score full marks, a blank release
scores zero, a half-done notebook gets exactly the points of what it solved, and a copy whose
nbgrader metadata was stripped (as Colab does) still scores full marks."""

from __future__ import annotations

import math

import pytest

from autograder.course import assignments, notebooks
from autograder.grade import read_csv
from grading_helpers import (
    answered,
    checksums,
    exercises,
    release,
    run_grader,
    solution,
    strip_metadata,
    write,
)

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module", params=assignments())
def graded(request, tmp_path_factory):
    assignment = request.param
    base = tmp_path_factory.mktemp(assignment)
    subs = base / "submitted"
    expected = {}
    for name in notebooks(assignment):
        exs = exercises(solution(assignment, name))
        total = sum(points for _, points in exs)
        half = {gid for gid, _ in exs[: math.ceil(len(exs) / 2)]}
        write(strip_metadata(answered(assignment, name)), subs / "full" / assignment / f"{name}.ipynb")
        write(release(assignment, name), subs / "blank" / assignment / f"{name}.ipynb")
        write(answered(assignment, name, half), subs / "half" / assignment / f"{name}.ipynb")
        expected[("full", name)] = (total, total, "metadata_restored")
        expected[("blank", name)] = (0.0, total, "graded")
        expected[("half", name)] = (sum(p for g, p in exs if g in half), total, "graded")
    before = checksums(subs)
    run_grader(assignment, subs, base / "out", base / "gradebook.db", "--workers", "2")
    rows = read_csv(base / "out" / "grades.csv")
    return assignment, base, rows, expected, before


def test_every_notebook_gets_exactly_its_points(graded):
    assignment, _, rows, expected, _ = graded
    got = {(r["student"], r["notebook"]): (float(r["score"]), float(r["max_score"]), r["status"])
           for r in rows}
    assert set(got) == set(expected), f"rows {sorted(got)} != expected {sorted(expected)}"
    for key, want in sorted(expected.items()):
        assert got[key] == want, f"{assignment} {key}: got {got[key]}, expected {want}"
    assert all(r["assignment"] == assignment for r in rows)


def test_feedback_for_every_graded_notebook(graded):
    _, base, rows, _, _ = graded
    for r in rows:
        page = base / "out" / "feedback" / r["student"] / f"{r['notebook']}.html"
        assert page.exists(), f"no feedback page for {r['student']}/{r['notebook']}"
        assert r["notebook"] in page.read_text()


def test_submissions_untouched_and_nothing_left_behind(graded):
    _, base, _, _, before = graded
    assert checksums(base / "submitted") == before
    assert not (base / "out" / ".work").exists()
    assert sorted(p.name for p in (base / "out").iterdir()) == [
        "feedback", "grades.csv", "grading.log", "run.json", "tests.json"]


def test_gradebook_agrees_with_the_csv(graded):
    from nbgrader.api import Gradebook

    assignment, base, rows, _, _ = graded
    with Gradebook(f"sqlite:///{base / 'gradebook.db'}") as gb:
        for r in rows:
            nb = gb.find_submission_notebook(r["notebook"], assignment, r["student"])
            assert math.isclose(nb.code_score, float(r["score"])), (r, nb.code_score)
