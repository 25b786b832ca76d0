"""Preprocessors that the course adds to nbgrader's autograde pipeline."""

from nbgrader.preprocessors import NbGraderPreprocessor
from nbgrader.utils import is_grade


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
