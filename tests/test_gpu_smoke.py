"""``make gpu-smoke`` (bench/gpu.py): skips cleanly without a GPU, and each stack's training
step runs and learns on the CPU half of the comparison (CI never has a GPU)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench import gpu
from conftest import ROOT
from gradschool import runtime


@pytest.mark.skipif(runtime.visible_gpu() is not None, reason="a GPU is visible: nothing to skip")
def test_without_a_gpu_the_smoke_test_says_so_and_passes():
    done = subprocess.run([sys.executable, "-m", "bench", "gpu"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("gpu-smoke: skipped: no GPU is visible here")


@pytest.mark.slow
@pytest.mark.parametrize("stack", gpu.STACKS)
def test_each_stack_takes_a_training_step_on_the_device_it_reports(stack):
    found = gpu.run(stack, "cpu")
    assert "error" not in found, found
    assert found["stack"] == stack and found["asked"] == "cpu"
    assert isinstance(found["device"], str) and found["device"].lower().endswith(("cpu", "cpu:0")), found
    assert isinstance(found["seconds"], float) and 0 < found["seconds"] < 30
    assert isinstance(found["loss before"], float) and found["loss after"] < found["loss before"], found
