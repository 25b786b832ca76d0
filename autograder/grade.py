"""Grade a class: every submission of one assignment through nbgrader's autograde.

What this adds to nbgrader, in the order a run does it:

1. the gradebook learns the assignment from ``solutions/`` (generate_assignment);
2. submissions are found in any supported source -- nbgrader's folders, a flat folder, an
   LMS zip (:mod:`autograder.submissions`) --, read safely, and their stripped nbgrader
   metadata and tampered locked cells are restored from the release (:mod:`autograder.restore`);
3. each (student, notebook) is graded in its own process and folder under ``OUT/.work``,
   with a wall-clock and a memory limit (:mod:`autograder.job`), several at a time, its kernel
   shut in a sandbox that sees only that folder, the Python environment, the dataset cache
   and a copy of the course package without the module the notebook builds
   (:mod:`autograder.sandbox`), its tests run with the real checks (:mod:`autograder.guard`); with
   ``resume``, a notebook whose submitted file is unchanged since its row in ``grades.csv``
   (same sha256) is not graded again;
4. every notebook gets a row in ``OUT/grades.csv`` with a status (:data:`STATUSES`) and a
   human message, written as each notebook finishes (so an interrupted run keeps what it
   graded), and every graded notebook a feedback page in ``OUT/feedback/<student>/``.

Submitted files are only read. Nothing is written outside OUT and the gradebook.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import astuple, dataclass, fields
from pathlib import Path, PurePosixPath

import nbformat
import psutil
from sqlalchemy.exc import SAWarning

from autograder import export as exporting
from autograder import exports as lms_exports
from autograder import restore, sandbox, submissions
from autograder.course import (
    CURRICULUM,
    DEFAULT_GRADEBOOK,
    ROOT,
    SOLUTIONS,
    course_config,
    nbgrader_environment,
    notebooks,
)
from autograder.forkserver import ForkServer, exit_status

DEFAULT_TIMEOUT_S = 300
DEFAULT_MEMORY_MB = 3072
JOB_START_ALLOWANCE_S = 30  # nbgrader's own start-up and feedback, on top of the notebook's time
# What a row's status can be (autograder/README.md says what each means). Only ever added to.
STATUSES = ("graded", "metadata_restored", "missing", "malformed", "unknown_notebook",
            "timeout", "memory_exceeded", "crashed", "tampered", "kernel_died", "output_limited",
            "refused")
# Statuses of a notebook that ran to a result: with resume, an unchanged file keeps its row.
FINAL = frozenset({"graded", "metadata_restored", "timeout", "memory_exceeded", "tampered",
                   "kernel_died", "output_limited"})
KEPT_LINES, KEPT_CHARS = 1000, 100_000  # nbgrader's LimitOutput, CapOutput (autograder/preprocessors.py)


@dataclass
class Row:
    student: str
    assignment: str
    notebook: str
    score: float
    max_score: float
    status: str
    message: str
    file: str = ""  # the file graded, as handed in
    sha256: str = ""  # of the file graded: with resume, an unchanged file is not graded again
    seconds: float = 0.0  # wall-clock time of its grading job (a timing column: varies run to run)


@dataclass
class Job:
    student: str
    notebook: str
    folder: Path
    note: str = ""  # what preparing the file already had to say
    restored: bool = False  # its nbgrader metadata was put back from the release
    tampered: tuple[str, ...] = ()  # locked cells put back from the release
    file: str = ""
    sha256: str = ""
    imports: dict | None = None  # per test cell, the names the release's cells import before it


def release_imports(release: nbformat.NotebookNode) -> dict[str, dict[str, str]]:
    """For each test cell of a release notebook, the names that its code cells before it import,
    answers excepted: ``{"test-x": {"np": "numpy", "check_close": "gradschool.checks:check_close"}}``.
    The guard puts these names back before the test runs (:func:`autograder.guard.before_test`)."""
    names: dict[str, str] = {}
    found: dict[str, dict[str, str]] = {}
    for cell in release.cells:
        settings = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or (settings.get("solution") and not settings.get("grade")):
            continue
        if settings.get("grade") and not settings.get("solution"):
            found[settings.get("grade_id", "")] = dict(names)
        source = "\n".join(line for line in cell.source.splitlines()
                           if not line.lstrip().startswith(("%", "!")))
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        names[alias.asname] = alias.name
                    else:
                        names[alias.name.split(".")[0]] = alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    if alias.name != "*":
                        names[alias.asname or alias.name] = f"{node.module}:{alias.name}"
    return found


def _withheld_module(assignment: str, notebook: str) -> tuple[str, str] | None:
    """The module a solution notebook exports, as its *release* exports it (exercises blank):
    what the graded kernel's copy of the course holds in its place (:func:`sandbox.build_library`).
    A notebook whose worker processes must import the reference says so in its metadata
    (``"gradschool": {"withhold": false}``; autograder/README.md names them)."""
    settings = nbformat.read(SOLUTIONS / assignment / f"{notebook}.ipynb", as_version=4).metadata.get(
        "gradschool", {})
    target = settings.get("export")
    if not target or not target.startswith("gradschool/") or settings.get("withhold") is False:
        return None
    path, text = exporting.module_source(CURRICULUM / assignment / f"{notebook}.ipynb")
    return target, text


def _settings(assignment: str, timeout: float, memory_mb: int) -> dict:
    """What a graded row depends on besides the file: the limits, and the tests (hidden ones
    live in solutions/). ``--resume`` keeps rows only when these are unchanged."""
    digest = hashlib.sha256()
    for path in sorted((SOLUTIONS / assignment).glob("*.ipynb")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return {"assignment": assignment, "timeout": timeout, "memory_mb": memory_mb,
            "solutions_sha256": digest.hexdigest()}


def _warm_data(data: Path) -> subprocess.Popen:
    """Start filling the run's dataset cache, which kernels see read-only: wait for it (with
    :func:`_wait`) before any kernel starts."""
    env = dict(os.environ, GRADSCHOOL_DATA_DIR=str(data))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    code = ("from gradschool import data\n"
            "for name in data.available():\n"
            "    if name != 'mnist_full':\n"
            "        data.load(name)\n")
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait(warming: subprocess.Popen) -> None:
    output, _ = warming.communicate(timeout=600)
    if warming.returncode:
        raise RuntimeError(f"the dataset cache could not be filled:\n{output[-2000:]}")


def _test_cells(notebook) -> set[str]:
    """Names of a gradebook notebook's auto-graded test cells: graded code that is not an answer."""
    answers = {c.name for c in notebook.solution_cells}
    return {c.name for c in notebook.grade_cells if c.cell_type == "code" and c.name not in answers}


def _scores(gradebook_url: str, assignment: str, student: str, notebook: str) -> tuple[float, float]:
    """Auto-graded points (the test cells' scores) of one submitted notebook, from the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(gradebook_url) as gb:
        nb = gb.find_submission_notebook(notebook, assignment, student)
        tests = _test_cells(nb.notebook)
        grades = [g for g in nb.grades if g.name in tests]
        return (float(sum(g.auto_score or 0 for g in grades)),
                float(sum(g.max_score for g in grades)))


def _test_results(gradebook_url: str, assignment: str, student: str, notebook: str) -> list[dict]:
    """Each auto-graded test cell of one submitted notebook: name, points, max points, passed."""
    from nbgrader.api import Gradebook

    with Gradebook(gradebook_url) as gb:
        nb = gb.find_submission_notebook(notebook, assignment, student)
        tests = _test_cells(nb.notebook)
        order = {c.name: i for i, c in enumerate(nb.notebook.grade_cells)}
        return [{"test": g.name, "score": float(g.auto_score or 0), "max_score": float(g.max_score),
                 "passed": bool(g.max_score) and float(g.auto_score or 0) == float(g.max_score)}
                for g in sorted(nb.grades, key=lambda g: order.get(g.name, 0)) if g.name in tests]


def write_tests_json(rows: list[Row], gradebook_url: str, path: Path) -> None:
    """``tests.json``: every row of grades.csv with its test cells, written whole then renamed."""
    entries = []
    for r in sorted(rows, key=lambda r: (r.student, r.notebook)):
        try:
            tests = _test_results(gradebook_url, r.assignment, r.student, r.notebook)
        except Exception:  # noqa: BLE001 -- a row with no gradebook entry (unknown notebook, refused)
            tests = []
        entries.append({"student": r.student, "notebook": r.notebook, "status": r.status,
                        "score": r.score, "max_score": r.max_score, "tests": tests})
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(entries, indent=1) + "\n")
    tmp.replace(path)


def _max_score(gradebook_url: str, assignment: str, notebook: str) -> float:
    from nbgrader.api import Gradebook

    with Gradebook(gradebook_url) as gb:
        nb = gb.find_notebook(notebook, assignment)
        tests = _test_cells(nb)
        return float(sum(c.max_score for c in nb.grade_cells if c.name in tests))


def _zero(gradebook_url: str, assignment: str, student: str, notebook: str) -> None:
    """Record zero for a notebook that could not be run, so the gradebook agrees with the CSV."""
    from nbgrader.api import Gradebook

    with Gradebook(gradebook_url) as gb:
        nb = gb.find_submission_notebook(notebook, assignment, student)
        for grade in nb.grades:
            grade.auto_score = 0
            grade.needs_manual_grade = False
        gb.db.commit()


def _register(gradebook_url: str, work: Path, assignment: str, students: list[str]) -> None:
    """Put the assignment (from solutions/) and every student's submission into the gradebook.

    Doing it once, before the parallel jobs start, keeps them from racing to create rows.
    """
    from nbgrader.api import Gradebook
    from nbgrader.converters import GenerateAssignment
    from nbgrader.coursedir import CourseDirectory

    (work / "generate").mkdir()
    config = course_config(
        CourseDirectory={"root": str(work / "generate"), "source_directory": str(SOLUTIONS),
                         "release_directory": str(work / "generate" / "release"),
                         "db_url": gradebook_url, "assignment_id": assignment},
        GenerateAssignment={"force": True},
    )
    with nbgrader_environment():
        converter = GenerateAssignment(coursedir=CourseDirectory(config=config), config=config)
        converter.log.setLevel(logging.ERROR)
        converter.start()
    with Gradebook(gradebook_url) as gb, warnings.catch_warnings():
        # nbgrader's own session use makes SQLAlchemy warn here; the rows are written all the same
        warnings.simplefilter("ignore", category=SAWarning)
        for student in students:
            gb.update_or_create_student(student)
            gb.update_or_create_submission(assignment, student)


def tree_rss(process: psutil.Process) -> int:
    """Resident memory of a process and all its descendants, in bytes (0 once it is gone)."""
    total = 0
    try:
        for p in [process, *process.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


_RUNNING: set[int] = set()  # process groups of the jobs running now, stopped if the run is interrupted


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _stop_running() -> None:
    for pgid in list(_RUNNING):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _sandbox_settings(job: Job, library: Path, data: Path, runtime: Path, hidden: list[Path]) -> dict:
    """What the job's kernel may see (:func:`autograder.sandbox.isolate`)."""
    return {
        "hidden": [str(p) for p in hidden],
        "readable": [sys.prefix, str(library), str(data)],
        "writable": [str(job.folder), str(runtime)],
        "environment": {"PYTHONPATH": str(library), "GRADSCHOOL_DATA_DIR": str(data),
                        "TMPDIR": "/tmp", "MPLBACKEND": "Agg"},
        "report": str(job.folder / "isolation.txt"),
    }


def _run_job(server: ForkServer, job: Job, assignment: str, gradebook_url: str, timeout: float,
             memory_mb: int, library: Path, hidden: list[Path], redact: bool = True) -> tuple[str, str]:
    """Run one job's process under the limits; returns (outcome, detail)."""
    data = job.folder.parent.parent / "data"  # the run's own cache, in OUT/.work, warmed before
    runtime = Path(tempfile.mkdtemp(prefix="gs-", dir="/tmp"))  # short: Unix socket paths are
    spec = {"root": str(job.folder), "assignment": assignment, "student": job.student,
            "notebook": job.notebook, "db_url": gradebook_url, "timeout": int(timeout),
            "imports": job.imports or {}, "sockets": str(runtime), "redact": redact}
    sandbox.kernelspec(job.folder / "jupyter", _sandbox_settings(job, library, data, runtime, hidden))
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("MPLBACKEND", "Agg")
    env["GRADSCHOOL_DATA_DIR"] = str(data)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["JUPYTER_PATH"] = str(job.folder / "jupyter")  # the sandboxed python3 kernelspec comes first
    env["JUPYTER_RUNTIME_DIR"] = str(runtime)
    log_path = job.folder / "job.log"
    pid = server.start(json.dumps(spec), log_path, job.folder, env)
    _RUNNING.add(pid)
    try:
        watched = psutil.Process(pid)
    except psutil.NoSuchProcess:  # already over
        watched = None
    deadline = time.monotonic() + timeout + JOB_START_ALLOWANCE_S
    outcome, peak = "", 0
    while watched is not None and _alive(watched):
        peak = max(peak, tree_rss(watched))
        if peak > memory_mb * 2**20:
            outcome = "memory_exceeded"
        elif time.monotonic() > deadline:
            outcome = "timeout"
        if outcome:
            try:  # the kernel is in a session of its own: stop it too, not only the job's group
                kernels = watched.children(recursive=True)
            except psutil.Error:
                kernels = []
            for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL),
                         *(kernel.kill for kernel in kernels)):
                try:
                    kill()
                except (ProcessLookupError, PermissionError, psutil.Error):
                    pass
            break
        time.sleep(0.1)
    _RUNNING.discard(pid)
    shutil.rmtree(runtime, ignore_errors=True)
    tail = log_path.read_text(errors="replace")[-2000:]
    if outcome:
        return outcome, f"peak {peak / 2**20:.0f} MB"
    if exit_status(job.folder) != 0:
        return "crashed", tail
    return "done", tail


def _execution_errors(autograded: Path) -> tuple[bool, bool]:
    """(a cell hit the time limit, the kernel died) in an autograded notebook."""
    text = autograded.read_text(errors="replace") if autograded.exists() else ""
    return "CellTimeoutError" in text, "DeadKernelError" in text or "Kernel died" in text


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _events(folder: Path) -> dict[str, list]:
    try:
        return json.loads((folder / "events.json").read_text())
    except (OSError, ValueError):
        return {}


def _previous(path: Path, assignment: str) -> dict[tuple[str, str], Row]:
    """The rows of an earlier run that ``resume`` may keep: graded to a result, with a checksum."""
    if not path.exists():
        return {}
    kept = {}
    for r in read_csv(path):
        if r.get("assignment") == assignment and r.get("status") in FINAL and r.get("sha256"):
            try:
                kept[(r["student"], r["notebook"])] = Row(
                    r["student"], assignment, r["notebook"], float(r["score"]), float(r["max_score"]),
                    r["status"], r["message"], r.get("file", ""), r["sha256"],
                    float(r.get("seconds") or 0))
            except (KeyError, ValueError):
                continue
    return kept


def grade(
    assignment: str,
    submitted: Path,
    out: Path,
    *,
    gradebook: Path | None = None,
    workers: int | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    progress: bool = True,
    resume: bool = False,
    id_pattern: str | None = None,
    show_hidden_tests: bool = False,
    exports: tuple[str, ...] = (),
) -> list[Row]:
    unknown = [kind for kind in exports if kind not in lms_exports.FORMATS]
    if unknown:  # fails before anything is graded
        raise SystemExit(f"error: --export {unknown[0]!r} is not known "
                         f"(known: {', '.join(lms_exports.FORMATS)})")
    known = notebooks(assignment)
    releases = {nb: CURRICULUM / assignment / f"{nb}.ipynb" for nb in known}
    for path in releases.values():
        if not path.exists():
            raise SystemExit(f"error: {path} is missing: run `make release` first")
    submissions.id_pattern(id_pattern)  # a bad pattern fails before anything is written
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    gradebook_url = f"sqlite:///{Path(gradebook or DEFAULT_GRADEBOOK).resolve()}"
    workers = max(1, workers or os.cpu_count() or 1)
    previous = _previous(out / "grades.csv", assignment) if resume else {}
    log = _logger(out / "grading.log", append=resume)
    settings = _settings(assignment, timeout, memory_mb)
    settings_file = out / "run.json"
    if previous:
        try:
            before = json.loads(settings_file.read_text())
        except (OSError, ValueError):
            before = {}
        changed = sorted(k for k in settings if before.get(k) != settings[k])
        if changed:
            log.warning("--resume: %s changed since the last run: every notebook is graded again",
                        ", ".join(changed))
            print(f"note: {', '.join(changed)} changed since the last run in {out}: "
                  "--resume grades every notebook again", file=sys.stderr)
            previous = {}
    settings_file.with_suffix(".json.tmp").write_text(json.dumps(settings, indent=1) + "\n")
    settings_file.with_suffix(".json.tmp").replace(settings_file)

    files = submissions.find(Path(submitted), assignment, known, pattern=id_pattern,
                             extract_to=work / "archive")
    students = sorted({f.student for f in files})
    log.info("%d files from %d students for %s", len(files), len(students), assignment)
    # likely to grade: the jobs' fork server and the dataset cache start while the class registers
    early = bool(files) and not previous
    server = _fork_server() if early else None
    warming = _warm_data(work / "data") if early else None
    _register(gradebook_url, work, assignment, students)
    max_scores = {nb: _max_score(gradebook_url, assignment, nb) for nb in known}

    rows: list[Row] = []
    by_pair: dict[tuple[str, str], list[submissions.Submitted]] = defaultdict(list)
    for f in files:
        if f.notebook is None:
            name = submissions.notebook_name(PurePosixPath(f.original_name).name)
            if f.problem:
                rows.append(Row(f.student, assignment, name, 0.0, 0.0, "refused",
                                f"{f.problem}; not graded", f.original_name))
            else:
                rows.append(Row(f.student, assignment, name, 0.0, 0.0, "unknown_notebook",
                                f"{f.original_name} matches no notebook of {assignment} "
                                f"(expected one of: {', '.join(known)}); not graded", f.original_name))
        else:
            by_pair[(f.student, f.notebook)].append(f)

    release_nbs = {nb: nbformat.read(path, as_version=4) for nb, path in releases.items()}
    imports = {nb: release_imports(release) for nb, release in release_nbs.items()}
    prepared: dict[str, dict[str, nbformat.NotebookNode]] = defaultdict(dict)
    to_grade: list[Job] = []
    reused: list[Row] = []
    for student in students:
        for nb in known:
            candidates = by_pair.get((student, nb), [])
            if not candidates:
                rows.append(Row(student, assignment, nb, 0.0, max_scores[nb], "missing",
                                f"no {nb}.ipynb was handed in"))
                _zero(gradebook_url, assignment, student, nb)
                continue
            chosen = min(candidates, key=lambda f: (bool(f.problem), f.original_name != f"{nb}.ipynb",
                                                    -f.mtime, f.original_name))
            note = [] if chosen.original_name == f"{nb}.ipynb" else [
                f"graded {chosen.original_name} as {nb}.ipynb"]
            if len(candidates) > 1:
                others = ", ".join(sorted(f.original_name for f in candidates if f is not chosen))
                note.append(f"also handed in and ignored: {others}")
            if chosen.problem:
                rows.append(Row(student, assignment, nb, 0.0, max_scores[nb], "refused",
                                "; ".join([chosen.problem, *note[1:]]), chosen.original_name))
                _zero(gradebook_url, assignment, student, nb)
                continue
            checksum = _sha256(chosen.path)
            try:
                submission, converted = restore.load(chosen.path)
                result = restore.restore(submission, release_nbs[nb])
            except (restore.Malformed, restore.CannotRestore) as error:
                rows.append(Row(student, assignment, nb, 0.0, max_scores[nb], "malformed",
                                "; ".join([*note, str(error)]), chosen.original_name, checksum))
                _zero(gradebook_url, assignment, student, nb)
                continue
            except Exception as error:  # noqa: BLE001 -- one odd file must not stop the class
                rows.append(Row(student, assignment, nb, 0.0, max_scores[nb], "malformed",
                                "; ".join([*note, f"the notebook cannot be prepared for grading: "
                                                  f"{type(error).__name__}: {error}"]),
                                chosen.original_name, checksum))
                _zero(gradebook_url, assignment, student, nb)
                log.exception("%s/%s: cannot be prepared", student, nb)
                continue
            prepared[student][nb] = result.notebook
            old = previous.get((student, nb))
            if old is not None and old.sha256 == checksum:
                reused.append(old)
                log.info("%s/%s: unchanged since the last run, its row is kept (%s %g/%g)",
                         student, nb, old.status, old.score, old.max_score)
                continue
            if converted:
                note.append(converted)
            if result.restored:
                note.append(f"nbgrader metadata was missing from {len(result.restored)} cells "
                            "and was restored from the release notebook")
            if result.tampered:
                note.append(f"the locked cells {', '.join(result.tampered)} were edited, deleted or "
                            "changed in type; they were put back as the release has them and graded so")
            to_grade.append(Job(student, nb, Path(), "; ".join(note), bool(result.restored),
                                tuple(result.tampered), chosen.original_name, checksum, imports[nb]))

    libraries = {nb: sandbox.build_library(work / "lib" / nb, ROOT, _withheld_module(assignment, nb))
                 for nb in sorted({job.notebook for job in to_grade})}
    if to_grade and warming is None:
        warming = _warm_data(work / "data")
    if warming is not None:
        _wait(warming)
    gradebook_file = Path(gradebook or DEFAULT_GRADEBOOK).resolve()
    hidden = [ROOT, out, Path(submitted).resolve(), gradebook_file,
              *(gradebook_file.with_name(gradebook_file.name + suffix) for suffix in ("-journal", "-wal"))]
    jobs = []
    for job in to_grade:
        job.folder = work / "jobs" / f"{len(jobs):05d}"
        target = job.folder / "submitted" / job.student / assignment
        target.mkdir(parents=True)
        (job.folder / "source" / assignment).mkdir(parents=True)
        # every notebook of the student goes in, so nbgrader does not zero the others
        for name, notebook in prepared[job.student].items():
            nbformat.write(notebook, target / f"{name}.ipynb")
        jobs.append(job)

    def run(job: Job) -> Row:
        started = time.monotonic()
        outcome, detail = _run_job(server, job, assignment, gradebook_url, timeout, memory_mb,
                                   libraries[job.notebook], hidden, redact=not show_hidden_tests)
        report = job.folder / "isolation.txt"
        isolation = report.read_text() if report.exists() else ""
        if isolation and not isolation.startswith("isolated"):
            log.warning("%s/%s: the kernel ran %s", job.student, job.notebook, isolation)
        seconds = round(time.monotonic() - started, 1)
        autograded = job.folder / "autograded" / job.student / assignment / f"{job.notebook}.ipynb"
        hit_time_limit, kernel_died = _execution_errors(autograded)
        events = _events(job.folder)
        messages = [job.note] if job.note else []

        def row(score: float, status: str) -> Row:
            return Row(job.student, assignment, job.notebook, score, max_scores[job.notebook], status,
                       "; ".join(m for m in messages if m), job.file, job.sha256, seconds)

        if outcome in ("timeout", "memory_exceeded", "crashed"):
            _zero(gradebook_url, assignment, job.student, job.notebook)
            limit = {"timeout": f"stopped after the {timeout:g} s limit",
                     "memory_exceeded": f"stopped above the {memory_mb} MB memory limit",
                     "crashed": "the grader failed on this notebook (see grading.log)"
                                + (f": {detail.strip().splitlines()[-1]}" if detail.strip() else "")}
            messages.append(limit[outcome])
            log.warning("%s/%s: %s (%s)\n%s", job.student, job.notebook, outcome,
                        detail if outcome != "crashed" else "", detail if outcome == "crashed" else "")
            return row(0.0, outcome)
        score, _ = _scores(gradebook_url, assignment, job.student, job.notebook)
        died_in = events.get("kernel_died") or (["a cell"] if kernel_died else [])
        limited = events.get("output_limited") or []
        replaced = list(dict.fromkeys(events.get("replaced") or []))
        untrusted = events.get("untrusted") or []
        if hit_time_limit:
            messages.append(f"a cell ran past the {timeout:g} s limit and was stopped")
        if died_in:
            messages.append(f"the kernel died while running {died_in[0]} (os._exit, a crash in "
                            "compiled code such as a segfault, or the system stopping it): the cells "
                            "after it did not run, the points of the tests before it count")
        if limited:
            messages.append(f"the output of {', '.join(dict.fromkeys(limited))} was cut to what the "
                            f"grader keeps ({KEPT_LINES} lines and {KEPT_CHARS:,} characters per output);"
                            " the grade counts in full")
        if replaced:
            shown = ", ".join(replaced[:6]) + (f" and {len(replaced) - 6} more" if len(replaced) > 6 else "")
            messages.append(f"the submission had replaced what the tests rely on ({shown}); the "
                            "originals were put back before each test ran")
        if untrusted:
            messages.append(f"{', '.join(untrusted)} scored 0: while they ran, the submission changed "
                            "how failures are reported or checked")
        status = ("timeout" if hit_time_limit else "kernel_died" if died_in
                  else "tampered" if job.tampered or replaced or untrusted
                  else "output_limited" if limited
                  else "metadata_restored" if job.restored else "graded")
        feedback = job.folder / "feedback" / job.student / assignment / f"{job.notebook}.html"
        if feedback.exists():
            target = out / "feedback" / job.student / f"{job.notebook}.html"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(feedback, target)
        log.info("%s/%s: %s %g/%g", job.student, job.notebook, status, score, max_scores[job.notebook])
        return row(score, status)

    def guarded(job: Job) -> Row:
        try:
            return run(job)
        except Exception as error:  # noqa: BLE001 -- one notebook's failure never stops the batch
            log.exception("%s/%s: crashed", job.student, job.notebook)
            try:
                _zero(gradebook_url, assignment, job.student, job.notebook)
            except Exception:  # noqa: BLE001
                log.exception("%s/%s: the gradebook could not be zeroed", job.student, job.notebook)
            return Row(job.student, assignment, job.notebook, 0.0, max_scores[job.notebook], "crashed",
                       f"the grader failed on this notebook (see grading.log): {type(error).__name__}",
                       job.file, job.sha256)

    rows.extend(reused)
    lock = threading.Lock()

    def record(row: Row | None = None) -> None:
        """grades.csv as it stands, replaced whole: an interrupted run keeps every finished row."""
        with lock:
            if row is not None:
                rows.append(row)
            rows.sort(key=lambda r: (r.student, r.notebook, r.status))
            write_csv(rows, out / "grades.csv")

    record()
    if reused:
        log.info("%d notebooks unchanged since the last run were not graded again", len(reused))
    bar = _progress(len(jobs), progress)
    if server is None and jobs:
        server = _fork_server()
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for future in as_completed([pool.submit(guarded, job) for job in jobs]):
            record(future.result())
            bar.update(1)
    except BaseException:  # Ctrl-C, a kill: the finished rows are in grades.csv; stop the rest
        pool.shutdown(wait=False, cancel_futures=True)
        _stop_running()
        log.warning("interrupted: %d notebooks are in grades.csv; --resume grades the rest",
                    sum(r.status in FINAL for r in rows))
        raise
    finally:
        if server is not None:
            server.close()
    pool.shutdown()
    bar.close()

    write_tests_json(rows, gradebook_url, out / "tests.json")
    for kind in exports:
        log.info("wrote %s", lms_exports.write(kind, rows, out, assignment))
    shutil.rmtree(work, ignore_errors=True)
    log.info("wrote %s and %s", out / "grades.csv", out / "tests.json")
    return rows


def _fork_server() -> ForkServer:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return ForkServer(env)


def write_csv(rows: list[Row], path: Path) -> None:
    """grades.csv, written whole to a temporary file and then renamed (never half-written)."""
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f.name for f in fields(Row)])
        for row in rows:
            values = list(astuple(row))
            values[3], values[4] = f"{row.score:g}", f"{row.max_score:g}"
            values[9] = f"{row.seconds:.1f}"
            writer.writerow(values)
    tmp.replace(path)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _logger(path: Path, append: bool = False) -> logging.Logger:
    log = logging.getLogger(f"autograder.run.{path}")
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
    handler = logging.FileHandler(path, mode="a" if append else "w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    return log


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="grading", unit="notebook", disable=not enabled or None)
