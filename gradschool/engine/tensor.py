"""The course's `Tensor`: an array (NumPy, or CuPy on a GPU) with reverse-mode automatic
differentiation. Every operation on tensors that require gradients records its inputs and,
for each input, a vector-Jacobian product: how to turn the gradient of the result into the
gradient of that input, summed back over broadcast axes. `backward()` walks that graph from
the output in reverse topological order (iteratively, so any depth works) and adds each
leaf's gradient to its `.grad`. It is small on purpose and fast enough to train real
networks: a graph node per array operation, never per number, and no copies or dtype
changes that the arithmetic does not need. The later notebooks build `nn`, `optim` and the
rest of the engine on it.

API (`from gradschool.engine import Tensor, no_grad, concatenate, stack`):

    Tensor(data, requires_grad=False)
        data: a NumPy or CuPy array (kept as it is: no copy, same dtype), a NumPy scalar
        (its dtype), or Python numbers and lists (NumPy's dtype, except that float64
        becomes float32). Only floating-point tensors may require gradients.
    t.data, t.requires_grad, t.shape, t.dtype, t.ndim, t.size, len(t), t.item(),
    float(t), t.numpy(), repr(t)
    t.grad: None until a backward pass reaches t, then an array of t's shape and dtype.
        Only leaves get one (tensors made with requires_grad=True, not computed). It
        accumulates over backward passes; assign `t.grad = None` to reset it.
    a + b, a - b, a * b, a / b, a ** b, -a, a @ b: tensors with tensors, arrays or numbers
        (constants: no gradient), either side; shapes broadcast as in NumPy and each
        gradient is summed back to its input's shape. A number adopts the tensor's dtype
        (float32 * 2.0 is float32); arrays follow NumPy's promotion. @ follows np.matmul
        (vectors, batches of matrices).
    t.exp(), t.log(), t.tanh(), t.sigmoid(), t.relu()   (relu'(0) = 0)
    t.sum(axis=None, keepdims=False), t.mean(...), t.max(...): axis None, an int or a
        tuple, negative too; max splits its gradient equally among tied maxima
        (as torch.amax does).
    t.reshape(*shape) or t.reshape(shape), t.transpose(*axes) or t.transpose(axes), t.T
    t[index]: NumPy indexing (integers, slices, None, ..., integer and boolean arrays);
        entries picked several times add up their gradients (np.add.at).
    concatenate(tensors, axis=0), stack(tensors, axis=0)
    t.backward(grad=None): grad of t's shape; may be left out only when t has one element.
    t.detach(): the same data, outside the graph.
    with no_grad(): ... computes without recording a graph.
    backpropagate, unbroadcast, matmul_backward_a/_b, sum_backward, max_backward and
    getitem_backward are the backward rules the notebook's exercises write.

Generated from solutions/02_engine/02_tensor_autodiff.ipynb by `make export`:
edit the notebook, not this file.
"""

import numpy as np


def array_module(array):
    """The module that computes on `array`: CuPy for a CuPy array, NumPy for anything else.

    The engine never imports CuPy for nothing: a CuPy array exists only once its caller has
    imported CuPy, so asking the array is enough.
    """
    if type(array).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


_grad_enabled = True  # False inside `with no_grad():`


class no_grad:  # lower-case: it is used like a function, as torch.no_grad is
    """`with no_grad():` computes without recording a graph.

    For everything that needs no gradient (evaluation, the optimiser's own updates): the
    graph costs memory (every node keeps its inputs alive) and time. Tensors computed inside
    require no gradient. Blocks nest; leaving one restores what was there before.
    """

    def __enter__(self):
        global _grad_enabled
        self._previous, _grad_enabled = _grad_enabled, False
        return self

    def __exit__(self, *exc_info):
        global _grad_enabled
        _grad_enabled = self._previous
        return False


class Tensor:
    """An array that remembers how it was computed, so that `backward()` can differentiate it.

    Every operation returns a new tensor. When one of its inputs requires gradients (and no
    `no_grad()` is active) the result is a node of the graph: it keeps its inputs in
    `_parents` and, for each, a function in `_vjps` that turns the gradient of the result
    into the gradient of that input (a vector-Jacobian product). Tensors that need no
    gradient record nothing, so inference and constants cost no graph.
    """

    __slots__ = ("data", "grad", "requires_grad", "_parents", "_vjps")
    __array_ufunc__ = None  # `array * tensor` then calls Tensor.__rmul__ instead of NumPy's loop

    def __init__(self, data, requires_grad=False):
        """data: an array (NumPy or CuPy; kept as it is: no copy, same dtype), a NumPy scalar
        (its dtype), or Python numbers and lists (NumPy's dtype, except that float64 becomes
        the engine's float32). Only floating-point tensors may require gradients."""
        if isinstance(data, Tensor):
            data = data.data
        xp = array_module(data)
        if not isinstance(data, xp.ndarray):
            from_python = not isinstance(data, np.generic)
            data = xp.asarray(data)
            if from_python and data.dtype == np.float64:
                data = data.astype(np.float32)
        if requires_grad and data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, not {data.dtype}")
        self.data = data
        self.grad = None  # an array once a backward pass reaches this tensor (leaves only)
        self.requires_grad = bool(requires_grad)
        self._parents = ()
        self._vjps = ()

    # ---------------------------------------------------------------- what it holds

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    def __len__(self):
        return len(self.data)

    def item(self):
        """The value of a one-element tensor, as a Python number."""
        return self.data.item()

    def __float__(self):
        return float(self.data.item())

    def numpy(self):
        """The data as a NumPy array (the array itself on the CPU; a copy from a GPU)."""
        return self.data if isinstance(self.data, np.ndarray) else self.data.get()

    def __repr__(self):
        body = np.array2string(self.numpy(), separator=", ", prefix="Tensor(")
        flag = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({body}, dtype={self.data.dtype}{flag})"

    # ---------------------------------------------------------------- the graph

    def backward(self, grad=None):
        """Add the gradient of this tensor to the `.grad` of every leaf it was computed from.

        grad: d(final quantity)/d(this tensor), an array or tensor of this tensor's shape. It
        may be left out for a tensor with one element (a loss), and is then 1. A leaf is a
        tensor made with requires_grad=True (not computed from others); its `.grad`
        accumulates over backward passes until you reset it (`t.grad = None`).
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() was called on a tensor that does not require gradients: none of the "
                "tensors it was computed from has requires_grad=True (or it was computed inside "
                "no_grad()).")
        xp = array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a tensor with one element (a loss), "
                    f"but this one has shape {self.data.shape}: pass backward(grad) with an "
                    f"array of that shape, or reduce the tensor first (e.g. .sum()).")
            grad = xp.ones(self.data.shape, dtype=self.data.dtype)
        else:
            grad = grad.data if isinstance(grad, Tensor) else grad
            grad = xp.array(grad, dtype=self.data.dtype)  # a copy: the pass may keep it
            if grad.shape != self.data.shape:
                raise ValueError(f"backward(grad): grad has shape {grad.shape}, but the tensor "
                                 f"has shape {self.data.shape}; they must be the same.")
        backpropagate(self, grad)

    def detach(self):
        """The same data (shared, not copied) as a new tensor outside the graph."""
        return Tensor(self.data)

    # ---------------------------------------------------------------- arithmetic
    # Shapes broadcast as in NumPy; _fit sums each input's gradient back to its shape.
    # The other operand may be a tensor, an array or a number (a constant: no gradient).

    def __add__(self, other):
        a, b = self.data, _data(other)
        return _binary(self, other, a + b,
                       lambda g: _fit(g, a.shape), lambda g: _fit(g, b.shape))

    __radd__ = __add__

    def __sub__(self, other):
        a, b = self.data, _data(other)
        return _binary(self, other, a - b,
                       lambda g: _fit(g, a.shape), lambda g: -_fit(g, b.shape))

    def __rsub__(self, other):  # other - self
        a = self.data
        return _node(_data(other) - a, (self,), (lambda g: -_fit(g, a.shape),))

    def __mul__(self, other):
        a, b = self.data, _data(other)
        return _binary(self, other, a * b,
                       lambda g: _fit(g * b, a.shape), lambda g: _fit(g * a, b.shape))

    __rmul__ = __mul__

    def __truediv__(self, other):
        a, b = self.data, _data(other)
        out = a / b
        return _binary(self, other, out,
                       lambda g: _fit(g / b, a.shape), lambda g: _fit(-g * out / b, b.shape))

    def __rtruediv__(self, other):  # other / self
        a = self.data
        out = _data(other) / a
        return _node(out, (self,), (lambda g: _fit(-g * out / a, a.shape),))

    def __pow__(self, other):
        a, b = self.data, _data(other)
        out = a ** b
        return _binary(self, other, out,
                       lambda g: _fit(g * b * a ** (b - 1), a.shape),
                       lambda g: _fit(g * out * array_module(a).log(a), b.shape))

    def __rpow__(self, other):  # other ** self
        a, c = self.data, _data(other)
        out = c ** a
        log_c = float(np.log(c)) if isinstance(c, int | float) else array_module(c).log(c)
        return _node(out, (self,), (lambda g: _fit(g * out * log_c, a.shape),))

    def __neg__(self):
        return _node(-self.data, (self,), (lambda g: -g,))

    def __matmul__(self, other):
        a, b = self.data, _data(other)
        return _binary(self, other, a @ b,
                       lambda g: matmul_backward_a(g, a, b), lambda g: matmul_backward_b(g, a, b))

    def __rmatmul__(self, other):  # other @ self
        a, b = _data(other), self.data
        return _node(a @ b, (self,), (lambda g: matmul_backward_b(g, a, b),))

    # ---------------------------------------------------------------- element by element

    def exp(self):
        out = array_module(self.data).exp(self.data)
        return _node(out, (self,), (lambda g: g * out,))

    def log(self):
        a = self.data
        return _node(array_module(a).log(a), (self,), (lambda g: g / a,))

    def tanh(self):
        out = array_module(self.data).tanh(self.data)
        return _node(out, (self,), (lambda g: g * (1 - out * out),))

    def sigmoid(self):
        a = self.data
        xp = array_module(a)
        e = xp.exp(-xp.abs(a))  # in (0, 1]: never overflows, whatever the sign of a
        r = 1 / (1 + e)
        out = xp.where(a >= 0, r, e * r)
        return _node(out, (self,), (lambda g: g * out * (1 - out),))

    def relu(self):
        a = self.data
        return _node(array_module(a).maximum(a, 0), (self,), (lambda g: g * (a > 0),))

    # ---------------------------------------------------------------- reductions
    # axis: None (all axes), an int or a tuple of ints, negative ones too, as in NumPy.

    def sum(self, axis=None, keepdims=False):
        a = self.data
        return _node(a.sum(axis=axis, keepdims=keepdims), (self,),
                     (lambda g: sum_backward(g, a.shape, axis, keepdims),))

    def mean(self, axis=None, keepdims=False):
        a = self.data
        out = a.mean(axis=axis, keepdims=keepdims)
        count = a.size // max(out.size, 1)  # how many entries each mean averages
        return _node(out, (self,), (lambda g: sum_backward(g / count, a.shape, axis, keepdims),))

    def max(self, axis=None, keepdims=False):
        """The maximum; its gradient is split equally among tied maxima (as torch.amax does)."""
        a = self.data
        out = array_module(a).asarray(a.max(axis=axis, keepdims=keepdims))
        return _node(out, (self,), (lambda g: max_backward(g, a, out, axis, keepdims),))

    # ---------------------------------------------------------------- shapes and indexing

    def reshape(self, *shape):
        """reshape(2, 3) or reshape((2, 3)); one size may be -1."""
        if len(shape) == 1 and isinstance(shape[0], tuple | list):
            shape = tuple(shape[0])
        a = self.data
        return _node(a.reshape(shape), (self,), (lambda g: g.reshape(a.shape),))

    def transpose(self, *axes):
        """transpose() reverses the axes; transpose(1, 0, 2) or transpose((1, 0, 2)) permutes."""
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], tuple | list)):
            axes = tuple(axes[0] or ())
        a = self.data
        out = a.transpose(*axes)
        inverse = tuple(int(i) for i in np.argsort([ax % a.ndim for ax in axes]))
        return _node(out, (self,), (lambda g: g.transpose(*inverse),))

    @property
    def T(self):
        return self.transpose()

    def __getitem__(self, index):
        """NumPy indexing: integers, slices, None, ..., integer and boolean arrays."""
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        a = self.data
        return _node(a[index], (self,), (lambda g: getitem_backward(g, a.shape, index),))


def _node(data, parents, vjps):
    """The result of an operation: a graph node only when one of its inputs requires gradients."""
    if isinstance(data, np.generic):  # NumPy returns 0-d results as scalars: keep arrays
        data = np.asarray(data)
    out = Tensor.__new__(Tensor)
    out.data = data
    out.grad = None
    if _grad_enabled and any(p.requires_grad for p in parents):
        out.requires_grad = True
        out._parents = parents
        out._vjps = vjps
    else:
        out.requires_grad = False
        out._parents = out._vjps = ()
    return out


def _binary(a, b, data, vjp_a, vjp_b):
    """The result of `a (op) b`; when b is a constant rather than a tensor, only a is a parent."""
    if isinstance(b, Tensor):
        return _node(data, (a, b), (vjp_a, vjp_b))
    return _node(data, (a,), (vjp_a,))


def _data(x):
    """The array behind an operand. A number becomes a Python number, which adopts the
    tensor's dtype (NumPy's own scalars would not: float32 * np.float64(2) is float64)."""
    if isinstance(x, Tensor):
        return x.data
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, list | tuple):
        return np.asarray(x)
    return x


def _fit(grad, shape):
    """`grad` summed back to `shape` (see unbroadcast): nothing to do when it already fits."""
    return grad if grad.shape == shape else unbroadcast(grad, shape)


def unbroadcast(grad, shape):
    """Sum `grad` back to `shape`: the gradient of an input that broadcasting stretched.

    grad: the gradient of a result, an array whose shape is `shape` broadcast against some
    other shape (so it has at least as many axes as `shape`).
    shape: the input's shape, a tuple.
    Returns an array of exactly `shape` (an array also when `shape` is ()), with grad's
    dtype: the axes that broadcasting added in front are summed away, and the axes where
    the input had size 1 are summed, keeping a size of 1. `grad` is not changed.
    """
    shape = tuple(shape)
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)  # the axes broadcasting added in front
    stretched = tuple(range(extra)) + tuple(
        extra + i for i, n in enumerate(shape) if n == 1 and grad.shape[extra + i] != 1)
    # one pass over grad; keepdims=True keeps an array (never a NumPy scalar), then the
    # reshape drops the leading axes of size 1
    return grad.sum(axis=stretched, keepdims=True).reshape(shape)


def backpropagate(root, grad):
    """The backward pass: add the gradient of `root` to the `.grad` of every leaf below it.

    root: a tensor that requires gradients. grad: d(final)/d(root), an array of root's shape
    and dtype (Tensor.backward passes a fresh copy).
    Visits every tensor reachable from `root` through `_parents` that requires gradients,
    once each, after all the tensors computed from it (reverse topological order), without
    recursion: graphs can be deeper than Python's recursion limit. A node's gradient is the
    sum of the gradients its uses send it; the gradient of a node's i-th parent is
    `node._vjps[i](gradient of the node)` (call it only for parents that require gradients).
    A leaf (a tensor that requires gradients and has no parents) ends with `.grad` set to its
    gradient when `.grad` was None, else to the old `.grad` plus it: an array of the leaf's
    own, writable, of its shape and dtype, shared with nothing else.
    """
    # 1. Topological order, children after their parents, with an explicit stack.
    order, visited, stack = [], set(), [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)  # everything it depends on is already in `order`
        elif id(node) not in visited:
            visited.add(id(node))
            stack.append((node, True))
            stack.extend((parent, False) for parent in node._parents
                         if parent.requires_grad and id(parent) not in visited)
    # 2. From the root down: each node passes its finished gradient to its parents.
    grads = {id(root): grad}
    handed_out = {id(grad)}  # arrays that someone else may hold: never stored without a copy
    for node in reversed(order):
        g = grads.pop(id(node))  # every use of `node` has sent its share by now
        if node._parents:
            for parent, vjp in zip(node._parents, node._vjps, strict=True):
                if parent.requires_grad:
                    share = vjp(g)
                    key = id(parent)
                    grads[key] = share if key not in grads else grads[key] + share
            continue
        # 3. A leaf keeps its gradient. A vjp may return an array that another leaf also
        # gets (a + b hands both the same one), a read-only broadcast view or another dtype:
        # copy unless it is a fresh array of the right dtype that nobody else has.
        xp = array_module(g)
        dtype = node.data.dtype
        if node.grad is None:
            fresh = (type(g) is xp.ndarray and g.base is None and g.dtype == dtype
                     and id(g) not in handed_out)
            node.grad = g if fresh else xp.array(g, dtype=dtype)
            handed_out.add(id(node.grad))
        else:
            node.grad = (node.grad + g).astype(dtype, copy=False)


def matmul_backward_a(grad, a, b):
    """The gradient of `a` in out = a @ b, given grad = d(final)/d(out).

    a, b: arrays with NumPy's matmul rules: 2-D matrices; a 1-D `a` is a row vector and a
    1-D `b` a column vector (that axis is dropped from out); more axes are a batch of
    matrices, broadcast against each other. Returns an array of a's shape and dtype.
    """
    if a.ndim == 2 and b.ndim == 2:  # the common case: one matrix product
        return grad @ b.T
    a2, b2, g2 = _as_matrices(grad, a, b)
    ga = unbroadcast(g2 @ b2.swapaxes(-1, -2), a2.shape)  # sum over a broadcast batch
    return ga.reshape(a.shape) if a.ndim == 1 else ga


def matmul_backward_b(grad, a, b):
    """The gradient of `b` in out = a @ b, given grad = d(final)/d(out). As above."""
    if a.ndim == 2 and b.ndim == 2:
        return a.T @ grad
    a2, b2, g2 = _as_matrices(grad, a, b)
    gb = unbroadcast(a2.swapaxes(-1, -2) @ g2, b2.shape)
    return gb.reshape(b.shape) if b.ndim == 1 else gb


def _as_matrices(grad, a, b):
    """a, b and grad with the axes that 1-D operands dropped put back (a: a row, b: a column)."""
    if b.ndim == 1:
        b, grad = b[:, None], grad[..., None]
    if a.ndim == 1:
        a, grad = a[None, :], grad[..., None, :]
    return a, b, grad


def sum_backward(grad, shape, axis, keepdims):
    """The gradient of `x` in out = x.sum(axis=axis, keepdims=keepdims), x of shape `shape`.

    grad: d(final)/d(out), of out's shape. axis: None, an int or a tuple of ints (negative
    ones count from the end). Every entry of x that went into a sum receives that sum's
    gradient: returns an array of `shape` with grad's dtype (a read-only broadcast view is
    fine: the engine never writes into gradients).
    """
    if axis is not None and not keepdims:
        # put the summed axes back with size 1, so that grad lines up with x's axes
        axes = axis if isinstance(axis, tuple | list) else (axis,)
        axes = {ax % len(shape) for ax in axes}
        grad = grad.reshape(tuple(1 if i in axes else n for i, n in enumerate(shape)))
    return array_module(grad).broadcast_to(grad, shape)


def max_backward(grad, x, out, axis, keepdims):
    """The gradient of `x` in out = x.max(axis=axis, keepdims=keepdims).

    grad: d(final)/d(out), of out's shape. Each maximum's gradient goes to the entries of x
    that reached it, split equally among ties (as torch.amax does): returns an array of x's
    shape with grad's dtype, zero wherever x is below its maximum.
    """
    winners = x == sum_backward(out, x.shape, axis, keepdims)  # the maxima, ties included
    count = winners.sum(axis=axis, keepdims=True, dtype=grad.dtype)  # not int64: no upcast
    share = grad / count.reshape(grad.shape)  # each winner's part of its maximum's gradient
    return winners * sum_backward(share, x.shape, axis, keepdims)


def getitem_backward(grad, shape, index):
    """The gradient of `x` in out = x[index], x of shape `shape`.

    grad: d(final)/d(out), of out's shape. index: anything NumPy indexing takes (integers,
    slices, None, ..., integer or boolean arrays, or a tuple of them). Entries of x that
    were not picked get 0; an entry picked several times (x[[0, 0]]) gets the sum of the
    gradients of all its copies. Returns a new array of `shape` with grad's dtype.
    """
    xp = array_module(grad)
    full = xp.zeros(shape, dtype=grad.dtype)
    if _is_basic(index):
        full[index] = grad  # slices and integers pick each entry at most once
    else:
        xp.add.at(full, index, grad)  # unbuffered: repeated indices all add up
    return full


def _is_basic(index):
    """Whether `index` only holds integers, slices, None and ... (no index arrays)."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, int | slice | type(None) | type(Ellipsis)) and not isinstance(i, bool)
               for i in parts)


def concatenate(tensors, axis=0):
    """Join tensors along an existing axis (NumPy's concatenate); each gets back its slice
    of the gradient. Arrays and numbers among `tensors` are constants."""
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    arrays = [t.data for t in tensors]
    out = array_module(arrays[0] if arrays else None).concatenate(arrays, axis=axis)
    axis = axis % out.ndim
    vjps, start = [], 0
    for a in arrays:
        index = (slice(None),) * axis + (slice(start, start + a.shape[axis]),)
        vjps.append(lambda g, index=index: g[index])
        start += a.shape[axis]
    return _node(out, tuple(tensors), tuple(vjps))


def stack(tensors, axis=0):
    """Join tensors along a new axis (NumPy's stack); each gets back its slice of the
    gradient. Arrays and numbers among `tensors` are constants."""
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    arrays = [t.data for t in tensors]
    out = array_module(arrays[0] if arrays else None).stack(arrays, axis=axis)
    axis = axis % out.ndim
    vjps = tuple(lambda g, index=(slice(None),) * axis + (i,): g[index] for i in range(len(arrays)))
    return _node(out, tuple(tensors), vjps)
