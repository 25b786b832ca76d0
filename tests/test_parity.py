"""Part 3's parity contract, checked for every implementation that exists.

For each project in gradschool.projects.PROJECTS and each framework whose module
gradschool/projects/<project>_<framework>.py exists (solutions/README.md, Part 3):

- the first batch's loss and every gradient, from the project's initial weights, agree with the
  committed reference within 1e-4 (canonical names and shapes checked first);
- first_batch() agrees across the implementations and with this file's framework-neutral
  preprocessing (same shapes, float32 inputs (token indices for text), integer labels, values
  within 1e-6);
- set_weights then get_weights gives back the initial weights exactly;
- the module follows its SPEC: with a modified spec put in its place (a wider layer, another
  batch size), build_model, set_weights, get_weights and first_batch follow it;
- save then load gives a fresh model with the same weights and the same predictions on the
  test split.

And every implementation a spec names has its notebook, solutions/<folder>/<project>_<framework>.ipynb;
one still being written is listed in NOT_YET_WRITTEN, an expected failure (strict: the day it
lands, its test fails until it is taken off the list).
A framework is imported only when one of its modules exists.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import numpy as np
import pytest

from gradschool import projects
from gradschool.projects.spec import FRAMEWORKS

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4  # the first batch's loss and gradients, float32 against the reference
INPUT_TOLERANCE = 1e-6  # first_batch() across implementations


def module_path(project: str, framework: str) -> Path:
    return ROOT / "gradschool" / "projects" / f"{project}_{framework}.py"


def notebook_path(project: str, framework: str) -> Path:
    """solutions/<folder>/<project>_<framework>.ipynb, the folder being the project's assignment
    (solutions/03_tabular/ for tabular) once it exists, else where it will be."""
    folders = sorted(p for p in (ROOT / "solutions").glob(f"*_{project}") if p.is_dir())
    folder = folders[0] if folders else ROOT / "solutions" / f"03_{project}"
    return folder / f"{project}_{framework}.ipynb"


IMPLEMENTATIONS = [(project, framework) for project in projects.PROJECTS for framework in FRAMEWORKS
                   if module_path(project, framework).exists()]
IDS = [f"{project}-{framework}" for project, framework in IMPLEMENTATIONS]
PROJECTS_IMPLEMENTED = sorted({project for project, _ in IMPLEMENTATIONS})


def implementation(project: str, framework: str):
    return importlib.import_module(f"gradschool.projects.{project}_{framework}")


def neutral_split(spec, name: str):
    """A split after the spec's own preprocessing (Spec.prepare): what first_batch() and
    evaluate() of every implementation must agree with."""
    return spec.prepare()[name]


def random_weights(spec, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: (0.5 * rng.standard_normal(shape)).astype(np.float32)
            for name, shape in spec.parameter_shapes().items()}


def wider(spec):
    """The spec with its first layer that has a width (units, filters, dim; the output layer
    excepted) made 8 wider: a change every implementation must follow."""
    layers = list(spec.layers)
    for i, layer in enumerate(layers[:-1]):
        for field in ("units", "filters", "dim"):
            if hasattr(layer, field):
                layers[i] = dataclasses.replace(layer, **{field: getattr(layer, field) + 8})
                return dataclasses.replace(spec, layers=tuple(layers))
    raise AssertionError(f"{spec.name}: no layer to widen in {spec.layers}")


def check_canonical(weights, spec, what: str) -> None:
    """Names and shapes first: a dict with exactly the canonical names, arrays of the canonical shapes."""
    assert isinstance(weights, dict), f"{what}: expected a dict, got {type(weights).__name__}"
    assert sorted(weights) == sorted(spec.parameter_shapes()), (
        f"{what}: names {sorted(weights)}, expected the canonical {sorted(spec.parameter_shapes())}")
    for name, shape in spec.parameter_shapes().items():
        assert isinstance(weights[name], np.ndarray), (
            f"{what}[{name!r}]: expected a NumPy array, got {type(weights[name]).__name__}")
        assert weights[name].shape == shape, (
            f"{what}[{name!r}]: shape {weights[name].shape}, the canonical layout is {shape}")


@pytest.mark.parametrize("project, framework", IMPLEMENTATIONS, ids=IDS)
def test_first_batch_loss_and_gradients_match_the_reference(project, framework):
    spec = projects.load(project)
    loss, gradients = implementation(project, framework).first_batch_loss_and_gradients()
    assert isinstance(loss, float), f"{framework}: the loss should be a float, got {type(loss).__name__}"
    check_canonical(gradients, spec, f"{project}_{framework} gradients")
    spec.reference().check(loss, gradients, tolerance=TOLERANCE)


@pytest.mark.parametrize("project", PROJECTS_IMPLEMENTED)
def test_first_batch_is_the_same_everywhere(project):
    spec = projects.load(project)
    x_neutral, y_neutral = neutral_split(spec, "train")
    batches = {}
    for framework in [f for p, f in IMPLEMENTATIONS if p == project]:
        x, y = implementation(project, framework).first_batch()
        assert isinstance(x, np.ndarray) and isinstance(y, np.ndarray), (
            f"{framework}: first_batch(): NumPy arrays expected, not {type(x).__name__}, {type(y).__name__}")
        if spec.alphabet:  # text: token indices
            assert x.dtype.kind in "iu", f"{framework}: inputs {x.dtype}, expected integer token indices"
        else:
            assert x.dtype == np.float32, f"{framework}: inputs {x.dtype}, expected float32"
        assert y.dtype.kind in "iu", f"{framework}: labels {y.dtype}, expected integers"
        assert x.shape == (spec.batch_size, *spec.input_shape), (
            f"{framework}: inputs {x.shape}, expected (batch_size, *input_shape) = "
            f"{(spec.batch_size, *spec.input_shape)}")
        batches[framework] = x, y
    for framework, (x, y) in batches.items():
        labels = y_neutral[:spec.batch_size]
        assert y.shape == labels.shape and np.array_equal(y, labels), (
            f"{framework}: the first batch's labels differ from the first {spec.batch_size} of the "
            f"training split (unshuffled)")
        error = float(np.abs(x - x_neutral[:spec.batch_size]).max())
        assert error <= INPUT_TOLERANCE, (
            f"{framework}: the first batch differs by up to {error:.2e} from the spec's preprocessing "
            f"({spec.notes.get('preprocessing', 'none')!r}); if the implementation is right, teach "
            f"neutral_split in this file about the project")
    reference_framework, (x0, y0) = next(iter(batches.items()))
    for framework, (x, y) in batches.items():
        error = float(np.abs(x - x0).max())
        assert error <= INPUT_TOLERANCE and np.array_equal(y, y0), (
            f"first_batch() of {framework} and {reference_framework} differ (inputs by up to {error:.2e})")


@pytest.mark.parametrize("project, framework", IMPLEMENTATIONS, ids=IDS)
def test_initial_weights_round_trip_exactly(project, framework):
    spec, module = projects.load(project), implementation(project, framework)
    initial = spec.initial_weights()
    model = module.build_model()
    module.set_weights(model, initial)
    got = module.get_weights(model)
    check_canonical(got, spec, f"{framework} get_weights")
    for name, value in initial.items():
        assert got[name].dtype == np.float32, f"{framework}: {name} came back as {got[name].dtype}"
        assert np.array_equal(got[name], value), f"{framework}: {name} changed on its way through the model"


@pytest.mark.parametrize("project, framework", IMPLEMENTATIONS, ids=IDS)
def test_the_module_follows_its_spec(project, framework, monkeypatch):
    spec, module = projects.load(project), implementation(project, framework)
    changed = wider(spec)
    monkeypatch.setattr(module, "SPEC", changed)
    model = module.build_model()
    weights = random_weights(changed, seed=1)
    module.set_weights(model, weights)
    got = module.get_weights(model)
    check_canonical(got, changed, f"{framework} get_weights after SPEC was widened")
    for name, value in weights.items():
        assert np.array_equal(got[name], value), f"{framework}: {name} of the wider model did not round-trip"
    with pytest.raises(Exception):  # noqa: B017 -- each framework raises its own kind of error
        module.set_weights(module.build_model(), spec.initial_weights())  # the weights of the old spec
    monkeypatch.setattr(module, "SPEC", dataclasses.replace(spec, batch_size=5))
    x, y = module.first_batch()
    assert len(x) == len(y) == 5, f"{framework}: first_batch() gave {len(x)} examples, SPEC.batch_size is 5"


@pytest.mark.parametrize("project, framework", IMPLEMENTATIONS, ids=IDS)
def test_save_then_load_predicts_the_same(project, framework, tmp_path):
    spec, module = projects.load(project), implementation(project, framework)
    model = module.build_model()
    weights = random_weights(spec, seed=2)
    module.set_weights(model, weights)
    path = tmp_path / f"{project}_{framework}.model"
    module.save(model, path)
    assert path.exists(), f"{framework}: save(model, path) wrote nothing at {path}"
    fresh = module.load(path)
    assert fresh is not model, f"{framework}: load should return a fresh model"
    loaded = module.get_weights(fresh)
    for name, value in weights.items():
        assert np.array_equal(loaded[name], value), f"{framework}: {name} differs after save and load"
    x, y = neutral_split(spec, "test")
    assert module.evaluate(fresh, x, y) == module.evaluate(model, x, y)
    for i in range(min(len(y), 32)):  # example by example: the same prediction, the same score
        one = (x[i:i + 1], y[i:i + 1])
        assert module.evaluate(fresh, *one) == module.evaluate(model, *one), f"{framework}: test example {i}"
    if spec.metric == "accuracy":  # how many examples each model gives to each class
        for label in range(spec.output_shape()[-1]):
            everyone = np.full_like(y, label)
            assert module.evaluate(fresh, x, everyone) == module.evaluate(model, x, everyone), (
                f"{framework}: the loaded model gives class {label} to a different share of the test split")


# The implementations a spec names whose notebook is still being written. Each is an expected
# failure, strict: the day its notebook lands, its test fails until its name is removed here.
NOT_YET_WRITTEN = {
}


def named_implementations():
    cases = []
    for project in projects.PROJECTS:
        for framework in projects.load(project).implementations:
            marks = ()
            if framework in NOT_YET_WRITTEN.get(project, ()):
                marks = pytest.mark.xfail(strict=True, reason=(
                    f"{notebook_path(project, framework).relative_to(ROOT)} is still to be written; "
                    f"when it is, remove {framework!r} from NOT_YET_WRITTEN[{project!r}]"))
            cases.append(pytest.param(project, framework, marks=marks, id=f"{project}-{framework}"))
    return cases


@pytest.mark.parametrize("project, framework", named_implementations())
def test_every_implementation_the_spec_names_has_its_notebook(project, framework):
    path = notebook_path(project, framework)
    assert path.exists(), (f"{project} names {framework} among its implementations, but "
                           f"{path.relative_to(ROOT)} is missing")
    assert module_path(project, framework).exists(), (
        f"{path.name} exists, {module_path(project, framework).relative_to(ROOT)} does not: run make export")


def test_the_list_of_missing_notebooks_names_real_implementations():
    for project, frameworks in NOT_YET_WRITTEN.items():
        assert project in projects.PROJECTS, f"NOT_YET_WRITTEN names {project!r}, which is not a project"
        named = projects.load(project).implementations
        assert set(frameworks) <= set(named), (
            f"NOT_YET_WRITTEN[{project!r}] = {frameworks}, but the spec names only {named}")
