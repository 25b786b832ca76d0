"""What makes grading fast changes nothing graded: the feedback page from templates compiled
once in the fork server (autograder/job.py) is the page nbgrader's own exporter writes."""

from __future__ import annotations

from nbconvert.exporters import HTMLExporter
from nbgrader.converters import GenerateFeedback

from autograder import job
from autograder.course import course_config
from grading_helpers import answered


def test_the_feedback_page_is_the_same_with_templates_compiled_once():
    nb = answered("00_start", "start")
    for cell in nb.cells:
        settings = cell.metadata.get("nbgrader", {})
        if settings.get("grade"):
            settings["score"] = settings.get("points", 0)  # what GetGrades adds
    page = {"nbgrader": {"notebook": "start", "score": 4.0, "max_score": 4.0, "late_penalty": 0.0}}
    feedback = GenerateFeedback(config=course_config())
    plain, _ = HTMLExporter(parent=feedback, config=feedback.config).from_notebook_node(
        nb, resources=dict(page))
    job.warm_up()
    assert job.TEMPLATE_CODE.compiled, "the warm-up compiled the feedback templates"
    for _ in range(2):  # the first from the shared code, the next too
        warm, _ = job.FeedbackExporter(parent=feedback, config=feedback.config).from_notebook_node(
            nb, resources=dict(page))
        assert isinstance(warm, str) and warm == plain
    assert "Test cell" in plain and "standardise" in plain
