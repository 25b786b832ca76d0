"""The engine contract for ``gradschool.engine.conv``.

conv2d and max_pool2d forward and backward against PyTorch (``torch.nn.functional`` in float64,
same inputs and output gradient) over shapes, strides, paddings, with and without bias; central
finite differences on tiny cases; im2col / col2im as adjoint maps; the layers' parameters.
"""

from __future__ import annotations

import numpy as np
import pytest

from gradschool.checks import gradcheck
from gradschool.engine import Conv2d, Flatten, MaxPool2d, Sequential, Tensor, conv2d, max_pool2d
from gradschool.engine.conv import col2im, im2col

torch = pytest.importorskip("torch")
F = torch.nn.functional


def rand(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


CONV_CASES = [  # x shape, weight shape, stride, padding, bias
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, 0, True),
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, 1, False),
    ((3, 2, 8, 9), (5, 2, 3, 3), 2, 0, True),
    ((1, 2, 9, 8), (3, 2, 2, 3), 2, 1, False),
    ((2, 1, 5, 5), (2, 1, 1, 1), 1, 0, True),
    ((1, 4, 6, 6), (2, 4, 5, 5), 1, 1, True),
    ((2, 2, 10, 7), (3, 2, 3, 2), 3, 1, True),
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, bias", CONV_CASES)
def test_conv2d_matches_torch_forward_and_backward(x_shape, w_shape, stride, padding, bias):
    x, w, b = rand(x_shape, 1), rand(w_shape, 2), rand(w_shape[0], 3)
    X, W = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
    B = Tensor(b, requires_grad=True) if bias else None
    out = conv2d(X, W, B, stride=stride, padding=padding)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ref = F.conv2d(tx, tw, tb if bias else None, stride=stride, padding=padding)
    assert out.shape == tuple(ref.shape) and out.dtype == np.float64
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = rand(out.shape, 4)
    out.backward(g)
    ref.backward(torch.tensor(g))
    np.testing.assert_allclose(X.grad, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(W.grad, tw.grad.numpy(), rtol=1e-10, atol=1e-12)
    if bias:
        np.testing.assert_allclose(B.grad, tb.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_conv2d_finite_differences():
    x, w, b = rand((1, 2, 5, 4), 5), rand((2, 2, 3, 3), 6), rand(2, 7)
    g = rand((1, 2, 3, 2), 8)

    def loss(x_, w_, b_):
        return float((conv2d(Tensor(x_), Tensor(w_), Tensor(b_), stride=2, padding=1).data * g).sum())

    X, W, B = (Tensor(a, requires_grad=True) for a in (x, w, b))
    conv2d(X, W, B, stride=2, padding=1).backward(g)
    assert gradcheck(lambda v: loss(v, w, b), x, X.grad) < 1e-7
    assert gradcheck(lambda v: loss(x, v, b), w, W.grad) < 1e-7
    assert gradcheck(lambda v: loss(x, w, v), b, B.grad) < 1e-7


def test_conv2d_float32_and_constant_input():
    x = rand((2, 3, 6, 6), 9, np.float32)
    W = Tensor(rand((4, 3, 3, 3), 10, np.float32), requires_grad=True)
    out = conv2d(x, W, padding=1)  # an array input: a constant
    assert out.dtype == np.float32 and out.shape == (2, 4, 6, 6)
    out.sum().backward()
    assert W.grad.dtype == np.float32 and W.grad.shape == (4, 3, 3, 3)


POOL_CASES = [  # x shape, kernel, stride
    ((2, 3, 8, 8), 2, None), ((2, 3, 7, 9), 2, None), ((1, 2, 7, 7), 3, 2),
    ((2, 2, 6, 7), 2, 1), ((1, 3, 9, 8), (2, 3), None), ((1, 1, 6, 6), (3, 2), 1),
]


@pytest.mark.parametrize("x_shape, kernel, stride", POOL_CASES)
def test_max_pool2d_matches_torch(x_shape, kernel, stride):
    x = rand(x_shape, 11)
    X = Tensor(x, requires_grad=True)
    out = max_pool2d(X, kernel, stride)
    tx = torch.tensor(x, requires_grad=True)
    ref = F.max_pool2d(tx, kernel, stride)
    np.testing.assert_array_equal(out.data, ref.detach().numpy())
    g = rand(out.shape, 12)
    out.backward(g)
    ref.backward(torch.tensor(g))
    np.testing.assert_allclose(X.grad, tx.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride", [None, 1])
def test_max_pool2d_ties_go_to_the_first_maximum_as_in_torch(stride):
    x = np.round(rand((2, 2, 6, 6), 13)) * 0.0 + np.round(rand((2, 2, 6, 6), 14))  # many ties
    X = Tensor(x, requires_grad=True)
    max_pool2d(X, 2, stride).sum().backward()
    tx = torch.tensor(x, requires_grad=True)
    F.max_pool2d(tx, 2, stride).sum().backward()
    np.testing.assert_array_equal(X.grad, tx.grad.numpy())


def test_max_pool2d_finite_differences():
    x = rand((1, 2, 5, 5), 15)
    g = rand((1, 2, 4, 4), 16)
    X = Tensor(x, requires_grad=True)
    max_pool2d(X, 2, 1).backward(g)
    assert gradcheck(lambda v: float((max_pool2d(Tensor(v), 2, 1).data * g).sum()), x, X.grad) < 1e-7


@pytest.mark.parametrize("x_shape, kernel, stride, padding",
                         [((2, 3, 6, 7), 3, 1, 0), ((1, 2, 8, 8), (2, 3), 2, 1), ((2, 1, 5, 5), 3, 3, 2)])
def test_im2col_matches_unfold_and_col2im_is_its_adjoint(x_shape, kernel, stride, padding):
    x = rand(x_shape, 17)
    cols = im2col(x, kernel, stride, padding)
    ref = F.unfold(torch.tensor(x), kernel, padding=padding, stride=stride).numpy()  # (N, C*KH*KW, L)
    np.testing.assert_allclose(cols, ref.transpose(0, 2, 1).reshape(cols.shape))
    g = rand(cols.shape, 18)
    back = col2im(g, x.shape, kernel, stride, padding)
    assert back.shape == x.shape
    np.testing.assert_allclose((back * x).sum(), (cols * g).sum(), rtol=1e-12)


def test_a_kernel_that_does_not_fit_is_refused():
    with pytest.raises(ValueError):
        im2col(rand((1, 1, 4, 4)), 5)
    with pytest.raises(ValueError):
        max_pool2d(Tensor(rand((1, 1, 2, 2))), 3)


def test_layers_parameters_and_shapes():
    rng = np.random.default_rng(0)
    layer = Conv2d(3, 8, 3, padding=1, rng=rng)
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    assert layer.weight.shape == (8, 3, 3, 3) and layer.weight.dtype == np.float32
    assert layer.bias.shape == (8,) and not layer.bias.data.any()
    assert abs(float(layer.weight.data.std()) - np.sqrt(2 / 27)) < 0.06
    assert Conv2d(3, 4, (2, 3), bias=False, rng=rng).bias is None
    net = Sequential(layer, MaxPool2d(2), Conv2d(8, 4, 3, stride=2, rng=rng), Flatten())
    assert [n for n, _ in net.named_parameters()] == ["layers.0.weight", "layers.0.bias",
                                                      "layers.2.weight", "layers.2.bias"]
    x = Tensor(rand((2, 3, 12, 12), 19, np.float32))
    out = net(x)
    assert out.shape == (2, 4 * 2 * 2) and out.dtype == np.float32
    out.sum().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in net.parameters())
    # the same computation in torch
    tw = [torch.tensor(p.data.astype(np.float64)) for p in net.parameters()]
    t = F.conv2d(torch.tensor(x.data.astype(np.float64)), tw[0], tw[1], padding=1)
    t = F.conv2d(F.max_pool2d(t, 2), tw[2], tw[3], stride=2).flatten(1)
    np.testing.assert_allclose(out.data, t.numpy(), rtol=1e-4, atol=1e-5)


def small_cnn_grads(x, weights):
    """Loss and gradients of conv-relu-pool-conv-relu-pool-sum through the engine, where each
    layer reads the previous one's output in the memory layout that layer produced."""
    w1, b1, w2, b2 = (Tensor(a.copy(), requires_grad=True) for a in weights)
    h = max_pool2d(conv2d(Tensor(x), w1, b1, padding=1).relu(), 2)
    out = max_pool2d(conv2d(h, w2, b2, padding=1).relu(), 2)
    loss = (out * out).sum()
    loss.backward()
    return out.data, [p.grad for p in (w1, b1, w2, b2)]


def test_a_small_cnn_matches_torch_through_every_layout():
    x = rand((3, 2, 12, 12), 1)
    weights = [rand((4, 2, 3, 3), 2), rand(4, 3), rand((5, 4, 3, 3), 4), rand(5, 5)]
    out, grads = small_cnn_grads(x, weights)
    t = [torch.tensor(a, requires_grad=True) for a in weights]
    h = F.max_pool2d(F.relu(F.conv2d(torch.tensor(x), t[0], t[1], padding=1)), 2)
    tout = F.max_pool2d(F.relu(F.conv2d(h, t[2], t[3], padding=1)), 2)
    (tout * tout).sum().backward()
    assert out.shape == tuple(tout.shape) == (3, 5, 3, 3)
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    for grad, ref in zip(grads, t, strict=True):
        assert grad.shape == tuple(ref.shape)
        np.testing.assert_allclose(grad, ref.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_keep_freed_memory_changes_speed_not_results():
    import platform

    from gradschool.engine import keep_freed_memory

    x = rand((2, 1, 8, 8), 6, np.float32)
    weights = [rand(s, i, np.float32) for i, s in enumerate([(3, 1, 3, 3), 3, (2, 3, 3, 3), 2])]
    before = small_cnn_grads(x, weights)
    applied = keep_freed_memory()
    assert isinstance(applied, bool)
    assert applied == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    after = small_cnn_grads(x, weights)
    for a, b in zip([before[0], *before[1]], [after[0], *after[1]], strict=True):
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
