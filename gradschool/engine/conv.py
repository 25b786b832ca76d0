"""The engine's convolutions: `conv2d` and `max_pool2d` on NCHW batches of images, forward and
backward, and the layers `Conv2d`, `MaxPool2d` and `Flatten` built on them. A convolution is
computed as ONE matrix product: `im2col` copies every receptive field of the batch into a row
(a strided view of the image, then a single copy), and the weights, flattened, multiply all
rows at once; its backward pass is two more products and `col2im`, the adjoint of `im2col`,
which adds each row back onto the pixels it came from. No Python loop runs over pixels or
images, only over the KH x KW offsets of a kernel. Each is one graph node of the `Tensor`
engine, so networks mixing them with the other operations train with `loss.backward()`.

API (`from gradschool.engine import conv2d, max_pool2d, Conv2d, MaxPool2d, Flatten`):

    conv2d(x, weight, bias=None, stride=1, padding=0): x (N, C, H, W), weight (F, C, KH, KW),
        bias None or (F,), all Tensors; stride and padding ints (zeros on every side).
        Returns (N, F, OH, OW), OH = (H + 2 padding - KH) // stride + 1 (torch's conv2d),
        stored channel by channel (an NCHW view of (F, N, OH, OW) memory, no copy).
    max_pool2d(x, kernel_size, stride=None): kernel_size and stride ints or pairs (stride
        None: the kernel's size). No padding; a partial window at the border is dropped.
        The gradient of each window goes to its first maximum (PyTorch's choice for ties).
    Conv2d(in_channels, out_channels, kernel_size, *, stride=1, padding=0, bias=True,
        rng=None): weight (out, in, KH, KW) He-normal (fan-in in * KH * KW), bias zeros,
        float32. MaxPool2d(kernel_size, stride=None). Flatten(): (N, ...) -> (N, -1).
    im2col(x, kernel_size, stride=1, padding=0) -> (N * OH * OW, C * KH * KW) and
    col2im(cols, x_shape, kernel_size, stride=1, padding=0) -> x_shape: arrays, the pieces
        the notebook's exercises write; output_size(size, kernel, stride=1, padding=0).
    keep_freed_memory(): lets glibc's malloc reuse freed blocks instead of page-faulting
        fresh memory in at every step (call it once before training; Linux only).

Generated from solutions/02_engine/05_convolution.ipynb by `make export`:
edit the notebook, not this file.
"""

import numpy as np

from gradschool.engine.nn import Module, Parameter, he_normal
from gradschool.engine.tensor import Tensor, _node, array_module


def _pair(size):
    """(size, size) for an int, the pair itself for a pair: kernel sizes may be either."""
    return (size, size) if isinstance(size, int) else tuple(size)


def output_size(size, kernel, stride=1, padding=0):
    """How many positions a kernel takes along an axis of `size` pixels (floor, as PyTorch)."""
    return (size + 2 * padding - kernel) // stride + 1


def _windows(x, kh, kw, stride, oh, ow):
    """A read-only view (N, C, oh, ow, kh, kw) of every kh x kw window of x (N, C, H, W).

    stride: an int, or a pair (rows, columns).

    No copy: the window at (r, c) starts `stride` rows and columns further than the previous
    one, so the view only needs two more strides. `as_strided` trusts the shape it is given;
    the callers compute oh and ow with output_size, so no window reads outside x.
    """
    xp = array_module(x)
    sh, sw = _pair(stride)
    n_stride, c_stride, h_stride, w_stride = x.strides
    return xp.lib.stride_tricks.as_strided(
        x, shape=(x.shape[0], x.shape[1], oh, ow, kh, kw),
        strides=(n_stride, c_stride, h_stride * sh, w_stride * sw, h_stride, w_stride),
        writeable=False)


def im2col(x, kernel_size, stride=1, padding=0):
    """Every receptive field of x as a row: the matrix that turns convolution into one matmul.

    x: an array (N, C, H, W). kernel_size: an int or a pair (KH, KW). stride, padding: ints
    (padding adds `padding` zeros on every side of each image).
    Returns an array (N * OH * OW, C * KH * KW) of x's dtype, OH = output_size(H, KH,
    stride, padding) (OW likewise): row (n * OH + r) * OW + c holds the window whose
    top-left corner is at (r * stride, c * stride) of the padded image n, flattened in
    (C, KH, KW) order, the order of a weight (F, C, KH, KW) flattened. x is not changed.
    Raises ValueError when the kernel does not fit in the padded image.
    """
    xp = array_module(x)
    kh, kw = _pair(kernel_size)
    n, c, h, w = x.shape
    oh, ow = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    if oh < 1 or ow < 1:
        raise ValueError(f"im2col: a {kh}x{kw} kernel does not fit in a {h}x{w} image "
                         f"padded by {padding}")
    if padding:
        x = xp.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = _windows(x, kh, kw, stride, oh, ow)  # (N, C, OH, OW, KH, KW), a view
    # the one copy, in (C, KH, KW, N, OH, OW) order (its inner loop runs along image rows);
    # its transpose, a view, is the matrix of rows
    return windows.transpose(1, 4, 5, 0, 2, 3).reshape(c * kh * kw, n * oh * ow).T


def col2im(cols, x_shape, kernel_size, stride=1, padding=0):
    """The adjoint of im2col: add every row of `cols` back onto the pixels it was read from.

    cols: an array (N * OH * OW, C * KH * KW), laid out as im2col returns it (typically
    the gradient of a loss with respect to im2col's result). x_shape: (N, C, H, W), the
    shape of the image im2col read. Returns an array of x_shape and cols' dtype in which
    each pixel holds the sum of the entries of `cols` that came from it (a pixel in
    several windows gets several contributions; padding is dropped). cols is not changed.
    This is the backward pass of im2col: sum over all uses of each pixel.
    """
    xp = array_module(cols)
    n, c, h, w = x_shape
    kh, kw = _pair(kernel_size)
    oh, ow = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    blocks = cols.T.reshape(c, kh, kw, n, oh, ow)  # no copy for im2col's layout
    padded = xp.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=cols.dtype)
    # one strided slice per kernel offset (i, j): pixel (r * stride + i, c * stride + j)
    # received entry (i, j) of window (r, c). KH * KW slice additions, each over the whole
    # batch; windows overlap, so a single scatter would need np.add.at (slow).
    for i in range(kh):
        for j in range(kw):
            padded[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += (
                blocks[:, i, j].transpose(1, 0, 2, 3))
    if padding:
        return xp.ascontiguousarray(padded[:, :, padding:padding + h, padding:padding + w])
    return padded


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """A 2-d convolution (cross-correlation, as in every framework) of a batch of images.

    x: a Tensor (N, C, H, W) (an array is taken as a constant input); weight: a Tensor
    (F, C, KH, KW), F filters; bias: None or a Tensor (F,); stride, padding: ints.
    Returns a Tensor (N, F, OH, OW):
    out[n, f, r, c] = bias[f] + sum over (ch, i, j) of
    weight[f, ch, i, j] * x_padded[n, ch, r * stride + i, c * stride + j].
    Computed as ONE matrix product, im2col(x) @ weight reshaped (F, C * KH * KW).T, and
    recorded in the graph: the gradients reach x (through col2im), weight and bias.
    """
    x = x if isinstance(x, Tensor) else Tensor(x)  # an array: a constant input
    n, c, h, w = x.shape
    f, _, kh, kw = weight.shape
    oh, ow = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    cols = im2col(x.data, (kh, kw), stride, padding)  # (N * OH * OW, C * KH * KW)
    w2 = weight.data.reshape(f, c * kh * kw)
    out = w2 @ cols.T  # (F, N * OH * OW): one channel after another
    if bias is not None:
        out += bias.data[:, None]
    out = out.reshape(f, n, oh, ow).transpose(1, 0, 2, 3)  # NCHW, a view

    def channels(g):  # the gradient of the result, back to the matmul's layout (F, N * OH * OW)
        return g.transpose(1, 0, 2, 3).reshape(f, n * oh * ow)

    def vjp_x(g):
        dcols = (w2.T @ channels(g)).T  # (N * OH * OW, C * KH * KW), im2col's layout
        return col2im(dcols, x.shape, (kh, kw), stride, padding).astype(x.dtype, copy=False)

    def vjp_w(g):
        return (channels(g) @ cols).reshape(weight.shape).astype(weight.dtype, copy=False)

    def vjp_b(g):
        return g.sum(axis=(0, 2, 3)).astype(bias.dtype, copy=False)

    if bias is None:
        return _node(out, (x, weight), (vjp_x, vjp_w))
    return _node(out, (x, weight, bias), (vjp_x, vjp_w, vjp_b))


def max_pool2d(x, kernel_size, stride=None):
    """The largest value of each kernel_size window of each channel of x (N, C, H, W).

    kernel_size: an int or a pair (KH, KW); stride: an int or a pair (None: the kernel's
    size, windows that touch without overlapping). Returns a Tensor (N, C, OH, OW), with no
    padding: a partial window at the border is dropped, as in PyTorch. Backward: each
    window's gradient goes to ONE pixel, the first maximum in row-major order when several
    are equal (PyTorch's choice); overlapping windows (stride < kernel) add up at a pixel
    that wins several of them.
    """
    x = x if isinstance(x, Tensor) else Tensor(x)
    xp = array_module(x.data)
    kh, kw = _pair(kernel_size)
    sh, sw = (kh, kw) if stride is None else _pair(stride)
    n, c, h, w = x.shape
    oh, ow = output_size(h, kh, sh), output_size(w, kw, sw)
    if oh < 1 or ow < 1:
        raise ValueError(f"max_pool2d: a {kh}x{kw} window does not fit in a {h}x{w} image")
    windows = _windows(x.data, kh, kw, (sh, sw), oh, ow)  # (N, C, OH, OW, KH, KW), a view
    # the one copy: stacked[k] is position k (row-major) of every window
    stacked = windows.transpose(4, 5, 0, 1, 2, 3).reshape(kh * kw, n, c, oh, ow)
    out = stacked.max(axis=0)

    def vjp(g):
        grad = xp.zeros(x.shape, dtype=g.dtype)
        left = g.copy()  # the gradient of the windows whose first maximum is still ahead
        for k in range(kh * kw):  # one strided slice per position in the window
            part = left * (stacked[k] == out)
            left -= part
            i, j = divmod(k, kw)
            grad[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += part
        return grad

    return _node(out, (x,), (vjp,))


class Conv2d(Module):
    """A convolution layer: conv2d(x, weight, bias, stride, padding) with learned weight
    (out_channels, in_channels, KH, KW), He-normal for a fan-in of in_channels * KH * KW (for
    ReLU networks), from the generator `rng` (None: a fresh, unseeded one), and bias zeros
    (bias=False: none). Same layout and meaning as torch.nn.Conv2d."""

    def __init__(self, in_channels, out_channels, kernel_size, *, stride=1, padding=0, bias=True,
                 rng=None):
        rng = np.random.default_rng() if rng is None else rng
        kh, kw = _pair(kernel_size)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (kh, kw)
        self.stride, self.padding = stride, padding
        fan_in = in_channels * kh * kw
        weight = he_normal(fan_in, out_channels, rng).T.reshape(out_channels, in_channels, kh, kw)
        self.weight = Parameter(np.ascontiguousarray(weight))
        self.bias = Parameter(np.zeros(out_channels, dtype=np.float32)) if bias else None

    def forward(self, x):
        return conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")


class MaxPool2d(Module):
    """max_pool2d(x, kernel_size, stride) as a layer (no parameters)."""

    def __init__(self, kernel_size, stride=None):
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x):
        return max_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class Flatten(Module):
    """(N, C, H, W) -> (N, C * H * W): from feature maps to the rows a Linear layer takes."""

    def forward(self, x):
        return x.reshape(x.shape[0], -1)


def keep_freed_memory(mmap_threshold=32 * 2**20, trim_threshold=128 * 2**20):
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the system.

    Large NumPy temporaries are otherwise mapped fresh, and page-faulted in, at every training
    step. mmap_threshold: blocks up to this size come from the reusable heap (glibc's maximum
    is 32 MiB); trim_threshold: free memory kept before any is returned. Returns True when
    applied (Linux with glibc), False elsewhere. It changes speed, never results.
    """
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3  # the option numbers in glibc's malloc.h
    return bool(libc.mallopt(m_mmap_threshold, mmap_threshold)) and bool(
        libc.mallopt(m_trim_threshold, trim_threshold))
