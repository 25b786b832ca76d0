"""Where the course runs, and which device each framework uses.

Every notebook opens with the same set-up cell, which ends in ``rt = runtime.setup()``.
That call answers three questions a student should never have to think about twice:

* *Where am I?* A laptop or lab machine ("local"), Google Colab, or Binder.
* *Which device will each stack use?* NumPy (through ``rt.xp``: CuPy on a GPU), the
  course's own engine, PyTorch, TensorFlow, JAX, and the Keras backend.
* *How do I switch?* One variable: ``GRADSCHOOL_DEVICE=auto|cpu|gpu`` (or
  ``runtime.setup(device="cpu")``). Asking for a GPU where there is none falls back to the
  CPU with a one-line explanation instead of an error.

Probing is cheap on purpose: TensorFlow alone takes ~10 s to import, so ``setup()`` never
imports a framework. A notebook that uses one asks for its device (``rt.torch_device()``,
``rt.tf_device()``, ``rt.jax_device()``), which imports that framework only then.

On Colab, ``setup()`` also installs the course itself -- editable and *without
dependencies*, so Colab keeps its own numpy, torch, tensorflow and jax -- plus the small
dataset packages, pinned, also without dependencies.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

# The one setting a fork changes: "<owner>/<repository>@<ref>". The Colab and Binder
# badges, and the clone made by the set-up cell on Colab, are all generated from it.
COURSE = "gradschool-course/gradschool@main"

COLAB_DIR = "/content/gradschool"
DEVICE_VARIABLE = "GRADSCHOOL_DEVICE"
DEVICE_CHOICES = ("auto", "cpu", "gpu")
STACKS = ("numpy", "engine", "torch", "tensorflow", "jax", "keras")
# Never installed by the course on a hosted runtime: the runtime's own builds must stay.
FRAMEWORKS = frozenset(
    {"numpy", "torch", "torchvision", "tensorflow", "tensorflow-cpu", "keras",
     "jax", "jaxlib", "flax", "optax", "scipy", "pandas", "cupy"}
)
# What the course imports and takes from Colab's own image (import names): the frameworks and
# the scientific stack it preinstalls. Everything else a notebook imports is the course itself,
# the standard library, or a pin that the set-up installs (COLAB_TAGS); tests/test_runtime.py
# checks every curriculum notebook against this.
COLAB_PREINSTALLED = frozenset(
    {"numpy", "scipy", "pandas", "matplotlib", "sklearn", "threadpoolctl", "psutil", "tqdm",
     "torch", "tensorflow", "keras", "tensorboard", "jax", "flax", "optax", "orbax", "ipywidgets"}
)
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


def course_repository() -> tuple[str, str]:
    """Split :data:`COURSE` into ``(owner/repository, ref)``."""
    slug, _, ref = COURSE.partition("@")
    if slug.count("/") != 1 or not ref:
        raise ValueError(f"COURSE must look like 'owner/repository@ref', got {COURSE!r}")
    return slug, ref


# --------------------------------------------------------------------------- badges


def colab_url(notebook: str) -> str:
    """The Colab address of a curriculum notebook, e.g. ``curriculum/00_start/start.ipynb``."""
    slug, ref = course_repository()
    return f"https://colab.research.google.com/github/{slug}/blob/{ref}/{notebook}"


def binder_url(notebook: str) -> str:
    slug, ref = course_repository()
    return f"https://mybinder.org/v2/gh/{slug}/{ref}?labpath={quote(notebook, safe='')}"


def badges(notebook: str) -> str:
    """The badge line that every notebook's first cell carries (one markdown line)."""
    return (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"({colab_url(notebook)}) "
        f"[![Binder](https://mybinder.org/badge_logo.svg)]({binder_url(notebook)})"
    )


def setup_cell_source() -> str:
    """The set-up cell, identical in every notebook (a test keeps it so)."""
    slug, ref = course_repository()
    return (
        "# Set-up: the same first cell in every notebook. Run it first.\n"
        "# On Colab it fetches the course once (Colab keeps its own torch/tensorflow/jax);\n"
        "# everywhere it says where you are and which device each framework will use.\n"
        "import os, subprocess, sys\n"
        'if "google.colab" in sys.modules:\n'
        f'    if not os.path.isdir("{COLAB_DIR}"):\n'
        '        subprocess.run(["git", "clone", "--quiet", "--depth=1", '
        f'"--branch={ref}",\n'
        f'                        "https://github.com/{slug}.git", "{COLAB_DIR}"], '
        "check=True)\n"
        f'    sys.path.insert(0, "{COLAB_DIR}")\n'
        "from gradschool import runtime\n"
        "\n"
        "rt = runtime.setup()  # device: GRADSCHOOL_DEVICE=auto|cpu|gpu, or setup(device=\"cpu\")"
    )


# ------------------------------------------------------------------ where am I


def where() -> str:
    """``"colab"``, ``"binder"`` or ``"local"``."""
    if "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ:
        return "colab"
    if any(name.startswith("BINDER_") for name in os.environ) or "REPO_DIR" in os.environ:
        return "binder"
    return "local"


def requested_device(device: str | None = None) -> str:
    """The device asked for: the argument, else ``$GRADSCHOOL_DEVICE``, else ``auto``."""
    choice = (device or os.environ.get(DEVICE_VARIABLE) or "auto").strip().lower()
    if choice not in DEVICE_CHOICES:
        raise ValueError(
            f"{DEVICE_VARIABLE}={choice!r} is not a device choice; use one of "
            f"{', '.join(DEVICE_CHOICES)} (for example GRADSCHOOL_DEVICE=cpu)."
        )
    return choice


def visible_gpu(run: Callable = subprocess.run) -> str | None:
    """The name of a GPU this process may use, or None. Cheap: no framework is imported."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return None
    if shutil.which("nvidia-smi"):
        try:
            out = run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10, check=False,
            )
        except (OSError, subprocess.SubprocessError):
            out = None
        names = [line.strip() for line in (out.stdout if out else "").splitlines() if line.strip()]
        if names:
            return names[0] + (f" (+{len(names) - 1} more)" if len(names) > 1 else "")
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return "Apple silicon (MPS)"
    return None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# -------------------------------------------------------------------- runtime


@dataclass
class Runtime:
    """What :func:`setup` decided. ``rt.xp`` is the array module (NumPy, or CuPy on a GPU)."""

    where: str
    requested: str
    gpu: str | None
    use_gpu: bool
    stacks: dict[str, str]
    notes: list[str] = field(default_factory=list)
    xp: object = None

    # The frameworks are imported here, on first use, never by setup().
    def torch_device(self):
        import torch

        if self.use_gpu and torch.cuda.is_available():
            return torch.device("cuda")
        if self.use_gpu and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")

    def tf_device(self) -> str:
        import tensorflow as tf

        if self.use_gpu and tf.config.list_physical_devices("GPU"):
            return "/GPU:0"
        return "/CPU:0"

    def jax_device(self):
        import jax

        if self.use_gpu:
            try:
                return jax.devices("gpu")[0]
            except RuntimeError:
                pass
        return jax.devices("cpu")[0]

    def report(self) -> str:
        lines = [f"Running {PLACES[self.where]}; device asked for: {self.requested}."]
        width = max(map(len, self.stacks))
        lines += [f"  {name:<{width}}  {use}" for name, use in self.stacks.items()]
        lines += self.notes
        lines.append(
            f"Switch with {DEVICE_VARIABLE}=cpu|gpu|auto before starting Jupyter, "
            'or runtime.setup(device="cpu") here.'
        )
        return "\n".join(lines)


PLACES = {"local": "locally", "colab": "on Google Colab", "binder": "on Binder"}


def _cupy_usable() -> bool:
    if not _installed("cupy"):
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # a CuPy without a driver raises its own error types
        return False


def _hide_gpus_from_frameworks() -> None:
    """CPU forced: frameworks imported after this see no GPU (those already imported keep theirs)."""
    os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    os.environ["JAX_PLATFORMS"] = "cpu"


def setup(
    device: str | None = None,
    *,
    quiet: bool = False,
    install: bool = True,
    run: Callable = subprocess.run,
) -> Runtime:
    """Detect where we are, choose a device for every stack, print a short report.

    ``run`` is how commands are executed (tests pass a recorder). On Colab, ``install``
    makes the course importable without touching Colab's frameworks.
    """
    place = where()
    if place == "colab" and install:
        install_on_colab(run=run)
    asked = requested_device(device)
    gpu = visible_gpu(run=run) if asked != "cpu" else None
    notes: list[str] = []
    if asked == "gpu" and gpu is None:
        notes.append(
            "You asked for a GPU, but none is visible here, so everything runs on the CPU "
            + ("(Colab: Runtime > Change runtime type > GPU)." if place == "colab"
               else "(that is fine: every notebook is sized for a CPU).")
        )
    use_gpu = gpu is not None and asked in ("auto", "gpu")
    if asked == "cpu":
        _hide_gpus_from_frameworks()
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")

    cuda = use_gpu and "MPS" not in (gpu or "")
    if cuda and _cupy_usable():
        import cupy

        xp, array_use = cupy, f"CuPy on {gpu}"
    else:
        import numpy

        xp, array_use = numpy, "NumPy on the CPU"
        if cuda:
            notes.append("NumPy code stays on the CPU: CuPy is not installed "
                         "(pip install cupy-cuda12x to run it on the GPU).")

    def framework(module: str, gpu_use: str) -> str:
        if not _installed(module):
            return "not installed"
        return gpu_use if use_gpu else "CPU"

    mps = use_gpu and not cuda
    stacks = {
        "numpy": array_use,
        "engine": array_use.replace("NumPy", "NumPy arrays").replace("CuPy", "CuPy arrays"),
        "torch": framework("torch", f"{'mps' if mps else 'cuda'} ({gpu})"),
        "tensorflow": framework("tensorflow", "CPU" if mps else f"GPU ({gpu})"),
        "jax": framework("jax", "CPU" if mps else f"GPU ({gpu})"),
        "keras": f"backend {os.environ['KERAS_BACKEND']}",
    }
    rt = Runtime(place, asked, gpu, use_gpu, stacks, notes, xp)
    if not quiet:
        print(rt.report())
    return rt


# ------------------------------------------------------------------- on Colab


COLAB_TAGS = {"datasets", "colab"}


def colab_pins(requirements: Path | None = None) -> list[str]:
    """The pins Colab lacks, read from requirements.txt (the one place pins live): the lines
    whose comment starts with ``datasets`` or ``colab``."""
    requirements = requirements or REPOSITORY_ROOT / "requirements.txt"
    pins = []
    for line in requirements.read_text().splitlines():
        requirement, _, comment = line.partition("#")
        tag = comment.replace(":", " ").split()[:1]
        if tag and tag[0] in COLAB_TAGS and requirement.strip():
            pins.append(requirement.strip())
    return pins


def colab_install_commands(
    course_dir: str | None = None, requirements: Path | None = None
) -> list[list[str]]:
    """The pip commands that make the course work on Colab: no dependencies, no frameworks."""
    course_dir = course_dir or COLAB_DIR
    pins = colab_pins(requirements or Path(course_dir) / "requirements.txt")
    for pin in pins:
        name = pin.split("==")[0].strip().lower()
        if name in FRAMEWORKS:
            raise RuntimeError(f"refusing to install the framework {name!r} on Colab")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    return [pip + ["-e", course_dir], pip + pins]


def install_on_colab(run: Callable = subprocess.run, course_dir: str | None = None) -> None:
    """Install the course (editable) and the packages Colab lacks, once per Colab session."""
    course_dir = course_dir or COLAB_DIR
    marker = Path(course_dir) / ".colab-installed"
    if marker.exists():
        return
    for command in colab_install_commands(course_dir):
        run(command, check=True)
    try:
        marker.touch()
    except OSError:  # a read-only clone still works; it only reinstalls next time
        pass


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m gradschool.runtime``: print the report (what the set-up cell prints)."""
    setup(install=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
