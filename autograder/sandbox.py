"""Where a student's kernel runs: it sees what its notebook needs and nothing else.

A graded notebook is arbitrary code. Each grading job starts its kernel through this module
(a kernelspec in the job folder, see :func:`kernelspec`), which, before it becomes the kernel,

1. enters new mount and network namespaces (Linux: as root, or through a user namespace);
2. makes every file system read-only, and the course repository, the grading output, the
   gradebook and the submissions invisible (an empty folder, or /dev/null for a file);
3. gives the kernel a private, empty /tmp and /dev/shm, so jobs cannot reach each other;
4. brings back only what the notebook needs: the Python environment, a copy of the course
   package (:func:`build_library`, where the module the graded notebook builds has its
   exercises blank, as in the release),
   the dataset cache (read-only) and the job's own folder (writable);
5. has no network: the new namespace has only its own loopback (the notebook's processes may
   talk to each other on 127.0.0.1, as torch's gloo does; the grader's loopback is another).
   The kernel talks to nbgrader through Unix sockets in the job's runtime folder.

Where the OS allows none of it (macOS, a container without namespaces), the kernel still runs
with the course copy first on its path, and :func:`isolate` says why the rest was not done;
the grader writes that into its log and autograder/README.md says what that leaves open.
"""

from __future__ import annotations

import compileall
import ctypes
import json
import os
import shutil
import sys
from pathlib import Path

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
KEPT_OPTIONS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
                "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}
SKIPPED_MOUNTS = ("/proc", "/sys", "/dev")
PRIVATE = ("/tmp", "/dev/shm")  # each kernel gets its own, empty
PRIVATE_SIZE = "512m"  # in memory, which the memory limit (resident size) does not see: capped
GUARD_MODULES = ("autograder/__init__.py", "autograder/guard.py")


# ---------------------------------------------------------------- the course copy


def build_library(target: Path, root: Path, withheld: tuple[str, str] | None = None) -> Path:
    """A copy of what a graded notebook may import: the ``gradschool`` package, the datasets'
    manifest and the projects' weights, and the grader's in-kernel guard.

    ``withheld`` is ``(path, text)``: the module that the graded notebook builds
    (``gradschool/engine/nn.py``) and what to put there instead, its export from the *release*
    notebook, where every exercise is a stub that raises ``NotImplementedError``. So the
    reference solution cannot stand in for the student's, while everything else in the module
    (and every module that imports it) still imports.
    """
    if target.exists():
        shutil.rmtree(target)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(root / "gradschool", target / "gradschool", ignore=ignore)
    (target / "datasets").mkdir()
    shutil.copy2(root / "datasets" / "manifest.toml", target / "datasets" / "manifest.toml")
    if (root / "datasets" / "weights").is_dir():
        shutil.copytree(root / "datasets" / "weights", target / "datasets" / "weights")
    for name in GUARD_MODULES:
        (target / name).parent.mkdir(exist_ok=True)
        shutil.copy2(root / name, target / name)
    if withheld is not None:
        path, text = withheld
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        (target / path).write_text(text)
    # compiled once here: a kernel cannot write __pycache__ into its read-only copy
    compileall.compile_dir(target, quiet=2, workers=1)
    return target


# ---------------------------------------------------------------- the kernel's namespaces


def kernelspec(folder: Path, settings: dict) -> Path:
    """A ``python3`` kernelspec in ``folder/kernels`` that starts the kernel through
    :func:`main` with ``settings`` (see :func:`isolate`); put ``folder`` on JUPYTER_PATH."""
    spec_dir = folder / "kernels" / "python3"
    spec_dir.mkdir(parents=True, exist_ok=True)
    (folder / "sandbox.json").write_text(json.dumps(settings, indent=1))
    argv = [sys.executable, "-m", "autograder.sandbox", str(folder / "sandbox.json"), "--",
            sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec_dir / "kernel.json").write_text(json.dumps(
        {"argv": argv, "display_name": "Python 3 (graded)", "language": "python"}, indent=1))
    return folder


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                           ctypes.c_char_p]
    return libc


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(libc, source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    def encode(text: str | None) -> bytes | None:
        return text.encode() if text is not None else None

    _check(libc.mount(encode(source), encode(target), encode(fstype), flags, encode(data)),
           f"mount {source or ''} {target}")


def _unshare(libc) -> str:
    """New mount and network namespaces: directly as root, else inside a user namespace."""
    if libc.unshare(CLONE_NEWNS | CLONE_NEWNET) == 0:
        return "root"
    uid, gid = os.getuid(), os.getgid()
    _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET), "unshare")
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    return "user namespace"


def _loopback_up() -> None:
    """Bring up the namespace's own loopback (down when created): a notebook's processes may
    talk to each other on 127.0.0.1 (torch's gloo), and still reach nothing outside."""
    import fcntl
    import socket
    import struct

    get_flags, set_flags, up = 0x8913, 0x8914, 0x1  # SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, get_flags, request)[:18])[1]
        fcntl.ioctl(s, set_flags, struct.pack("16sH", b"lo", flags | up))


def _mounts() -> list[tuple[str, int]]:
    """Mount points of this namespace, with the options a read-only remount must keep."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point = fields[4].encode().decode("unicode_escape")
        flags = 0
        for option in fields[5].split(","):
            flags |= KEPT_OPTIONS.get(option, 0)
        found.append((point, flags))
    return found


def _within(path: Path, folders) -> bool:
    return any(path == f or f in path.parents for f in folders)


def isolate(settings: dict) -> str:
    """Enter the sandbox described by ``settings`` (lists of paths): ``hidden`` (made empty),
    ``readable`` (brought back read-only) and ``writable`` (brought back writable).
    Returns how it went: "isolated (...)" or "not isolated: <reason>"."""
    if not sys.platform.startswith("linux"):
        return f"not isolated: {sys.platform} has no mount or network namespaces"
    libc = _libc()
    try:
        how = _unshare(libc)
    except OSError as error:
        return f"not isolated: no new namespaces here ({error})"
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    _loopback_up()
    hidden = sorted({Path(p) for p in settings.get("hidden", []) if os.path.lexists(p)},
                    key=lambda p: len(p.parts))
    hidden = [p for i, p in enumerate(hidden) if not _within(p, hidden[:i])]  # nested: hidden already
    kept = [(Path(p), False) for p in settings.get("readable", []) if os.path.exists(p)]
    kept += [(Path(p), True) for p in settings.get("writable", []) if os.path.exists(p)]
    folders = {path for path, _ in kept if path.is_dir()}  # known now: hiding may hide them
    handles = {path: os.open(path, os.O_PATH) for path, _ in kept}
    problems = []
    for point, flags in _mounts():  # every file system read-only
        if point.startswith(SKIPPED_MOUNTS):
            continue
        try:
            _mount(libc, None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
        except OSError as error:
            problems.append(str(error))
    privates = [Path(p) for p in PRIVATE if os.path.isdir(p)]
    for private in privates:  # fresh and empty: what was there (other jobs' files) is gone
        _mount(libc, "tmpfs", str(private), "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={PRIVATE_SIZE}")
    hidden = [p for p in hidden if not _within(p, privates)]
    for path in hidden:
        if path.is_dir():
            _mount(libc, "tmpfs", str(path), "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
        else:
            _mount(libc, "/dev/null", str(path), None, MS_BIND)
    for path, writable in sorted(kept, key=lambda item: len(item[0].parts)):
        if path in folders:
            path.mkdir(parents=True, exist_ok=True)  # a mount point inside an emptied folder
        elif not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        _mount(libc, f"/proc/self/fd/{handles[path]}", str(path), None, MS_BIND | MS_REC)
        _mount(libc, None, str(path), None, MS_REMOUNT | MS_BIND | (0 if writable else MS_RDONLY))
    for path in hidden:  # the emptied folders themselves stay read-only
        if path.is_dir() and os.path.ismount(path):
            _mount(libc, None, str(path), None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    for handle in handles.values():
        os.close(handle)
    note = f"; {len(problems)} mounts stayed writable" if problems else ""
    return (f"isolated ({how}: read-only file systems, {len(hidden)} paths hidden, "
            f"a loopback of its own and no network{note})")


def probe() -> str:
    """How a kernel would be isolated on this machine (``isolate``'s answer, from a child)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.txt"
        settings = Path(folder) / "settings.json"
        settings.write_text(json.dumps({"writable": [folder], "report": str(report)}))
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        done = subprocess.run([sys.executable, "-m", "autograder.sandbox", str(settings), "--",
                               sys.executable, "-c", "pass"], env=env, capture_output=True, text=True)
        if report.exists():
            return report.read_text()
        return f"failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"


def enter(settings_file: str) -> dict | None:
    """Isolate this process as ``settings_file`` says (:func:`isolate`), write the outcome to its
    report and take its environment: the settings, or None when isolation failed midway (then
    no notebook may run here)."""
    settings = json.loads(Path(settings_file).read_text())
    report = settings.get("report")
    try:
        outcome = isolate(settings)
    except OSError as error:  # half-isolated is not isolated: say so, and run no notebook
        print(f"autograder.sandbox: failed: {error}", file=sys.stderr)  # in the job's log
        return None
    if report:
        Path(report).write_text(outcome)
    os.environ.update(settings.get("environment", {}))
    return settings


def main(argv: list[str] | None = None) -> int:
    """``python -m autograder.sandbox SETTINGS -- KERNEL ARGV``: isolate, then become the kernel."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m autograder.sandbox SETTINGS.json -- COMMAND...", file=sys.stderr)
        return 2
    if enter(argv[0]) is None:
        return 1
    os.execv(argv[2], argv[2:])
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
