"""Start grading jobs without paying, for each notebook, what every notebook pays.

Importing nbgrader (SQLAlchemy, nbconvert, jupyter_client, ...) costs seconds of CPU: more
than a small notebook takes to run. The grader starts this server once per run; it imports
them (:data:`autograder.job.PRELOAD`), compiles the feedback page's templates
(:func:`autograder.job.warm_up`), imports what every kernel imports
(:data:`autograder.prefork.KERNEL_PRELOAD`), and then, for each JSON line it reads on stdin
(``{"spec", "log", "cwd", "env"}``), forks a child that runs
:func:`autograder.job.run_in_child` and answers with the child's pid (``{"pid": N}``). The
child is its own session, so the grader stops it and its kernel together; it writes its exit
status to ``<cwd>/exit`` (a child stopped by a signal writes nothing). The server reaps its
children and ends when its stdin closes.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path


def _reap(signum, frame) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve() -> int:
    from autograder import job, prefork

    for name in job.PRELOAD:
        importlib.import_module(name)
    job.warm_up()
    server_path = {p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    prefork.BASE_PATH = [p for p in sys.path[1:] if p not in server_path]  # as a fresh interpreter's
    os.environ["MPLBACKEND"] = "Agg"  # as in every graded kernel (autograder.grade), read on import
    for name in prefork.KERNEL_PRELOAD:
        importlib.import_module(name)
    gc.freeze()  # what is loaded now is shared by every child: their collector leaves it alone
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the grader decides when to stop
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            job.run_in_child(request["spec"], request["log"], request["cwd"], request["env"])
        print(json.dumps({"pid": pid}), flush=True)
    sys.stdout.flush()
    os._exit(0)  # nothing to tear down: the grader waits for this exit


class ForkServer:
    """The grader's end: ``start(spec, log, cwd, env)`` -> the job's pid, from any thread."""

    def __init__(self, env: dict):
        self._process = subprocess.Popen([sys.executable, "-m", "autograder.forkserver"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                         env=env, start_new_session=True)
        self._lock = threading.Lock()

    def start(self, spec: str, log: Path, cwd: Path, env: dict) -> int:
        request = json.dumps({"spec": spec, "log": str(log), "cwd": str(cwd), "env": env})
        with self._lock:
            self._process.stdin.write(request + "\n")
            self._process.stdin.flush()
            answer = self._process.stdout.readline()
        if not answer:
            raise RuntimeError(f"the grader's fork server stopped (exit status {self._process.poll()})")
        return json.loads(answer)["pid"]

    def close(self) -> None:
        try:
            self._process.stdin.close()
            self._process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self._process.kill()


def exit_status(cwd: Path) -> int | None:
    """What a finished job wrote as its exit status (None: it was stopped before it could)."""
    try:
        return int((Path(cwd) / "exit").read_text())
    except (OSError, ValueError):
        return None


if __name__ == "__main__":
    raise SystemExit(serve())
