"""Every notebook follows the course's anatomy (solutions/README.md), so forty notebooks stay one course."""

from __future__ import annotations

import json
import re

import pytest

from conftest import SOLUTION_NOTEBOOKS, notebook_id
from gradschool import runtime

MIN_EXERCISES = {"00_start": 1}  # a warm-up; every other assignment has at least three per notebook


def load(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        cell["text"] = "".join(cell["source"])
        cell["nb"] = cell["metadata"].get("nbgrader", {})
    return nb


def is_exercise(cell):
    return cell["cell_type"] == "code" and cell["nb"].get("solution") and not cell["nb"].get("grade")


def is_test(cell):
    nb = cell["nb"]
    return cell["cell_type"] == "code" and nb.get("grade") and not nb.get("solution")


@pytest.fixture(params=SOLUTION_NOTEBOOKS, ids=notebook_id)
def notebook(request):
    return request.param, load(request.param)


def test_header(notebook):
    path, nb = notebook
    header = nb["cells"][0]
    assert header["cell_type"] == "markdown"
    lines = header["text"].splitlines()
    assert lines[0].startswith("# ") and len(lines[0]) > 4, f"{path}: the first line is the title"
    text = header["text"]
    for label in ("**Goal:**", "**Objectives:**", "**Expected time:**", "**Prerequisites:**"):
        assert label in text, f"{path}: the header has no {label}"
    objectives = text.split("**Objectives:**")[1]
    assert re.search(r"^\s*[-*] \S", objectives, re.M), f"{path}: objectives are a bullet list"
    assert re.search(r"\*\*Expected time:\*\*\s*\d+", text), f"{path}: say how many minutes"
    assert runtime.badges(f"curriculum/{path.parent.name}/{path.name}") in lines


def test_setup_cell(notebook):
    path, nb = notebook
    setup = nb["cells"][1]
    assert setup["cell_type"] == "code" and setup["text"] == runtime.setup_cell_source()
    assert setup["nb"].get("locked") and setup["nb"].get("grade_id") == "setup"


def test_each_exercise_is_followed_by_its_test(notebook):
    path, nb = notebook
    cells = nb["cells"]
    exercises = [i for i, c in enumerate(cells) if is_exercise(c)]
    minimum = MIN_EXERCISES.get(path.parent.name, 3)
    assert len(exercises) >= minimum, f"{path}: {len(exercises)} graded exercises, need {minimum}"
    for i in exercises:
        ex = cells[i]
        assert "### BEGIN SOLUTION" in ex["text"] and "### END SOLUTION" in ex["text"]
        assert ex["text"].lstrip().startswith(("def ", "class ", "import ", "from ", "#")), (
            f"{path}: exercise {ex['nb']['grade_id']} must start with its signature")
        assert ex["nb"]["grade_id"].startswith("ex-")
        assert i + 1 < len(cells) and is_test(cells[i + 1]), (
            f"{path}: exercise {ex['nb']['grade_id']} is not followed by its test cell")
    tests = [i for i, c in enumerate(cells) if is_test(c)]
    for i in tests:
        test = cells[i]
        assert test["nb"].get("locked") and test["nb"].get("points", 0) > 0
        assert test["nb"]["grade_id"].startswith("test-")
        assert is_exercise(cells[i - 1]), f"{path}: test {test['nb']['grade_id']} follows no exercise"
        assert "### BEGIN HIDDEN TESTS" in test["text"], (
            f"{path}: test {test['nb']['grade_id']} has no hidden tests")
        visible = test["text"].split("### BEGIN HIDDEN TESTS")[0]
        assert "assert" in visible or "check" in visible, (
            f"{path}: test {test['nb']['grade_id']} shows the student no visible check")


def test_grade_ids_are_unique(notebook):
    path, nb = notebook
    ids = [c["nb"]["grade_id"] for c in nb["cells"] if c["nb"].get("grade_id")]
    assert len(ids) == len(set(ids)), f"{path}: duplicate grade ids"


def test_something_to_look_at_and_a_wrap_up(notebook):
    path, nb = notebook
    code = "\n".join(c["text"] for c in nb["cells"] if c["cell_type"] == "code")
    assert re.search(r"\bplots\.|plt\.|\.plot\(|imshow\(", code), f"{path}: nothing to look at"
    last = nb["cells"][-1]
    assert last["cell_type"] == "markdown" and last["text"].startswith("## Wrap-up")


def test_explicit_generators_not_global_seeds(notebook):
    path, nb = notebook
    code = "\n".join(c["text"] for c in nb["cells"] if c["cell_type"] == "code")
    assert not re.search(r"np\.random\.seed\(|random\.seed\(", code), (
        f"{path}: use np.random.default_rng(seed), not a global seed")


@pytest.mark.parametrize("path", SOLUTION_NOTEBOOKS, ids=notebook_id)
def test_the_readme_course_map_lists_it(path):
    readme = (path.parents[2] / "README.md").read_text()
    assert f"| `{path.parent.name}/{path.stem}` |" in readme, (
        f"README.md's course map has no row for {path.parent.name}/{path.stem}")


# 01_arrays teaches NumPy itself and says so; every later Part 1 notebook computes through rt.xp.
@pytest.mark.parametrize("path", [p for p in SOLUTION_NOTEBOOKS
                                  if p.parent.name.startswith("01_") and p.stem != "01_arrays"],
                         ids=notebook_id)
def test_part1_array_code_goes_through_the_device_switch(path):
    """Part 1 writes NumPy through `xp = rt.xp`, so the same cells run on CuPy on a GPU."""
    nb = load(path)
    exercises = [c["text"] for c in nb["cells"] if is_exercise(c)]
    assert any("xp = rt.xp" in c["text"] for c in nb["cells"] if c["cell_type"] == "code")
    for text in exercises:
        body = text.split("### BEGIN SOLUTION")[1]
        # dtypes and index helpers are fine from NumPy; computing on arrays goes through xp
        assert not re.search(r"\bnp\.(?!float|int|uint|bool|dtype|ndindex|newaxis)", body), (
            f"{path}: an exercise's solution computes with np. instead of xp.")
