"""One grading job, in its own process: nbgrader's autograde, then its feedback, for one notebook.

The parent (:mod:`autograder.grade`) gives every (student, notebook) pair its own job folder
and process, so that a wall-clock or memory limit can stop exactly one notebook, and
parallel jobs never share a working folder. The process is forked from a server that has
imported nbgrader once (:mod:`autograder.forkserver`; importing it costs seconds of CPU, which
every notebook would otherwise pay) and runs :func:`run_in_child`; ``python -m autograder.job
'<json>'`` runs the same job by hand. What the course's preprocessors noticed (a dead kernel,
outputs cut, checks replaced) is written to ``<root>/events.json``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path

# imported once by autograder.forkserver, so that each job starts with them in memory
PRELOAD = ["nbgrader.converters", "nbgrader.coursedir", "nbgrader.api", "nbconvert", "nbclient",
           "jupyter_client", "autograder.course", "autograder.preprocessors"]


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
        GuardedExecute={"imports": job.get("imports", {}), "sockets": job.get("sockets", "")},
        Autograde={"force": True, "create_student": True},
        GenerateFeedback={"force": True},
        RedactHiddenTests={"redact": job.get("redact", True)},
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


def run_in_child(spec: str, log: str, cwd: str, env: dict) -> None:
    """The job, in a process forked from the fork server: its own session (so that the parent
    can stop it and its kernel together), folder, environment and log."""
    os.setsid()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    handle = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(handle, 1)
    os.dup2(handle, 2)
    code = 1
    try:
        code = main([spec])
    except BaseException:  # noqa: BLE001 -- reported in the job's log; the exit status says it failed
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        Path(cwd, "exit").write_text(str(code))
        os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())
