"""Finding and reading submissions, and restoring stripped nbgrader metadata (no execution)."""

from __future__ import annotations

import json

import nbformat
import pytest

from autograder import restore, submissions
from autograder.course import assignments, notebooks
from grading_helpers import answered, grade_id, release, strip_metadata


@pytest.mark.parametrize("filename, expected", [
    ("start.ipynb", "start"),
    ("Copy of start.ipynb", "start"),
    ("Copy of Copy of start.ipynb", "start"),
    ("start (1).ipynb", "start"),
    ("Copy of start (12) (2).ipynb", "start"),
    ("01_arrays.ipynb", "01_arrays"),
])
def test_names_map_back_to_the_release(filename, expected):
    assert submissions.notebook_name(filename) == expected


def test_both_layouts(tmp_path):
    (tmp_path / "a" / "ann" / "00_start").mkdir(parents=True)
    (tmp_path / "a" / "ann" / "00_start" / "Copy of start.ipynb").write_text("{}")
    found = submissions.find(tmp_path / "a", "00_start", ["start"])
    assert [(f.student, f.notebook) for f in found] == [("ann", "start")]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "ann--start (1).ipynb").write_text("{}")
    (tmp_path / "b" / "bo--other.ipynb").write_text("{}")
    found = submissions.find(tmp_path / "b", "00_start", ["start"])
    assert [(f.student, f.notebook) for f in found] == [("ann", "start"), ("bo", None)]
    (tmp_path / "b" / "nobody.ipynb").write_text("{}")
    with pytest.raises(SystemExit, match="cannot tell whose file 'nobody.ipynb' is"):
        submissions.find(tmp_path / "b", "00_start", ["start"])


@pytest.mark.parametrize("content, reason", [
    (b"", "empty"),
    (b"\xff\xfe\x00garbage", "not text"),
    (b'{"cells": [', "not valid JSON"),
    (b'["a", "list"]', "not a Jupyter notebook"),
    (b'{"hello": 1}', "not a Jupyter notebook"),
])
def test_malformed_files_say_why(tmp_path, content, reason):
    path = tmp_path / "x.ipynb"
    path.write_bytes(content)
    with pytest.raises(restore.Malformed, match=reason):
        restore.read(path)


def test_an_old_nbformat_is_converted(tmp_path):
    v3 = {"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [{"cells": [
        {"cell_type": "code", "input": "x = 1", "outputs": [], "language": "python",
         "metadata": {}}]}]}
    path = tmp_path / "old.ipynb"
    path.write_text(json.dumps(v3))
    nb = restore.read(path)
    assert nb.nbformat == 4 and nb.cells[0].source == "x = 1"


PAIRS = [(a, n) for a in assignments() for n in notebooks(a)]


@pytest.mark.parametrize("assignment, name", PAIRS)
def test_stripped_metadata_comes_back_cell_for_cell(assignment, name):
    rel = release(assignment, name)
    submitted = answered(assignment, name)
    result = restore.restore(strip_metadata(submitted), rel)
    wanted = [grade_id(c) for c in rel.cells if grade_id(c)]
    assert result.restored == sorted(wanted)
    for mine, theirs in zip(result.notebook.cells, submitted.cells, strict=True):
        assert mine.source == theirs.source
        assert mine.metadata.get("nbgrader") == theirs.metadata.get("nbgrader")


@pytest.mark.parametrize("assignment, name", PAIRS)
def test_restore_survives_added_cells_and_refuses_deleted_ones(assignment, name):
    rel = release(assignment, name)
    nb = strip_metadata(answered(assignment, name))
    scratch = nbformat.v4.new_code_cell("print('my own experiment')")
    nb.cells.insert(3, scratch)
    result = restore.restore(nb, rel)
    assert grade_id(result.notebook.cells[3]) is None, "a student's own cell gets no metadata"
    exercise_at = [i for i, c in enumerate(rel.cells)
                   if c.metadata.get("nbgrader", {}).get("solution")]
    del nb.cells[exercise_at[-1] + 1:]  # the notebook ends before its last exercise
    with pytest.raises(restore.CannotRestore, match="cannot be graded"):
        restore.restore(nb, rel)


def test_kept_metadata_is_left_alone():
    assignment = assignments()[0]
    name = notebooks(assignment)[0]
    result = restore.restore(answered(assignment, name), release(assignment, name))
    assert result.restored == []


def test_a_rewritten_test_or_an_answer_without_its_signature_is_never_guessed_by_place():
    """Without ids and metadata, an answer is found only on a cell that still holds its
    function's first line, so a neighbouring cell never receives its metadata (which would
    grade the wrong code); a test edited in place is put back as the release has it."""
    assignment, name = "03_tabular", "tabular_torch"
    rel = release(assignment, name)
    ids = [i for i, c in enumerate(rel.cells) if grade_id(c)]
    test_at = next(i for i in ids if rel.cells[i].metadata["nbgrader"].get("grade")
                   and not rel.cells[i].metadata["nbgrader"].get("solution"))
    answer_at = next(i for i in ids if rel.cells[i].metadata["nbgrader"].get("solution"))

    def stripped():
        nb = strip_metadata(answered(assignment, name))
        for cell in nb.cells:
            cell.pop("id", None)
        return nb

    assert restore.restore(stripped(), rel).restored  # the untouched notebook restores
    nb = stripped()
    nb.cells[test_at].source += "\nassert True  # my own addition"
    result = restore.restore(nb, rel)  # an edited test is put back as the release has it, and named
    assert result.tampered == [grade_id(rel.cells[test_at])]
    assert result.notebook.cells[test_at].source == rel.cells[test_at].source
    assert result.notebook.cells[answer_at].source == nb.cells[answer_at].source
    assert grade_id(result.notebook.cells[answer_at]) == grade_id(rel.cells[answer_at])
    nb = stripped()
    nb.cells[answer_at].source = "print('I deleted the function')"
    with pytest.raises(restore.CannotRestore, match=grade_id(rel.cells[answer_at])):
        restore.restore(nb, rel)


@pytest.mark.parametrize("strip", [False, True], ids=["metadata kept", "metadata stripped"])
@pytest.mark.parametrize("how", ["edited", "deleted", "markdown", "rewritten"])
def test_a_tampered_locked_cell_is_put_back_and_named(strip, how):
    rel = release("00_start", "start")
    nb = answered("00_start", "start")
    nb = strip_metadata(nb) if strip else nb
    at = next(i for i, c in enumerate(rel.cells) if grade_id(c) == "test-standardise")
    if how == "edited":
        nb.cells[at].source += "\nassert True"
    elif how == "deleted":
        del nb.cells[at]
    elif how == "markdown":
        nb.cells[at] = nbformat.v4.new_markdown_cell(nb.cells[at].source, id=nb.cells[at].get("id"))
    else:
        nb.cells[at].source = "pass  # nothing to test here"
    result = restore.restore(nb, rel)
    nbformat.validate(result.notebook)
    assert result.tampered == ["test-standardise"]
    cells = [c for c in result.notebook.cells if grade_id(c) == "test-standardise"]
    assert len(cells) == 1 and cells[0].cell_type == "code"
    assert cells[0].source == rel.cells[at].source and cells[0].outputs == []
    order = [grade_id(c) for c in result.notebook.cells if grade_id(c)]
    assert order == [grade_id(c) for c in rel.cells if grade_id(c)], "put back in its place"
    untouched = restore.restore(strip_metadata(answered("00_start", "start")) if strip
                                else answered("00_start", "start"), rel)
    assert untouched.tampered == []
