"""The grader's sandbox for kernels (autograder/sandbox.py) and the names its guard puts back
(autograder.grade.release_imports), without grading a notebook: a few seconds."""

from __future__ import annotations

import importlib.util
import json
import marshal
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from autograder import sandbox
from autograder.grade import _withheld_module, release_imports
from conftest import ROOT

ISOLATION = sandbox.probe()


def run_python(code: str, library=None, settings=None, tmp_path=None) -> dict:
    """Run ``code`` (which prints one JSON line) in a child, sandboxed when ``settings`` are given."""
    env = dict(os.environ, PYTHONPATH=str(library or ROOT))
    command = [sys.executable, "-c", textwrap.dedent(code)]
    if settings is not None:
        path = tmp_path / "settings.json"
        path.write_text(json.dumps(settings))
        env["PYTHONPATH"] = str(ROOT)
        command = [sys.executable, "-m", "autograder.sandbox", str(path), "--", *command]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_library_holds_the_graded_module_as_the_release_has_it(tmp_path):
    withheld = _withheld_module("02_engine", "03_nn")
    assert withheld[0] == "gradschool/engine/nn.py" and "raise NotImplementedError()" in withheld[1]
    library = sandbox.build_library(tmp_path / "lib", ROOT, withheld=withheld)
    found = run_python("""
        import inspect, json
        import gradschool.engine.tensor as tensor
        from gradschool.engine import Tensor, Adam, Linear
        import gradschool.engine.nn as nn
        from gradschool.projects import spec
        blank = sorted(name for name, f in vars(nn).items()
                       if inspect.isfunction(f) and f.__module__ == nn.__name__
                       and "raise NotImplementedError()" in inspect.getsource(f))
        print(json.dumps({"tensor": tensor.__file__, "weights": str(spec.WEIGHTS_DIR),
                          "same": Tensor is tensor.Tensor, "blank": blank}))
    """, library=library, tmp_path=tmp_path)
    assert found["tensor"].startswith(str(library)) and found["same"]
    assert found["weights"] == str(library / "datasets" / "weights")
    assert found["blank"], "the exercises of 03_nn are stubs in the graded kernel's copy"
    assert (library / "gradschool" / "engine" / "tensor.py").read_text() == (
        ROOT / "gradschool" / "engine" / "tensor.py").read_text(), "only the graded module differs"
    assert (library / "autograder" / "guard.py").read_text() == (ROOT / "autograder" / "guard.py").read_text()
    # compiled in advance (the kernel's copy is read-only), and from the copy's own text
    module = library / "gradschool" / "engine" / "nn.py"
    compiled = Path(importlib.util.cache_from_source(str(module))).read_bytes()
    assert marshal.loads(compiled[16:]) == compile(withheld[1], str(module), "exec", dont_inherit=True)


def test_a_library_without_a_withheld_module_is_the_package_as_it_is(tmp_path):
    library = sandbox.build_library(tmp_path / "lib", ROOT)
    original = (ROOT / "gradschool" / "engine" / "__init__.py").read_text()
    assert (library / "gradschool" / "engine" / "__init__.py").read_text() == original
    assert (library / "gradschool" / "engine" / "nn.py").read_text() == (
        ROOT / "gradschool" / "engine" / "nn.py").read_text()


@pytest.mark.skipif(not ISOLATION.startswith("isolated"),
                    reason=f"no sandbox for kernels on this machine: {ISOLATION}")
def test_a_sandboxed_process_sees_only_what_it_was_given(tmp_path):
    secret, kept, work = tmp_path / "secret", tmp_path / "kept", tmp_path / "work"
    for folder in (secret, kept, work):
        folder.mkdir()
    (secret / "answers.txt").write_text("42")
    (kept / "data.txt").write_text("data")
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    settings = {"hidden": [str(secret), str(ROOT)], "readable": [str(kept), sys.prefix],
                "writable": [str(work)], "environment": {"GRADED": "yes"}, "report": str(work / "report.txt")}
    found = run_python(f"""
        import json, os, socket
        def attempt(action):
            try:
                return action() or "ok"
            except OSError as error:
                return type(error).__name__ + ": " + (error.strerror or "")
        def write(path):
            with open(path, "w") as f:
                f.write("x")
        print(json.dumps({{
            "secret": os.listdir({str(secret)!r}) if os.path.exists({str(secret)!r}) else "absent",
            "repository": os.listdir({str(ROOT)!r}),
            "read kept": open({str(kept / "data.txt")!r}).read(),
            "write kept": attempt(lambda: write({str(kept / "data.txt")!r})),
            "write work": attempt(lambda: write({str(work / "out.txt")!r})),
            "write elsewhere": attempt(lambda: write("/etc/graded-was-here")),
            "tmp": os.listdir("/tmp"),
            "write tmp": attempt(lambda: write("/tmp/left-behind")),
            "network": attempt(lambda: socket.create_connection(("127.0.0.1", {server.getsockname()[1]}),
                                                                timeout=2).close()),
            "environment": os.environ.get("GRADED"),
            "own loopback": attempt(lambda: socket.create_server(("127.0.0.1", 0)).close()),
        }}))
    """, settings=settings, tmp_path=work)
    try:
        server.accept()
        reached = True
    except OSError:
        reached = False
    server.close()
    assert found["secret"] in ([], "absent"), "a hidden folder is empty or absent"
    prefix = Path(sys.prefix)
    brought_back = {prefix.relative_to(ROOT).parts[0]} if prefix.is_relative_to(ROOT) else set()
    assert set(found["repository"]) == brought_back, "of the repository, only the environment is seen"
    assert found["read kept"] == "data" and "Read-only" in found["write kept"]
    assert found["write work"] == "ok" and (work / "out.txt").read_text() == "x"
    assert "Read-only" in found["write elsewhere"] and not os.path.exists("/etc/graded-was-here")
    assert found["write tmp"] == "ok" and not os.path.exists("/tmp/left-behind"), "/tmp is private"
    assert found["network"] != "ok" and not reached, "the network is out of reach"
    assert found["environment"] == "yes" and found["own loopback"] == "ok"
    assert (secret / "answers.txt").read_text() == "42" and (kept / "data.txt").read_text() == "data"
    assert (work / "report.txt").read_text().startswith("isolated")


def test_without_namespaces_the_sandbox_says_why_and_still_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "_unshare", lambda libc: (_ for _ in ()).throw(OSError(1, "denied")))
    assert sandbox.isolate({}).startswith("not isolated: no new namespaces here")


def test_the_guard_puts_back_what_the_release_imports_before_each_test():
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell
    nb.cells = [
        code("import numpy as np\nimport os.path\n%matplotlib inline"),
        code("def answer():\n    import json\n    return 1", metadata={"nbgrader": {
            "solution": True, "grade": False, "grade_id": "ex-a"}}),
        code("from gradschool.checks import check_close as close\nclose(answer(), 1)",
             metadata={"nbgrader": {"solution": False, "grade": True, "grade_id": "test-a", "points": 1}}),
        code("import matplotlib.pyplot as plt\nfrom . import nothing"),
        code("assert True", metadata={"nbgrader": {"solution": False, "grade": True, "grade_id": "test-b",
                                                   "points": 1}}),
    ]
    assert release_imports(nb) == {
        "test-a": {"np": "numpy", "os": "os"},
        "test-b": {"np": "numpy", "os": "os", "close": "gradschool.checks:check_close",
                   "plt": "matplotlib.pyplot"},
    }
