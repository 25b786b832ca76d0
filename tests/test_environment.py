"""The environment files agree with each other, and the package leaves a hosted runtime alone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from conftest import ROOT
from gradschool import runtime


def pins() -> dict[str, Requirement]:
    out = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            out.setdefault(req.name.lower(), req)
    return out


def test_every_requirement_is_pinned_exactly():
    for name, req in pins().items():
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{name} is not pinned: {req}"
    assert str(pins()["torch"].specifier) == "==2.13.0"


def test_the_package_ranges_admit_the_pins_and_pin_nothing():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += extra
    pinned = pins()
    for line in declared:
        req = Requirement(line)
        for spec in req.specifier:
            assert spec.operator != "==", f"pyproject pins {req}: pins live in requirements.txt"
            if req.name.lower() in runtime.FRAMEWORKS:
                assert spec.operator not in ("<", "<="), (
                    f"{req} caps a framework: Colab's newer build would be replaced")
        pin = pinned.get(req.name.lower())
        if pin is not None:
            version = next(iter(pin.specifier)).version
            assert req.specifier.contains(version), f"{req} excludes the pinned {version}"


def test_conda_and_binder_describe_the_same_environment():
    conda = (ROOT / "environment.yml").read_text()
    assert "python=3.11" in conda and "- -r requirements.txt" in conda
    binder = [ln.strip() for ln in (ROOT / "binder" / "requirements.txt").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    assert "-r ../requirements.txt" in binder
    extra = [ln for ln in binder if ln != "-r ../requirements.txt"]
    assert extra == ["--extra-index-url https://download.pytorch.org/whl/cpu"], (
        f"binder/requirements.txt adds more than CPU wheels: {extra}")
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert "--no-deps -e ." in post_build and "data.load" in post_build
    assert os.access(ROOT / "binder" / "postBuild", os.X_OK)


def test_ci_runs_make_test():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and os.access(ROOT / ".ci" / "run", os.X_OK)


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_lab_serves_the_curriculum_and_allows_root_only_as_root():
    plan = make("-n", "-W", "requirements.txt", "lab").stdout  # -W: show the recipe, run nothing
    line = next(ln for ln in plan.splitlines() if "jupyter lab " in ln)
    assert "--ServerApp.root_dir=curriculum" in line
    assert ("--allow-root" in line) == (os.geteuid() == 0)


def test_a_second_make_reuses_the_environment():
    if not (ROOT / ".venv" / ".ready").exists():
        pytest.skip("the environment was not made by `make` (run the suite with `make test`)")
    assert make("-q", "env").returncode == 0, "make would rebuild an environment that is up to date"
    plan = make("-n", "-W", "requirements.txt", "env").stdout
    assert "pip install" in plan, "a changed requirements.txt must reinstall"


def test_nbgrader_extensions_are_enabled():
    jupyter = str(Path(sys.executable).parent / "jupyter")
    lab = subprocess.run([jupyter, "labextension", "list"], capture_output=True, text=True, timeout=120)
    listing = lab.stdout + lab.stderr
    assert re.search(r"@jupyter/nbgrader v0\.9\.\d+ \S*enabled", listing), listing
    server = subprocess.run([jupyter, "server", "extension", "list"], capture_output=True, text=True,
                            timeout=120)
    for extension in ("formgrader", "validate_assignment", "assignment_list"):
        assert re.search(rf"nbgrader\.server_extensions\.{extension} \S*enabled",
                         server.stdout + server.stderr), f"{extension} is not enabled"
