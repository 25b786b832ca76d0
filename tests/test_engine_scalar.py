"""The engine contract for ``gradschool.engine.scalar.Value``, the scalar autodiff of 02_engine.

Every operation's forward value and gradient against PyTorch (float64) on the same random inputs
and against central finite differences; numbers on either side; reused nodes, a diamond and
chains deeper than Python's recursion limit; the documented edges (division by zero, the domains
of log and pow, exp overflow, backward twice); and property-based tests over random expression
trees with reused inputs.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gradschool.engine.scalar import Value, backward, topological_order

try:
    import torch
except ImportError:  # the finite-difference half of the contract still runs
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
EPS = 1e-6


def finite_difference(function, point, i, eps=EPS):
    """d function / d point[i] by central differences; function takes and returns plain floats."""
    up, down = list(point), list(point)
    up[i] += eps
    down[i] -= eps
    return (function(*up) - function(*down)) / (2 * eps)


def on_values(function):
    """function(*Values) -> Value, as a function of plain floats -> float."""
    return lambda *numbers: function(*(Value(v) for v in numbers)).data


def gradients(function, point, weight=1.0):
    """Forward value and leaf gradients of weight * function(*leaves), with our engine."""
    leaves = [Value(v) for v in point]
    out = function(*leaves)
    assert type(out) is Value
    (out * weight).backward()
    for leaf in leaves:
        assert type(leaf.grad) is float
    return out.data, [leaf.grad for leaf in leaves]


def torch_gradients(function, point, weight=1.0):
    leaves = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in point]
    out = function(*leaves)
    (out * weight).backward()
    return out.item(), [0.0 if leaf.grad is None else leaf.grad.item() for leaf in leaves]


def away_from_zero(rng, n, low=0.2, high=2.0):
    return [float(v) for v in rng.uniform(low, high, size=n) * rng.choice([-1.0, 1.0], size=n)]


def positive(rng, n, low=0.2, high=3.0):
    return [float(v) for v in rng.uniform(low, high, size=n)]


# name: (function of Values or tensors, inputs) -- the same code runs on both engines
OPERATIONS = {
    "add": (lambda a, b: a + b, away_from_zero),
    "sub": (lambda a, b: a - b, away_from_zero),
    "mul": (lambda a, b: a * b, away_from_zero),
    "div": (lambda a, b: a / b, away_from_zero),
    "neg": (lambda a: -a, away_from_zero),
    "number + a": (lambda a: 2.5 + a, away_from_zero),
    "a + number": (lambda a: a + 2.5, away_from_zero),
    "number - a": (lambda a: 1 - a, away_from_zero),
    "a - number": (lambda a: a - 1, away_from_zero),
    "number * a": (lambda a: -3 * a, away_from_zero),
    "a * number": (lambda a: a * 0.5, away_from_zero),
    "number / a": (lambda a: 2 / a, away_from_zero),
    "a / number": (lambda a: a / 4, away_from_zero),
    "a ** 2": (lambda a: a ** 2, away_from_zero),
    "a ** 3": (lambda a: a ** 3, away_from_zero),
    "a ** -2": (lambda a: a ** -2, away_from_zero),
    "a ** 0.5": (lambda a: a ** 0.5, positive),
    "a ** -1.5": (lambda a: a ** -1.5, positive),
    "a ** 0": (lambda a: a ** 0, away_from_zero),
    "exp": (lambda a: a.exp(), away_from_zero),
    "log": (lambda a: a.log(), positive),
    "tanh": (lambda a: a.tanh(), away_from_zero),
    "relu": (lambda a: a.relu(), away_from_zero),
    "sigmoid": (lambda a: a.sigmoid(), away_from_zero),
}
ARITY = {name: function.__code__.co_argcount for name, (function, _) in OPERATIONS.items()}


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", list(OPERATIONS))
def test_each_operation_against_finite_differences(name, seed):
    function, sample = OPERATIONS[name]
    rng = np.random.default_rng(seed)
    point = sample(rng, ARITY[name])
    weight = float(rng.normal())  # an upstream gradient other than 1
    value, grads = gradients(function, point, weight)
    for i, grad in enumerate(grads):
        numeric = finite_difference(lambda *p: weight * on_values(function)(*p), point, i)
        assert grad == pytest.approx(numeric, rel=1e-6, abs=1e-8), (name, point, i)


@needs_torch
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", list(OPERATIONS))
def test_each_operation_against_pytorch(name, seed):
    function, sample = OPERATIONS[name]
    rng = np.random.default_rng(seed)
    point = sample(rng, ARITY[name])
    weight = float(rng.normal())
    value, grads = gradients(function, point, weight)
    t_value, t_grads = torch_gradients(function, point, weight)
    assert value == pytest.approx(t_value, rel=1e-12, abs=1e-15), name
    assert grads == pytest.approx(t_grads, rel=1e-12, abs=1e-15), name


def test_operations_make_new_nodes_and_leave_their_inputs_alone():
    a, b = Value(1.5), Value(-2.0)
    out = a * b
    assert out.parents == (a, b) and out.local_grads == (-2.0, 1.5) and out.op == "*"
    assert (a.data, a.grad, a.parents, b.data, b.grad, b.parents) == (1.5, 0.0, (), -2.0, 0.0, ())
    constant = (a + 2).parents[1]
    assert type(constant) is Value and constant.data == 2.0 and constant.parents == ()
    reflected = 2 - a  # sub(2, a): the number comes first
    assert reflected.data == 0.5
    assert type(np.float64(2.0) * a) is Value  # NumPy scalars hand over to Value
    assert type(Value(3).data) is float and type(Value(np.float32(0.5)).data) is float


@needs_torch
def test_reused_nodes_accumulate():
    cases = {
        "x + x": lambda x, y: x + x,
        "x * x": lambda x, y: x * x,
        "x * x * x": lambda x, y: x * x * x,
        "x - x": lambda x, y: x - x,
        "x / x": lambda x, y: x / x,
        "x * y + x / y - x": lambda x, y: x * y + x / y - x,
        "(x * y) * (x * y)": lambda x, y: (x * y) * (x * y),
    }
    for name, function in cases.items():
        value, grads = gradients(function, [1.25, -0.75])
        t_value, t_grads = torch_gradients(function, [1.25, -0.75])
        assert value == pytest.approx(t_value, rel=1e-12)
        assert grads == pytest.approx(t_grads, rel=1e-12, abs=1e-15), name
    x = Value(3.0)
    (x + x).backward()
    assert x.grad == 2.0
    x = Value(3.0)
    (x * x).backward()
    assert x.grad == 6.0


@needs_torch
def test_a_diamond_matches_pytorch_on_every_node():
    a = Value(0.7)
    left, right = a * 2.0, a.exp()
    top = (left * right).tanh()
    top.backward()
    ta = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    t_left, t_right = ta * 2.0, ta.exp()
    t_left.retain_grad()
    t_right.retain_grad()
    t_top = (t_left * t_right).tanh()
    t_top.backward()
    for mine, theirs in ((a, ta), (left, t_left), (right, t_right)):
        assert mine.grad == pytest.approx(theirs.grad.item(), rel=1e-12)
    assert a.grad == pytest.approx(finite_difference(
        lambda v: math.tanh(2 * v * math.exp(v)), [0.7], 0), rel=1e-7)


def test_chains_deeper_than_the_recursion_limit():
    depth = max(10_000, 3 * sys.getrecursionlimit())
    x = Value(0.5)
    y = x
    for _ in range(depth):
        y = y * 1.0 + x  # x is reused at every level
    order = topological_order(y)
    assert len(order) == 1 + 2 * depth + depth  # x, a constant and two nodes per level
    assert order[-1] is y
    y.backward()
    assert x.grad == depth + 1.0
    assert y.data == pytest.approx(0.5 * (depth + 1))


def test_topological_order_holds_each_node_once_parents_first():
    a, b = Value(1.0), Value(2.0)
    c = a * b
    d = c + a
    e = d * c
    unrelated = a + b  # uses a, but e does not depend on it
    order = topological_order(e)
    assert type(order) is list and order[-1] is e
    assert len(order) == len({id(v) for v in order}) == 5
    assert unrelated not in order
    position = {id(v): i for i, v in enumerate(order)}
    assert all(position[id(p)] < position[id(v)] for v in order for p in v.parents)
    assert topological_order(a) == [a]


@needs_torch
def test_backward_twice_accumulates_in_the_leaves_like_pytorch():
    function = lambda a, b: (a * b + a).tanh() * b  # noqa: E731
    a, b = Value(0.3), Value(-1.2)
    out = function(a, b)
    middle = out.parents[0]
    backward(out)
    once = (a.grad, b.grad, middle.grad)
    out.backward()
    assert (a.grad, b.grad) == pytest.approx((2 * once[0], 2 * once[1]), rel=1e-14)
    assert middle.grad == pytest.approx(once[2], rel=1e-14)  # intermediate: this pass only
    assert out.grad == 1.0
    ta, tb = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (0.3, -1.2))
    t_out = function(ta, tb)
    t_out.backward(retain_graph=True)
    t_out.backward()
    assert (a.grad, b.grad) == pytest.approx((ta.grad.item(), tb.grad.item()), rel=1e-12)
    # the training-loop pattern: reset the leaves, and one more pass gives one pass's gradients
    a.grad = b.grad = 0.0
    out.backward()
    assert (a.grad, b.grad) == pytest.approx(once[:2], rel=1e-14)


def test_backward_from_a_leaf_and_untouched_leaves():
    a, outside = Value(4.0), Value(1.0)
    a.backward()
    a.backward()
    assert a.grad == 2.0 and outside.grad == 0.0


@pytest.mark.parametrize("expression, error", [
    (lambda: Value(1.0) / Value(0.0), ZeroDivisionError),
    (lambda: Value(1.0) / 0, ZeroDivisionError),
    (lambda: 1 / Value(0.0), ZeroDivisionError),
    (lambda: Value(0.0) ** -1, ZeroDivisionError),
    (lambda: Value(0.0).log(), ValueError),
    (lambda: Value(-1.0).log(), ValueError),
    (lambda: Value(-8.0) ** (1 / 3), ValueError),
    (lambda: Value(710.0).exp(), OverflowError),
    (lambda: Value(2.0) ** Value(2.0), TypeError),
    (lambda: 2 ** Value(2.0), TypeError),
    (lambda: Value(2.0) + "1", TypeError),
    (lambda: Value("3"), TypeError),
    (lambda: Value(Value(1.0)), TypeError),
    (lambda: Value(1.0, parents=(Value(2.0),), local_grads=()), ValueError),
])
def test_documented_errors(expression, error):
    with pytest.raises(error):
        expression()


@needs_torch
def test_edges_agree_with_pytorch():
    # finite far out, slope 0 there
    for x in (-1000.0, 1000.0):
        for name in ("tanh", "sigmoid", "exp"):
            if name == "exp" and x > 0:
                continue
            v = getattr(Value(x), name)()
            v.backward()
            t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
            tv = getattr(t, name)()
            tv.backward()
            assert v.data == tv.item() and v.parents[0].grad == t.grad.item(), (name, x)
    # relu at 0 has slope 0, as in PyTorch; pow at 0: 0 ** 0.5 has an infinite slope, 0 ** 0 none
    for make, x in ((lambda a: a.relu(), 0.0), (lambda a: a ** 0.5, 0.0), (lambda a: a ** 0, 0.0),
                    (lambda a: a ** 2, 0.0), (lambda a: a ** 3, -2.0)):
        v = Value(x)
        make(v).backward()
        t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        make(t).backward()
        assert v.grad == t.grad.item(), (x, v.grad, t.grad.item())


# ---------------------------------------------------------------- random expression trees

UNARY = {
    "neg": lambda a: -a,
    "tanh": lambda a: a.tanh(),
    "sigmoid": lambda a: a.sigmoid(),
    "relu": lambda a: a.relu(),
    "exp of tanh": lambda a: a.tanh().exp(),
    "log of square + 1": lambda a: (a * a + 1).log(),
    "square": lambda a: a ** 2,
    "sqrt of square + 0.5": lambda a: (a * a + 0.5) ** 0.5,
}
BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div by square + 1": lambda a, b: a / (b * b + 1),
}
SMOOTH = set(UNARY) - {"relu"}

leaves = st.one_of(st.integers(0, 2).map(lambda i: ("input", i)),
                   st.floats(-2, 2, allow_nan=False).map(lambda c: ("number", c)))


def trees(unary):
    return st.recursive(
        leaves,
        lambda inner: st.one_of(st.tuples(st.sampled_from(sorted(unary)), inner),
                                st.tuples(st.sampled_from(sorted(BINARY)), inner, inner)),
        max_leaves=10)


def evaluate(tree, inputs):
    """The tree over inputs (Values or tensors); numbers stay plain, so both sides of every
    binary operation meet plain numbers too. A subtree of numbers only is a number (or None)."""
    kind = tree[0]
    if kind == "input":
        return inputs[tree[1]]
    if kind == "number":
        return tree[1]
    args = [evaluate(t, inputs) for t in tree[1:]]
    if all(isinstance(a, float) for a in args):  # fold constants with a Value, then unwrap
        out = (UNARY.get(kind) or BINARY[kind])(*(Value(a) for a in args))
        return out.data
    return (UNARY.get(kind) or BINARY[kind])(*args)


def tree_inputs_used(tree):
    if tree[0] == "input":
        return {tree[1]}
    if tree[0] == "number":
        return set()
    return set().union(*(tree_inputs_used(t) for t in tree[1:]))


point_strategy = st.lists(st.floats(-2, 2, allow_nan=False), min_size=3, max_size=3)


def ours(tree, point):
    leaves = [Value(v) for v in point]
    out = evaluate(tree, leaves)
    assume(isinstance(out, Value))
    assume(all(abs(node.data) < 1e6 for node in topological_order(out)))
    out.backward()
    return out.data, [leaf.grad for leaf in leaves]


@needs_torch
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(UNARY), point=point_strategy)
def test_random_expressions_match_pytorch(tree, point):
    value, grads = ours(tree, point)
    leaves = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in point]
    t_out = evaluate(tree, leaves)
    t_out.backward()
    t_grads = [0.0 if leaf.grad is None else leaf.grad.item() for leaf in leaves]
    scale = max(1.0, abs(value), *(abs(g) for g in grads))
    assert value == pytest.approx(t_out.item(), rel=1e-9, abs=1e-12 * scale)
    assert grads == pytest.approx(t_grads, rel=1e-9, abs=1e-12 * scale)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(SMOOTH), point=point_strategy)
def test_random_smooth_expressions_match_finite_differences(tree, point):
    assume(tree_inputs_used(tree))
    value, grads = ours(tree, point)
    plain = on_values(lambda *leaves: evaluate(tree, leaves))
    for i, grad in enumerate(grads):
        numeric = finite_difference(plain, point, i)
        assert grad == pytest.approx(numeric, rel=1e-5, abs=1e-6 * max(1.0, abs(value))), (tree, i)
