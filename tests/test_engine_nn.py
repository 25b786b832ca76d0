"""The engine contract for ``gradschool.engine.nn``.

Layers and losses forward and backward against PyTorch (``torch.nn.functional`` with the same
weights); ``Module``'s bookkeeping (parameter order, names, no duplicates, train/eval,
zero_grad); a strict ``state_dict`` round trip; Dropout's statistics with a seeded generator;
the initialisations' scale.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradschool.engine import (
    GELU,
    Dropout,
    LayerNorm,
    Linear,
    Module,
    Parameter,
    ReLU,
    Sequential,
    Tanh,
    Tensor,
    cross_entropy,
    he_normal,
    mse_loss,
    xavier_uniform,
)
from gradschool.engine.nn import load_state_dict, state_dict

torch = pytest.importorskip("torch")
F = torch.nn.functional


def rand(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def backward_both(out, t_out, seed=99):
    """Backpropagate the same random upstream gradient through both graphs."""
    weights = rand(out.shape, seed=seed, dtype=out.dtype)
    out.backward(weights)
    t_out.backward(torch.tensor(weights))


def close(mine, theirs, tol=1e-10):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    assert mine.shape == theirs.shape, (mine.shape, theirs.shape)
    np.testing.assert_allclose(mine, theirs, rtol=tol, atol=tol)


# ------------------------------------------------------------------ layers against PyTorch

@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4), (4,)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(shape, bias):
    layer = Linear(4, 3, bias=bias, rng=np.random.default_rng(1))
    layer.weight = Parameter(layer.weight.data.astype(np.float64))
    if bias:
        layer.bias = Parameter(rand(3, seed=2))
    x = Tensor(rand(shape), requires_grad=True)
    tx = torch.tensor(x.data, requires_grad=True)
    tw = torch.tensor(layer.weight.data.T.copy(), requires_grad=True)  # torch stores (out, in)
    tb = torch.tensor(layer.bias.data, requires_grad=True) if bias else None
    out, t_out = layer(x), F.linear(tx, tw, tb)
    close(out.data, t_out)
    backward_both(out, t_out)
    close(x.grad, tx.grad)
    close(layer.weight.grad, tw.grad.numpy().T)
    if bias:
        close(layer.bias.grad, tb.grad)


def test_linear_init_dtype_scale_and_rng():
    layer = Linear(500, 200, rng=np.random.default_rng(0))
    assert isinstance(layer.weight, Parameter) and layer.weight.dtype == np.float32
    assert layer.weight.shape == (500, 200) and layer.bias.dtype == np.float32
    assert np.all(layer.bias.data == 0)
    assert abs(layer.weight.data.std() - math.sqrt(2 / 500)) < 0.02 * math.sqrt(2 / 500)
    again = Linear(500, 200, rng=np.random.default_rng(0))
    assert np.array_equal(layer.weight.data, again.weight.data)
    assert Linear(3, 2, bias=False).bias is None
    out = layer(Tensor(rand((2, 500), dtype=np.float32)))
    assert out.dtype == np.float32


def test_init_helpers():
    rng = np.random.default_rng(0)
    w = xavier_uniform(300, 100, rng)
    limit = math.sqrt(6 / 400)
    assert w.dtype == np.float32 and w.shape == (300, 100)
    assert w.min() >= -limit and w.max() <= limit and w.max() > 0.95 * limit
    h = he_normal(300, 100, rng)
    assert h.dtype == np.float32 and h.shape == (300, 100)
    assert abs(h.std() - math.sqrt(2 / 300)) < 0.03 * math.sqrt(2 / 300)
    rngs = np.random.default_rng(5), np.random.default_rng(5)
    assert np.array_equal(he_normal(3, 4, rngs[0]), he_normal(3, 4, rngs[1]))


def test_layernorm_matches_torch():
    norm = LayerNorm(6, eps=1e-3)
    norm.weight = Parameter(rand(6, seed=3))
    norm.bias = Parameter(rand(6, seed=4))
    x = Tensor(rand((2, 3, 6)) * 3 + 1, requires_grad=True)
    tx = torch.tensor(x.data, requires_grad=True)
    tw = torch.tensor(norm.weight.data, requires_grad=True)
    tb = torch.tensor(norm.bias.data, requires_grad=True)
    out, t_out = norm(x), F.layer_norm(tx, (6,), tw, tb, eps=1e-3)
    close(out.data, t_out)
    backward_both(out, t_out)
    close(x.grad, tx.grad, 1e-9)
    close(norm.weight.grad, tw.grad)
    close(norm.bias.grad, tb.grad)


def test_layernorm_defaults_and_float32():
    norm = LayerNorm(4)
    assert norm.weight.dtype == np.float32 and np.all(norm.weight.data == 1) and np.all(norm.bias.data == 0)
    out = norm(Tensor(np.full((2, 4), 3.0, dtype=np.float32)))
    assert out.dtype == np.float32 and np.allclose(out.data, 0)


@pytest.mark.parametrize(("module", "torch_fn"), [
    (GELU(), lambda t: F.gelu(t, approximate="tanh")),
    (ReLU(), F.relu),
    (Tanh(), torch.tanh),
])
def test_activations_match_torch(module, torch_fn):
    x = rand((4, 5)) * 3
    x[np.abs(x) < 1e-3] = 0.5  # keep away from relu's kink
    t = Tensor(x, requires_grad=True)
    tx = torch.tensor(x, requires_grad=True)
    out, t_out = module(t), torch_fn(tx)
    close(out.data, t_out)
    backward_both(out, t_out)
    close(t.grad, tx.grad)


# ------------------------------------------------------------------ losses

@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_cross_entropy_matches_torch(scale):
    logits = rand((7, 5)) * scale
    targets = np.random.default_rng(1).integers(0, 5, size=7)
    t = Tensor(logits, requires_grad=True)
    tl = torch.tensor(logits, requires_grad=True)
    loss, t_loss = cross_entropy(t, targets), F.cross_entropy(tl, torch.tensor(targets))
    assert loss.shape == () and np.isfinite(loss.item())
    close(loss.data, t_loss)
    loss.backward()
    t_loss.backward()
    close(t.grad, tl.grad)


def test_cross_entropy_float32_and_bad_targets():
    logits = Tensor(np.array([[1000.0, -1000.0], [0.0, 1001.0]], dtype=np.float32), requires_grad=True)
    loss = cross_entropy(logits, [0, 1])
    assert loss.dtype == np.float32 and np.isfinite(loss.item())
    loss.backward()
    assert logits.grad.dtype == np.float32 and np.all(np.isfinite(logits.grad))
    with pytest.raises(ValueError):
        cross_entropy(logits, np.array([[0], [1]]))


def test_mse_matches_torch_and_refuses_mismatched_shapes():
    pred, target = rand((6, 2)), rand((6, 2), seed=1)
    t = Tensor(pred, requires_grad=True)
    tp = torch.tensor(pred, requires_grad=True)
    loss, t_loss = mse_loss(t, target), F.mse_loss(tp, torch.tensor(target))
    close(loss.data, t_loss)
    loss.backward()
    t_loss.backward()
    close(t.grad, tp.grad)
    with pytest.raises(ValueError):
        mse_loss(Tensor(rand(6)), rand((6, 1)))


# ------------------------------------------------------------------ Module bookkeeping

class Block(Module):
    def __init__(self, rng):
        self.fc = Linear(3, 3, rng=rng)
        self.norm = LayerNorm(3)
        self.drop = Dropout(0.5, rng=rng)

    def forward(self, x):
        return self.drop(self.norm(self.fc(x)))


def test_parameter_type_and_dtype():
    p = Parameter([1.0, 2.0])
    assert isinstance(p, Tensor) and p.requires_grad and p.dtype == np.float32
    assert Parameter(np.zeros(2)).dtype == np.float64
    assert type(p * 2) is Tensor


def test_parameters_order_names_and_sharing():
    rng = np.random.default_rng(0)
    block = Block(rng)
    model = Sequential(Linear(2, 3, rng=rng), ReLU(), block, block, Linear(3, 1, bias=False, rng=rng))
    names = [name for name, _ in model.named_parameters()]
    assert names == ["layers.0.weight", "layers.0.bias", "layers.2.fc.weight", "layers.2.fc.bias",
                     "layers.2.norm.weight", "layers.2.norm.bias", "layers.4.weight"]
    params = model.parameters()
    assert isinstance(params, list) and len(params) == len({id(p) for p in params}) == 7
    assert params[2] is block.fc.weight and params[-1] is model[4].weight
    assert len(model) == 5 and list(model)[1].__class__ is ReLU and isinstance(model[1:3], Sequential)
    # a tied weight is listed once
    model[4].weight = block.fc.weight
    assert len(model.parameters()) == 6


def test_zero_grad_and_train_eval_propagate():
    rng = np.random.default_rng(0)
    model = Sequential(Block(rng), [Block(rng)][0], Dropout(0.2, rng=rng))
    out = model(Tensor(rand((4, 3), dtype=np.float32)))
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    assert model.eval() is model
    assert not model.training and not model[0].training and not model[0].drop.training
    assert not model[2].training
    assert model.train() is model and model[1].drop.training and model[2].training


def test_dropout_statistics_and_eval_identity():
    drop = Dropout(0.3, rng=np.random.default_rng(0))
    x = Tensor(np.full((200, 500), 2.0, dtype=np.float32), requires_grad=True)
    out = drop(x)
    zeros = np.mean(out.data == 0)
    assert out.dtype == np.float32
    assert abs(zeros - 0.3) < 0.005
    np.testing.assert_allclose(out.data[out.data != 0], 2.0 / 0.7, rtol=1e-6)
    assert abs(out.data.mean() - 2.0) < 0.02  # the expected value is kept
    out.sum().backward()
    np.testing.assert_array_equal(x.grad, (out.data != 0) / np.float32(0.7))
    again = Dropout(0.3, rng=np.random.default_rng(0))(x)
    np.testing.assert_array_equal(again.data, out.data)  # the same seed, the same mask
    drop.eval()
    assert drop(x) is x
    assert Dropout(0.0)(x) is x
    assert np.all(Dropout(1.0)(x).data == 0)
    with pytest.raises(ValueError):
        Dropout(1.5)


# ------------------------------------------------------------------ state dicts

def make_model(seed):
    rng = np.random.default_rng(seed)
    return Sequential(Linear(4, 8, rng=rng), GELU(), LayerNorm(8), Linear(8, 3, rng=rng))


def test_state_dict_round_trip():
    model, fresh = make_model(0), make_model(1)
    model[2].weight.data[...] = rand(8, seed=5, dtype=np.float32)
    state = model.state_dict()
    assert list(state) == ["layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias",
                           "layers.3.weight", "layers.3.bias"]
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in state.values())
    assert all(np.array_equal(state[k], v) for k, v in state_dict(model).items())
    arrays = [p.data for p in fresh.parameters()]
    assert fresh.load_state_dict(state) is fresh
    assert all(p.data is a for p, a in zip(fresh.parameters(), arrays, strict=True))  # in place
    x = Tensor(rand((5, 4), dtype=np.float32))
    np.testing.assert_array_equal(fresh(x).data, model(x).data)
    model[0].weight.data += 1  # the state holds copies
    assert not np.array_equal(state["layers.0.weight"], model[0].weight.data)


def test_load_state_dict_is_strict_and_atomic():
    model = make_model(0)
    state = make_model(1).state_dict()
    before = model.state_dict()
    missing = {k: v for k, v in state.items() if k != "layers.3.bias"}
    with pytest.raises(KeyError, match="layers.3.bias"):
        model.load_state_dict(missing)
    with pytest.raises(KeyError, match="extra"):
        model.load_state_dict({**state, "extra": np.zeros(1)})
    with pytest.raises(ValueError, match="layers.0.weight"):
        load_state_dict(model, {**state, "layers.0.weight": np.zeros((8, 4), np.float32)})
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    load_state_dict(model, {k: v.astype(np.float64) for k, v in state.items()})
    assert all(p.dtype == np.float32 for p in model.parameters())
