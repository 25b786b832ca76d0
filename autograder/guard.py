"""The grader's guard inside a graded kernel: tests run with the real checks, or score nothing.

A submission runs in the same interpreter as the tests that grade it, so it can replace what
they rely on: NumPy's testing functions, the course's checks, builtins, names a locked cell
imported, or the machinery that reports an error (IPython's exception handlers, the kernel's
reply). The grader (:class:`autograder.preprocessors.GuardedExecute`) runs this module's
functions between cells, never storing them in the notebook's history:

- :func:`install`, before the first cell, remembers the originals;
- :func:`before_test`, before each test cell, puts every original back, and the names that the
  release's own cells import, and reports what had been replaced (the grader reports it as
  ``tampered``);
- :func:`canary`, after each test cell, checks that a failing check still fails and that an
  error still reaches the grader; when not, the grader gives that test no points.

So a trick that replaces a check gains nothing, and one that hides errors costs the tests it
hid. What this cannot stop, a submission written against this guard itself (it runs in the
same process), is said in autograder/README.md.
"""

from __future__ import annotations

import builtins
import importlib
import sys

PROTECTED_MODULES = ("numpy", "numpy.testing", "gradschool.checks", "math")
STREAMS = ("stdout", "stderr", "displayhook")
# set anew by the kernel itself on every execution: never the submission's doing
VOLATILE_BUILTINS = {"_", "__", "___", "input", "raw_input"}
_state: dict = {}


def _callables(namespace: dict) -> dict:
    return {k: v for k, v in namespace.items()
            if callable(v) or isinstance(v, (staticmethod, classmethod, property))}


def _classes(shell) -> list[type]:
    kernel = getattr(shell, "kernel", None)
    session = getattr(kernel, "session", None)
    found = []
    for obj in (shell, kernel, session, getattr(shell, "InteractiveTB", None),
                getattr(shell, "displayhook", None), getattr(shell, "display_pub", None)):
        if obj is not None:
            found += [c for c in type(obj).__mro__ if c is not object and c not in found]
    return found


def _instances(shell) -> dict[str, object]:
    kernel = getattr(shell, "kernel", None)
    return {"shell": shell, "kernel": kernel, "session": getattr(kernel, "session", None)}


def install(shell) -> None:
    """Remember the originals (before the notebook's first cell)."""
    modules = {}
    for name in PROTECTED_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        modules[name] = (module, _callables(vars(module)))
    _state.update(
        builtins=dict(vars(builtins)),
        modules=modules,
        classes={cls: _callables(vars(cls)) for cls in _classes(shell)},
        instances={key: (obj, set(vars(obj))) for key, obj in _instances(shell).items()
                   if obj is not None and hasattr(obj, "__dict__")},
        streams={name: getattr(sys, name) for name in STREAMS},
        custom=(shell.custom_exceptions, getattr(shell, "CustomTB", None)),
    )


def _restore_namespace(namespace: dict, saved: dict, label: str, replaced: list[str]) -> None:
    for key, value in saved.items():
        if key not in VOLATILE_BUILTINS and namespace.get(key, _state) is not value:
            namespace[key] = value
            replaced.append(f"{label}.{key}")


def _imported(target: str):
    """``"numpy"`` -> the module; ``"gradschool.checks:check_close"`` -> that function."""
    module, _, attribute = target.partition(":")
    found = importlib.import_module(module)
    if not attribute:
        return found
    try:
        return getattr(found, attribute)
    except AttributeError:  # from package import submodule
        return importlib.import_module(f"{module}.{attribute}")


def before_test(shell, nonce: str, imports: dict[str, str]) -> list[str]:
    """Put every original back, and the names that the release's cells import (``imports``:
    name -> ``module`` or ``module:attribute``); print and return what had been replaced."""
    replaced: list[str] = []
    _restore_namespace(vars(builtins), _state["builtins"], "builtins", replaced)
    for name, (module, saved) in _state["modules"].items():
        if sys.modules.get(name) is not module:
            sys.modules[name] = module
            replaced.append(f"sys.modules[{name!r}]")
        for key, value in saved.items():
            if vars(module).get(key, _state) is not value:
                setattr(module, key, value)
                replaced.append(f"{name}.{key}")
    for cls, saved in _state["classes"].items():
        for key in [k for k, v in vars(cls).items() if k not in saved and callable(v)
                    and any(k in vars(base) for base in cls.__mro__[1:])]:
            delattr(cls, key)  # an override added to a subclass
            replaced.append(f"{cls.__name__}.{key}")
        for key, value in saved.items():
            if vars(cls).get(key, _state) is not value:
                setattr(cls, key, value)
                replaced.append(f"{cls.__name__}.{key}")
    for label, (obj, names) in _state["instances"].items():
        for key in [k for k in vars(obj) if k not in names and callable(vars(obj)[k])
                    and hasattr(type(obj), k)]:
            delattr(obj, key)  # a method shadowed on the instance
            replaced.append(f"{label}.{key}")
    for name, value in _state["streams"].items():
        if getattr(sys, name) is not value:
            setattr(sys, name, value)
            replaced.append(f"sys.{name}")
    exceptions, handler = _state["custom"]
    if shell.custom_exceptions != exceptions:
        shell.custom_exceptions, shell.CustomTB = exceptions, handler
        replaced.append("the shell's custom exception handler")
    for name, target in imports.items():
        if name not in shell.user_ns:
            continue  # not imported yet (or the student removed the import): the test says so
        try:
            value = _imported(target)
        except (ImportError, AttributeError):
            continue  # not importable here (a withheld module): nothing to put back
        if shell.user_ns.get(name, _state) is not value:
            shell.user_ns[name] = value
            replaced.append(name)
    for item in replaced:
        print(f"{nonce} replaced {item}")
    print(f"{nonce} ready")
    return replaced


def canary(nonce: str) -> None:
    """After a test cell: failing checks must still fail, and this error must reach the grader."""
    failures = []
    probes = {"assert": lambda: _assert_false(),
              "numpy.testing.assert_allclose": lambda: _state["modules"]["numpy.testing"][0]
              .assert_allclose(0.0, 1.0)}
    if "gradschool.checks" in _state["modules"]:
        checks = _state["modules"]["gradschool.checks"][0]
        probes["gradschool.checks.check_close"] = lambda: checks.check_close(0.0, 1.0)
    for name, probe in probes.items():
        try:
            probe()
        except AssertionError:
            continue
        failures.append(name)
    if isinstance(1, str) or len([1, 2]) != 2:
        failures.append("builtins")
    print(f"{nonce} " + (f"broken: {', '.join(failures)}" if failures else "intact"))
    raise AssertionError(nonce)


def _assert_false():
    assert False, "canary"  # noqa: B011 -- the point: a failing assert must raise
