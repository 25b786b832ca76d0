"""gradschool.runtime: where am I, which device, and the Colab set-up -- without a GPU or Colab."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import sys
import types
from pathlib import Path

import nbformat
import numpy as np
import pytest
from IPython.core.inputtransformer2 import TransformerManager

from gradschool import runtime

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def clean_env(monkeypatch):
    """No Colab, no Binder, no device choice, no GPU hiding: each test sets what it needs."""
    for name in list(runtime.os.environ):
        if name.startswith(("BINDER_", "COLAB_")) or name in (
            "REPO_DIR", runtime.DEVICE_VARIABLE, "CUDA_VISIBLE_DEVICES", "JAX_PLATFORMS"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    return monkeypatch


def no_gpu(monkeypatch):
    monkeypatch.setattr(runtime, "visible_gpu", lambda run=None: None)


def test_local_cpu_forced_hides_gpus(clean_env, capsys):
    clean_env.setenv(runtime.DEVICE_VARIABLE, "cpu")
    calls = []
    rt = runtime.setup(run=lambda *a, **k: calls.append(a))
    assert rt.where == "local" and rt.requested == "cpu" and rt.use_gpu is False
    assert rt.xp is np
    assert calls == [], "forcing the CPU must not even probe for a GPU"
    assert runtime.os.environ["CUDA_VISIBLE_DEVICES"] == "-1"
    assert runtime.os.environ["JAX_PLATFORMS"] == "cpu"
    report = capsys.readouterr().out
    assert "Running locally; device asked for: cpu." in report
    for stack in runtime.STACKS:
        assert f"  {stack} " in report, f"the report must say what {stack} uses"
    assert "GRADSCHOOL_DEVICE=cpu|gpu|auto" in report


def test_gpu_asked_for_but_absent_falls_back_with_one_line(clean_env, capsys):
    no_gpu(clean_env)
    rt = runtime.setup(device="gpu")
    assert rt.requested == "gpu" and rt.use_gpu is False and rt.xp is np
    assert len(rt.notes) == 1 and "none is visible" in rt.notes[0]
    assert "\n" not in rt.notes[0]
    assert all(v in ("CPU", "not installed") for k, v in rt.stacks.items()
               if k in ("torch", "tensorflow", "jax"))
    assert "runs on the CPU" in capsys.readouterr().out


def test_gpu_present_is_used_by_frameworks_but_numpy_needs_cupy(clean_env, capsys):
    clean_env.setattr(runtime, "visible_gpu", lambda run=None: "Tesla T4")
    clean_env.setattr(runtime, "_cupy_usable", lambda: False)
    rt = runtime.setup(device="auto")
    assert rt.use_gpu and rt.gpu == "Tesla T4"
    assert rt.stacks["torch"] == "cuda (Tesla T4)"
    assert rt.stacks["jax"] == "GPU (Tesla T4)"
    assert rt.xp is np and any("CuPy is not installed" in n for n in rt.notes)


def test_device_choice_is_validated(clean_env):
    clean_env.setenv(runtime.DEVICE_VARIABLE, "tpu")
    with pytest.raises(ValueError, match="GRADSCHOOL_DEVICE='tpu' is not a device choice"):
        runtime.setup()


def test_visible_gpu_reads_nvidia_smi(clean_env):
    clean_env.setattr(runtime.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    answer = types.SimpleNamespace(stdout="NVIDIA H100\nNVIDIA H100\n")
    assert runtime.visible_gpu(run=lambda *a, **k: answer) == "NVIDIA H100 (+1 more)"
    clean_env.setenv("CUDA_VISIBLE_DEVICES", "")
    assert runtime.visible_gpu(run=lambda *a, **k: answer) is None


def test_binder_is_detected(clean_env):
    no_gpu(clean_env)
    clean_env.setenv("BINDER_LAUNCH_HOST", "https://mybinder.org/")
    assert runtime.where() == "binder"
    assert "on Binder" in runtime.setup(quiet=True).report()


def test_torch_device_follows_the_switch(clean_env):
    torch = pytest.importorskip("torch")
    no_gpu(clean_env)
    rt = runtime.setup(device="cpu", quiet=True)
    assert rt.torch_device() == torch.device("cpu")


def on_simulated_colab(source: str, monkeypatch, course_dir: Path) -> tuple[dict, list[list[str]]]:
    """Run a set-up cell as on Colab: a fake google.colab module, every command recorded (a
    clone brings the repository's requirements.txt). Returns (the cell's namespace, commands)."""
    no_gpu(monkeypatch)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the cell puts the clone on sys.path
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    recorded = []

    def record(command, **kwargs):
        recorded.append(list(command))
        if command[:2] == ["git", "clone"]:  # what the clone would bring, for the next step
            Path(command[-1]).mkdir()
            (Path(command[-1]) / "requirements.txt").write_text(
                (ROOT / "requirements.txt").read_text())
        return types.SimpleNamespace(returncode=0, stdout="", stderr="")

    source = source.replace(runtime.COLAB_DIR, str(course_dir))
    monkeypatch.setattr(runtime, "COLAB_DIR", str(course_dir))
    source = source.replace("runtime.setup()", "runtime.setup(run=record)")
    monkeypatch.setattr(runtime.subprocess, "run", record)
    namespace = {"record": record}
    exec(compile(source, "<set-up cell>", "exec"), namespace)  # noqa: S102 -- the cell under test
    return namespace, recorded


def test_simulated_colab_installs_the_course_and_never_a_framework(clean_env, tmp_path, capsys):
    """The set-up cell, run as on Colab: a fake google.colab module, commands recorded."""
    course_dir = tmp_path / "gradschool"
    namespace, recorded = on_simulated_colab(runtime.setup_cell_source(), clean_env, course_dir)
    record = namespace["record"]
    rt = namespace["rt"]
    assert rt.where == "colab"
    slug, ref = runtime.course_repository()
    clone = recorded[0]
    assert clone[:2] == ["git", "clone"] and f"--branch={ref}" in clone
    assert f"https://github.com/{slug}.git" in clone
    pip_installs = [c for c in recorded if c[1:4] == ["-m", "pip", "install"]]
    assert len(pip_installs) == 2, recorded
    assert pip_installs[0][-2:] == ["-e", str(course_dir)]
    for command in pip_installs:
        assert "--no-deps" in command, f"{command} would let pip replace Colab's packages"
        names = {arg.split("==")[0].lower() for arg in command[command.index("--no-deps") + 1:]}
        assert not names & runtime.FRAMEWORKS, f"{command} reinstalls a framework"
    assert {p.split("==")[0] for p in runtime.colab_pins()} <= {
        arg.split("==")[0] for arg in pip_installs[1]}
    assert "on Google Colab" in capsys.readouterr().out
    # a second run of the cell (kernel restarted) installs nothing again
    recorded.clear()
    runtime.setup(run=record, quiet=True)
    assert recorded == []


def test_colab_refuses_to_install_a_framework(tmp_path):
    (tmp_path / "requirements.txt").write_text("torch==2.13.0  # datasets\n")
    with pytest.raises(RuntimeError, match="refusing to install the framework 'torch'"):
        runtime.colab_install_commands(str(tmp_path))


def test_badges_and_clone_come_from_the_one_setting(monkeypatch):
    monkeypatch.setattr(runtime, "COURSE", "someone/fork@v2")
    nb = "curriculum/00_start/start.ipynb"
    assert "github/someone/fork/blob/v2/curriculum/00_start/start.ipynb" in runtime.colab_url(nb)
    assert runtime.binder_url(nb).startswith("https://mybinder.org/v2/gh/someone/fork/v2?")
    assert "--branch=v2" in runtime.setup_cell_source()
    assert "https://github.com/someone/fork.git" in runtime.setup_cell_source()
    monkeypatch.setattr(runtime, "COURSE", "not-a-slug")
    with pytest.raises(ValueError, match="owner/repository@ref"):
        runtime.badges(nb)


def test_colab_pins_are_pinned_and_not_frameworks():
    pins = runtime.colab_pins()
    assert pins, "requirements.txt marks no packages for Colab"
    assert {"mlxtend", "onnxruntime"} <= {p.split("==")[0] for p in pins}
    for pin in pins:
        name, sep, version = pin.partition("==")
        assert sep and version, f"{pin} must be pinned exactly"
        assert name.lower() not in runtime.FRAMEWORKS


def notebook_imports(nb) -> tuple[set[str], set[str]]:
    """Top-level modules a notebook's code imports: (required, optional), optional being those
    imported inside a ``try`` that catches ImportError (LiteRT, Triton) or under an ``if`` (CuPy,
    imported only for a CuPy array)."""
    required, optional = set(), set()

    def visit(node, guarded: bool) -> None:
        if isinstance(node, ast.Try):
            catches = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
            guarded_here = guarded or bool(catches & {"ImportError", "ModuleNotFoundError", "Exception"})
            for child in node.body:
                visit(child, guarded_here)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, guarded)
            return
        if isinstance(node, ast.If):
            for child in [*node.body, *node.orelse]:
                visit(child, True)
            return
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        (optional if guarded else required).update(n.split(".")[0] for n in names)
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    python = TransformerManager()  # IPython's own: %magics and !commands become Python
    for cell in nb.cells:
        if cell.cell_type == "code":
            visit(ast.parse(python.transform_cell(cell.source)), False)
    return required, optional - required


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def import_names(pin: str) -> set[str]:
    """The import names a pinned distribution provides, from its installed metadata."""
    name = pin.split("==")[0].strip().lower().replace("_", "-")
    return {module for module, dists in _distributions().items()
            if name in {d.lower().replace("_", "-") for d in dists}}


CURRICULUM_NOTEBOOKS = sorted((ROOT / "curriculum").glob("*/*.ipynb"))


@pytest.mark.parametrize("path", CURRICULUM_NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_each_notebook_set_up_on_a_simulated_colab_then_imports_what_it_needs(path, clean_env, tmp_path):
    """Each notebook's own set-up cell on a simulated Colab installs no framework, and then
    everything the notebook imports is Colab's, the course's, the standard library's, or
    installed by that cell."""
    nb = nbformat.read(path, as_version=4)
    setup = nb.cells[1]
    assert setup.metadata.get("nbgrader", {}).get("grade_id") == "setup"
    namespace, recorded = on_simulated_colab(setup.source, clean_env, tmp_path / "gradschool")
    assert namespace["rt"].where == "colab"
    installs = [c for c in recorded if c[1:4] == ["-m", "pip", "install"]]
    installed = set()
    for command in installs:
        assert "--no-deps" in command, f"{command} would let pip replace Colab's packages"
        for arg in command[command.index("--no-deps") + 1:]:
            if "==" in arg:
                assert arg.split("==")[0].lower() not in runtime.FRAMEWORKS, f"{command} reinstalls {arg}"
                installed |= import_names(arg)
    required, _ = notebook_imports(nb)
    for module in sorted(required):
        source = ("the standard library" if module in sys.stdlib_module_names
                  else "the course" if module == "gradschool"
                  else "Colab" if module in runtime.COLAB_PREINSTALLED
                  else "the set-up" if module in installed else None)
        assert source, f"{module} is imported, but neither Colab nor the set-up cell provides it"
        assert importlib.util.find_spec(module) is not None, f"{module} does not resolve"
    # optional imports (CuPy, LiteRT, a comparison with torch) are guarded: a notebook runs without


# the notebooks whose work a GPU speeds up: the engine's GPU notebook, the convolutional,
# sequence and transfer projects, the compilers measured, the showdown's timings
GPU_NOTEBOOKS = {"02_engine/08_gpu", "04_images/images_engine", "04_images/images_jax",
                 "04_images/images_keras", "04_images/images_torch", "05_sequences/sequences_engine",
                 "05_sequences/sequences_jax", "05_sequences/sequences_keras",
                 "05_sequences/sequences_torch", "06_transfer/transfer_jax", "06_transfer/transfer_keras",
                 "06_transfer/transfer_torch", "07_compile/compile_jax", "07_compile/compile_keras",
                 "07_compile/compile_torch", "12_showdown/showdown"}


def test_the_notebooks_that_gain_from_a_gpu_ask_colab_for_one():
    asking = set()
    for path in CURRICULUM_NOTEBOOKS:
        metadata = nbformat.read(path, as_version=4).metadata
        solution = nbformat.read(ROOT / "solutions" / path.parent.name / path.name, as_version=4).metadata
        colab = metadata.get("colab", {})
        assert isinstance(colab, dict) and (metadata.get("accelerator") == "GPU") == ("gpuType" in colab)
        assert (metadata.get("accelerator"), colab.get("gpuType")) == (
            solution.get("accelerator"), solution.get("colab", {}).get("gpuType")), "the release keeps it"
        if metadata.get("accelerator") == "GPU":
            assert colab["gpuType"] == "T4", "Colab's free GPU"
            asking.add(f"{path.parent.name}/{path.stem}")
    assert asking == GPU_NOTEBOOKS
