"""Release integrity: curriculum/ is exactly what nbgrader makes of solutions/, and gives nothing away."""

from __future__ import annotations

import json
import re

import pytest

from autograder import release
from conftest import CURRICULUM, SOLUTION_NOTEBOOKS, SOLUTIONS, notebook_id
from gradschool import runtime

RELEASE_NOTEBOOKS = sorted(CURRICULUM.glob("*/*.ipynb"))
SOLUTION_REGION = re.compile(r"^([ \t]*)### BEGIN SOLUTION\n.*?^[ \t]*### END SOLUTION[ \t]*$", re.S | re.M)
HIDDEN_REGION = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS\n.*?^[ \t]*### END HIDDEN TESTS[ \t]*\n?",
                           re.S | re.M)
STUB = r"\1# YOUR CODE HERE\n\1raise NotImplementedError()"
GIVEAWAYS = ("### BEGIN SOLUTION", "### END SOLUTION", "### BEGIN HIDDEN TESTS",
             "### END HIDDEN TESTS")


def test_there_is_a_course():
    assert len(SOLUTION_NOTEBOOKS) >= 2
    assert len(RELEASE_NOTEBOOKS) == len(SOLUTION_NOTEBOOKS)


def test_curriculum_is_a_fresh_release_of_solutions():
    problems = release.drift()
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("path", SOLUTION_NOTEBOOKS + RELEASE_NOTEBOOKS,
                         ids=lambda p: f"{p.parents[1].name}/{notebook_id(p)}")
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{path}: a cell has outputs (clear them before committing)"
            assert cell["execution_count"] is None, f"{path}: a cell has an execution count"


@pytest.mark.parametrize("path", RELEASE_NOTEBOOKS, ids=notebook_id)
def test_release_holds_no_solution_and_no_hidden_test(path):
    nb = json.loads(path.read_text())
    source = SOLUTIONS / path.parent.name / path.name
    solution_cells = {c["id"]: c for c in json.loads(source.read_text())["cells"]}
    for cell in nb["cells"]:
        text = "".join(cell["source"])
        for marker in GIVEAWAYS:
            assert marker not in text, f"{path}: {marker!r} is in the release"
        if cell["metadata"].get("nbgrader", {}).get("solution"):
            original = "".join(solution_cells[cell["id"]]["source"])
            assert text == SOLUTION_REGION.sub(STUB, original), (
                f"{path}: exercise {cell['id']} is not its solution cell with the solution cut out")
            assert "raise NotImplementedError()" in text
        elif cell["metadata"].get("nbgrader", {}).get("grade"):
            original = "".join(solution_cells[cell["id"]]["source"])
            assert text == HIDDEN_REGION.sub("", original).rstrip(), (
                f"{path}: test {cell['id']} is not its solution twin with the hidden tests cut out")


@pytest.mark.parametrize("path", SOLUTION_NOTEBOOKS, ids=notebook_id)
def test_badges_and_setup_cell_come_from_the_setting(path):
    nb = json.loads(path.read_text())
    header, setup = "".join(nb["cells"][0]["source"]), "".join(nb["cells"][1]["source"])
    assert runtime.badges(release.release_path(path)) in header.splitlines(), (
        f"{path}: the badge line is not generated from runtime.COURSE (run make release)")
    assert setup == runtime.setup_cell_source(), f"{path}: the set-up cell is stale (run make release)"


@pytest.mark.parametrize("command, message", [
    ("release", "curriculum/ is in sync with solutions/"),
    ("export", "gradschool/engine/ is in sync with its notebooks"),
])
def test_the_cli_checks_without_changing_anything(command, message, capsys):
    from autograder.cli import main

    assert main([command, "--check"]) == 0
    assert capsys.readouterr().out.strip() == message
