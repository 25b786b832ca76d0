"""A kernel forked from a grading job's spare (autograder/prefork.py) sees what a launched one
sees: the same path, none of the grader's modules, a watch on its job, a seed of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from autograder import prefork, sandbox
from conftest import ROOT

ISOLATION = sandbox.probe()

# what the kernel reports about itself; the grader's repository (hidden from it) and the Python
# environment (brought back, even from inside the repository) are filled in
PROBE = """
import json, os, sys, numpy, gradschool
from ipykernel.kernelapp import IPKernelApp
def graders(file):
    return file.startswith({repository!r}) and not file.startswith({environment!r})
print(json.dumps({{
    "path": sys.path,
    "grader modules": sorted(n for n, m in sys.modules.items() if n.split(".")[0] == "autograder"
                             or graders(str(getattr(m, "__file__", "") or ""))),
    "gradschool": gradschool.__file__,
    "random": numpy.random.random(),
    "parent": IPKernelApp.instance().parent_handle, "ppid": os.getppid(),
    "own session": os.getsid(0) == os.getpid(),
    "mpl": os.environ.get("MPLBACKEND"),
}}))
"""

# a grading job in miniature: the fork server's preloads, then kernels started as jobs start
# them: forked from spares (two from one process), or launched
HARNESS = textwrap.dedent("""
    import importlib, json, os, sys
    from pathlib import Path
    from autograder import prefork, sandbox

    how, work, library, probe = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    os.environ["MPLBACKEND"] = "Agg"
    for name in prefork.KERNEL_PRELOAD:
        importlib.import_module(name)
    prefork.BASE_PATH = [p for p in sys.path[1:] if p != os.environ["PYTHONPATH"]]
    spares = [prefork.fork_spare(), prefork.fork_spare()] if how == "forked" else [None]
    from jupyter_client import KernelManager

    def kernel(spare, folder):
        folder.mkdir()
        sandbox.kernelspec(folder / "jupyter", {
            "hidden": [os.environ["PYTHONPATH"]], "readable": [sys.prefix, str(library)],
            "writable": [str(folder)], "report": str(folder / "isolation.txt"),
            "environment": {"PYTHONPATH": str(library), "MPLBACKEND": "Agg", "TMPDIR": "/tmp"}})
        os.environ["JUPYTER_PATH"] = str(folder / "jupyter")
        km = KernelManager(kernel_name="python3")
        km.transport, km.ip, km.connection_file = "ipc", str(folder / "k"), str(folder / "k.json")
        prefork.SPARE = spare
        if spare is not None:
            km.provisioner = prefork.provisioner_for(km)
        km.start_kernel(cwd=str(folder))
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        lines = []
        kc.execute_interactive(probe, timeout=60,
                               output_hook=lambda m: lines.append(m["content"].get("text", "")))
        found = json.loads("".join(lines))
        found["forked"] = km.provisioner.pid == getattr(spare, "pid", None)
        found["harness"] = os.getpid()
        found["isolation"] = (folder / "isolation.txt").read_text()
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        return found

    print(json.dumps([kernel(spare, work / f"k{i}") for i, spare in enumerate(spares)]))
""")


def start(how: str, tmp_path, library) -> list[dict]:
    work = tmp_path / how
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    probe = PROBE.format(repository=str(ROOT), environment=sys.prefix)
    done = subprocess.run([sys.executable, "-c", HARNESS, how, str(work), str(library), probe],
                          env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_command_that_is_not_the_sandboxed_kernel_is_not_forked():
    kernel = [sys.executable, "-m", "ipykernel_launcher", "-f", "k.json"]
    assert prefork.parse(kernel) is None
    assert prefork.parse(["python2", "-m", "autograder.sandbox", "s.json", "--", *kernel]) is None
    assert prefork.parse([sys.executable, "-m", "autograder.sandbox", "s.json", "--", *kernel]) == (
        "s.json", ["-f", "k.json"])


@pytest.mark.skipif(not ISOLATION.startswith("isolated"),
                    reason=f"no sandbox for kernels on this machine: {ISOLATION}")
def test_a_forked_kernel_sees_what_a_launched_kernel_sees(tmp_path):
    library = sandbox.build_library(tmp_path / "lib", ROOT)
    [launched] = start("launched", tmp_path, library)
    forked = start("forked", tmp_path, library)
    assert not launched["forked"] and [found["forked"] for found in forked] == [True, True]
    for found in (launched, *forked):
        assert found["isolation"].startswith("isolated"), found["isolation"]
        assert found["grader modules"] == [], "nothing of the grader's own code is imported"
        assert found["gradschool"].startswith(str(library)), "the course is the kernel's copy"
        assert found["parent"] == found["ppid"] == found["harness"], "the kernel exits with its job"
        assert found["own session"] and found["mpl"] == "Agg"
        assert found["path"] == launched["path"] and found["path"][0] == str(library), "the same path"
    randoms = [found["random"] for found in (launched, *forked)]
    assert all(isinstance(r, float) for r in randoms) and len(set(randoms)) == 3, \
        "each forked kernel seeds NumPy afresh, as a launched one does"
