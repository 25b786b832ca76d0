"""gradschool.checks: right answers pass, wrong ones fail with a message a student can use,
and nothing that merely *claims* to be right gets through."""

import sys
import types
from unittest import mock

import numpy as np
import pytest

from gradschool.checks import (
    check_array,
    check_close,
    check_equal,
    check_gradient,
    check_no_loops,
    check_no_mutation,
    check_unchanged,
    gradcheck,
    numerical_gradient,
)


class EqualsAnything:
    """What a test must never be fooled by."""

    shape = (3,)
    dtype = np.dtype(np.float64)
    ndim = 1

    def __eq__(self, other):
        return True

    __hash__ = None


class SneakyArray(np.ndarray):
    def __eq__(self, other):
        return np.ones(self.shape, dtype=bool)


def fails(match):
    return pytest.raises(AssertionError, match=match)


# ------------------------------------------------------------------ check_array


def test_check_array_passes_and_returns_numpy():
    a = np.zeros((2, 3), dtype=np.float32)
    assert check_array(a, shape=(2, 3), dtype=np.float32, kind="float") is a
    check_array(a, shape=(None, 3))


@pytest.mark.parametrize(
    "impostor",
    [[1.0, 2.0, 3.0], (1.0, 2.0, 3.0), EqualsAnything(), mock.MagicMock(),
     np.zeros(3).view(SneakyArray), np.ma.masked_array(np.zeros(3)), None, 3.0],
)
def test_check_array_refuses_everything_but_a_plain_array(impostor):
    with fails("should be a NumPy array"):
        check_array(impostor, shape=(3,))


def test_check_array_messages_name_what_came_back():
    with fails(r"result should be a NumPy array, but it is a list of 2 items"):
        check_array([1, 2])
    with fails(r"forget to `return`"):
        check_array(None)
    with fails(r"subclass of numpy.ndarray.*np.asarray"):
        check_array(np.zeros(3).view(SneakyArray))


def test_check_array_shape():
    with fails(r"dists should have shape \(3, 4\), but it has shape \(4, 3\)"):
        check_array(np.zeros((4, 3)), shape=(3, 4), name="dists")
    with fails(r"shape \(3,\), but it has shape \(3, 1\)"):
        check_array(np.zeros((3, 1)), shape=(3,))
    with fails(r"shape \(any, 10\)"):
        check_array(np.zeros((5, 9)), shape=(None, 10))


def test_check_array_dtype_and_kind():
    with fails(r"dtype float32, but it has dtype float64.*promoted"):
        check_array(np.zeros(3), dtype=np.float32)
    with fails(r"should hold integers, but it holds floats"):
        check_array(np.zeros(3), kind="int")
    check_array(np.zeros(3, dtype=np.uint8), kind="int")
    with fails(r"should hold numbers, but it holds True/False values"):
        check_array(np.zeros(3, dtype=bool), kind="number")
    with pytest.raises(ValueError):
        check_array(np.zeros(3), kind="floaty")


def test_type_is_checked_before_shape_and_dtype():
    with fails("should be a NumPy array"):
        check_array(EqualsAnything(), shape=(3,), dtype=np.float64)


# ------------------------------------------------------------------ check_close


def test_check_close_scalars():
    check_close(0.1 + 0.2, 0.3)
    check_close(np.float32(0.5), 0.5)
    check_close(np.int64(3), 3)
    check_close(np.array(2.0), 2.0)  # CuPy reductions return arrays with no axes
    check_close(2.0, np.array(2.0))
    with fails(r"loss should be 0.3, but it is 0.4"):
        check_close(0.4, 0.3, name="loss")


@pytest.mark.parametrize("impostor", [True, np.bool_(True), "0.3", [0.3], np.array([0.3]),
                                      EqualsAnything(), mock.MagicMock(), None])
def test_check_close_scalar_impostors(impostor):
    with fails("should be a single number"):
        check_close(impostor, 1.0)


def test_check_close_arrays_report_the_worst_value():
    expected = np.arange(12.0).reshape(3, 4)
    check_close(expected + 1e-9, expected)
    got = expected.copy()
    got[1, 2] += 0.5
    got[2, 3] += 3.0
    with pytest.raises(AssertionError) as error:
        check_close(got, expected, name="scores")
    message = str(error.value)
    assert "right shape (3, 4)" in message
    assert "2 of its 12 values are wrong" in message
    assert "index (2, 3): got 14, expected 11" in message


def test_check_close_checks_type_and_shape_first():
    with fails("should be a NumPy array"):
        check_close([1.0, 2.0, 3.0], np.array([1.0, 2.0, 3.0]))
    with fails("should be a NumPy array"):
        check_close(EqualsAnything(), np.zeros(3))
    with fails("should be a NumPy array"):
        check_close(np.zeros(3).view(SneakyArray), np.zeros(3))
    with fails(r"should have shape \(3,\), but it has shape \(3, 1\)"):
        check_close(np.zeros((3, 1)), np.zeros(3))  # would broadcast if compared directly
    with fails("should hold numbers, but it holds True/False values"):
        check_close(np.array([True, False]), np.array([1.0, 0.0]))


def test_check_close_nan_and_inf():
    check_close(np.array([np.nan, 1.0]), np.array([np.nan, 1.0]))
    check_close(np.array([np.inf]), np.array([np.inf]))
    with fails(r"index \(1,\): got nan, expected 2"):
        check_close(np.array([1.0, np.nan]), np.array([1.0, 2.0]))
    with fails("got 1, expected nan"):
        check_close(np.array([1.0]), np.array([np.nan]))
    with fails("should be 1, but it is nan"):
        check_close(float("nan"), 1.0)
    check_close(float("nan"), float("nan"))


def test_check_close_tolerances():
    check_close(np.float32(1.0 + 1e-5), 1.0, rtol=1e-4)
    with fails("rtol=1e-06"):
        check_close(1.0 + 1e-5, 1.0)
    check_close(np.array([1e-9]), np.array([0.0]))  # atol
    check_close(np.array([1, 2]), np.array([1.0, 2.0]))  # integers are numbers


# ------------------------------------------------------------------ check_equal


def test_check_equal_scalars_and_containers():
    check_equal(3, 3)
    check_equal(np.int64(3), 3)
    check_equal(np.array(3), 3)
    check_equal("cat", "cat")
    check_equal((2, 3), (2, 3))
    check_equal([1, "a", (None, True)], [1, "a", (None, True)])
    check_equal({"a": 1, "b": (2, "x")}, {"a": 1, "b": (2, "x")})
    check_equal(None, None)
    check_equal(np.bool_(True), True)
    check_equal(0.5, 0.5)


@pytest.mark.parametrize(
    "actual, expected, match",
    [
        (4, 3, "should be 3, but it is 4"),
        (3.0, 3, r"whole number \(an int\), but it is a float"),
        (True, 1, "should be a single number"),
        ("3", 3, "should be a single number"),
        (EqualsAnything(), 3, "should be a single number"),
        (EqualsAnything(), "cat", "should be a str"),
        (mock.MagicMock(), (2, 3), "should be a tuple"),
        ([2, 3], (2, 3), "should be a tuple, but it is a list"),
        ((2, 3, 1), (2, 3), "should have 2 items, but it has 3"),
        ((2, 4), (2, 3), r"shape\[1\] should be 3, but it is 4"),
        (1, True, "should be True or False"),
        (False, True, "should be True, but it is False"),
        (0, None, "should be None"),
        ({"a": 1}, {"a": 1, "b": 2}, "missing"),
    ],
)
def test_check_equal_failures(actual, expected, match):
    with fails(match):
        check_equal(actual, expected, name="shape")


def test_check_equal_arrays():
    labels = np.array([3, 1, 4], dtype=np.int64)
    check_equal(labels.astype(np.int32), labels)  # any integer width
    check_equal(np.array([0.0, np.nan]), np.array([0.0, np.nan]))
    with fails(r"2 of its 3 values are wrong. The first is at index \(0,\): got 0, expected 3"):
        check_equal(np.array([0, 1, 5]), labels)
    with fails("should hold integers, but it holds floats"):
        check_equal(labels.astype(float), labels)
    with fails("should be a NumPy array"):
        check_equal([3, 1, 4], labels)
    with fails("should be a NumPy array"):
        check_equal(labels.view(SneakyArray), labels)
    with fails(r"shape \(3,\)"):
        check_equal(np.array([3]), labels)


# --------------------------------------------------------------------- mutation


def test_check_unchanged():
    a = np.arange(4.0)
    check_unchanged(a.copy(), a)
    before = a.copy()
    a[2] = 9
    with fails("x was changed in place: 1 of its 4 values"):
        check_unchanged(before, a, name="x")
    nan = np.array([np.nan, 1.0])
    check_unchanged(nan.copy(), nan)


def test_check_no_mutation_names_the_argument():
    def centre(x, y):
        x -= x.mean()
        return x

    def centred(x, y):
        return x - x.mean()

    x = np.arange(4.0)
    result = check_no_mutation(centred, x, np.ones(2))
    np.testing.assert_array_equal(result, x - 1.5)
    with fails("the argument `x` of centre was changed in place"):
        check_no_mutation(centre, x, y=np.ones(2))


def test_check_no_mutation_catches_a_reshape_in_place():
    def flatten(x):
        x.shape = (-1,)
        return x

    with fails("changed in place"):
        check_no_mutation(flatten, np.zeros((2, 2)))


# ---------------------------------------------------------------------- loops


def with_loop(x):
    total = 0.0
    for value in x:
        total += value
    return total


def with_comprehension(x):
    return np.array([v * 2 for v in x])


def with_vectorize(x):
    return np.vectorize(lambda v: v * 2)(x)


def vectorised(x):
    """No for loops here, only words about them (for, while)."""
    # a for in a comment does not count either
    return x.sum(axis=-1)


@pytest.mark.parametrize("func, word", [(with_loop, "for"), (with_comprehension, "for"),
                                        (with_vectorize, "vectorize")])
def test_check_no_loops_finds_loops(func, word):
    with fails(f"uses a Python loop \\(`{word}`"):
        check_no_loops(func)


def test_check_no_loops_passes_vectorised_code_and_unreadable_code():
    check_no_loops(vectorised)
    check_no_loops(np.sum)  # no Python source: nothing to check
    namespace = {}
    exec("def f(x):\n    for v in x: pass\n", namespace)
    check_no_loops(namespace["f"])


# ------------------------------------------------------------------ gradients


def loss(w):
    return float(np.sum(np.tanh(w) ** 2) + 0.5 * w[0, 0] * w[1, 1])


def loss_grad(w):
    grad = 2 * np.tanh(w) * (1 - np.tanh(w) ** 2)
    grad[0, 0] += 0.5 * w[1, 1]
    grad[1, 1] += 0.5 * w[0, 0]
    return grad


def test_numerical_gradient_matches_a_known_gradient_and_leaves_x_alone():
    w = np.random.default_rng(0).normal(size=(3, 2))
    before = w.copy()
    np.testing.assert_allclose(numerical_gradient(loss, w), loss_grad(w), rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(w, before)


def test_gradcheck_small_for_right_large_for_wrong():
    w = np.random.default_rng(1).normal(size=(3, 2))
    assert gradcheck(loss, w, loss_grad(w)) < 1e-8
    wrong = loss_grad(w)
    wrong[2, 1] *= 2
    assert gradcheck(loss, w, wrong) > 1e-2
    assert check_gradient(loss, w, loss_grad(w)) < 1e-8


def test_gradcheck_works_in_float64_even_for_float32_input():
    w = np.random.default_rng(2).normal(size=5).astype(np.float32)
    assert gradcheck(lambda v: np.sum(v**3), w, 3 * w.astype(np.float64) ** 2) < 1e-8


def test_gradcheck_zero_gradient_entries_do_not_divide_by_zero():
    w = np.array([0.0, 2.0, 0.0])
    assert gradcheck(lambda v: v[1] ** 2, w, np.array([0.0, 4.0, 0.0])) < 1e-8


def test_check_gradient_messages():
    w = np.random.default_rng(3).normal(size=(3, 2))
    wrong = loss_grad(w)
    wrong[1, 0] = -wrong[1, 0] + 1
    with fails(r"dW does not match finite differences: the worst entry is at index \(1, 0\)"):
        check_gradient(loss, w, wrong, name="dW")
    with fails(r"the gradient should have the shape of x, \(3, 2\), but it has shape \(2, 3\)"):
        check_gradient(loss, w, loss_grad(w).T)
    with fails("dW should be a NumPy array"):
        check_gradient(loss, w, loss_grad(w).tolist(), name="dW")
    with pytest.raises(ValueError, match="must return one number"):
        gradcheck(lambda v: v * 2, w, w)


# ----------------------------------------------------------------------- CuPy


@pytest.fixture
def fake_cupy(monkeypatch):
    """A stand-in for CuPy: its own array type, and asnumpy to bring arrays back."""

    class ndarray:  # noqa: N801 -- the name CuPy uses
        def __init__(self, data):
            self.data = np.asarray(data)
            self.shape, self.dtype, self.ndim = self.data.shape, self.data.dtype, self.data.ndim

    module = types.SimpleNamespace(ndarray=ndarray, asnumpy=lambda a: a.data.copy())
    monkeypatch.setitem(sys.modules, "cupy", module)
    return module


def test_cupy_arrays_are_accepted_and_compared_on_the_cpu(fake_cupy):
    a = fake_cupy.ndarray(np.arange(3.0))
    assert isinstance(check_array(a, shape=(3,), dtype=np.float64), np.ndarray)
    check_close(a, np.arange(3.0))
    check_equal(fake_cupy.ndarray(np.array([1, 2])), np.array([1, 2]))
    check_close(fake_cupy.ndarray(np.array(2.0)), 2.0)
    with fails("index"):
        check_close(a, np.arange(3.0) + 1)

