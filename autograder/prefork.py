"""A graded kernel that starts warm: forked, not launched.

A kernel launched the usual way is a new interpreter that imports IPython, ipykernel, NumPy and
Matplotlib before it runs the first cell: most of a small notebook's grading time, paid again
for every notebook of the class. The fork server (:mod:`autograder.forkserver`) imports them
once (:data:`KERNEL_PRELOAD`); each job forks a *spare* first thing (:func:`fork_spare`, while
the job is still one thread), and when nbclient asks for the kernel, :class:`SpareProvisioner`
hands the launch command to the spare instead of starting a process. The spare then does what
the command would have done -- enters the sandbox (:func:`autograder.sandbox.enter`), takes the
kernel's environment, folder and path -- forgets every module the grader imported from the
course repository (the sandbox hides it; the kernel imports the course's copy instead), reseeds
NumPy, and runs ``ipykernel_launcher`` as ``python -m`` would.

So a notebook sees what a fresh kernel sees, except that some modules are already imported. The
spare is the job's child, in its own session: the grader's memory and time limits and nbclient's
interrupts reach it as they reach a launched kernel. A command of another shape (a kernel that
is not the sandboxed ``python3``) is launched the usual way, and so is a second kernel.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys
import time
from pathlib import Path

from jupyter_client.provisioning import LocalProvisioner

# what every graded kernel imports; the fork server imports it once (with MPLBACKEND=Agg, as kernels have)
KERNEL_PRELOAD = ["ipykernel.kernelapp", "ipykernel.ipkernel", "numpy", "matplotlib.pyplot"]
SANDBOX = ["-m", "autograder.sandbox"]
KERNEL = ["-m", "ipykernel_launcher"]


class Spare:
    """The job's end of a forked spare: its pid and the pipe its launch request goes down."""

    def __init__(self, pid: int, pipe: int):
        self.pid, self._pipe = pid, pipe

    def launch(self, request: dict) -> None:
        data = json.dumps(request).encode()
        with os.fdopen(self._pipe, "wb") as pipe:
            pipe.write(data)
        self._pipe = -1

    def forget(self) -> None:
        """Close this end of the pipe (in a later fork: so that the spare sees its end close)."""
        if self._pipe >= 0:
            os.close(self._pipe)
            self._pipe = -1

    def release(self) -> None:
        """Not needed after all: the spare exits, and is reaped."""
        if self._pipe >= 0:
            self.forget()
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass


SPARE: Spare | None = None  # the job's spare, until a kernel takes it
BASE_PATH: list[str] = []  # sys.path of a fresh interpreter, less its folder and PYTHONPATH


def fork_spare() -> Spare:
    """Fork the job's spare kernel (call it while the process has one thread)."""
    global SPARE
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(write)
            if SPARE is not None:  # another spare's pipe: that spare must see its own end close
                SPARE.forget()
            chunks = []
            while chunk := os.read(read, 1 << 16):
                chunks.append(chunk)
            os.close(read)
            code = _become_kernel(json.loads(b"".join(chunks))) if chunks else 0
        except BaseException:  # noqa: BLE001 -- said in the job's log; the exit status says it failed
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)  # never back into the job's code
    os.close(read)
    SPARE = Spare(pid, write)
    return SPARE


def parse(argv: list[str]) -> tuple[str, list[str]] | None:
    """(sandbox settings file, ipykernel arguments) of a sandboxed ``python3`` kernel command
    (:func:`autograder.sandbox.kernelspec`), or None for any other command."""
    if (len(argv) >= 7 and argv[1:3] == SANDBOX and argv[4] == "--" and argv[6:8] == KERNEL
            and argv[0] == argv[5] == sys.executable):
        return argv[3], argv[8:]
    return None


def _become_kernel(request: dict) -> int:
    from autograder import sandbox

    os.setsid()  # as jupyter_client starts kernels: interrupts go to the kernel's group
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_DFL if signum != signal.SIGPIPE else signal.SIG_IGN)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.closerange(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    settings_file, arguments = parse(request["argv"])
    settings = sandbox.enter(settings_file)
    if settings is None:
        return 1
    _forget([Path(p) for p in settings.get("hidden", [])],
            [Path(p) for p in settings.get("readable", []) + settings.get("writable", [])])
    library = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [os.getcwd(), *library, *BASE_PATH]
    sys.path_importer_cache.clear()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()  # a fresh kernel's global generator is seeded afresh
    # ipykernel read JPY_PARENT_PID when the fork server imported it: say it again, so that the
    # kernel watches the job (and exits with it) as a launched one does
    parent = f"--IPKernelApp.parent_handle={int(os.environ.get('JPY_PARENT_PID') or 0)}"
    sys.argv = ["ipykernel_launcher", *arguments, parent]
    try:
        runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


def _under(path: Path, folders: list[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def _forget(hidden: list[Path], kept: list[Path]) -> None:
    """Drop every module imported from what the sandbox hides and did not bring back (the
    course repository, less its Python environment): the kernel imports its own copy of
    ``autograder.guard`` and ``gradschool``, never the grader's."""
    for name, module in list(sys.modules.items()):
        file = Path(getattr(module, "__file__", None) or "/")
        if name.split(".")[0] in ("autograder", "gradschool") or (
                _under(file, hidden) and not _under(file, kept)):
            del sys.modules[name]
    sys.modules["__main__"] = type(sys)("__main__")


class ForkedProcess:
    """What jupyter_client needs of a ``Popen`` (poll, wait, signals), for the forked spare."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int):
        self.pid, self.returncode = pid, None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = 0
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"kernel {self.pid} still running")
            time.sleep(0.01)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class SpareProvisioner(LocalProvisioner):
    """jupyter_client's local provisioner, which gives the job's spare the launch command."""

    async def launch_kernel(self, cmd: list[str], **kwargs):
        global SPARE
        spare, SPARE = SPARE, None
        if spare is None or parse(cmd) is None:
            if spare is not None:
                spare.release()
            return await super().launch_kernel(cmd, **kwargs)
        env = dict(kwargs.get("env") or os.environ)
        env["JPY_PARENT_PID"] = str(os.getpid())  # the kernel exits when the job does
        spare.launch({"argv": cmd, "env": env, "cwd": str(kwargs.get("cwd") or os.getcwd())})
        self.process = ForkedProcess(spare.pid)
        self.pid = self.pgid = spare.pid  # the spare starts its own session first thing
        self.cwd = kwargs.get("cwd", Path.cwd())
        return self.connection_info


def provisioner_for(km) -> SpareProvisioner | None:
    """A provisioner for ``km`` that uses the job's spare, or None when there is none."""
    if SPARE is None:
        return None
    km.kernel_id = km.kernel_id or os.urandom(16).hex()
    return SpareProvisioner(kernel_id=km.kernel_id, kernel_spec=km.kernel_spec, parent=km)
