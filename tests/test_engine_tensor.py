"""The engine contract for ``gradschool.engine.Tensor``.

Every operation, forward and backward, against PyTorch on the same random inputs and against
central finite differences in float64, with broadcast shapes, reused nodes and reductions;
property-based tests over shapes and axes; and the API promises (dtypes, ``.grad``,
``detach``, ``no_grad``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradschool.checks import numerical_gradient
from gradschool.engine import Tensor, concatenate, no_grad, stack

torch = pytest.importorskip("torch")


def rand(shape, low=None, seed=0):
    values = np.random.default_rng(seed).standard_normal(shape)
    if low is not None:  # keep away from a domain edge (log, division, relu's kink)
        values = np.where(values >= 0, values + low, values - low)
    return values


def positive(shape, seed=0):
    return np.abs(rand(shape, seed=seed)) + 0.5


def compare(engine_fn, torch_fn, *arrays, finite_differences=True, atol=1e-6):
    """Forward values and input gradients of engine_fn match torch_fn (and finite differences)."""
    inputs = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = engine_fn(*inputs)
    assert isinstance(out, Tensor)
    t_inputs = [torch.tensor(a, requires_grad=True) for a in arrays]
    t_out = torch_fn(*t_inputs)
    assert out.data.shape == tuple(t_out.shape), (out.data.shape, tuple(t_out.shape))
    np.testing.assert_allclose(out.data, t_out.detach().numpy(), rtol=1e-6, atol=atol)
    weights = rand(out.data.shape, seed=99)  # a random upstream gradient, not only ones
    (out * Tensor(weights)).sum().backward()
    (t_out * torch.tensor(weights)).sum().backward()
    for i, (mine, theirs) in enumerate(zip(inputs, t_inputs, strict=True)):
        assert isinstance(mine.grad, np.ndarray), f"input {i}: .grad is {type(mine.grad)}"
        assert mine.grad.shape == arrays[i].shape, f"input {i}: grad shape {mine.grad.shape}"
        np.testing.assert_allclose(mine.grad, theirs.grad.numpy(), rtol=1e-6, atol=atol,
                                   err_msg=f"input {i} against PyTorch")
        if finite_differences:
            def scalar(value, i=i):
                args = [Tensor(a) for a in arrays]
                args[i] = Tensor(value)
                return float((engine_fn(*args).data * weights).sum())

            numeric = numerical_gradient(scalar, arrays[i].copy())
            np.testing.assert_allclose(mine.grad, numeric, rtol=1e-5, atol=1e-6,
                                       err_msg=f"input {i} against finite differences")


BROADCAST_PAIRS = [((3, 4), (3, 4)), ((3, 4), (4,)), ((3, 1), (1, 4)), ((2, 3, 4), (3, 1)),
                   ((4,), ()), ((), (2, 3))]


@pytest.mark.parametrize("a_shape, b_shape", BROADCAST_PAIRS)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_binary_ops_with_broadcasting(op, a_shape, b_shape):
    fns = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b,
           "mul": lambda a, b: a * b, "div": lambda a, b: a / b}
    b = rand(b_shape, low=0.5, seed=1) if op == "div" else rand(b_shape, seed=1)
    compare(fns[op], fns[op], rand(a_shape), b)


@pytest.mark.parametrize("name", ["exp", "log", "tanh", "sigmoid", "relu", "neg", "pow"])
def test_unary_ops(name):
    engine = {"exp": lambda a: a.exp(), "log": lambda a: a.log(), "tanh": lambda a: a.tanh(),
              "sigmoid": lambda a: a.sigmoid(), "relu": lambda a: a.relu(),
              "neg": lambda a: -a, "pow": lambda a: a ** 3}
    reference = {"exp": torch.exp, "log": torch.log, "tanh": torch.tanh,
                 "sigmoid": torch.sigmoid, "relu": torch.relu, "neg": torch.neg,
                 "pow": lambda a: a ** 3}
    x = positive((3, 4)) if name == "log" else rand((3, 4), low=0.1)
    compare(engine[name], reference[name], x)


def test_power_with_a_fractional_exponent_and_reflected_operands():
    compare(lambda a: a ** 0.5, lambda a: a ** 0.5, positive((5,)))
    compare(lambda a: 2.0 - a, lambda a: 2.0 - a, rand((2, 3)))
    compare(lambda a: 3.0 / a, lambda a: 3.0 / a, rand((2, 3), low=0.5))
    compare(lambda a: 1.5 * a + 2, lambda a: 1.5 * a + 2, rand((2, 3)))


@pytest.mark.parametrize("a_shape, b_shape", [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)),
                                               ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5))])
def test_matmul(a_shape, b_shape):
    compare(lambda a, b: a @ b, lambda a, b: a @ b, rand(a_shape), rand(b_shape, seed=1))


REDUCTION_AXES = [None, 0, 1, -1, (0, 2), (0, 1, 2)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", REDUCTION_AXES)
@pytest.mark.parametrize("name", ["sum", "mean", "max"])
def test_reductions(name, axis, keepdims):
    engine = lambda a: getattr(a, name)(axis=axis, keepdims=keepdims)  # noqa: E731
    dims = tuple(range(3)) if axis is None else axis

    def reference(a):
        if name == "max":
            return torch.amax(a, dim=dims, keepdim=keepdims)
        return getattr(torch, name)(a, dim=dims, keepdim=keepdims)

    compare(engine, reference, rand((2, 3, 4)), finite_differences=name != "max" or axis is None)


def test_max_splits_the_gradient_among_ties_like_amax():
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    compare(lambda a: a.max(axis=1), lambda a: torch.amax(a, dim=1), x, finite_differences=False)
    compare(lambda a: a.max(), lambda a: torch.amax(a), x, finite_differences=False)


def test_shape_operations():
    x = rand((2, 3, 4))
    compare(lambda a: a.reshape(4, 6), lambda a: a.reshape(4, 6), x)
    compare(lambda a: a.reshape((6, -1)), lambda a: a.reshape(6, -1), x)
    compare(lambda a: a.transpose(2, 0, 1), lambda a: a.permute(2, 0, 1), x)
    compare(lambda a: a.transpose(), lambda a: a.permute(2, 1, 0), x)
    compare(lambda a: a.T, lambda a: a.permute(1, 0), rand((3, 5)))


def test_indexing_and_slicing_scatter_back():
    x = rand((5, 4))
    compare(lambda a: a[1:4, ::2], lambda a: a[1:4, ::2], x)
    compare(lambda a: a[2], lambda a: a[2], x)
    compare(lambda a: a[:, -1], lambda a: a[:, -1], x)
    rows = np.array([0, 2, 2, 4, 0])  # repeated indices must add up
    compare(lambda a: a[rows], lambda a: a[torch.tensor(rows)], x)
    cols = np.array([1, 1, 3, 0, 1])
    compare(lambda a: a[np.arange(5), cols], lambda a: a[torch.arange(5), torch.tensor(cols)], x)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concatenate_and_stack(axis):
    a, b = rand((2, 3)), rand((2, 3), seed=1)
    compare(lambda p, q: concatenate([p, q], axis=axis), lambda p, q: torch.cat([p, q], dim=axis),
            a, b)
    compare(lambda p, q: stack([p, q], axis=axis), lambda p, q: torch.stack([p, q], dim=axis), a, b)


def test_reused_nodes_and_a_diamond_accumulate():
    compare(lambda a: a * a + a, lambda a: a * a + a, rand((3,)))

    def diamond(a):
        b = a.tanh()
        return (b * 2.0) * (b + 1.0) + b.exp()

    compare(diamond, diamond, rand((2, 3)))


def test_a_small_network_end_to_end():
    def net(rowmax):
        def forward(x, w1, b1, w2):
            h = (x @ w1 + b1).relu()
            logits = h @ w2
            shifted = logits - rowmax(logits)
            return (shifted.exp().sum(axis=1).log().mean()
                    - shifted[np.arange(4), np.array([0, 1, 2, 0])].mean())
        return forward

    compare(net(lambda t: t.max(axis=1, keepdims=True)),
            net(lambda t: t.amax(dim=1, keepdim=True)),
            rand((4, 5)), rand((5, 6), seed=1), rand((6,), seed=2), rand((6, 3), seed=3))


# ------------------------------------------------------------------ the API promises


def test_dtype_is_kept():
    x = Tensor(np.ones((2, 2), dtype=np.float32), requires_grad=True)
    y = (x * 2.0 + 1 - 0.5) / 3.0
    y = (y ** 2).exp().log().tanh().sigmoid().relu()
    assert y.data.dtype == np.float32, f"float32 became {y.data.dtype}"
    z = (y @ x).sum()
    assert z.data.dtype == np.float32
    z.backward()
    assert x.grad.dtype == np.float32


def test_grad_is_none_until_set_and_assignable():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    assert x.grad is None
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, [2.0, 4.0])
    (x * x).sum().backward()  # gradients accumulate across backward calls, as in PyTorch
    np.testing.assert_allclose(x.grad, [4.0, 8.0])
    x.grad = None
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad, [3.0, 3.0])


def test_backward_needs_a_gradient_for_non_scalars():
    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises((ValueError, RuntimeError)):
        (x * 2.0).backward()
    (x * 2.0).backward(np.array([1.0, 0.0, 2.0]))
    np.testing.assert_allclose(x.grad, [2.0, 0.0, 4.0])


def test_detach_and_no_grad_record_nothing():
    x = Tensor(np.ones(3), requires_grad=True)
    d = x.detach()
    assert not d.requires_grad and np.shares_memory(d.data, x.data)
    with no_grad():
        y = x * 2.0
    assert not y.requires_grad
    z = (x * 2.0).sum()
    assert z.requires_grad
    w = Tensor(np.ones(3))
    assert not (w * 2.0).requires_grad, "no graph for tensors that do not need gradients"


# ------------------------------------------------------------------ property-based


shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), shape=shapes, name=st.sampled_from(["sum", "mean", "max"]),
       keepdims=st.booleans())
def test_reductions_over_any_axes(data, shape, name, keepdims):
    ndim = len(shape)
    axis = data.draw(st.one_of(
        st.none(), st.integers(-ndim, ndim - 1),
        st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple)))
    x = rand(shape, seed=data.draw(st.integers(0, 2**16)))
    dims = tuple(range(ndim)) if axis is None else axis

    def reference(a):
        if name == "max":
            return torch.amax(a, dim=dims, keepdim=keepdims)
        return getattr(torch, name)(a, dim=dims, keepdim=keepdims)

    compare(lambda a: getattr(a, name)(axis=axis, keepdims=keepdims), reference, x,
            finite_differences=False)


@settings(max_examples=40, deadline=None)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=4),
       op=st.sampled_from(["add", "sub", "mul", "div"]), seed=st.integers(0, 2**16))
def test_broadcast_gradients_reduce_back_to_each_shape(shapes, op, seed):
    fns = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b,
           "mul": lambda a, b: a * b, "div": lambda a, b: a / b}
    a_shape, b_shape = shapes.input_shapes
    compare(fns[op], fns[op], rand(a_shape, seed=seed), rand(b_shape, low=0.5, seed=seed + 1),
            finite_differences=False)
