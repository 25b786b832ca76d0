"""``python -m autograder``: release the curriculum, grade a class."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from autograder import export as exporting
from autograder import grade as grading
from autograder import release as releasing


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    rel = commands.add_parser("release", help="regenerate curriculum/ from solutions/")
    rel.add_argument("--check", action="store_true",
                     help="change nothing; exit 1 if curriculum/ differs from a fresh release")

    exp = commands.add_parser("export", help="write gradschool/engine/ from solutions/02_engine/")
    exp.add_argument("--check", action="store_true",
                     help="change nothing; exit 1 if an engine module differs from its notebook")

    g = commands.add_parser("grade", help="grade every submission of one assignment")
    g.add_argument("assignment", help="an assignment folder of solutions/, e.g. 01_numpy")
    g.add_argument("submissions", type=Path,
                   help="a folder: <student>/<assignment>/<notebook>.ipynb (nbgrader) or "
                        "<student>--<notebook>.ipynb (flat); or an LMS's .zip (see --id-pattern)")
    g.add_argument("--out", type=Path, required=True,
                   help="where grades.csv, feedback/ and grading.log go")
    g.add_argument("--gradebook", type=Path, default=None,
                   help="an nbgrader sqlite gradebook (default: the course's gradebook.db)")
    g.add_argument("--workers", type=int, default=None,
                   help="notebooks graded at once (default: the number of CPUs)")
    g.add_argument("--timeout", type=float, default=grading.DEFAULT_TIMEOUT_S,
                   help="seconds one notebook may run (default: %(default)s)")
    g.add_argument("--memory-mb", type=int, default=grading.DEFAULT_MEMORY_MB,
                   help="memory one notebook may use, in MB (default: %(default)s)")
    g.add_argument("--resume", action="store_true",
                   help="keep the rows of OUT/grades.csv whose submitted file is unchanged (sha256); "
                        "grade the rest")
    g.add_argument("--id-pattern", default=None, metavar="REGEX",
                   help="for a zip or a folder of files named by an LMS: a regular expression on each "
                        "file's path, with a named group "
                        "'student' (and optionally 'notebook', the file as handed in). Default, for "
                        "Canvas names like smithjane_12345_67890_start.ipynb (student 12345): "
                        + grading.submissions.DEFAULT_ID_PATTERN.replace("%", "%%"))
    g.add_argument("--show-hidden-tests", action="store_true",
                   help="feedback shows the code of hidden tests (by default it is redacted: test names, "
                        "points and pass/fail are kept)")
    g.add_argument("--export", action="append", default=[], choices=["canvas", "gradescope"],
                   help="also write OUT/canvas.csv or OUT/gradescope.csv, one total per student in the "
                        "shape that LMS imports (repeatable; see autograder/README.md)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("export", "release") and args.check:
        module, in_sync = {"export": (exporting, "gradschool/engine/ is in sync with its notebooks"),
                           "release": (releasing, "curriculum/ is in sync with solutions/")}[args.command]
        problems = module.drift()
        print("\n".join(problems) or in_sync)
        return 1 if problems else 0
    if args.command in ("export", "release"):
        for path in exporting.export():
            print(f"exported {path}")
    if args.command == "release":
        for path in releasing.release():
            print(f"restamped badges/set-up cell: {path}")
        print("curriculum/ regenerated from solutions/")
    if args.command != "grade":
        return 0
    if args.workers is not None and args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.timeout <= 0 or args.memory_mb <= 0:
        print("error: --timeout and --memory-mb must be positive", file=sys.stderr)
        return 2
    def stop(signum, frame):  # a kill ends the run like Ctrl-C: finished rows are kept, jobs stopped
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        rows = grading.grade(
            args.assignment, args.submissions, args.out, gradebook=args.gradebook,
            workers=args.workers, timeout=args.timeout, memory_mb=args.memory_mb,
            progress=not args.quiet, resume=args.resume, id_pattern=args.id_pattern,
            show_hidden_tests=args.show_hidden_tests, exports=tuple(args.export),
        )
    except KeyboardInterrupt:
        print(f"interrupted: the notebooks graded so far are in {args.out / 'grades.csv'}; "
              "the same command with --resume grades the rest", file=sys.stderr)
        return 130
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    print(f"{len(rows)} notebooks: {summary}. Grades: {args.out / 'grades.csv'}")
    return 0
