"""The course's grader against nbgrader's own serial ``autograde``, on one class, in one run.

``python -m bench grading [STUDENTS] [WORKERS]`` (default 20 students, 2 workers) builds a class
from the release of 00_start (each student's notebook answered as in solutions/), grades it with
``python -m autograder grade --workers WORKERS`` and with plain ``nbgrader autograde`` (its own
default pipeline, one notebook after another), and prints both wall times, their ratio, and
the grader's overhead per notebook: the mean time of a grading job (its process, nbgrader, the
sandbox, the guard, the feedback page) less the time the notebook itself takes to run in a
fresh kernel (nbclient, measured here too). Targets (issue 7): ratio >= 1.7, overhead <= 2 s.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT, NOTEBOOK = "00_start", "start"


def _answered() -> nbformat.NotebookNode:
    sys.path.insert(0, str(ROOT / "tests"))
    from grading_helpers import answered

    return answered(ASSIGNMENT, NOTEBOOK)


def _env() -> dict:
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def notebook_seconds(nb: nbformat.NotebookNode, folder: Path, repeat: int = 3) -> float:
    """Median wall time of the notebook alone, in a fresh kernel each time."""
    times = []
    for _ in range(repeat):
        copy = nbformat.from_dict(nb)
        start = time.perf_counter()
        NotebookClient(copy, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(folder)}}).execute()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ours(subs: Path, out: Path, workers: int) -> tuple[float, list[float]]:
    from autograder.grade import read_csv

    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "autograder", "grade", ASSIGNMENT, str(subs), "--out", str(out),
                    "--gradebook", str(out.parent / "ours.db"), "--workers", str(workers), "--quiet"],
                   cwd=ROOT, env=_env(), check=True, capture_output=True)
    seconds = time.perf_counter() - start
    rows = read_csv(out / "grades.csv")
    assert all(r["status"] == "graded" and float(r["score"]) == float(r["max_score"]) for r in rows), rows
    return seconds, [float(r["seconds"]) for r in rows]


def nbgraders(subs: Path, course: Path) -> float:
    """nbgrader's plain serial autograde of the same class, in a course folder of its own."""
    shutil.copytree(ROOT / "solutions" / ASSIGNMENT, course / "source" / ASSIGNMENT)
    shutil.copytree(subs, course / "submitted")
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        f"c.CourseDirectory.db_url = 'sqlite:///{course / 'gradebook.db'}'\n")
    run = dict(cwd=course, env=_env(), check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", ASSIGNMENT, "--force"], **run)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nbgrader", "autograde", ASSIGNMENT, "--create"], **run)
    return time.perf_counter() - start


def main(students: int = 20, workers: int = 2) -> dict[str, float]:
    nb = _answered()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        subs = base / "submitted"
        for i in range(students):
            folder = subs / f"s{i:03d}" / ASSIGNMENT
            folder.mkdir(parents=True)
            nbformat.write(nb, folder / f"{NOTEBOOK}.ipynb")
        alone = notebook_seconds(nb, base)
        theirs = nbgraders(subs, base / "course")
        mine, jobs = ours(subs, base / "out", workers)
    overhead = statistics.mean(jobs) - alone
    print(f"grading {students} students x {ASSIGNMENT}/{NOTEBOOK} on {os.cpu_count()} CPUs")
    print(f"  the notebook alone, fresh kernel      {alone:6.2f} s")
    print(f"  nbgrader autograde, serial            {theirs:6.1f} s")
    print(f"  python -m autograder, --workers {workers}     {mine:6.1f} s")
    print(f"  ratio nbgrader / ours                 {theirs / mine:6.2f}   (target >= 1.7)")
    print(f"  grader's overhead per notebook        {overhead:6.2f} s (target <= 2 s; "
          f"a job takes {statistics.mean(jobs):.2f} s on average)")
    return {"alone": alone, "nbgrader": theirs, "ours": mine, "ratio": theirs / mine, "overhead": overhead}


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
