"""Preprocessors that the course adds to nbgrader's autograde pipeline.

What they notice (a dead kernel, outputs cut short) is recorded in :data:`EVENTS`, which the
grading job (:mod:`autograder.job`) writes next to its notebook for the grader to report.
"""

import json

from nbclient.exceptions import DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute, LimitOutput, NbGraderPreprocessor
from nbgrader.utils import is_grade
from traitlets import Integer

EVENTS: dict[str, list] = {"kernel_died": [], "output_limited": []}


def _cell_name(cell, index: int) -> str:
    return cell.metadata.get("nbgrader", {}).get("grade_id") or f"cell {index + 1}"


class StderrIsNotFailure(NbGraderPreprocessor):
    """Keep stderr in graded cells, but as stdout, so that it is not read as a failure.

    nbgrader gives a test cell zero points when it printed *anything* to stderr, so a
    TensorFlow start-up line, a deprecation warning or a tqdm progress bar would zero a
    correct answer. A failing test raises, and the error output still gives zero; turning
    stderr into stdout can only stop noise from costing points, never earn any.
    """

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and is_grade(cell):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream" and output.get("name") == "stderr":
                    output["name"] = "stdout"
        return cell, resources


class KernelDeathIsNotFatal(Execute):
    """nbgrader's Execute, except that a kernel that dies (``os._exit``, a segfault, the OS
    killing it) ends the *run*, not the grading: the cell where it died and every code cell
    after it get an error output (so their tests score zero), the cells before it keep
    their results, and the death is recorded in :data:`EVENTS`. Without this, nbgrader's
    autograde fails as a whole and every point of the notebook is lost."""

    def preprocess(self, nb, resources=None, km=None):
        self._died_at = None
        return super().preprocess(nb, resources, km)

    def _dead(self, cell, message: str):
        if cell.cell_type == "code":
            cell.outputs = [*cell.get("outputs", []), NotebookNode(
                output_type="error", ename="DeadKernelError", evalue=message,
                traceback=[f"DeadKernelError: {message}"])]
        return cell

    def preprocess_cell(self, cell, resources, index):
        if self._died_at is not None:
            return self._dead(cell, f"not run: the kernel died in {self._died_at}"), resources
        try:
            return super().preprocess_cell(cell, resources, index)
        except DeadKernelError:
            self._died_at = _cell_name(cell, index)
            EVENTS["kernel_died"].append(self._died_at)
            return self._dead(cell, "the kernel died while running this cell"), resources


class CapOutput(LimitOutput):
    """nbgrader's LimitOutput (lines per cell, traceback length), plus a cap on the characters
    of every output kept, so that a cell printing megabytes cannot bloat the graded notebook
    and the feedback. Outputs never change a score here: only what is kept is cut."""

    max_chars = Integer(100_000, help="characters kept of one output (-1: no limit)").tag(config=True)

    def _cut(self, text: str) -> str:
        if self.max_chars < 0 or len(text) <= self.max_chars:
            return text
        return text[: self.max_chars] + f"\n... Output truncated ({len(text):,} characters) ..."

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return cell, resources
        before = json.dumps(cell.get("outputs", []), sort_keys=True)
        cell, resources = super().preprocess_cell(cell, resources, index)
        for output in cell.outputs:
            if output.get("output_type") == "stream":
                output["text"] = self._cut(output.get("text", ""))
            for mime, value in output.get("data", {}).items():
                if isinstance(value, str):
                    output["data"][mime] = self._cut(value)
        if json.dumps(cell.outputs, sort_keys=True) != before:
            EVENTS["output_limited"].append(_cell_name(cell, index))
        return cell, resources
