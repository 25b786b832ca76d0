# nbgrader's configuration for the course: solutions/ is the source, curriculum/ the release.
# Loaded by `python -m autograder ...`, by `make release`, and by the nbgrader_config.py at
# the repository root (so `nbgrader ...` and the formgrader work from there too).
from pathlib import Path

from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    GetGrades,
    IgnorePattern,
    SaveAutoGrades,
)

from autograder.preprocessors import CapOutput, GuardedExecute, RedactHiddenTests, StderrIsNotFailure

c = get_config()  # noqa: F821 -- provided by traitlets when it loads this file
root = Path(__file__).resolve().parent.parent

c.CourseDirectory.course_id = "gradschool"
c.CourseDirectory.root = str(root)
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "curriculum"
c.CourseDirectory.db_url = f"sqlite:///{root / 'gradebook.db'}"
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "README.md", "*.pyo"]

# What a student sees where a solution was.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"


# Grading: one generous per-cell limit (the grader adds its own per-notebook wall clock),
# and stderr (framework warnings, progress bars) is not a failure; only an error is. A dead
# kernel stops the run but not the grading; tests run with the real checks (autograder/guard.py);
# outputs kept are capped (see preprocessors.py).
c.Execute.timeout = 120
c.Autograde.autograde_preprocessors = [
    GuardedExecute,
    IgnorePattern,
    ClearMetadataPreprocessor,
    CapOutput,
    StderrIsNotFailure,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]

# Feedback shows each test's name, points and pass/fail, never the code of its hidden part.
c.GenerateFeedback.preprocessors = [GetGrades, RedactHiddenTests, CSSHTMLHeaderPreprocessor]
