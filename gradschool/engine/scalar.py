"""Scalar reverse-mode autodiff: `Value`, one number in a computation graph.

Each Value remembers its parents and the local derivatives of the operation that made it,
so that `backward()` can walk the graph in reverse topological order and apply the chain
rule, accumulating the gradient of every node that is used more than once. It is the
smallest complete autodiff engine, kept for teaching and for checking: every idea of the
Tensor engine, one number at a time.

Generated from solutions/02_engine/01_scalar_autodiff.ipynb by `make export`:
edit the notebook, not this file.
"""

import math
import numbers


class Value:
    """One number in a computation graph: its value, its gradient, and how it was made.

    data: the number, a Python float.
    grad: d(root)/d(this node), filled in by root.backward(); 0.0 until then.
    parents: the Values this one was computed from; empty for a leaf (an input, a parameter).
    local_grads: one plain number per parent, d(this node)/d(parent): the local rule of the
        operation that made the node, evaluated when it was made.
    op: the name of that operation ("+", "*", "tanh", ...); label: an optional name, for
        printing and drawing. Values compare by identity, so they can live in sets and dicts.
    """

    __slots__ = ("data", "grad", "parents", "local_grads", "op", "label")
    __array_ufunc__ = None  # `np.float64(2.0) * v` then hands the work to Value, not to NumPy

    def __init__(self, data, parents=(), local_grads=(), op="", label=""):
        if type(data) is not float:  # the common case first: this runs for every node
            if not isinstance(data, numbers.Real):
                raise TypeError(f"a Value holds one real number, not a {type(data).__name__}")
            data = float(data)
        if len(parents) != len(local_grads):
            raise ValueError(f"a Value needs one local gradient per parent, not {len(parents)} "
                             f"parents and {len(local_grads)} local gradients")
        self.data = data
        self.grad = 0.0
        self.parents = tuple(parents)
        self.local_grads = tuple(local_grads)
        self.op = op
        self.label = label

    def __repr__(self):
        text = f"Value(data={_short(self.data)}, grad={_short(self.grad)}"
        text += f", op={self.op!r}" if self.op else ""
        text += f", label={self.label!r}" if self.label else ""
        return text + ")"


def _short(x):
    """x to 6 significant digits, printed as a float (2.0, not 2)."""
    return repr(float(f"{x:.6g}"))


def as_value(x):
    """x itself if it is a Value; a plain number becomes a new leaf Value (a constant)."""
    return x if isinstance(x, Value) else Value(x)


def _reflected(operation):
    """The method Python calls for `2 - a`, which is a.__rsub__(2): the operation, Value second."""

    def method(self, other):
        return operation(other, self)

    return method


def add(a, b):
    """a + b as a new Value: parents (a, b), local gradients (1, 1), op "+".

    a, b: Values or plain numbers. Neither is changed.
    """
    a, b = as_value(a), as_value(b)
    return Value(a.data + b.data, parents=(a, b), local_grads=(1.0, 1.0), op="+")


def mul(a, b):
    """a * b as a new Value: parents (a, b), local gradients (b, a) as numbers, op "*"."""
    a, b = as_value(a), as_value(b)
    return Value(a.data * b.data, parents=(a, b), local_grads=(b.data, a.data), op="*")


def div(a, b):
    """a / b as a new Value: parents (a, b), local gradients 1 / b and -a / b**2, op "/".

    Dividing by zero raises ZeroDivisionError, as Python's floats do.
    """
    a, b = as_value(a), as_value(b)
    out = a.data / b.data  # raises ZeroDivisionError when b is 0
    return Value(out, parents=(a, b), local_grads=(1.0 / b.data, -out / b.data), op="/")


Value.__add__ = add
Value.__radd__ = _reflected(add)
Value.__mul__ = mul
Value.__rmul__ = _reflected(mul)
Value.__truediv__ = div
Value.__rtruediv__ = _reflected(div)


def neg(a):
    """-a, built from mul: no new local rule needed."""
    return mul(a, -1.0)


def sub(a, b):
    """a - b = a + (-b), built from add and neg."""
    return add(a, neg(b))


def power(a, n):
    """a ** n for a plain number n, as a new Value; local gradient n * a ** (n - 1), op "**".

    Like Python's floats, 0 to a negative power raises ZeroDivisionError, and a negative base
    with a fractional exponent raises ValueError (Python's ** would return a complex number,
    PyTorch nan). Where the slope is infinite (0 ** n with 0 < n < 1) the local gradient is
    inf, as in PyTorch.
    """
    if not isinstance(n, numbers.Real):
        raise TypeError(f"Value ** n needs a plain number n, not a {type(n).__name__} "
                        f"(for a Value exponent, write exp(n * log(a)))")
    a, n = as_value(a), float(n)
    if a.data == 0.0 and n < 0:
        raise ZeroDivisionError(f"0.0 cannot be raised to the negative power {n:g}")
    out = math.pow(a.data, n)  # ValueError for a negative base and a fractional n
    if n == 0.0:
        local = 0.0
    elif a.data == 0.0 and n < 1:
        local = math.inf
    else:
        local = n * math.pow(a.data, n - 1)
    return Value(out, parents=(a,), local_grads=(local,), op=f"**{n:g}")


Value.__neg__ = neg
Value.__sub__ = sub
Value.__rsub__ = _reflected(sub)
Value.__pow__ = power


def topological_order(root):
    """Every Value that root depends on, root included, each once, parents before children.

    root: a Value. Returns a list that ends with root, in which every node comes after all of
    its parents. Iterative (an explicit stack, no recursion), so graphs thousands of nodes deep
    work, and each node is expanded once. Nothing is changed.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:
            order.append(node)  # every parent is already in the order
        elif node not in visited:
            visited.add(node)
            stack.append((node, True))  # back to this node once its parents are placed
            for parent in node.parents:
                if parent not in visited:
                    stack.append((parent, False))
    return order


def backward(root):
    """Reverse-mode autodiff: add d(root)/d(v) to v.grad for every Value v that root depends on.

    Like PyTorch's loss.backward(): the leaves (Values without parents: inputs, parameters)
    accumulate, so two calls double their gradients; reset them to 0.0 before each pass of a
    training loop. Intermediate nodes are reset first and hold the gradients of this pass.
    The root is seeded with d(root)/d(root) = 1. Iterative: graphs of any depth work.
    """
    order = topological_order(root)
    for node in order:
        if node.parents:  # an intermediate result: its gradient starts afresh in every pass
            node.grad = 0.0
    root.grad += 1.0
    for node in reversed(order):  # every child before its parents: node.grad is complete
        for parent, local in zip(node.parents, node.local_grads, strict=True):
            parent.grad += local * node.grad  # +=: a node used twice collects both shares


Value.backward = backward


def exp(a):
    """e ** a as a new Value, op "exp"; local gradient e ** a. OverflowError above a = 709.78."""
    a = as_value(a)
    out = math.exp(a.data)
    return Value(out, parents=(a,), local_grads=(out,), op="exp")


def log(a):
    """The natural logarithm as a new Value, op "log"; local gradient 1 / a. ValueError for a <= 0."""
    a = as_value(a)
    out = math.log(a.data)  # raises ValueError for a <= 0
    return Value(out, parents=(a,), local_grads=(1.0 / a.data,), op="log")


def tanh(a):
    """tanh(a) as a new Value, op "tanh"; local gradient 1 - tanh(a) ** 2. Finite for any a."""
    a = as_value(a)
    out = math.tanh(a.data)
    return Value(out, parents=(a,), local_grads=(1.0 - out * out,), op="tanh")


def relu(a):
    """max(a, 0) as a new Value, op "relu"; local gradient 1 where a > 0, else 0 (at 0 too)."""
    a = as_value(a)
    positive = a.data > 0
    return Value(a.data if positive else 0.0, parents=(a,), local_grads=(1.0 if positive else 0.0,),
                 op="relu")


Value.exp = exp
Value.log = log
Value.tanh = tanh
Value.relu = relu


def sigmoid(a):
    """1 / (1 + e ** -a) as a new Value, op "sigmoid"; local gradient s * (1 - s). Stable for any a."""
    a = as_value(a)
    if a.data >= 0:
        s = 1.0 / (1.0 + math.exp(-a.data))
    else:  # e ** a / (1 + e ** a): the same number, without e ** -a, which overflows
        e = math.exp(a.data)
        s = e / (1.0 + e)
    return Value(s, parents=(a,), local_grads=(s * (1.0 - s),), op="sigmoid")


Value.sigmoid = sigmoid
