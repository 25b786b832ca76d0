"""gradschool.runtime: where am I, which device, and the Colab set-up -- without a GPU or Colab."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

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


def test_simulated_colab_installs_the_course_and_never_a_framework(clean_env, tmp_path, capsys):
    """The set-up cell, run as on Colab: a fake google.colab module, commands recorded."""
    no_gpu(clean_env)
    clean_env.setattr(sys, "path", list(sys.path))  # the cell puts the clone on sys.path
    clean_env.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    course_dir = tmp_path / "gradschool"
    recorded = []

    def record(command, **kwargs):
        recorded.append(list(command))
        if command[:2] == ["git", "clone"]:  # what the clone would bring, for the next step
            Path(command[-1]).mkdir()
            (Path(command[-1]) / "requirements.txt").write_text(
                (ROOT / "requirements.txt").read_text())
        return types.SimpleNamespace(returncode=0, stdout="", stderr="")

    source = runtime.setup_cell_source().replace(runtime.COLAB_DIR, str(course_dir))
    clean_env.setattr(runtime, "COLAB_DIR", str(course_dir))
    source = source.replace("runtime.setup()", "runtime.setup(run=record)")
    clean_env.setattr(runtime.subprocess, "run", record)
    namespace = {"record": record}
    exec(compile(source, "<set-up cell>", "exec"), namespace)  # noqa: S102 -- the cell under test

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
