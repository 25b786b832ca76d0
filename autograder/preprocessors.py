"""Preprocessors that the course adds to nbgrader's autograde pipeline.

What they notice (a dead kernel, outputs cut short) is recorded in :data:`EVENTS`, which the
grading job (:mod:`autograder.job`) writes next to its notebook for the grader to report.
"""

import json
import os
import secrets
import uuid

from nbclient.exceptions import DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute, LimitOutput, NbGraderPreprocessor
from nbgrader.utils import is_grade, is_solution
from traitlets import Bool, Dict, Integer, Unicode

from autograder import prefork

EVENTS: dict[str, list] = {"kernel_died": [], "output_limited": [], "replaced": [], "untrusted": []}


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


class GuardedExecute(KernelDeathIsNotFatal):
    """Run every test cell with the real checks, and give no points to one whose failure could
    not have been seen.

    Between cells, out of the notebook's history, it runs :mod:`autograder.guard` in the kernel:
    ``install`` before the first cell; before each test cell ``before_test``, which puts back
    whatever the submission replaced (recorded in :data:`EVENTS` as ``replaced``); after each
    test cell ``canary``, a deliberately failing check whose error must reach the grader. A
    test cell after which it does not, or before which the guard could not run, gets an error
    output (zero points; ``untrusted`` in :data:`EVENTS`): the submission changed how errors
    are reported while that test ran.
    """

    guard = Bool(True, help="run autograder.guard around the test cells").tag(config=True)
    imports = Dict({}, help="test cell grade_id -> {name: 'module' or 'module:attribute'} that the "
                            "release's cells before it import").tag(config=True)

    sockets = Unicode("", help="a folder: talk to the kernel through Unix sockets there, not TCP "
                               "(a sandboxed kernel has no network)").tag(config=True)

    def create_kernel_manager(self):
        km = super().create_kernel_manager()
        if self.sockets:
            name = os.path.join(self.sockets, f"kernel-{uuid.uuid4().hex[:12]}")
            km.transport, km.ip, km.connection_file = "ipc", name, name + ".json"
        provisioner = prefork.provisioner_for(km)
        if provisioner is not None:  # the job forked a spare kernel (autograder/prefork.py)
            km.provisioner = provisioner
        return km

    def preprocess(self, nb, resources=None, km=None):
        self._nonce = secrets.token_hex(8)
        self._installed = False
        return super().preprocess(nb, resources, km)

    def _in_kernel(self, code: str, index: int) -> tuple[str, list]:
        """Run grader code in the kernel, outside the notebook and its history: (stdout, errors)."""
        probe = NotebookNode(cell_type="code", source=code, metadata=NotebookNode(), outputs=[],
                             execution_count=None, id=f"guard-{index}")
        original = self.nb.cells[index]
        try:
            self.execute_cell(probe, index, store_history=False)
        finally:
            self.nb.cells[index] = original
        text = "".join(o.get("text", "") for o in probe.outputs if o.get("output_type") == "stream")
        return text, [o for o in probe.outputs if o.get("output_type") == "error"]

    def _untrusted(self, cell, index: int, why: str):
        name = _cell_name(cell, index)
        EVENTS["untrusted"].append(name)
        cell.outputs = [*cell.get("outputs", []), NotebookNode(
            output_type="error", ename="GradingIntegrityError", evalue=why,
            traceback=[f"GradingIntegrityError: {why}"])]

    def preprocess_cell(self, cell, resources, index):
        if not self.guard or cell.cell_type != "code" or self._died_at is not None:
            return super().preprocess_cell(cell, resources, index)
        module = "__import__('autograder.guard').guard"
        if not self._installed:
            self._installed = True
            self._in_kernel(f"{module}.install(get_ipython())", index)
        test = is_grade(cell) and not is_solution(cell)
        ready = True
        if test:
            imports = self.imports.get(cell.metadata.get("nbgrader", {}).get("grade_id"), {})
            text, _ = self._in_kernel(f"{module}.before_test(get_ipython(), {self._nonce!r}, {imports!r})",
                                      index)
            marker = f"{self._nonce} replaced "
            EVENTS["replaced"] += [line[len(marker):] for line in text.splitlines()
                                   if line.startswith(marker)]
            ready = f"{self._nonce} ready" in text
        cell, resources = super().preprocess_cell(cell, resources, index)
        if test and self._died_at is None:
            text, errors = self._in_kernel(f"{module}.canary({self._nonce!r})", index)
            intact = f"{self._nonce} intact" in text and any(e.get("evalue") == self._nonce for e in errors)
            if not ready:
                self._untrusted(cell, index, "the grader's checks could not run before this test "
                                "(the submission changed how the kernel runs code): no points")
            elif not intact:
                self._untrusted(cell, index, "while this test ran, the submission changed how failures "
                                "are reported or checked: no points")
        return cell, resources


class RedactHiddenTests(NbGraderPreprocessor):
    """Feedback without the code of hidden tests: in each test cell, the lines between
    ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` become one line saying how many
    there were, and an error's traceback (which quotes the failing line) becomes its last line,
    the error's type and message. Test names, points and pass/fail stay."""

    redact = Bool(True, help="redact hidden tests in the feedback (--show-hidden-tests: False)"
                  ).tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        if not self.redact or cell.cell_type != "code" or not is_grade(cell) or is_solution(cell):
            return cell, resources
        lines, kept, hidden = cell.source.splitlines(), [], None
        for line in lines:
            marker = line.strip()
            if marker == "### BEGIN HIDDEN TESTS":
                hidden = 0
            elif marker == "### END HIDDEN TESTS" and hidden is not None:
                kept.append(f"# ... {hidden} lines of hidden tests, not shown ...")
                hidden = None
            elif hidden is not None:
                hidden += 1
            else:
                kept.append(line)
        if hidden is not None:  # no end marker: everything after the start is hidden
            kept.append(f"# ... {hidden} lines of hidden tests, not shown ...")
        cell.source = "\n".join(kept)
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
        return cell, resources


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
