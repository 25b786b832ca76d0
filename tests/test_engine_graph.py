"""The engine contract for ``gradschool.engine.graph``.

Traced graphs (forward and gradients) against the eager engine and PyTorch: an MLP training step
(float32, within 1e-5) and random expression trees (hypothesis over shapes, broadcasting,
reductions with axis and keepdims, in float64). Every pass, alone and chained, preserves results;
dead-code elimination removes unused nodes, constant folding removes constant subgraphs, fusion
reduces the node count; the compiled plan's guard, buffers, donation, and retracing on new shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradschool.engine import Tensor, compile_graph, cross_entropy, gradients, jit, optimize, trace
from gradschool.engine.graph import (
    TracingError,
    eliminate_dead_code,
    fold_constants,
    fuse_elementwise,
    fuse_matmul_add,
    run_graph,
)

torch = pytest.importorskip("torch")

PASSES = [fold_constants, eliminate_dead_code, fuse_matmul_add, fuse_elementwise]


def rand(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def all_ways(graph, *arrays):
    """The graph's outputs run every way: interpreted, after each pass alone, optimised and
    interpreted, and compiled (with and without reused buffers)."""
    results = {"traced": run_graph(graph, *arrays)}
    for optimization in PASSES:
        results[optimization.__name__] = run_graph(optimization(graph), *arrays)
    optimized = optimize(graph)
    results["optimize"] = run_graph(optimized, *arrays)
    results["plan"] = compile_graph(optimized)(*arrays)
    results["plan, fresh buffers"] = compile_graph(optimized, reuse_buffers=False)(*arrays)
    return results


def value_and_grads(fn, weights):
    """(fn(*xs) * weights).sum() and its gradients with respect to every input."""
    def both(*xs):
        out = fn(*xs)
        return [out, *gradients((out * weights).sum(), list(xs))]
    return both


def eager_value_and_grads(fn, weights, arrays):
    tensors = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = fn(*tensors)
    (out * Tensor(weights)).sum().backward()
    return [out.data, *[np.zeros_like(t.data) if t.grad is None else t.grad for t in tensors]]


# ---------------------------------------------------------------- every op against PyTorch

CASES = {  # name: (engine/proxy function, torch function, input shapes)
    "add broadcast": (lambda a, b: a + b, lambda a, b: a + b, [(3, 4), (4,)]),
    "sub column": (lambda a, b: a - b, lambda a, b: a - b, [(3, 1), (3, 4)]),
    "mul scalar input": (lambda a, b: a * b * 2.0, lambda a, b: a * b * 2.0, [(2, 3), ()]),
    "div": (lambda a, b: a / (b * b + 1.0), lambda a, b: a / (b * b + 1.0), [(3, 4), (1, 4)]),
    "rsub rdiv": (lambda a: 1.0 - 2.0 / (a * a + 1.0), lambda a: 1.0 - 2.0 / (a * a + 1.0), [(5,)]),
    "neg pow": (lambda a: -(a ** 3) + a ** 2, lambda a: -(a ** 3) + a ** 2, [(2, 3)]),
    "exp log": (lambda a: (a * a + 0.5).log() + (a * 0.5).exp(),
                lambda a: (a * a + 0.5).log() + (a * 0.5).exp(), [(3, 3)]),
    "tanh sigmoid relu": (lambda a: a.tanh() + a.sigmoid() * a.relu(),
                          lambda a: a.tanh() + a.sigmoid() * a.relu(), [(4, 5)]),
    "matmul": (lambda a, b: a @ b, lambda a, b: a @ b, [(3, 4), (4, 2)]),
    "sum axes": (lambda a: a.sum(axis=(0, 2)) + a.sum(axis=-1, keepdims=True).sum(axis=(0, 2)),
                 lambda a: a.sum(dim=(0, 2)) + a.sum(dim=-1, keepdim=True).sum(dim=(0, 2)), [(2, 3, 4)]),
    "mean": (lambda a: a.mean(axis=1) * a.mean(), lambda a: a.mean(dim=1) * a.mean(), [(3, 4)]),
    "max": (lambda a: a.max(axis=0, keepdims=True) + a.max(),
            lambda a: a.amax(dim=0, keepdim=True) + a.amax(), [(4, 3)]),
    "reshape transpose": (lambda a: a.reshape(3, 8).T.reshape(2, 12) * a.transpose(1, 0, 2).reshape(2, 12),
                          lambda a: a.reshape(3, 8).T.reshape(2, 12) * a.permute(1, 0, 2).reshape(2, 12),
                          [(3, 2, 4)]),
    "index array repeated": (lambda a: a[np.array([2, 0, 2])] * a[1:, ::2].sum(),
                             lambda a: a[torch.tensor([2, 0, 2])] * a[1:, ::2].sum(), [(3, 4)]),
    "detach": (lambda a: a * a.detach(), lambda a: a * a.detach(), [(3,)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_op_values_and_gradients_against_torch_and_eager(name):
    fn, torch_fn, shapes = CASES[name]
    arrays = [rand(s, seed=i + 1) for i, s in enumerate(shapes)]
    out_shape = np.asarray(fn(*[Tensor(a) for a in arrays]).data).shape
    weights = rand(out_shape, seed=99)
    graph = trace(value_and_grads(fn, weights), *arrays)
    t_inputs = [torch.tensor(a, requires_grad=True) for a in arrays]
    t_out = torch_fn(*t_inputs)
    (t_out * torch.tensor(weights)).sum().backward()
    expected = [t_out.detach().numpy(), *[t.grad.numpy() for t in t_inputs]]
    eager = eager_value_and_grads(fn, weights, arrays)
    for how, results in all_ways(graph, *arrays).items():
        for k, (got, want, engine) in enumerate(zip(results, expected, eager, strict=True)):
            assert np.shape(got) == want.shape, (name, how, k)
            where = f"{name}, {how}, output {k}"
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=where + " vs torch")
            np.testing.assert_allclose(got, engine, rtol=1e-10, atol=1e-12, err_msg=where + " vs engine")


# ---------------------------------------------------------------- random expression trees

UNARY = {"tanh": lambda a: a.tanh(), "relu": lambda a: a.relu(), "sigmoid": lambda a: a.sigmoid(),
         "neg": lambda a: -a, "square": lambda a: a * a, "exp": lambda a: (a.tanh()).exp(),
         "scale": lambda a: a * 0.5 + 1.0, "log": lambda a: (a * a + 1.0).log()}
BINARY = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
          "div": lambda a, b: a / (b * b + 1.0)}


@st.composite
def programs(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim)))
    shapes = [shape]
    for _ in range(draw(st.integers(0, 2))):  # inputs that broadcast against the first
        keep = draw(st.integers(0, ndim))
        shapes.append(tuple(n if draw(st.booleans()) else 1 for n in shape[ndim - keep:]))
    steps = draw(st.lists(st.tuples(st.sampled_from(sorted(UNARY) + sorted(BINARY) + ["reduce"]),
                                    st.integers(0, 20), st.integers(0, 20), st.integers(-ndim, ndim - 1)),
                          min_size=1, max_size=8))
    final = draw(st.sampled_from(["none", "sum", "mean", "max"]))
    axes = st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple)
    axis = draw(st.one_of(st.none(), st.integers(-ndim, ndim - 1), axes))
    keepdims = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return shapes, steps, final, axis, keepdims, seed


def build(steps, final, axis, keepdims):
    def fn(*xs):
        values = list(xs)
        for op, i, j, ax in steps:
            a, b = values[i % len(values)], values[j % len(values)]
            if op in UNARY:
                values.append(UNARY[op](a))
            elif op in BINARY:
                values.append(BINARY[op](a, b))
            elif a.ndim:  # a reduction inside the tree keeps its axes, so shapes still broadcast
                values.append(getattr(a, ("sum", "mean", "max")[i % 3])(axis=ax % a.ndim, keepdims=True))
        out = values[-1] + xs[0]  # every tree ends with the first input's full shape
        if final == "none":
            return out
        return getattr(out, final)(axis=axis, keepdims=keepdims)
    return fn


@settings(max_examples=30, deadline=None)
@given(programs())
def test_random_expression_trees_match_eager(program):
    shapes, steps, final, axis, keepdims, seed = program
    arrays = [rand(s, seed=seed + k) for k, s in enumerate(shapes)]
    fn = build(steps, final, axis, keepdims)
    weights = rand(np.shape(fn(*[Tensor(a) for a in arrays]).data), seed=seed + 7)
    eager = eager_value_and_grads(fn, weights, arrays)
    graph = trace(value_and_grads(fn, weights), *arrays)
    for how, results in all_ways(graph, *arrays).items():
        for k, (got, want) in enumerate(zip(results, eager, strict=True)):
            assert np.shape(got) == np.shape(want), (how, k, np.shape(got), np.shape(want))
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=f"{how}, output {k}")


# ---------------------------------------------------------------- the MLP training step

LR = 0.05


def train_step(x, onehot, params):
    w1, b1, w2, b2 = params
    logits = (x @ w1 + b1).relu() @ w2 + b2
    shifted = logits - logits.max(axis=1, keepdims=True).detach()
    loss = -((shifted - shifted.exp().sum(axis=1, keepdims=True).log()) * onehot).sum() / len(onehot)
    grads = gradients(loss, params)
    return loss, [p - LR * g for p, g in zip(params, grads, strict=True)]


def mlp_problem(batch=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 20)).astype(np.float32)
    y = rng.integers(0, 5, batch)
    params = [(rng.standard_normal(s) * 0.3).astype(np.float32) for s in [(20, 16), (16,), (16, 5), (5,)]]
    return x, y, np.eye(5, dtype=np.float32)[y], params


def test_mlp_step_matches_eager_engine_and_torch():
    x, y, onehot, params = mlp_problem()
    tensors = [Tensor(p.copy(), requires_grad=True) for p in params]
    loss = cross_entropy((Tensor(x) @ tensors[0] + tensors[1]).relu() @ tensors[2] + tensors[3], y)
    loss.backward()
    eager = [float(loss.data)] + [t.data - LR * t.grad for t in tensors]
    tp = [torch.tensor(p, requires_grad=True) for p in params]
    t_loss = torch.nn.functional.cross_entropy(torch.relu(torch.tensor(x) @ tp[0] + tp[1]) @ tp[2] + tp[3],
                                               torch.tensor(y))
    t_loss.backward()
    reference = [float(t_loss.detach())] + [(p - LR * p.grad).detach().numpy() for p in tp]
    graph = trace(train_step, x, onehot, params)
    for how, results in all_ways(graph, x, onehot, *params).items():
        for k, (got, want, theirs) in enumerate(zip(results, eager, reference, strict=True)):
            assert np.asarray(got).dtype == np.float32, (how, k)
            where = f"{how}, output {k}"
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=where + " vs engine")
            np.testing.assert_allclose(got, theirs, rtol=1e-5, atol=1e-6, err_msg=where + " vs torch")


def test_jit_trains_like_eager_and_retraces_on_new_shapes():
    x, y, onehot, params = mlp_problem(batch=32, seed=1)
    step = jit(train_step, donate_argnums=(2,))
    state = [p.copy() for p in params]
    tensors = [Tensor(p.copy(), requires_grad=True) for p in params]
    for batch in (16, 16, 32, 16):
        loss, state = step(x[:batch], onehot[:batch], state)
        w1, b1, w2, b2 = tensors
        eager = cross_entropy((Tensor(x[:batch]) @ w1 + b1).relu() @ w2 + b2, y[:batch])
        for t in tensors:
            t.grad = None
        eager.backward()
        for t in tensors:
            t.data -= LR * t.grad
        np.testing.assert_allclose(float(loss), float(eager.data), rtol=1e-5)
        for p, t in zip(state, tensors, strict=True):
            np.testing.assert_allclose(p, t.data, rtol=1e-4, atol=1e-6)
    assert step.traces == 2 and len(step.plans) == 2
    step(x.astype(np.float64), onehot.astype(np.float64), [p.astype(np.float64) for p in state])
    assert step.traces == 3  # a new dtype is a new signature


def test_donation_updates_in_place_and_only_when_asked():
    x, _, onehot, params = mlp_problem()
    graph = optimize(trace(train_step, x, onehot, params))
    assert graph.count("gemm") == 2
    kept = [p.copy() for p in params]
    outputs = compile_graph(graph)(x, onehot, *params)
    for p, k in zip(params, kept, strict=True):
        np.testing.assert_array_equal(p, k)  # not donated: inputs untouched
    donated = [p.copy() for p in params]
    again = compile_graph(graph, donate=range(2, 6))(x, onehot, *donated)
    assert again[1] is donated[0] and again[3] is donated[2]  # weights updated in place
    for a, b in zip(outputs, again, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_plan_outputs_are_fresh_and_guarded():
    a = rand((3, 4))

    def fn(a):
        h = (a * 2.0).tanh() + 1.0
        return h.T, (h @ h.T).exp(), a.sum()

    plan = compile_graph(optimize(trace(fn, a)))
    first = plan(a)
    kept = [np.array(o, copy=True) for o in first]
    second = plan(a * 3)
    for before, copy in zip(first, kept, strict=True):
        np.testing.assert_array_equal(before, copy)  # a later call never writes into earlier results
    assert not any(np.shares_memory(f, s) for f, s in zip(first, second, strict=True))
    with pytest.raises(ValueError, match="compiled for"):
        plan(rand((4, 4)))
    with pytest.raises(ValueError, match="compiled for"):
        plan(a.astype(np.float32))


# ---------------------------------------------------------------- what each pass does

def test_dead_code_elimination_removes_unused_nodes():
    a = rand((3, 4))

    def fn(a):
        (a.exp() * 2.0).sum()  # dead
        return a.tanh()

    graph = trace(fn, a)
    clean = eliminate_dead_code(graph)
    assert [n.op for n in clean.nodes] == ["input", "tanh"] and len(graph) == 6
    # the training step: the gradient of x is dead
    x, _, onehot, params = mlp_problem()
    step = trace(train_step, x, onehot, params)
    assert eliminate_dead_code(step).count("matmul") == step.count("matmul") - 1


def test_constant_folding_removes_constant_subgraphs():
    from gradschool.engine.graph import Graph, Node, constant

    x = Node("input", (), {}, (4,), np.float64)
    c, two = constant(rand((4,))), constant(np.float64(2.0))
    e = Node("exp", (c,), {}, (4,), np.float64)
    m = Node("mul", (e, two), {}, (4,), np.float64)
    s = Node("sum", (m,), {"axis": None, "keepdims": False}, (), np.float64)
    out = Node("add", (x, s), {}, (4,), np.float64)
    graph = Graph([x], [x, c, two, e, m, s, out], [out])
    clean = eliminate_dead_code(fold_constants(graph))
    assert [n.op for n in clean.nodes] == ["input", "const", "add"]
    np.testing.assert_allclose(run_graph(clean, np.ones(4))[0], run_graph(graph, np.ones(4))[0], rtol=1e-12)
    graph = trace(lambda a: a * 2.0 + 1.0, rand((3,)))
    assert fold_constants(graph).count() == graph.count()  # nothing constant to fold
    # the training step: the seed gradient and the mean's 1/n fold
    xb, _, onehot, params = mlp_problem()
    step = trace(train_step, xb, onehot, params)
    assert fold_constants(step).count() <= step.count() - 4


def test_fusion_reduces_the_node_count():
    a, b = rand((5, 6)), rand((6,))
    graph = trace(lambda a, b: ((a * b + 1.0).tanh() * 3.0 - b).relu().exp(), a, b)
    fused = fuse_elementwise(graph)
    assert fused.count() == 1 and fused.count("fused") == 1 and graph.count() == 7
    # a node used twice ends a chain; a broadcast input stays outside
    graph = trace(lambda a: (a.tanh() * a.tanh()).sum(axis=0) + a.exp().sum(axis=0), a)
    assert fuse_elementwise(graph).count() < graph.count()
    x, _, onehot, params = mlp_problem()
    optimized = optimize(trace(train_step, x, onehot, params))
    assert optimized.count() < 0.7 * trace(train_step, x, onehot, params).count()


def test_tracing_freezes_python_and_refuses_value_branches():
    a = rand((2, 3))
    with pytest.raises(TracingError):
        trace(lambda a: a if a.sum() > 0 else -a, a)
    with pytest.raises(TracingError):
        trace(lambda a: a * float(a.sum()), a)
    graph = trace(lambda a: [a := a.tanh() for _ in range(4)][-1], a)
    assert graph.count("tanh") == 4  # a Python loop is unrolled
