"""Checks for the notebooks' test cells, with failure messages written for students.

Every check raises ``AssertionError`` with a message that says what was expected and
what came back, in plain words. The checks look at the *type* first, then the dtype and
shape, and only then at the values. The order matters twice over: an object that claims
to equal anything (a custom ``__eq__``, a mock, an ndarray subclass) never reaches a
comparison it could fake, and a wrong shape is reported as a wrong shape instead of
surfacing as a puzzling broadcasting error.

Arrays are NumPy's or, when the notebook runs on a GPU (``rt.xp`` is CuPy), CuPy's;
their values are always compared on the CPU with NumPy.

    from gradschool.checks import check_array, check_close
    d = check_array(dists, shape=(3, 4), dtype=np.float32, name="pairwise_sq_dists(x, y)")
    check_close(dists, expected, name="pairwise_sq_dists(x, y)")
"""

from __future__ import annotations

import inspect
import io
import sys
import textwrap
import tokenize
from collections.abc import Callable

import numpy as np

__all__ = [
    "check_array", "check_close", "check_equal", "check_gradient", "check_no_loops",
    "check_no_mutation", "check_unchanged", "gradcheck", "numerical_gradient",
]

# The dtype kinds a check may ask for, by the names a student knows.
KINDS = {"float": "f", "int": "iu", "bool": "b", "complex": "c", "number": "iufc"}
_KIND_NAMES = {"float": "floats", "int": "integers", "bool": "True/False values",
               "complex": "complex numbers", "number": "numbers"}
_KIND_WORDS = {"f": "floats", "i": "integers", "u": "integers", "b": "True/False values",
               "c": "complex numbers", "U": "strings", "S": "bytes", "O": "Python objects"}


# ------------------------------------------------------------------- helpers


def _array_types() -> tuple[type, ...]:
    """``numpy.ndarray``, plus ``cupy.ndarray`` once CuPy has been imported (never imports it)."""
    cupy = sys.modules.get("cupy")
    return (np.ndarray, cupy.ndarray) if cupy is not None else (np.ndarray,)


def _is_array(obj) -> bool:
    # Exact types only: a subclass can override ==, and np.matrix changes what * means.
    return type(obj) in _array_types()


def _numpy(array) -> np.ndarray:
    """A checked array (NumPy or CuPy) as a NumPy array on the CPU."""
    if type(array) is np.ndarray:
        return array
    return sys.modules["cupy"].asnumpy(array)


def _type_name(obj) -> str:
    kind = type(obj)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def _describe(obj) -> str:
    """What came back, in words: 'a list of 3 items', 'an array of shape (2,) and dtype int64'."""
    if obj is None:
        return "None (did the function forget to `return` its result?)"
    if _is_array(obj) or isinstance(obj, np.ndarray):
        text = f"an array of shape {tuple(obj.shape)} and dtype {obj.dtype}"
        if not _is_array(obj):
            text += f" (a {_type_name(obj)}, a subclass of numpy.ndarray)"
        return text
    if isinstance(obj, list | tuple | dict | set):
        return f"a {_type_name(obj)} of {len(obj)} item{'' if len(obj) == 1 else 's'}"
    text = repr(obj)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"a {_type_name(obj)} ({text})"


def _fmt(value) -> str:
    value = value.item() if isinstance(value, np.generic) else value
    return f"{value:.8g}" if isinstance(value, float) else repr(value)


def _wrong(count: int, size: int) -> str:
    return f"{count} of its {size} values {'is' if count == 1 else 'are'} wrong"


def _index(flat: int, shape: tuple[int, ...]) -> tuple[int, ...] | str:
    return tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else "()"


def _number(actual, name: str):
    """A real number (Python or NumPy, or an array with no axes); bool is not a number here."""
    if type(actual) in (int, float):
        return actual
    if isinstance(actual, np.integer | np.floating) and type(actual).__module__ == "numpy":
        return actual.item()
    if _is_array(actual) and actual.ndim == 0 and actual.dtype.kind in "iuf":
        return _numpy(actual).item()
    raise AssertionError(f"{name} should be a single number, but it is {_describe(actual)}.")


def _as_array(expected) -> np.ndarray:
    return _numpy(expected) if _is_array(expected) else np.asarray(expected)


# -------------------------------------------------------------------- arrays


def check_array(actual, *, shape=None, dtype=None, kind: str | None = None,
                name: str = "result") -> np.ndarray:
    """Check that ``actual`` is a plain array with this shape and dtype; return it in NumPy.

    ``shape`` may hold ``None`` for a size that can be anything, e.g. ``(None, 10)``.
    ``dtype`` asks for one exact dtype (``np.float32``); ``kind`` asks for a family:
    ``"float"``, ``"int"``, ``"bool"``, ``"complex"`` or ``"number"``.
    """
    if not _is_array(actual):
        hint = ""
        if isinstance(actual, np.ndarray):
            hint = " Return a plain array instead (np.asarray(...))."
        elif isinstance(actual, list | tuple):
            hint = " Build the result with NumPy operations, or wrap it in np.array(...)."
        raise AssertionError(f"{name} should be a NumPy array, but it is {_describe(actual)}."
                             + hint)
    if shape is not None:
        expected = tuple(shape)
        got = tuple(actual.shape)
        if len(got) != len(expected) or any(
            e is not None and e != g for e, g in zip(expected, got, strict=True)
        ):
            wanted = "(" + ", ".join("any" if e is None else str(e) for e in expected) + (
                ",)" if len(expected) == 1 else ")")
            raise AssertionError(f"{name} should have shape {wanted}, but it has shape {got}.")
    if dtype is not None and actual.dtype != np.dtype(dtype):
        hint = ""
        if np.dtype(dtype) == np.float32 and actual.dtype == np.float64:
            hint = (" Something promoted it to float64: a float64 array or np.float64 "
                    "constant mixed in, or np.zeros/np.ones without dtype=.")
        raise AssertionError(f"{name} should have dtype {np.dtype(dtype)}, "
                             f"but it has dtype {actual.dtype}.{hint}")
    if kind is not None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        if actual.dtype.kind not in KINDS[kind]:
            raise AssertionError(
                f"{name} should hold {_KIND_NAMES[kind]}, "
                f"but it holds {_KIND_WORDS.get(actual.dtype.kind, 'values')} "
                f"(dtype {actual.dtype}).")
    return _numpy(actual)


def check_close(actual, expected, *, name: str = "result", rtol: float = 1e-6,
                atol: float = 1e-8) -> None:
    """Check a number, or an array of numbers, up to a tolerance.

    Each value passes when ``|actual - expected| <= atol + rtol * |expected|``.

    A NaN in ``actual`` passes only where ``expected`` has a NaN too. For an array, the
    message gives the shape, how many values are off, and the worst one (index, got,
    expected), which is usually enough to see the mistake.
    """
    if np.ndim(expected) == 0:
        got = _number(actual, name)
        want = _number(expected, "expected")
        if not np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
            raise AssertionError(f"{name} should be {_fmt(float(want))}, but it is "
                                 f"{_fmt(float(got))} (tolerance: rtol={rtol:g}, atol={atol:g}).")
        return
    want = _as_array(expected)
    got = check_array(actual, shape=want.shape, name=name)
    if got.dtype.kind not in "iufc":
        raise AssertionError(f"{name} should hold numbers, but it holds "
                             f"{_KIND_WORDS.get(got.dtype.kind, 'values')} (dtype {got.dtype}).")
    ok = np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
    if ok.all():
        return
    error = np.abs(got.astype(np.complex128 if got.dtype.kind == "c" else np.float64) - want)
    error = np.where(np.isnan(error), np.inf, error)
    error = np.where(ok, -1.0, error)
    worst = int(np.argmax(error))
    where = _index(worst, want.shape)
    raise AssertionError(
        f"{name} has the right shape {want.shape}, but {_wrong(int((~ok).sum()), ok.size)}. "
        f"The worst is at index {where}: got "
        f"{_fmt(got.flat[worst])}, expected {_fmt(want.flat[worst])} "
        f"(tolerance: rtol={rtol:g}, atol={atol:g}).")


# Dtype families that may stand in for each other in check_equal.
def _family(kind: str) -> str:
    return {"u": "i", "S": "U"}.get(kind, kind)


def check_equal(actual, expected, *, name: str = "result") -> None:
    """Check an exact answer: an int, a string, a bool, None, a tuple/list/dict of those, or
    an array whose values must match exactly (e.g. class labels or a one-hot matrix).

    Python and NumPy integers may stand in for each other (``np.argmax`` returns
    ``np.int64``), as may integer dtypes of any width; floats must be compared with
    :func:`check_close` unless they are exact by construction.
    """
    if _is_array(expected) or isinstance(expected, np.ndarray):
        want = _as_array(expected)
        got = check_array(actual, shape=want.shape, name=name)
        if _family(got.dtype.kind) != _family(want.dtype.kind):
            raise AssertionError(
                f"{name} should hold {_KIND_WORDS.get(want.dtype.kind, 'values')}, but it "
                f"holds {_KIND_WORDS.get(got.dtype.kind, 'values')} (dtype {got.dtype}).")
        nan = want.dtype.kind in "fc"
        if np.array_equal(got, want, equal_nan=nan):
            return
        wrong = ~((got == want) | (np.isnan(got) & np.isnan(want)) if nan else got == want)
        first = int(np.flatnonzero(wrong)[0])
        raise AssertionError(
            f"{name} has the right shape {want.shape}, but {_wrong(int(wrong.sum()), wrong.size)}"
            f". The first is at index "
            f"{_index(first, want.shape)}: got {_fmt(got.flat[first])}, "
            f"expected {_fmt(want.flat[first])}.")
    if expected is None:
        if actual is not None:
            raise AssertionError(f"{name} should be None, but it is {_describe(actual)}.")
        return
    if isinstance(expected, bool | np.bool_):
        if type(actual) not in (bool, np.bool_):
            raise AssertionError(f"{name} should be True or False, but it is "
                                 f"{_describe(actual)}.")
        if bool(actual) != bool(expected):
            raise AssertionError(f"{name} should be {bool(expected)}, but it is {bool(actual)}.")
        return
    if isinstance(expected, int | np.integer):
        got = _number(actual, name)
        if not isinstance(got, int):
            raise AssertionError(f"{name} should be a whole number (an int), but it is "
                                 f"{_describe(actual)}.")
        if got != int(expected):
            raise AssertionError(f"{name} should be {int(expected)}, but it is {got}.")
        return
    if isinstance(expected, float | np.floating):
        got = _number(actual, name)
        if not (got == float(expected) or (np.isnan(got) and np.isnan(expected))):
            raise AssertionError(f"{name} should be exactly {_fmt(float(expected))}, but it "
                                 f"is {_fmt(float(got))}.")
        return
    if type(actual) is not type(expected):
        raise AssertionError(f"{name} should be a {_type_name(expected)}, but it is "
                             f"{_describe(actual)}.")
    if isinstance(expected, list | tuple):
        if len(actual) != len(expected):
            raise AssertionError(f"{name} should have {len(expected)} items, but it has "
                                 f"{len(actual)}.")
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            check_equal(a, e, name=f"{name}[{i}]")
        return
    if isinstance(expected, dict):
        if set(actual) != set(expected):
            missing, extra = set(expected) - set(actual), set(actual) - set(expected)
            raise AssertionError(f"{name} should have the keys {sorted(map(repr, expected))}; "
                                 f"missing: {sorted(map(repr, missing))}, "
                                 f"extra: {sorted(map(repr, extra))}.")
        for key in expected:
            check_equal(actual[key], expected[key], name=f"{name}[{key!r}]")
        return
    if not expected == actual:  # same exact type, so its own == is the right comparison
        raise AssertionError(f"{name} should be {expected!r}, but it is {actual!r}.")


# ----------------------------------------------------------------- mutation


def check_unchanged(before, after, name: str = "the input") -> None:
    """Check that an array still holds what a copy taken before the call holds.

    Functions that write into their inputs (``x -= x.mean()``) surprise whoever calls them
    with data they still need; the tests catch it here.
    """
    before, after = _as_array(before), _as_array(after)
    changed = before.shape != after.shape or before.dtype != after.dtype
    if not changed and not np.array_equal(before, after, equal_nan=before.dtype.kind in "fc"):
        same = (before == after) | ((before != before) & (after != after))
        count = int((~same).sum())
        raise AssertionError(
            f"{name} was changed in place: {count} of its {same.size} values "
            f"{'is' if count == 1 else 'are'} different after the call. Work on a new array "
            f"(e.g. x = x - m, or x.copy()) instead of writing into the one you were given "
            f"(x -= m, x[...] = v).")
    if changed:
        raise AssertionError(f"{name} was changed in place: it was {_describe(before)}, "
                             f"and after the call it is {_describe(after)}.")


def check_no_mutation(func: Callable, *args, **kwargs):
    """Call ``func(*args, **kwargs)``, check that it left its array arguments as they were,
    and return its result."""
    try:
        names = inspect.signature(func).bind(*args, **kwargs).arguments
        labels = {id(value): f"the argument `{key}` of {func.__name__}"
                  for key, value in names.items()}
    except (TypeError, ValueError):
        labels = {}
    arrays = [a for a in [*args, *kwargs.values()] if _is_array(a)]
    copies = [_numpy(a).copy() for a in arrays]
    result = func(*args, **kwargs)
    for i, (array, copy) in enumerate(zip(arrays, copies, strict=True)):
        check_unchanged(copy, array, name=labels.get(id(array), f"array argument {i + 1}"))
    return result


def check_no_loops(func: Callable, *, name: str | None = None) -> None:
    """Check that ``func``'s own code has no Python loop (``for``, ``while``, comprehensions,
    ``np.vectorize``/``apply_along_axis``, which loop in Python too).

    It reads the function's source; when there is none to read (a built-in, code made by
    ``exec``), there is nothing to check and it returns quietly.
    """
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        return
    looping = {"for", "while", "vectorize", "apply_along_axis", "frompyfunc"}
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    found = [(t.string, t.start[0]) for t in tokens
             if t.type == tokenize.NAME and t.string in looping]
    if found:
        word, line = found[0]
        label = name or f"{getattr(func, '__name__', 'the function')}"
        raise AssertionError(
            f"{label} uses a Python loop (`{word}` on line {line} of its code). This exercise "
            f"asks for whole-array operations (broadcasting, axis=..., matrix products) "
            f"instead: they are what makes NumPy fast.")


# ---------------------------------------------------------------- gradients


def numerical_gradient(f: Callable, x, *, eps: float = 1e-6) -> np.ndarray:
    """The gradient of the scalar function ``f`` at ``x`` by central differences, in float64:

    ``df/dx[i] ~ (f(x + eps*e_i) - f(x - eps*e_i)) / (2*eps)``, one entry at a time.

    ``f`` is called with one float64 array that is changed in place between calls (and
    restored at the end); the caller's ``x`` is never touched.
    """
    x = np.array(_as_array(x), dtype=np.float64)  # a copy, in float64 (float32 is too coarse)
    grad = np.zeros_like(x)

    def value(at):
        out = np.asarray(_as_array(f(at)))
        if out.size != 1:
            raise ValueError(f"f must return one number (a loss), but it returned an array of "
                             f"shape {out.shape}")
        return float(out.reshape(()))

    for i in range(x.size):
        old = x.flat[i]
        x.flat[i] = old + eps
        plus = value(x)
        x.flat[i] = old - eps
        minus = value(x)
        x.flat[i] = old
        grad.flat[i] = (plus - minus) / (2 * eps)
    return grad


def _gradient_errors(f, x, analytic_grad, eps):
    x = _as_array(x)
    analytic = np.asarray(_as_array(analytic_grad), dtype=np.float64)
    if analytic.shape != x.shape:
        raise AssertionError(f"the gradient should have the shape of x, {x.shape}, but it has "
                             f"shape {analytic.shape}.")
    numeric = numerical_gradient(f, x, eps=eps)
    if analytic.size == 0:
        return 0.0, None, analytic, numeric
    # Relative to the largest entry, so that entries which are exactly zero do not divide by 0.
    scale = max(np.abs(analytic).max(), np.abs(numeric).max(), 1e-12)
    error = np.abs(analytic - numeric) / scale
    error = np.where(np.isnan(error), np.inf, error)
    worst = int(np.argmax(error))
    return float(error.flat[worst]), worst, analytic, numeric


def gradcheck(f: Callable, x, analytic_grad, *, eps: float = 1e-6) -> float:
    """The largest error between ``analytic_grad`` and finite differences of ``f`` at ``x``.

    Each entry's error is divided by the largest gradient entry (analytic or numerical), so
    the number is scale-free: around 1e-9 for a correct gradient in float64, and far above
    1e-6 for a wrong one.
    """
    return _gradient_errors(f, x, analytic_grad, eps)[0]


def check_gradient(f: Callable, x, analytic_grad, *, eps: float = 1e-6, tol: float = 1e-6,
                   name: str = "the gradient") -> float:
    """Assert that ``analytic_grad`` is the gradient of ``f`` at ``x``; return the error."""
    check_array(analytic_grad, kind="number", name=name)
    error, worst, analytic, numeric = _gradient_errors(f, x, analytic_grad, eps)
    if not error <= tol:
        raise AssertionError(
            f"{name} does not match finite differences: the worst entry is at index "
            f"{_index(worst, analytic.shape)}, where it is {_fmt(analytic.flat[worst])} but "
            f"finite differences give {_fmt(numeric.flat[worst])} (error {error:.3g}, "
            f"allowed {tol:g}).")
    return error
