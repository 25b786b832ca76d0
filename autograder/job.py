"""One grading job, in its own process: nbgrader's autograde, then its feedback, for one notebook.

The parent (:mod:`autograder.grade`) gives every (student, notebook) pair its own job folder
and process, so that a wall-clock or memory limit can stop exactly one notebook, and
parallel jobs never share a working folder. Run as
``python -m autograder.job '<json>'`` with the keys of :func:`main`. What the course's
preprocessors noticed (a dead kernel, outputs cut) is written to ``<root>/events.json``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from nbgrader.converters import Autograde, GenerateFeedback
    from nbgrader.coursedir import CourseDirectory

    from autograder.course import course_config, nbgrader_environment
    from autograder.preprocessors import EVENTS

    job = json.loads((argv or sys.argv[1:])[0])
    config = course_config(
        CourseDirectory={
            "root": job["root"],
            "source_directory": "source",  # empty: the job folder holds no solutions
            "db_url": job["db_url"],
            "assignment_id": job["assignment"],
            "student_id": job["student"],
            "notebook_id": job["notebook"],
        },
        Execute={"timeout": job["timeout"]},
        Autograde={"force": True, "create_student": True},
        GenerateFeedback={"force": True},
    )
    try:
        with nbgrader_environment():
            for converter_class in (Autograde, GenerateFeedback):
                coursedir = CourseDirectory(config=config)
                converter = converter_class(coursedir=coursedir, config=config)
                converter.log.setLevel(logging.WARNING)
                converter.start()
    finally:
        (Path(job["root"]) / "events.json").write_text(json.dumps(EVENTS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
