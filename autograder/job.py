"""One grading job, in its own process: nbgrader's autograde, then its feedback, for one notebook.

The parent (:mod:`autograder.grade`) gives every (student, notebook) pair its own job folder
and process, so that a wall-clock or memory limit can stop exactly one notebook, and
parallel jobs never share a working folder. The process is forked from a server that has
imported nbgrader once and done its one-time work (:mod:`autograder.forkserver`; importing it
costs seconds of CPU, which every notebook would otherwise pay) and runs :func:`run_in_child`,
which first forks the spare that becomes the notebook's kernel (:mod:`autograder.prefork`);
``python -m autograder.job '<json>'`` runs the same job by hand, with a launched kernel. What
the course's preprocessors noticed (a dead kernel, outputs cut, checks replaced) is written to
``<root>/events.json``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path

from jinja2 import BytecodeCache
from nbconvert.exporters import HTMLExporter

from autograder import prefork
from autograder.course import course_config, nbgrader_environment

# imported once by autograder.forkserver, so that each job starts with them in memory
PRELOAD = ["nbgrader.converters", "nbgrader.coursedir", "nbgrader.api", "nbconvert", "nbclient",
           "jupyter_client", "autograder.course", "autograder.preprocessors"]


class _TemplateCode(BytecodeCache):
    """Compiled Jinja templates, kept in memory: filled by :func:`warm_up` in the fork server,
    so that no job compiles the feedback page's templates again (their sources are checksummed:
    a changed template is compiled anew)."""

    def __init__(self):
        self.compiled: dict[str, bytes] = {}

    def load_bytecode(self, bucket) -> None:
        if bucket.key in self.compiled:
            bucket.bytecode_from_string(self.compiled[bucket.key])

    def dump_bytecode(self, bucket) -> None:
        self.compiled[bucket.key] = bucket.bytecode_to_string()


TEMPLATE_CODE = _TemplateCode()


class FeedbackExporter(HTMLExporter):
    """nbgrader's feedback page exporter (configured by GenerateFeedback as ever), with its
    templates compiled once per grading run instead of once per notebook."""

    def _create_environment(self):
        environment = super()._create_environment()
        environment.bytecode_cache = TEMPLATE_CODE
        return environment


def warm_up() -> None:
    """Do once, in the fork server, the one-time work that every job would otherwise repeat:
    the gradebook's ORM mappings, nbformat's schema validator, and a feedback page (its
    templates, Markdown renderer and code highlighter). Nothing a job reads is kept but code."""
    import nbformat
    from nbgrader.api import Gradebook  # noqa: F401 -- its models, configured next
    from nbgrader.converters import GenerateFeedback
    from sqlalchemy.orm import configure_mappers

    configure_mappers()
    sample = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# A *sample* page\n\n- with `code`, $x^2$ and a [link](#)"),
        nbformat.v4.new_code_cell("import numpy as np\n\ndef f(x):\n    return np.sum(x) ** 2  # squared",
                                  outputs=[nbformat.v4.new_output("stream", text="1\n")]),
    ])
    nbformat.validate(sample)
    feedback = GenerateFeedback(config=course_config())
    page = {"nbgrader": {"notebook": "sample", "score": 0.0, "max_score": 1.0, "late_penalty": 0.0}}
    FeedbackExporter(parent=feedback, config=feedback.config).from_notebook_node(sample, resources=page)


def main(argv: list[str] | None = None) -> int:
    from nbgrader.converters import Autograde, GenerateFeedback
    from nbgrader.coursedir import CourseDirectory

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
        GenerateFeedback={"force": True, "exporter_class": FeedbackExporter},
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
        prefork.fork_spare()  # now, while this process is one thread
        code = main([spec])
    except BaseException:  # noqa: BLE001 -- reported in the job's log; the exit status says it failed
        traceback.print_exc()
    finally:
        if prefork.SPARE is not None:  # no kernel took it
            prefork.SPARE.release()
        sys.stdout.flush()
        sys.stderr.flush()
        Path(cwd, "exit").write_text(str(code))
        os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())
