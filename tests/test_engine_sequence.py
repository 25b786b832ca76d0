"""The engine contract for ``gradschool.engine.sequence``.

softmax against torch.softmax; Embedding against torch's embedding; RNNCell, LSTMCell and LSTM
against torch.nn.RNNCell / LSTMCell / LSTM with the same weights, forward and every gradient;
causal_attention against torch.nn.functional.scaled_dot_product_attention(is_causal=True),
forward and gradients; central finite differences in float64; causality (the future never
changes the past); hypothesis over shapes and axes for softmax and attention.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradschool.checks import gradcheck
from gradschool.engine import (
    LSTM,
    CausalSelfAttention,
    Embedding,
    LSTMCell,
    RNNCell,
    Tensor,
    causal_attention,
    causal_mask,
    no_grad,
    softmax,
)

torch = pytest.importorskip("torch")
F = torch.nn.functional
TOL = dict(rtol=1e-10, atol=1e-12)


def rand(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def as_float64(module):
    for p in module.parameters():
        p.data = p.data.astype(np.float64)
    return module


# ---------------------------------------------------------------- softmax


@pytest.mark.parametrize("shape, axis",
                         [((4, 7), -1), ((4, 7), 0), ((2, 3, 5), 1), ((2, 3, 5), -3), ((6,), 0)])
def test_softmax_matches_torch(shape, axis):
    x = rand(shape, 1) * 3
    X = Tensor(x, requires_grad=True)
    out = softmax(X, axis=axis)
    tx = torch.tensor(x, requires_grad=True)
    ref = torch.softmax(tx, dim=axis)
    np.testing.assert_allclose(out.data, ref.detach().numpy(), **TOL)
    g = rand(shape, 2)
    out.backward(g)
    ref.backward(torch.tensor(g))
    np.testing.assert_allclose(X.grad, tx.grad.numpy(), **TOL)


def test_softmax_is_stable_and_masks():
    x = np.array([[1e4, 1e4 - 1, -1e4], [0.0, -np.inf, 2.0]], dtype=np.float32)
    X = Tensor(x, requires_grad=True)
    out = softmax(X)
    assert out.dtype == np.float32 and np.isfinite(out.data).all()
    np.testing.assert_allclose(out.data, torch.softmax(torch.tensor(x), -1).numpy(), rtol=1e-6, atol=1e-7)
    assert out.data[1, 1] == 0.0
    out.backward(np.ones_like(x))
    assert X.grad.dtype == np.float32 and np.isfinite(X.grad).all()


def test_softmax_finite_differences():
    x, g = rand((3, 4), 3), rand((3, 4), 4)
    X = Tensor(x, requires_grad=True)
    softmax(X, axis=0).backward(g)
    assert gradcheck(lambda v: float((softmax(Tensor(v), axis=0).data * g).sum()), x, X.grad) < 1e-7


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), data=st.data())
def test_softmax_property_over_shapes_and_axes(shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = rand(shape, 5) * 10
    X = Tensor(x, requires_grad=True)
    out = softmax(X, axis=axis)
    tx = torch.tensor(x, requires_grad=True)
    ref = torch.softmax(tx, dim=axis)
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out.data.sum(axis=axis), 1.0, rtol=1e-12)
    g = rand(shape, 6)
    out.backward(g)
    ref.backward(torch.tensor(g))
    np.testing.assert_allclose(X.grad, tx.grad.numpy(), rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- Embedding


def test_embedding_matches_torch_embedding():
    emb = as_float64(Embedding(7, 4, rng=np.random.default_rng(0)))
    idx = np.random.default_rng(1).integers(0, 7, (3, 5))
    out = emb(idx)
    tw = torch.tensor(emb.weight.data, requires_grad=True)
    ref = F.embedding(torch.tensor(idx), tw)
    np.testing.assert_array_equal(out.data, ref.detach().numpy())
    g = rand((3, 5, 4), 2)
    out.backward(g)
    ref.backward(torch.tensor(g))
    np.testing.assert_allclose(emb.weight.grad, tw.grad.numpy(), **TOL)


def test_embedding_api():
    emb = Embedding(5, 3, rng=np.random.default_rng(0))
    assert emb.weight.dtype == np.float32 and emb.weight.shape == (5, 3)
    assert emb([1, 2]).shape == (2, 3) and emb(Tensor(np.array([[4]]))).shape == (1, 1, 3)
    with pytest.raises(TypeError):
        emb(np.array([0.0]))
    with pytest.raises(IndexError):
        emb([5])


# ---------------------------------------------------------------- recurrent cells


def torch_lstm_cell(cell):
    ref = torch.nn.LSTMCell(cell.input_size, cell.hidden_size).double()
    with torch.no_grad():
        ref.weight_ih.copy_(torch.tensor(cell.weight_ih.data.T))
        ref.weight_hh.copy_(torch.tensor(cell.weight_hh.data.T))
        ref.bias_ih.copy_(torch.tensor(cell.bias.data))
        ref.bias_hh.zero_()
    return ref


@pytest.mark.parametrize("batch, n_in, hidden, with_state",
                         [(3, 5, 4, True), (1, 2, 6, True), (4, 3, 3, False)])
def test_lstm_cell_matches_torch(batch, n_in, hidden, with_state):
    cell = as_float64(LSTMCell(n_in, hidden, rng=np.random.default_rng(0)))
    ref = torch_lstm_cell(cell)
    x, h0, c0 = rand((batch, n_in), 1), rand((batch, hidden), 2), rand((batch, hidden), 3)
    X, H, C = (Tensor(a, requires_grad=True) for a in (x, h0, c0))
    h, c = cell(X, (H, C) if with_state else None)
    tx, th, tc = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    rh, rc = ref(tx, (th, tc)) if with_state else ref(tx)
    np.testing.assert_allclose(h.data, rh.detach().numpy(), **TOL)
    np.testing.assert_allclose(c.data, rc.detach().numpy(), **TOL)
    gh, gc = rand(h.shape, 4), rand(c.shape, 5)
    ((h * gh).sum() + (c * gc).sum()).backward()
    ((rh * torch.tensor(gh)).sum() + (rc * torch.tensor(gc)).sum()).backward()
    np.testing.assert_allclose(X.grad, tx.grad.numpy(), **TOL)
    np.testing.assert_allclose(cell.weight_ih.grad, ref.weight_ih.grad.numpy().T, **TOL)
    np.testing.assert_allclose(cell.bias.grad, ref.bias_ih.grad.numpy(), **TOL)
    if with_state:
        np.testing.assert_allclose(H.grad, th.grad.numpy(), **TOL)
        np.testing.assert_allclose(C.grad, tc.grad.numpy(), **TOL)
        np.testing.assert_allclose(cell.weight_hh.grad, ref.weight_hh.grad.numpy().T, **TOL)


def test_lstm_cell_finite_differences_and_forget_bias():
    cell = as_float64(LSTMCell(3, 2, rng=np.random.default_rng(1)))
    x, h0, c0 = rand((2, 3), 6), rand((2, 2), 7), rand((2, 2), 8)
    params = cell.parameters()

    def loss():
        h, c = cell(Tensor(x), (Tensor(h0), Tensor(c0)))
        return float((h.data * 1.5 + c.data).sum())

    h, c = cell(Tensor(x), (Tensor(h0), Tensor(c0)))
    (h * 1.5 + c).sum().backward()
    for p in params:
        original = p.data.copy()

        def f(v, p=p):
            p.data = v
            return loss()

        err = gradcheck(f, original, p.grad)
        p.data = original
        assert err < 1e-7
    fresh = LSTMCell(3, 8, rng=np.random.default_rng(2))
    assert fresh.bias.data[8:16].min() > 0.5 and abs(fresh.bias.data[:8]).max() <= 1 / np.sqrt(8)


def test_lstm_matches_torch_lstm_over_a_sequence():
    lstm = as_float64(LSTM(3, 5, rng=np.random.default_rng(3)))
    ref = torch.nn.LSTM(3, 5, batch_first=True).double()
    with torch.no_grad():
        ref.weight_ih_l0.copy_(torch.tensor(lstm.cell.weight_ih.data.T))
        ref.weight_hh_l0.copy_(torch.tensor(lstm.cell.weight_hh.data.T))
        ref.bias_ih_l0.copy_(torch.tensor(lstm.cell.bias.data))
        ref.bias_hh_l0.zero_()
    x = rand((2, 6, 3), 9)
    X = Tensor(x, requires_grad=True)
    out, (h, c) = lstm(X)
    tx = torch.tensor(x, requires_grad=True)
    rout, (rh, rc) = ref(tx)
    np.testing.assert_allclose(out.data, rout.detach().numpy(), **TOL)
    np.testing.assert_allclose(h.data, rh[0].detach().numpy(), **TOL)
    np.testing.assert_allclose(c.data, rc[0].detach().numpy(), **TOL)
    g = rand(out.shape, 10)
    out.backward(g)
    rout.backward(torch.tensor(g))
    np.testing.assert_allclose(X.grad, tx.grad.numpy(), **TOL)
    np.testing.assert_allclose(lstm.cell.weight_hh.grad, ref.weight_hh_l0.grad.numpy().T, **TOL)
    np.testing.assert_allclose(lstm.cell.bias.grad, ref.bias_hh_l0.grad.numpy(), **TOL)


def test_rnn_cell_matches_torch():
    cell = as_float64(RNNCell(4, 3, rng=np.random.default_rng(4)))
    ref = torch.nn.RNNCell(4, 3).double()
    with torch.no_grad():
        ref.weight_ih.copy_(torch.tensor(cell.weight_ih.data.T))
        ref.weight_hh.copy_(torch.tensor(cell.weight_hh.data.T))
        ref.bias_ih.copy_(torch.tensor(cell.bias.data))
        ref.bias_hh.zero_()
    x, h0 = rand((2, 4), 11), rand((2, 3), 12)
    X, H = Tensor(x, requires_grad=True), Tensor(h0, requires_grad=True)
    h = cell(X, H)
    tx, th = torch.tensor(x, requires_grad=True), torch.tensor(h0, requires_grad=True)
    rh = ref(tx, th)
    np.testing.assert_allclose(h.data, rh.detach().numpy(), **TOL)
    h.sum().backward()
    rh.sum().backward()
    np.testing.assert_allclose(X.grad, tx.grad.numpy(), **TOL)
    np.testing.assert_allclose(H.grad, th.grad.numpy(), **TOL)
    np.testing.assert_allclose(cell.weight_hh.grad, ref.weight_hh.grad.numpy().T, **TOL)
    np.testing.assert_allclose(cell(Tensor(x)).data, ref(torch.tensor(x)).detach().numpy(), **TOL)


# ---------------------------------------------------------------- attention


def compare_attention(q, k, v, seed=0):
    Q, K, Vt = (Tensor(a, requires_grad=True) for a in (q, k, v))
    out = causal_attention(Q, K, Vt)
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    ref = F.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
    assert out.shape == tuple(ref.shape) and out.dtype == np.float64
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-9, atol=1e-12)
    g = rand(out.shape, seed + 100)
    out.backward(g)
    ref.backward(torch.tensor(g))
    for mine, theirs in ((Q, tq), (K, tk), (Vt, tv)):
        np.testing.assert_allclose(mine.grad, theirs.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("shape, dv",
                         [((5, 4), 4), ((2, 6, 3), 3), ((2, 3, 7, 4), 4), ((1, 2, 4, 8), 2), ((3, 1, 2), 5)])
def test_causal_attention_matches_torch_sdpa(shape, dv):
    q, k = rand(shape, 1), rand(shape, 2)
    v = rand(shape[:-1] + (dv,), 3)
    compare_attention(q, k, v)


@settings(max_examples=25, deadline=None)
@given(batch=st.lists(st.integers(1, 3), min_size=0, max_size=2), t=st.integers(1, 6), d=st.integers(1, 5),
       seed=st.integers(0, 1000))
def test_causal_attention_property_over_shapes(batch, t, d, seed):
    shape = tuple(batch) + (t, d)
    compare_attention(rand(shape, seed) * 2, rand(shape, seed + 1) * 2, rand(shape, seed + 2), seed)


def test_causal_attention_finite_differences():
    q, k, v, g = (rand((2, 4, 3), s) for s in (20, 21, 22, 23))
    Q, K, Vt = (Tensor(a, requires_grad=True) for a in (q, k, v))
    causal_attention(Q, K, Vt).backward(g)
    args = [q, k, v]
    for j, grad in enumerate((Q.grad, K.grad, Vt.grad)):
        def f(a, j=j):
            inputs = [Tensor(b) for b in args[:j] + [a] + args[j + 1:]]
            return float((causal_attention(*inputs).data * g).sum())

        assert gradcheck(f, args[j], grad) < 1e-7


def test_the_future_never_changes_the_past():
    q, k, v = (rand((2, 3, 8, 4), s) for s in (30, 31, 32))
    base = causal_attention(Tensor(q), Tensor(k), Tensor(v)).data
    for t in range(7):
        changed = [a.copy() for a in (q, k, v)]
        for a in changed:
            a[..., t + 1:, :] = rand(a[..., t + 1:, :].shape, 33 + t) * 10
        out = causal_attention(*(Tensor(a) for a in changed)).data
        np.testing.assert_allclose(out[..., :t + 1, :], base[..., :t + 1, :], rtol=1e-12, atol=1e-12)
    attn = CausalSelfAttention(8, heads=2, rng=np.random.default_rng(5))
    x = rand((2, 5, 8), 34, np.float32)
    y = attn(Tensor(x))
    x[:, 3:] = 0
    assert y.dtype == np.float32 and y.shape == (2, 5, 8)
    np.testing.assert_allclose(attn(Tensor(x)).data[:, :3], y.data[:, :3], rtol=1e-6, atol=1e-7)


def test_causal_mask_and_float32():
    mask = causal_mask(4, np.float32)
    assert mask.dtype == np.float32 and mask.shape == (4, 4)
    assert (mask[np.tril_indices(4)] == 0).all() and np.isneginf(mask[np.triu_indices(4, 1)]).all()
    q = Tensor(rand((2, 5, 3), 40, np.float32), requires_grad=True)
    out = causal_attention(q, q, q)
    assert out.dtype == np.float32
    out.sum().backward()
    assert q.grad.dtype == np.float32 and np.isfinite(q.grad).all()


def test_multi_head_layer_matches_a_manual_computation():
    attn = as_float64(CausalSelfAttention(6, heads=3, rng=np.random.default_rng(6)))
    assert [n for n, _ in attn.named_parameters()] == ["qkv.weight", "qkv.bias", "proj.weight", "proj.bias"]
    x = rand((2, 4, 6), 41)
    qkv = torch.tensor(x @ attn.qkv.weight.data + attn.qkv.bias.data)
    qkv = qkv.reshape(2, 4, 3, 3, 2).permute(2, 0, 3, 1, 4)  # (q/k/v, N, heads, T, 2)
    heads = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)
    want = heads.permute(0, 2, 1, 3).reshape(2, 4, 6).numpy() @ attn.proj.weight.data + attn.proj.bias.data
    np.testing.assert_allclose(attn(Tensor(x)).data, want, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError):
        CausalSelfAttention(6, heads=4)
    with no_grad():
        assert not attn(Tensor(x)).requires_grad
