"""The grader against an adversarial class, handed in as a Canvas zip: every case of issue 7
(broken files, tampered tests, runaway, hungry and dying kernels, megabytes of output, a zip
member that escapes the archive) gets its status, its message and a score bound; a parallel
and a serial run agree; ``--resume`` keeps what is unchanged and regrades only what changed or
was lost; and the submissions are never modified.

The class is built from the release of 00_start and graded four times (parallel, serial,
resume, resume after changes) once for the module."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from autograder import sandbox, submissions
from autograder.grade import FINAL, STATUSES, read_csv
from conftest import ROOT
from grading_helpers import (
    answered,
    as_nbformat3,
    cell_index,
    exercises,
    grader_command,
    release,
    run_grader,
    solution,
    strip_metadata,
    with_code,
    write,
)

ASSIGNMENT, NOTEBOOK = "00_start", "start"
LIMITS = ("--timeout", "15", "--memory-mb", "1500")
ISOLATION = sandbox.probe()
ISOLATED = ISOLATION.startswith("isolated")

# Wrong answers: the test cells' checks fail them. With a trick, they would pass.
WRONG = {"standardise": "def standardise(x):\n    return x * 1.0\n",
         "row_argmax": "def row_argmax(scores):\n    return scores.argmax(axis=0)\n"}
SILENCE_CHECKS = """
import builtins, numpy.testing
import gradschool.checks as checks
for name in dir(checks):
    if name.startswith("check_"):
        setattr(checks, name, (lambda f, *a, **k: f(*a, **k)) if name == "check_no_mutation"
                else (lambda *a, **k: None))
numpy.testing.assert_allclose = lambda *a, **k: None
builtins.all = lambda *a, **k: True
"""
SWALLOW_ERRORS = """
shell = get_ipython()
async def run_code(code, result=None, *, async_=False):
    try:
        exec(code, shell.user_global_ns, shell.user_ns)
    except BaseException:
        pass
    return False
shell.run_code = run_code
"""
SILENCE_WHEN_CALLED = "def standardise(x):\n" + "".join(
    f"    {line}\n" for line in SILENCE_CHECKS.strip().splitlines()) + "    return x * 1.0\n"
REACH_OUT = """
import pathlib, socket
for parent in pathlib.Path.cwd().parents:  # other students' notebooks, the class's grades
    for target in [*parent.glob("grades.csv"), *parent.glob("*/submitted/*/*/*.ipynb")]:
        try:
            target.write_text("{}")
        except OSError:
            pass
try:
    socket.create_connection(("127.0.0.1", PORT), timeout=2).close()
    standardise = None  # reached the network: this notebook loses its points
except OSError:
    pass
"""


@dataclass(frozen=True)
class Case:
    name: str  # the student's name in Canvas's file names; their id is 1000 + the case's number
    filename: str  # as the student handed it in
    status: str
    score: tuple[float, float]  # the bound: lowest and highest score allowed
    says: str  # a fragment the row's message must hold
    notebook: str = NOTEBOOK


def _notebook_bytes(nb) -> bytes:
    return nbformat.writes(nb).encode()


def wrong(nb):
    for grade_id_ in exercises(nb):
        name = next(n for n in WRONG if n in nb.cells[cell_index(nb, grade_id_[0])].source)
        nb = with_code(nb, grade_id_[0], WRONG[name])
    return nb


def read_the_solution() -> str:
    path = ROOT / "solutions" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    return (f"import json\nfor cell in json.load(open({str(path)!r}))['cells']:\n"
            "    if ''.join(cell['source']).startswith('def '):\n"
            "        exec(''.join(cell['source']))\n")


def build_class(port: int = 9) -> tuple[list[Case], dict[str, bytes], float]:
    """The cases, the zip's members (path -> bytes), and the notebook's full marks. ``port``: a
    port on the grader's loopback that a submission tries to reach."""
    exs = exercises(solution(ASSIGNMENT, NOTEBOOK))
    (first, first_points), (second, second_points) = exs[0], exs[1]
    total = sum(p for _, p in exs)
    full = answered(ASSIGNMENT, NOTEBOOK)
    only_second = answered(ASSIGNMENT, NOTEBOOK, {second})
    test_first, test_second = f"test-{first[3:]}", f"test-{second[3:]}"

    edited_and_deleted = copy.deepcopy(only_second)  # the test that would fail is emptied, another deleted
    edited_and_deleted.cells[cell_index(edited_and_deleted, test_first)].source = "pass"
    del edited_and_deleted.cells[cell_index(edited_and_deleted, test_second)]
    as_markdown = strip_metadata(full)  # Colab-stripped, and a test cell turned into markdown
    at = cell_index(full, test_second)
    as_markdown.cells[at] = nbformat.v4.new_markdown_cell(as_markdown.cells[at].source,
                                                          id=as_markdown.cells[at].get("id"))
    whole = _notebook_bytes(full)

    table = [
        (Case("ann", "Copy of start (1).ipynb", "metadata_restored", (total, total), "restored"),
         _notebook_bytes(strip_metadata(full))),
        (Case("bea", "start.ipynb", "graded", (total, total), ""), whole),
        (Case("cid", "start-1.ipynb", "graded", (total, total), "nbformat 3"),
         as_nbformat3(full).encode()),
        (Case("dee", "start.ipynb", "malformed", (0, 0), "not valid JSON"), b"this is not json at all"),
        (Case("eli", "start.ipynb", "malformed", (0, 0), "not valid JSON"), whole[: len(whole) // 2]),
        (Case("fox", "start.ipynb", "malformed", (0, 0), "not a Jupyter notebook"), b'{"hello": 1}'),
        (Case("gil", "start.ipynb", "malformed", (0, 0), "empty"), b""),
        (Case("hal", "homework.ipynb", "unknown_notebook", (0, 0), "matches no notebook",
              notebook="homework"), whole),
        (Case("ivy", "start.ipynb", "tampered", (second_points, second_points), test_first),
         _notebook_bytes(edited_and_deleted)),
        (Case("jon", "start.ipynb", "tampered", (total, total), test_second),
         _notebook_bytes(as_markdown)),
        (Case("kim", "start.ipynb", "timeout", (total - first_points, total - first_points), "15 s"),
         _notebook_bytes(with_code(full, first, "import time\nwhile True:\n    time.sleep(0.5)",
                                   before=True))),
        (Case("lou", "start.ipynb", "memory_exceeded", (0, 0), "1500 MB"),
         _notebook_bytes(with_code(full, first, "hoard = bytearray(3 * 1024**3)", before=True))),
        (Case("max", "start.ipynb", "kernel_died", (first_points, first_points), second),
         _notebook_bytes(with_code(full, second, "import os\nos._exit(1)"))),
        (Case("ned", "start.ipynb", "kernel_died", (0, 0), "segfault"),
         _notebook_bytes(with_code(full, first, "import ctypes\nctypes.string_at(0)", before=True))),
        (Case("oli", "start.ipynb", "output_limited", (total, total), "cut"),
         _notebook_bytes(with_code(full, first, "print('x' * 3_000_000)\nfor i in range(5000):\n"
                                                "    print(i)"))),
        (Case("pam", "start.ipynb", "refused", (0, 0), "escapes the archive"), whole),
        # tricks on top of wrong answers: none may score more than the wrong answers alone (0)
        (Case("quin", "start.ipynb", "tampered", (0, 0), "custom exception handler"),
         _notebook_bytes(with_code(wrong(release(ASSIGNMENT, NOTEBOOK)), first,
                                   "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)",
                                   before=True))),
        (Case("rae", "start.ipynb", "tampered", (0, 0), "gradschool.checks.check_close"),
         _notebook_bytes(with_code(wrong(release(ASSIGNMENT, NOTEBOOK)), first, SILENCE_CHECKS,
                                   before=True))),
        (Case("sol", "start.ipynb", "tampered", (0, 0), "shell.run_code"),
         _notebook_bytes(with_code(wrong(release(ASSIGNMENT, NOTEBOOK)), first, SWALLOW_ERRORS,
                                   before=True))),
        (Case("tom", "start.ipynb", "tampered", (0, 0), f"{test_first} scored 0"),
         _notebook_bytes(with_code(wrong(release(ASSIGNMENT, NOTEBOOK)), first, SILENCE_WHEN_CALLED))),
    ]
    if ISOLATED:  # what only the sandbox stops: reading the solutions, writing elsewhere, the network
        table += [
            (Case("uma", "start.ipynb", "graded", (0, 0), ""),
             _notebook_bytes(with_code(wrong(release(ASSIGNMENT, NOTEBOOK)), first,
                                       read_the_solution()))),
            (Case("val", "start.ipynb", "graded", (total, total), ""),
             _notebook_bytes(with_code(full, first, REACH_OUT.replace("PORT", str(port))))),
        ]
    members: dict[str, bytes] = {}
    for number, (case, content) in enumerate(table):
        path = f"{case.name}_{1000 + number}_{5000 + number}_{case.filename}"
        members["../" + path if case.name == "pam" else path] = content
    members["__MACOSX/._bea_1001_5001_start.ipynb"] = b"\x00\x05\x16\x07 resource fork"
    members["README.txt"] = b"downloaded from Canvas"
    return [case for case, _ in table], members, total


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            info = zipfile.ZipInfo(name, date_time=(2026, 11, 20, 12, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, content)
    return path


def student_id(cases: list[Case], name: str) -> str:
    return str(1000 + [c.name for c in cases].index(name))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def without_timing(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def graded_lines(log: str) -> list[str]:
    """The students whose notebook a run's log says it ran: '<student>/<notebook>: <status> ...'."""
    found = re.findall(r" (?:INFO|WARNING) (\S+)/\S+: (\w+)\b", log)
    return sorted(student for student, status in found if status in STATUSES)


@pytest.fixture(scope="module")
def listener():
    """A port on this machine's loopback, counting who connects to it."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    reached: list[str] = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                connection, address = server.accept()
            except OSError:
                continue
            reached.append(str(address))
            connection.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], reached
    stop.set()
    thread.join()
    server.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, listener):
    base = tmp_path_factory.mktemp("adversarial")
    cases, members, total = build_class(port=listener[0])
    archive = write_zip(base / "canvas.zip", members)
    before = sha(archive)

    run_grader(ASSIGNMENT, archive, base / "parallel", base / "parallel.db", *LIMITS, "--workers", "2")
    parallel_csv = (base / "parallel" / "grades.csv").read_text()

    # serially, watching grades.csv fill as each notebook finishes
    command, env = grader_command(ASSIGNMENT, archive, base / "serial", base / "serial.db", *LIMITS,
                                  "--workers", "1")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    seen: list[int] = []  # how many notebooks had run to a result, at each look
    while process.poll() is None:
        csv_path = base / "serial" / "grades.csv"
        if csv_path.exists():
            rows = read_csv(csv_path)  # never half-written: it is replaced whole
            assert rows and list(rows[0])[:7] == ["student", "assignment", "notebook", "score",
                                                  "max_score", "status", "message"], rows[:1]
            seen.append(sum(r["status"] in FINAL for r in rows))
        time.sleep(0.25)
    output = process.communicate()[0]
    assert process.returncode == 0, output

    log_path = base / "parallel" / "grading.log"
    first_log = log_path.read_text()
    run_grader(ASSIGNMENT, archive, base / "parallel", base / "parallel.db", *LIMITS, "--resume")
    resumed_csv = (base / "parallel" / "grades.csv").read_text()
    resumed_log = log_path.read_text()[len(first_log):]

    # bea hands in a blank notebook instead; cid's row was lost (as if the run had been stopped)
    changed = dict(members)
    bea = next(n for n in members if n.startswith("bea_"))
    changed[bea] = nbformat.writes(release(ASSIGNMENT, NOTEBOOK)).encode()
    archive2 = write_zip(base / "canvas-2.zip", changed)
    cid = student_id(cases, "cid")
    kept = [line for line in parallel_csv.splitlines(keepends=True) if not line.startswith(f"{cid},")]
    (base / "parallel" / "grades.csv").write_text("".join(kept))
    log_before = log_path.read_text()
    run_grader(ASSIGNMENT, archive2, base / "parallel", base / "parallel.db", *LIMITS, "--resume")
    after_change_log = log_path.read_text()[len(log_before):]
    return {
        "base": base, "cases": cases, "total": total, "archive": archive, "before": before,
        "parallel": read_csv_text(parallel_csv), "serial": read_csv(base / "serial" / "grades.csv"),
        "seen": seen, "resumed": read_csv_text(resumed_csv), "resumed_log": resumed_log,
        "first_log": first_log,
        "changed": read_csv(base / "parallel" / "grades.csv"), "changed_log": after_change_log,
        "archive2": archive2, "reached": listener[1],
    }


def read_csv_text(text: str) -> list[dict[str, str]]:
    import csv
    import io

    return list(csv.DictReader(io.StringIO(text)))


def row(rows, student, notebook=NOTEBOOK):
    found = [r for r in rows if r["student"] == student and r["notebook"] == notebook]
    assert len(found) == 1, f"expected one row for {student}/{notebook}, got {found}"
    return found[0]


@pytest.mark.notebooks
def test_every_case_gets_its_status_score_and_message(runs):
    cases, rows = runs["cases"], runs["parallel"]
    for case in cases:
        r = row(rows, student_id(cases, case.name), case.notebook)
        low, high = case.score
        assert r["status"] == case.status, (case, r)
        assert low <= float(r["score"]) <= high, (case, r)
        assert case.says in r["message"], (case, r)
        assert r["status"] == "graded" or r["message"], f"{case.name}: a status without a word"


@pytest.mark.notebooks
def test_no_trick_scores_more_than_the_wrong_answers_under_it(runs):
    """Tricks on wrong answers score 0, as the wrong answers do; what was replaced is named."""
    cases, rows = runs["cases"], runs["parallel"]
    for name in ("quin", "rae", "sol", "tom"):
        r = row(rows, student_id(cases, name))
        assert (r["status"], float(r["score"])) == ("tampered", 0.0), r


@pytest.mark.notebooks
@pytest.mark.skipif(not ISOLATED, reason=f"no sandbox for kernels on this machine: {ISOLATION}")
def test_a_kernel_reaches_neither_the_solutions_nor_other_files_nor_the_network(runs):
    cases, rows = runs["cases"], runs["parallel"]
    uma, val = row(rows, student_id(cases, "uma")), row(rows, student_id(cases, "val"))
    assert (uma["status"], float(uma["score"])) == ("graded", 0.0), "the solutions were readable"
    assert (val["status"], float(val["score"])) == ("graded", runs["total"]), val
    assert runs["reached"] == [], "a kernel connected to the grader's loopback"
    # every other case kept its own result (test_every_case_gets_its_status_score_and_message)


@pytest.mark.notebooks
def test_feedback_shows_test_names_and_results_but_not_hidden_code(runs):
    cases, base = runs["cases"], runs["base"]
    hidden_line = "rng = np.random.default_rng(7)"  # from test-standardise's hidden part
    assert hidden_line in solution(ASSIGNMENT, NOTEBOOK).cells[
        cell_index(solution(ASSIGNMENT, NOTEBOOK), "test-standardise")].source
    for name in ("bea", "rae", "tom"):
        page = (base / "parallel" / "feedback" / student_id(cases, name) / f"{NOTEBOOK}.html").read_text()
        assert "test-standardise" in page and "lines of hidden tests, not shown" in page, name
        assert hidden_line not in page and "default_rng(7)" not in page, f"{name}: hidden code shown"


@pytest.mark.notebooks
def test_tests_json_breaks_every_score_down_by_test(runs):
    cases, total = runs["cases"], runs["total"]
    rows = runs["changed"]  # the folder's last run (after --resume with bea's new file)
    entries = json.loads((runs["base"] / "parallel" / "tests.json").read_text())
    by_student = {(e["student"], e["notebook"]): e for e in entries}
    assert sorted(by_student) == sorted((r["student"], r["notebook"]) for r in rows)
    for r in rows:
        entry = by_student[(r["student"], r["notebook"])]
        assert (entry["status"], entry["score"]) == (r["status"], float(r["score"]))
        if entry["tests"]:
            assert sum(t["score"] for t in entry["tests"]) == entry["score"]
            assert sum(t["max_score"] for t in entry["tests"]) == total
    ann = by_student[(student_id(cases, "ann"), NOTEBOOK)]["tests"]
    bea = by_student[(student_id(cases, "bea"), NOTEBOOK)]["tests"]  # a blank notebook now
    assert [t["test"] for t in ann] == ["test-standardise", "test-row-argmax"]
    assert all(t["passed"] for t in ann) and not any(t["passed"] for t in bea)


@pytest.mark.notebooks
def test_every_file_gets_one_row_and_nothing_more(runs):
    cases, rows = runs["cases"], runs["parallel"]
    expected = {(student_id(cases, c.name), c.notebook) for c in cases}
    expected.add((student_id(cases, "hal"), NOTEBOOK))  # handed in the wrong notebook only
    assert sorted((r["student"], r["notebook"]) for r in rows) == sorted(expected)
    hal = row(rows, student_id(cases, "hal"))
    assert (hal["status"], float(hal["score"])) == ("missing", 0)
    assert {r["status"] for r in rows} <= set(STATUSES)
    assert all(float(r["max_score"]) == runs["total"] for r in rows if r["notebook"] == NOTEBOOK)


@pytest.mark.notebooks
def test_parallel_and_serial_runs_agree(runs):
    assert without_timing(runs["parallel"]) == without_timing(runs["serial"])
    graded = [r for r in runs["serial"] if r["status"] in FINAL]
    assert all(float(r["seconds"]) > 0 and len(r["sha256"]) == 64 for r in graded), graded


@pytest.mark.notebooks
def test_rows_are_written_as_each_notebook_finishes(runs):
    seen, final = runs["seen"], sum(r["status"] in FINAL for r in runs["serial"])
    assert final >= 10
    assert any(0 < n < final for n in seen), f"grades.csv went from nothing to all at once: {seen}"
    assert seen == sorted(seen), "a finished row disappeared"


@pytest.mark.notebooks
def test_resume_keeps_every_unchanged_row_and_grades_nothing(runs):
    assert runs["resumed"] == runs["parallel"], "rows changed although no submission did"
    log = runs["resumed_log"]
    kept = sum(r["status"] in FINAL for r in runs["parallel"])
    assert f"{kept} notebooks unchanged since the last run were not graded again" in log
    assert graded_lines(log) == [], "a notebook was graded again"
    assert len(graded_lines(runs["first_log"])) == kept, "the first run's log names every notebook run"


@pytest.mark.notebooks
def test_resume_grades_what_changed_or_was_lost(runs):
    cases, before, after = runs["cases"], runs["parallel"], runs["changed"]
    bea, cid = student_id(cases, "bea"), student_id(cases, "cid")
    assert (row(after, bea)["status"], float(row(after, bea)["score"])) == ("graded", 0)
    assert row(after, bea)["sha256"] != row(before, bea)["sha256"]
    assert without_timing([row(after, cid)]) == without_timing([row(before, cid)])
    others = [r for r in before if r["student"] not in (bea, cid)]
    assert [row(after, r["student"], r["notebook"]) for r in others] == others, "seconds included"
    assert graded_lines(runs["changed_log"]) == sorted([bea, cid])


@pytest.mark.notebooks
def test_submissions_are_read_only_and_nothing_lands_outside_out(runs):
    base = runs["base"]
    assert sha(runs["archive"]) == runs["before"]
    assert sorted(p.name for p in base.iterdir()) == sorted(
        ["canvas.zip", "canvas-2.zip", "parallel", "parallel.db", "serial", "serial.db"])
    assert not list(base.parent.glob("pam_*")) and not list(base.rglob("pam_*")), "a member escaped"
    for out in ("parallel", "serial"):
        assert sorted(p.name for p in (base / out).iterdir()) == [
            "feedback", "grades.csv", "grading.log", "run.json", "tests.json"]


@pytest.mark.notebooks
def test_an_interrupted_run_keeps_what_it_graded_and_resume_finishes(tmp_path):
    import signal

    import psutil

    subs, out, gradebook = tmp_path / "flat", tmp_path / "out", tmp_path / "gradebook.db"
    full = answered(ASSIGNMENT, NOTEBOOK)
    first = exercises(solution(ASSIGNMENT, NOTEBOOK))[0][0]
    write(full, subs / f"amy--{NOTEBOOK}.ipynb")
    write(with_code(full, first, "import time\ntime.sleep(600)", before=True),
          subs / f"bob--{NOTEBOOK}.ipynb")
    command, env = grader_command(ASSIGNMENT, subs, out, gradebook, "--workers", "1", "--timeout", "300")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "grades.csv").exists() and any(r["student"] == "amy" for r in read_csv(out / "grades.csv")):
            break
        time.sleep(0.25)
    time.sleep(2)  # bob's notebook is running now
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 130 and "--resume" in output, output
    rows = read_csv(out / "grades.csv")
    assert [(r["student"], r["status"], float(r["score"])) for r in rows] == [("amy", "graded", 4.0)]
    time.sleep(1)
    alive = [p for p in psutil.process_iter(["cmdline"]) if str(out) in " ".join(p.info["cmdline"] or [])]
    assert not alive, f"jobs left running after the interruption: {alive}"

    write(full, subs / f"bob--{NOTEBOOK}.ipynb")  # bob fixes it; amy's row is kept as it is
    run_grader(ASSIGNMENT, subs, out, gradebook, "--resume")
    after = read_csv(out / "grades.csv")
    assert row(after, "amy") == rows[0]
    assert (row(after, "bob")["status"], float(row(after, "bob")["score"])) == ("graded", 4.0)


@pytest.mark.notebooks
def test_resume_grades_again_when_the_limits_or_the_tests_changed(tmp_path, monkeypatch):
    subs, out, gradebook = tmp_path / "flat", tmp_path / "out", tmp_path / "gradebook.db"
    write(release(ASSIGNMENT, NOTEBOOK), subs / f"amy--{NOTEBOOK}.ipynb")
    run_grader(ASSIGNMENT, subs, out, gradebook, "--timeout", "60", "--export", "canvas")
    assert (out / "canvas.csv").read_text().splitlines()[2] == ",amy,,,,0"
    settings = json.loads((out / "run.json").read_text())
    assert settings["timeout"] == 60 and len(settings["solutions_sha256"]) == 64
    log = out / "grading.log"
    for extra, says in ((("--timeout", "60"), "were not graded again"),
                        (("--timeout", "90"), "timeout changed since the last run")):
        before = log.read_text()
        run_grader(ASSIGNMENT, subs, out, gradebook, *extra, "--resume")
        assert says in log.read_text()[len(before):]
    assert json.loads((out / "run.json").read_text())["timeout"] == 90


# --- sources, without running a notebook ---------------------------------------------------------

def _zip(tmp_path: Path, names: list[str], name: str = "class.zip") -> Path:
    return write_zip(tmp_path / name, {n: b"{}" for n in names})


def test_canvas_names_give_the_student_id_and_the_notebook(tmp_path):
    archive = _zip(tmp_path, ["smithjane_12345_67890_start.ipynb",
                              "smithjane_LATE_12345_67891_start-1.ipynb",
                              "doejohn_222_333_Copy of start (1).ipynb",
                              "roejo_7_8_notes.ipynb", "__MACOSX/._roejo_7_8_notes.ipynb", "README.txt"])
    found = submissions.find(archive, ASSIGNMENT, [NOTEBOOK], extract_to=tmp_path / "x")
    assert [(f.student, f.notebook, f.original_name) for f in found] == [
        ("12345", NOTEBOOK, "start-1.ipynb"), ("12345", NOTEBOOK, "start.ipynb"),
        ("222", NOTEBOOK, "Copy of start (1).ipynb"), ("7", None, "notes.ipynb")]
    assert all(f.path.parent == tmp_path / "x" and f.path.read_bytes() == b"{}" for f in found)


def test_a_pattern_of_ones_own_reads_folders_per_student(tmp_path):
    archive = _zip(tmp_path, ["Jane Smith_4711_assignsubmission_file_/start.ipynb"])
    pattern = r"^(?P<student>[^_/]+)_\d+_assignsubmission_file_/(?P<notebook>[^/]+)$"
    found = submissions.find(archive, ASSIGNMENT, [NOTEBOOK], pattern=pattern, extract_to=tmp_path / "x")
    assert [(f.student, f.notebook) for f in found] == [("Jane Smith", NOTEBOOK)]


def test_a_flat_folder_of_lms_names_is_read_with_the_id_pattern(tmp_path):
    folder = tmp_path / "unpacked"
    for name in ("smithjane_12345_67890_start.ipynb", "doejohn_222_333_Copy of start (1).ipynb",
                 ".ipynb_checkpoints/smithjane_12345_67890_start-checkpoint.ipynb"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("{}")
    found = submissions.find(folder, ASSIGNMENT, [NOTEBOOK], pattern=submissions.DEFAULT_ID_PATTERN)
    assert [(f.student, f.notebook, f.original_name) for f in found] == [
        ("12345", NOTEBOOK, "start.ipynb"), ("222", NOTEBOOK, "Copy of start (1).ipynb")]
    assert all(f.path.parent == folder for f in found), "read where they are, never copied"
    with pytest.raises(SystemExit, match=r"--id-pattern does not match 'doejohn_222_333_Copy of"):
        submissions.find(folder, ASSIGNMENT, [NOTEBOOK], pattern=r"^(?P<student>x)")
    with pytest.raises(SystemExit, match="cannot tell whose file.*--id-pattern"):
        submissions.find(folder, ASSIGNMENT, [NOTEBOOK])


def test_unreadable_names_and_patterns_say_what_to_do(tmp_path):
    archive = _zip(tmp_path, ["smithjane_12345_67890_start.ipynb", "start.ipynb"])
    with pytest.raises(SystemExit, match=r"cannot tell whose file 'start.ipynb'.*--id-pattern"):
        submissions.find(archive, ASSIGNMENT, [NOTEBOOK], extract_to=tmp_path / "x")
    with pytest.raises(SystemExit, match="named group for the student"):
        submissions.find(archive, ASSIGNMENT, [NOTEBOOK], pattern=r"(\d+)", extract_to=tmp_path / "x")
    with pytest.raises(SystemExit, match="not a valid regular expression"):
        submissions.find(archive, ASSIGNMENT, [NOTEBOOK], pattern=r"(?P<student>", extract_to=tmp_path)
    (tmp_path / "grades.pdf").write_bytes(b"%PDF-1.4")
    with pytest.raises(SystemExit, match="not a zip archive"):
        submissions.find(tmp_path / "grades.pdf", ASSIGNMENT, [NOTEBOOK], extract_to=tmp_path / "x")


def test_members_that_escape_or_link_are_refused_and_never_written(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../ann_1_2_start.ipynb", b"{}")
        zf.writestr("/etc/bob_3_4_start.ipynb", b"{}")
        link = zipfile.ZipInfo("cat_5_6_start.ipynb")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
        zf.writestr("dan_7_8_start.ipynb", b"{}")
    inside = tmp_path / "deep" / "x"
    found = submissions.find(archive, ASSIGNMENT, [NOTEBOOK], extract_to=inside)
    problems = {f.student: f.problem for f in found}
    assert "escapes the archive" in problems["1"] and "escapes the archive" in problems["3"]
    assert "is a link" in problems["5"] and problems["7"] == ""
    assert sorted(p.name for p in inside.iterdir()) == [f"{3:05d}.ipynb"], "only dan's file was read"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["00003.ipynb", "evil.zip"]


def test_the_statuses_are_only_ever_added_to():
    assert STATUSES[:8] == ("graded", "metadata_restored", "missing", "malformed", "unknown_notebook",
                            "timeout", "memory_exceeded", "crashed")
    assert {"tampered", "kernel_died", "output_limited", "refused"} <= set(STATUSES)
    readme = (ROOT / "autograder" / "README.md").read_text()
    assert all(f"`{s}`" in readme for s in STATUSES), "every status is documented"


def test_grades_csv_columns_are_only_ever_added_to():
    from dataclasses import fields

    from autograder.grade import Row

    names = [f.name for f in fields(Row)]
    assert names[:7] == ["student", "assignment", "notebook", "score", "max_score", "status", "message"]
    assert {"sha256", "seconds"} <= set(names)


if __name__ == "__main__":  # build the class by hand: python tests/test_grading_adversarial.py DIR
    import sys

    target = Path(sys.argv[1])
    target.mkdir(parents=True, exist_ok=True)
    _, members, _ = build_class()
    write_zip(target / "canvas.zip", members)
    print(json.dumps(sorted(members), indent=1), os.fspath(target / "canvas.zip"))
