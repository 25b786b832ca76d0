"""Graphs: the engine's eager code traced into a static graph, optimised and compiled. `trace(fn,
*args)` runs fn (ordinary Tensor code) on Proxies that record every operation as a Node of a
Graph (op, inputs, attributes, shape, dtype): a jaxpr or a torch.fx graph made small,
specialised to the example inputs' shapes and dtypes, with Python's control flow frozen.
`gradients(loss, wrt)`, called inside the traced function, appends the backward pass to the
graph (per-op vector-Jacobian rules written with traced operations, broadcasting-aware), so a
whole training step, update included, is one graph. Passes rewrite graphs into graphs: constant
folding, dead-code elimination, fusion of elementwise chains into one in-place kernel and of
`c + k * (a @ b)` into one BLAS gemm. A Plan writes the graph out as one Python function over
preallocated buffers (donated inputs updated in place); `jit` caches one plan
per signature and traces again when shapes change, as tf.function and jax.jit do. Where Python's
overhead per operation matters (small batches), the compiled step is faster than the eager one.

API (`from gradschool.engine import trace, gradients, jit, optimize, compile_graph, Graph, Plan, Proxy`):

    trace(fn, *args) -> Graph: args are arrays or Tensors (placeholders: the graph's inputs),
        or lists and tuples of them; captured arrays, Tensors and numbers become constants.
        fn returns a Proxy or lists and tuples of them. Branching on a traced value raises
        TracingError.
    Proxy: the Tensor API (+ - * / ** @ with tensors, arrays and numbers; exp, log, tanh,
        sigmoid, relu, sum/mean/max(axis, keepdims), reshape, transpose, T, indexing with a
        fixed index, detach: a stop-gradient), with .shape, .dtype, .ndim, .size.
    gradients(loss, wrt) -> list of Proxies: inside a traced function, d(loss)/d(each of wrt).
    Graph(inputs, nodes, outputs, out_tree): print(graph) shows it; len(graph), graph.count(op).
    Node(op, inputs, attrs, shape, dtype, value=None); constant(value) -> a const Node.
    run_graph(graph, *arrays) -> list of arrays: the reference interpreter.
    eliminate_dead_code, fold_constants, fuse_matmul_add, fuse_elementwise: Graph -> Graph;
    optimize(graph, passes=None, verbose=False): all of them, in order.
    compile_graph(graph, donate=()) -> Plan; plan(*arrays) -> list of arrays (checks the signature),
        plan.run(*arrays) (does not), plan.source (the generated function).
    jit(fn, donate_argnums=())(*args): traced and compiled once per signature (structure, shapes, dtypes),
        results arranged as fn returned them; .traces counts the traces.
    KERNELS, VJPS, UFUNCS: the tables of kernels, gradient rules and in-place ufuncs;
    record(op, *operands, **attrs), vjp_mul and vjp_sum are what the notebook's exercises write.

Generated from solutions/02_engine/07_graphs.ipynb by `make export`:
edit the notebook, not this file.
"""

import functools
import operator

import numpy as np

from gradschool.engine.tensor import Tensor, array_module, getitem_backward, unbroadcast


class Node:
    """One operation of a graph: `op` applied to the nodes `inputs` with the settings `attrs`
    (axis, shape, index...), giving an array of `shape` and `dtype`.

    Placeholders (op "input": the graph's runtime arguments) and constants (op "const", whose
    array is `value`) have no inputs. While a graph is being traced, every node also keeps its
    example `value`, so that the next operations know their shapes; tracing forgets them at the
    end, except the constants'. Nodes are never changed once made: a pass that changes one makes
    a new node, so graphs can share nodes safely.
    """

    __slots__ = ("op", "inputs", "attrs", "shape", "dtype", "value")

    def __init__(self, op, inputs, attrs, shape, dtype, value=None):
        self.op, self.inputs, self.attrs = op, tuple(inputs), dict(attrs)
        self.shape, self.dtype, self.value = tuple(shape), np.dtype(dtype), value

    def with_inputs(self, inputs):
        """The same operation on other input nodes (what a pass makes when it rewires a node)."""
        return Node(self.op, inputs, self.attrs, self.shape, self.dtype, self.value)

    def __repr__(self):
        return f"Node({self.op}: {_type(self)})"


def constant(value):
    """A constant node holding `value` (an array, a NumPy scalar or a Python number)."""
    value = np.asarray(value) if not isinstance(value, np.ndarray | np.generic) else value
    if isinstance(value, np.generic):
        value = np.asarray(value)
    return Node("const", (), {}, value.shape, value.dtype, value)


def _type(node):
    return f"{node.dtype.name}[{', '.join(map(str, node.shape))}]"


def _short(value):
    """An attribute as the printed graph shows it: arrays abbreviated to their type."""
    if isinstance(value, np.ndarray):
        return f"array{list(value.shape)}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_short(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):  # a fused node's program
        return "[" + " -> ".join(step[0] for step in value) + "]"
    return repr(value)


class Graph:
    """A static graph: placeholders `inputs`, every node in `nodes` (topological order: each
    node after its inputs; the placeholders and constants included) and `outputs`.

    `out_tree` remembers how the traced function arranged its outputs (a Proxy, or nested
    lists and tuples of them) so that results come back in the same arrangement.
    `print(graph)` shows it one node per line, like a jaxpr.
    """

    def __init__(self, inputs=(), nodes=(), outputs=(), out_tree=None):
        self.inputs, self.nodes, self.outputs = list(inputs), list(nodes), list(outputs)
        self.out_tree = out_tree

    def __len__(self):
        return len(self.nodes)

    def count(self, op=None):
        """How many nodes (of one op, or computing ones: neither inputs nor constants)."""
        if op is None:
            return sum(n.op not in ("input", "const") for n in self.nodes)
        return sum(n.op == op for n in self.nodes)

    def __str__(self):
        name = {}
        for i, node in enumerate(self.inputs):
            name[id(node)] = f"x{i}"
        lines = ["graph(" + ", ".join(f"x{i}: {_type(n)}" for i, n in enumerate(self.inputs)) + "):"]
        for node in self.nodes:
            if node.op == "input":
                continue
            key = name[id(node)] = f"%{len(name) - len(self.inputs)}"
            if node.op == "const":
                shown = repr(node.value.item()) if node.value.size == 1 else "array"
                lines.append(f"  {key} = const {shown}  : {_type(node)}")
                continue
            args = " ".join(name.get(id(i), "?") for i in node.inputs)
            attrs = "".join(f" {k}={_short(v)}" for k, v in node.attrs.items())
            lines.append(f"  {key} = {node.op} {args}{attrs}  : {_type(node)}")
        lines.append("  return " + ", ".join(name.get(id(o), "?") for o in self.outputs))
        return "\n".join(lines)


def _cast(fn):
    """A comparison as a 0/1 array of its first input's dtype (a mask to multiply by)."""
    return lambda a, *b: fn(a, *b).astype(a.dtype)


def _reduce(method):
    return lambda a, *, axis, keepdims: array_module(a).asarray(
        getattr(a, method)(axis=axis, keepdims=keepdims))


# The array each op computes, from its inputs' arrays and its attributes. Tracing runs them on
# the example inputs (to learn each result's shape and dtype), constant folding at compile
# time, the compiled plan at run time: one table, so all three compute the same thing.
KERNELS = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "neg": np.negative,
    "exp": np.exp, "log": np.log, "tanh": np.tanh,
    "relu": lambda a: np.maximum(a, 0),
    "pow": lambda a, *, exponent: np.power(a, exponent),
    "positive": _cast(lambda a: a > 0),   # relu's derivative: 1 where a > 0, else 0
    "equal": _cast(np.equal),             # 1 where a == b: max's winners
    "matmul": np.matmul,
    "sum": _reduce("sum"), "max": _reduce("max"),
    "reshape": lambda a, *, shape: a.reshape(shape),
    "transpose": lambda a, *, axes: a.transpose(axes),
    "getitem": lambda a, *, index: a[index],
    "stop_gradient": lambda a: a,
    "broadcast_to": lambda a, *, shape: array_module(a).broadcast_to(a, shape),
    "sum_to": lambda a, *, shape: unbroadcast(a, shape),
    "scatter_add": lambda g, *, shape, index: getitem_backward(g, shape, index),
}


class TracingError(TypeError):
    """Raised when traced code asks for a concrete value (`if x > 0`, `float(x)`)."""


_tracing = []  # the graphs being traced, innermost last


class Proxy:
    """A stand-in for a Tensor while a function is traced: each operation on it records a node
    in the graph being traced (through `record`) and returns the Proxy of the result.

    It has the Tensor API that a model's code uses (arithmetic with tensors, arrays and numbers
    on either side, @, exp, log, tanh, sigmoid, relu, sum, mean, max, reshape, transpose, T,
    indexing with a fixed index, detach) and knows its shape and dtype, so Python code that
    reads shapes runs as usual. It has no values: Python code that branches on one cannot be
    frozen into a static graph, so it raises TracingError.
    """

    __slots__ = ("node",)
    __array_ufunc__ = None  # `array + proxy` calls Proxy.__radd__ instead of NumPy's loop

    def __init__(self, node):
        self.node = node

    shape = property(lambda self: self.node.shape)
    dtype = property(lambda self: self.node.dtype)
    ndim = property(lambda self: len(self.node.shape))
    size = property(lambda self: int(np.prod(self.node.shape)))

    def __len__(self):
        return self.node.shape[0]

    def __repr__(self):
        return f"Proxy({self.node.op}: {_type(self.node)})"

    def __bool__(self):
        raise TracingError(
            "a traced value was used where Python needs a concrete one (an `if`, `while`, `and`, "
            "`or`...): the graph records operations, not the branches Python takes. Branch on "
            "shapes or on Python values instead, or compute both sides and select with arithmetic.")

    def _compare(self, other):
        raise TracingError(
            "comparing traced values (x > 0) is only useful to branch on, and a graph cannot hold "
            "the branches Python takes: branch on shapes or Python values, or use arithmetic "
            "(x.relu(), masks given as inputs)")

    __lt__ = __le__ = __gt__ = __ge__ = _compare

    def _concrete(self, *_):
        raise TracingError("a traced value has no concrete value (float(), .item(), .data): "
                           "the graph runs later, on whatever inputs it is given")

    __float__ = __int__ = __index__ = item = numpy = _concrete
    data = property(_concrete)

    # arithmetic: numbers, arrays and Tensors are constants, on either side
    def __add__(self, other): return record("add", self, other)
    def __radd__(self, other): return record("add", other, self)
    def __sub__(self, other): return record("sub", self, other)
    def __rsub__(self, other): return record("sub", other, self)
    def __mul__(self, other): return record("mul", self, other)
    def __rmul__(self, other): return record("mul", other, self)
    def __truediv__(self, other): return record("div", self, other)
    def __rtruediv__(self, other): return record("div", other, self)
    def __matmul__(self, other): return record("matmul", self, other)
    def __rmatmul__(self, other): return record("matmul", other, self)
    def __neg__(self): return record("neg", self)

    def __pow__(self, exponent):
        if not isinstance(exponent, int | float):
            raise TracingError("a traced value can only be raised to a constant number (x ** 2)")
        return record("pow", self, exponent=exponent)

    def exp(self): return record("exp", self)
    def log(self): return record("log", self)
    def tanh(self): return record("tanh", self)
    def relu(self): return record("relu", self)
    def detach(self): return record("stop_gradient", self)

    def sigmoid(self):  # exactly sigmoid, and stable for any x: no exp to overflow
        return (self * 0.5).tanh() * 0.5 + 0.5

    def sum(self, axis=None, keepdims=False):
        return record("sum", self, axis=_axes(axis, self.ndim), keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        count = self.size // max(int(np.prod(_reduced_shape(self.shape, axis, keepdims))), 1)
        return self.sum(axis, keepdims) * (1.0 / count)

    def max(self, axis=None, keepdims=False):
        return record("max", self, axis=_axes(axis, self.ndim), keepdims=keepdims)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], tuple | list):
            shape = tuple(shape[0])
        return record("reshape", self, shape=tuple(shape))

    def transpose(self, *axes):
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], tuple | list)):
            axes = tuple(axes[0] or ())
        axes = tuple(ax % self.ndim for ax in axes) or tuple(reversed(range(self.ndim)))
        return record("transpose", self, axes=axes)

    T = property(lambda self: self.transpose())

    def __getitem__(self, index):
        parts = index if isinstance(index, tuple) else (index,)
        if any(isinstance(i, Proxy) for i in parts):
            raise TracingError("a traced graph indexes with a fixed index, not a traced value")
        return record("getitem", self, index=index)


def _axes(axis, ndim):
    """axis as None or a sorted tuple of non-negative axes: one spelling per reduction."""
    if axis is None:
        return None
    axes = axis if isinstance(axis, tuple | list) else (axis,)
    return tuple(sorted(ax % ndim for ax in axes))


def _reduced_shape(shape, axis, keepdims):
    axes = _axes(axis, len(shape))
    axes = range(len(shape)) if axes is None else axes
    if keepdims:
        return tuple(1 if i in axes else n for i, n in enumerate(shape))
    return tuple(n for i, n in enumerate(shape) if i not in axes)


def _as_node(x, like):
    """The node of an operand: a Proxy's own, or a new constant for anything else (a number
    takes the dtype of the traced operand `like`, as with Tensors: float32 * 2.0 is float32)."""
    if isinstance(x, Proxy):
        return x.node
    if isinstance(x, Tensor):
        x = x.data
    if isinstance(x, int | float) and not isinstance(x, bool) and like.dtype.kind == "f":
        x = np.asarray(x, dtype=like.dtype)
    node = constant(x)
    _tracing[-1].nodes.append(node)
    return node


def _flatten(tree):
    """The leaves of nested lists and tuples, and a skeleton to put them back (_unflatten)."""
    if isinstance(tree, list | tuple):
        parts = [_flatten(t) for t in tree]
        return [leaf for leaves, _ in parts for leaf in leaves], (type(tree), [s for _, s in parts])
    return [tree], None


def _unflatten(skeleton, leaves):
    leaves = iter(leaves)

    def build(s):
        return next(leaves) if s is None else s[0](build(c) for c in s[1])

    return build(skeleton)


def _array(x):
    if isinstance(x, Tensor):
        return x.data
    return x if type(x) is np.ndarray else array_module(x).asarray(x)


def trace(fn, *args):
    """Run fn on Proxies and return the static Graph of what it computed.

    args: the example arguments, arrays or Tensors, or lists and tuples of them (a list of
    parameters). Each array becomes a placeholder: a runtime argument of the graph, which is
    specialised to its shape and dtype. Anything else fn uses (a captured array or Tensor, a
    number) becomes a constant. fn returns a Proxy or nested lists and tuples of them. Python
    runs fn once: its loops are unrolled and its branches frozen into the graph.
    """
    leaves, skeleton = _flatten(list(args))
    graph = Graph()
    for leaf in leaves:
        value = _array(leaf)
        graph.inputs.append(Node("input", (), {}, value.shape, value.dtype, value))
    graph.nodes = list(graph.inputs)
    _tracing.append(graph)
    try:
        result = fn(*_unflatten(skeleton, [Proxy(n) for n in graph.inputs]))
        outputs, graph.out_tree = _flatten(result)
        for out in outputs:
            if not isinstance(out, Proxy):
                raise TracingError(f"a traced function must return Proxies, not {type(out).__name__}")
        graph.outputs = [out.node for out in outputs]
    finally:
        _tracing.pop()
        for node in graph.nodes:  # the example values were only for tracing
            if node.op != "const":
                node.value = None
    return graph


def run_graph(graph, *arrays):
    """Run `graph` on `arrays` (one per placeholder) node by node with KERNELS, and return its
    outputs' arrays: the plain interpreter, the reference a compiled Plan is checked against."""
    values = {id(n): n.value for n in graph.nodes if n.op == "const"}
    values.update({id(n): _array(a) for n, a in zip(graph.inputs, arrays, strict=True)})
    for node in graph.nodes:
        if node.op not in ("input", "const"):
            inputs = [values[id(i)] for i in node.inputs]
            if node.op == "fused":
                values[id(node)] = _fused_kernel(node)(*inputs)
            else:
                values[id(node)] = KERNELS[node.op](*inputs, **node.attrs)
    return [values[id(o)] for o in graph.outputs]


def record(op, *operands, **attrs):
    """Record `op` applied to `operands` in the graph being traced; return the result's Proxy.

    operands: Proxies, or constants (numbers, arrays, Tensors), at least one a Proxy.
    attrs: the op's settings (axis=..., shape=...), passed to its kernel as keywords.
    Turns each operand into a node (`_as_node`, which also records new constants), computes
    the result on the inputs' example values with KERNELS[op] (which gives its shape and
    dtype), appends the new Node, holding that value, to the graph `_tracing[-1]`, and returns
    a Proxy of it.
    """
    like = next(x for x in operands if isinstance(x, Proxy))
    inputs = [_as_node(x, like) for x in operands]
    value = KERNELS[op](*[n.value for n in inputs], **attrs)
    value = array_module(value).asarray(value)  # NumPy returns scalars for 0-d results
    node = Node(op, inputs, attrs, value.shape, value.dtype, value)
    _tracing[-1].nodes.append(node)
    return Proxy(node)


def sum_to(g, shape):
    """g summed back to `shape` (the gradient of an input that broadcasting stretched);
    no node at all when g already has that shape."""
    shape = tuple(shape)
    return g if g.shape == shape else record("sum_to", g, shape=shape)


def broadcast_to(g, shape):
    shape = tuple(shape)
    return g if g.shape == shape else record("broadcast_to", g, shape=shape)


def positive(a):
    return record("positive", a)


def equal(a, b):
    return record("equal", a, b)


def _kept(g, a, axis, keepdims):
    """g (the gradient of a reduction of `a`) with the reduced axes put back with size 1."""
    return g if keepdims else g.reshape(_reduced_shape(a.shape, axis, True))


def _vjp_max(g, out, a, *, axis, keepdims):
    """Split each maximum's gradient equally among the entries that reach it (torch.amax)."""
    winners = equal(a, broadcast_to(_kept(out, a, axis, keepdims), a.shape))
    count = winners.sum(axis, keepdims=True)
    return (winners * broadcast_to(_kept(g, a, axis, keepdims) / count, a.shape),)


def _vjp_matmul(g, out, a, b):
    if a.ndim != 2 or b.ndim != 2:
        raise NotImplementedError("the graph differentiates matmul of 2-D matrices only")
    return g @ b.T, a.T @ g


# For each op, its vector-Jacobian products written with traced operations, so the backward
# pass is a graph too: rule(g, out, *inputs, **attrs) -> one gradient per input (None: none).
# ("mul" and "sum" are the notebook's exercise, registered below.)
VJPS = {
    "add": lambda g, out, a, b: (sum_to(g, a.shape), sum_to(g, b.shape)),
    "sub": lambda g, out, a, b: (sum_to(g, a.shape), sum_to(-g, b.shape)),
    "div": lambda g, out, a, b: (sum_to(g / b, a.shape), sum_to(-g * out / b, b.shape)),
    "neg": lambda g, out, a: (-g,),
    "pow": lambda g, out, a, *, exponent: (g * (a ** (exponent - 1) * exponent),),
    "exp": lambda g, out, a: (g * out,),
    "log": lambda g, out, a: (g / a,),
    "tanh": lambda g, out, a: (g * (1 - out * out),),
    "relu": lambda g, out, a: (g * positive(a),),
    "matmul": _vjp_matmul,
    "max": _vjp_max,
    "reshape": lambda g, out, a, *, shape: (g.reshape(a.shape),),
    "transpose": lambda g, out, a, *, axes: (g.transpose(tuple(np.argsort(axes).tolist())),),
    "getitem": lambda g, out, a, *, index: (record("scatter_add", g, shape=a.shape, index=index),),
    "broadcast_to": lambda g, out, a, *, shape: (sum_to(g, a.shape),),
    "sum_to": lambda g, out, a, *, shape: (broadcast_to(g, a.shape),),
    "scatter_add": lambda g, out, a, *, shape, index: (g[index],),
    "stop_gradient": lambda g, out, a: (None,),
    "positive": lambda g, out, a: (None,),       # piecewise constant: no gradient
    "equal": lambda g, out, a, b: (None, None),
}


def gradients(loss, wrt):
    """Append the backward pass to the graph being traced: the gradients of `loss` with
    respect to each Proxy in `wrt`, as Proxies (the graph-to-graph transformation that
    `Tensor.backward` performs on arrays, performed here on nodes).

    loss: a Proxy with one element. wrt: a list of Proxies (usually placeholders).
    Walks the nodes that `loss` depends on in reverse topological order; each node's gradient
    is the sum of what its users sent it, and VJPS[op] turns it into its inputs' gradients,
    recording new nodes. Gradients that reach nothing in `wrt` are recorded anyway (dead
    code: the dead-code pass removes them). A Proxy of `wrt` that loss does not depend on gets
    a zero gradient.
    """
    if loss.size != 1:
        raise ValueError(f"gradients() needs a loss with one element, not shape {loss.shape}")
    graph = _tracing[-1]
    needed = {id(loss.node)}  # the nodes loss depends on
    for node in reversed(graph.nodes):
        if id(node) in needed:
            needed.update(id(i) for i in node.inputs)
    grads = {id(loss.node): Proxy(_as_node(np.ones(loss.shape, loss.dtype), loss))}  # d(loss)/d(loss)
    for node in reversed(list(graph.nodes)):
        g = grads.pop(id(node), None)
        if g is None or id(node) not in needed or not node.inputs:
            if g is not None:
                grads[id(node)] = g  # a placeholder or constant keeps its gradient
            continue
        shares = VJPS[node.op](g, Proxy(node), *map(Proxy, node.inputs), **node.attrs)
        for inp, share in zip(node.inputs, shares, strict=True):
            if share is not None and inp.op != "const":
                grads[id(inp)] = share if id(inp) not in grads else grads[id(inp)] + share
    result = []
    for p in wrt:
        g = grads.get(id(p.node))
        result.append(g if g is not None else p * 0.0)
    return result


def vjp_mul(g, out, a, b):
    """The gradients of a and b in out = a * b (broadcast), given g = d(loss)/d(out).

    g, out, a, b: Proxies. Returns a tuple (ga, gb) of Proxies of a's and b's shapes: the
    products computed on the graph, each summed back to its input's shape with `sum_to`.
    """
    return sum_to(g * b, a.shape), sum_to(g * a, b.shape)


def vjp_sum(g, out, a, *, axis, keepdims):
    """The gradient of a in out = a.sum(axis=axis, keepdims=keepdims), given g.

    axis: None or a tuple of non-negative axes. Returns a tuple (ga,): every entry of a that
    went into a sum receives that sum's gradient. Put the summed axes back with `_kept`, then
    `broadcast_to` a's shape.
    """
    return (broadcast_to(_kept(g, a, axis, keepdims), a.shape),)


VJPS["mul"], VJPS["sum"] = vjp_mul, vjp_sum


def eliminate_dead_code(graph):
    """The graph without the nodes that no output depends on.

    Returns a new Graph with the same inputs (placeholders are the graph's signature: they stay,
    used or not), outputs and out_tree, and the live nodes in their original order; the nodes
    themselves are shared, not copied. Walk the nodes backwards from the outputs: a node is
    live when an output is it, or a live node uses it.
    """
    live = {id(node) for node in graph.outputs}
    for node in reversed(graph.nodes):
        if id(node) in live:
            live.update(id(i) for i in node.inputs)
    nodes = [n for n in graph.nodes if id(n) in live or n.op == "input"]
    return Graph(graph.inputs, nodes, graph.outputs, graph.out_tree)


def fold_constants(graph):
    """The graph with every node whose inputs are all constants replaced by a constant.

    Returns a new Graph (same inputs and out_tree). Going through the nodes in order, with
    `new` mapping each old node to its replacement: a node (other than a placeholder or a
    constant) whose replaced inputs are all constants becomes `constant(KERNELS[op](...))`,
    computed once, now; any other node whose inputs were replaced is rewired to the
    replacements (`node.with_inputs`); the rest stay as they are. The constants that only fed
    folded nodes are left in place: dead code, for eliminate_dead_code.
    """
    new, nodes = {}, []
    for node in graph.nodes:
        inputs = [new[id(i)] for i in node.inputs]
        if inputs and all(i.op == "const" for i in inputs):
            replacement = constant(KERNELS[node.op](*[i.value for i in inputs], **node.attrs))
        elif any(a is not b for a, b in zip(inputs, node.inputs, strict=True)):
            replacement = node.with_inputs(inputs)
        else:
            replacement = node
        new[id(node)] = replacement
        nodes.append(replacement)
    return Graph(graph.inputs, nodes, [new[id(o)] for o in graph.outputs], graph.out_tree)


# The ops that compute each entry from the same entry of their inputs, as NumPy ufuncs (and
# extra arguments) that can write into an existing array: what a fused node runs in place.
UFUNCS = {
    "add": (np.add, ()), "sub": (np.subtract, ()), "mul": (np.multiply, ()), "div": (np.divide, ()),
    "neg": (np.negative, ()), "exp": (np.exp, ()), "log": (np.log, ()), "tanh": (np.tanh, ()),
    "relu": (np.maximum, (0,)), "positive": (np.greater, (0,)), "equal": (np.equal, ()),
}


def _uses(graph):
    """How many times each node is used (by id): as an input of a node, or as an output."""
    uses = {}
    for node in graph.nodes:
        for i in node.inputs:
            uses[id(i)] = uses.get(id(i), 0) + 1
    for node in graph.outputs:
        uses[id(node)] = uses.get(id(node), 0) + 1
    return uses


def _elementwise(node):
    return node.op in UFUNCS or node.op == "pow"


def fuse_elementwise(graph):
    """The graph with each chain of elementwise ops fused into one "fused" node.

    A chain: elementwise nodes n0 -> n1 -> ... where each n(k+1) takes nk as one of its inputs,
    nk has no other use (and is not an output) and has n(k+1)'s shape and dtype. The fused
    node's inputs are the chain's other inputs, and its attribute `program` lists the steps:
    (op, args, attrs), an arg being the index of a fused input or -1 for the running result.
    The compiled kernel runs the steps into ONE buffer, in place: no temporary array per step.
    An input broadcast to the chain's shape is taken before the broadcast (ufuncs broadcast by
    themselves), which leaves the broadcast node dead: run eliminate_dead_code after.
    """
    uses = _uses(graph)
    chains = {}  # id(last node of a chain) -> the chain's nodes
    for node in graph.nodes:
        if not _elementwise(node):
            continue
        chain = []
        for i in node.inputs:
            if (id(i) in chains and uses[id(i)] == 1 and i.shape == node.shape
                    and i.dtype == node.dtype):
                chain = chains.pop(id(i))
                break
        chains[id(node)] = chain + [node]
    ends = {id(chain[-1]): chain for chain in chains.values() if len(chain) > 1}
    inner = {id(n) for chain in ends.values() for n in chain[:-1]}
    new, nodes = {}, []
    for node in graph.nodes:
        if id(node) in inner:
            continue
        if id(node) in ends:
            chain = ends[id(node)]
            members, external, program = {id(n) for n in chain}, [], []
            for step in chain:
                args = []
                for i in step.inputs:
                    if id(i) in members:
                        args.append(-1)
                    else:
                        source = new[id(i)]
                        if source.op == "broadcast_to" and source.shape == node.shape:
                            source = source.inputs[0]  # ufuncs broadcast by themselves
                        if all(e is not source for e in external):
                            external.append(source)
                        args.append(next(k for k, e in enumerate(external) if e is source))
                program.append((step.op, tuple(args), step.attrs))
            replacement = Node("fused", external, {"program": program}, node.shape, node.dtype)
        else:
            inputs = [new[id(i)] for i in node.inputs]
            changed = any(a is not b for a, b in zip(inputs, node.inputs, strict=True))
            replacement = node.with_inputs(inputs) if changed else node
        new[id(node)] = replacement
        nodes.append(replacement)
    return Graph(graph.inputs, nodes, [new[id(o)] for o in graph.outputs], graph.out_tree)


def _fused_kernel(node):
    """A fused node's program as one function (for run_graph; a Plan writes it out inline)."""
    def kernel(*inputs):
        out = array_module(inputs[0]).empty(node.shape, node.dtype)
        for op, args, attrs in node.attrs["program"]:
            ufunc, extra = _ufunc(op, attrs)
            ufunc(*[out if a < 0 else inputs[a] for a in args], *extra, out=out)
        return out

    return kernel


def _ufunc(op, attrs):
    return (np.power, (attrs["exponent"],)) if op == "pow" else UFUNCS[op]


def fuse_matmul_add(graph):
    """The graph with each c - k * (a @ b) and c + k * (a @ b) as one "gemm" node.

    k: a constant number; a @ b: a product of two matrices that nothing else uses; c: of the
    product's shape and dtype. c + alpha * (a @ b) is exactly what BLAS's gemm computes in ONE
    call (with beta = 1): the product is added into c as it is computed, with no array for
    a @ b and no passes to scale and add it. An SGD update, w - lr * (x.T @ g), is this
    pattern. The nodes it replaces are left dead, for eliminate_dead_code.
    """
    uses = _uses(graph)
    new, nodes = {}, []
    for node in graph.nodes:
        inputs = [new[id(i)] for i in node.inputs]
        replacement = node.with_inputs(inputs) if any(
            a is not b for a, b in zip(inputs, node.inputs, strict=True)) else node
        if node.op in ("add", "sub") and node.dtype.kind == "f" and len(node.shape) == 2:
            for c, scaled in [inputs, inputs[::-1]] if node.op == "add" else [inputs]:
                if scaled.op != "mul" or uses[id(scaled)] != 1 or c.shape != node.shape:
                    continue
                k, product = sorted(scaled.inputs, key=lambda n: n.op != "const")
                if (k.op == "const" and k.value.size == 1 and product.op == "matmul"
                        and uses[id(product)] == 1 and product.shape == node.shape
                        and all(len(n.shape) == 2 and n.dtype == node.dtype for n in (c, *product.inputs))):
                    alpha = float(k.value) * (1 if node.op == "add" else -1)
                    replacement = Node("gemm", (*product.inputs, c), {"alpha": alpha}, node.shape, node.dtype)
                    break
        new[id(node)] = replacement
        nodes.append(replacement)
    return Graph(graph.inputs, nodes, [new[id(o)] for o in graph.outputs], graph.out_tree)


KERNELS["gemm"] = lambda a, b, c, *, alpha: c + alpha * (a @ b)


def optimize(graph, passes=None, verbose=False):
    """graph after constant folding, dead-code elimination, the two fusions and dead-code
    elimination again (or after `passes`, in order); verbose prints the node counts after each."""
    if passes is None:
        passes = (fold_constants, eliminate_dead_code, fuse_matmul_add, fuse_elementwise, eliminate_dead_code)
    if verbose:
        print(f"  {'traced':<20} {len(graph):4d} nodes, {graph.count():4d} computing")
    for optimization in passes:
        graph = optimization(graph)
        if verbose:
            print(f"  {optimization.__name__:<20} {len(graph):4d} nodes, {graph.count():4d} computing")
    return graph


_VIEWS = {"reshape", "transpose", "getitem", "broadcast_to", "stop_gradient"}  # may share memory


def _kernel(node):
    """The function that computes `node` from its inputs' arrays, its attributes bound in,
    specialised once its inputs' shapes are known (the plan's job: decide once, run often)."""
    if node.op in ("sum", "max"):  # the array's method, without the wrapper
        return operator.methodcaller(node.op, axis=node.attrs["axis"], keepdims=node.attrs["keepdims"])
    if node.op == "sum_to":  # the axes to sum over, found now rather than at every call
        shape, target = node.inputs[0].shape, node.shape
        extra = len(shape) - len(target)
        axes = tuple(range(extra)) + tuple(extra + i for i, n in enumerate(target)
                                           if n == 1 and shape[extra + i] != 1)
        if all(n != 1 for n in target):
            return operator.methodcaller("sum", axis=axes)
        return lambda g: g.sum(axis=axes, keepdims=True).reshape(target)
    kernel = KERNELS[node.op]
    return functools.partial(kernel, **node.attrs) if node.attrs else kernel


def _fortran(m):
    """m for a Fortran (column-major) BLAS: (array, 0) if it is column-major already, (m.T, 1)
    if m is row-major (its transpose is column-major: BLAS is told to transpose it back)."""
    if m.flags.f_contiguous:
        return m, 0
    if m.flags.c_contiguous:
        return m.T, 1
    return np.asfortranarray(m), 0


def _blas_gemm(dtype):
    """BLAS's gemm for dtype (c = alpha a @ b + beta c, which NumPy does not expose), from SciPy
    (it comes with scikit-learn); None without SciPy or for other dtypes."""
    try:
        from scipy.linalg.blas import get_blas_funcs
    except ImportError:
        return None
    return get_blas_funcs("gemm", dtype=dtype) if np.dtype(dtype).char in "fd" else None


def _gemm_into(c, a, b, alpha, gemm=None):
    """c += alpha * (a @ b) in place, in one BLAS call (`gemm` from _blas_gemm) when c is a
    row-major NumPy matrix of gemm's dtype, else with NumPy (a temporary product); returns c."""
    if gemm is not None and type(c) is np.ndarray and c.flags.c_contiguous and a.dtype == b.dtype == c.dtype:
        # BLAS is column-major: c.T (column-major when c is row-major) += alpha * b.T @ a.T
        (bt, trans_b), (at, trans_a) = _fortran(b.T), _fortran(a.T)
        gemm(alpha, bt, at, beta=1.0, c=c.T, trans_a=trans_b, trans_b=trans_a, overwrite_c=1)
        return c
    c += alpha * (a @ b)
    return c


def _gemm_new(c, a, b, alpha):
    """c + alpha * (a @ b) in a new array, when c may not be overwritten: the product's own
    array, scaled and added to in place (no copy of c)."""
    out = a @ b
    out *= alpha
    out += c
    return out


class Plan:
    """A compiled graph: the graph written out as ONE Python function, run without looking at
    the graph again (as torch.fx's GraphModule does). `print(plan.source)` shows it.

    Each node is a line `v7 = k7(v3, x1)` calling its kernel, attributes bound in at compile
    time; constants are computed once and passed in as names; a fused node is a few lines of
    in-place ufunc calls on one array. Fused nodes and matrix products whose results stay
    inside the plan write into buffers allocated once, at compile time, and reused at every
    call; results that leave the plan are fresh arrays, or donated inputs. donate: the indices
    of inputs whose arrays the plan may overwrite (as jax.jit's donate_argnums): a gemm node
    whose c is a donated input, read by nothing after it, adds into that array in place (an
    SGD update of the parameters, without a copy). `plan(*arrays)` checks that the inputs
    have the shapes and dtypes the graph was traced for (its guard), then runs it; `plan.run`
    is the same function without the check.
    """

    def __init__(self, graph, reuse_buffers=True, donate=()):
        self.graph = graph
        consts = [n.value for n in graph.nodes if n.op == "const"]
        xp = array_module(consts[0]) if consts else np
        env = {"empty": xp.empty, "asarray": xp.asarray, "matmul": xp.matmul}
        results = {id(o) for o in graph.outputs}
        # which memory each node may share (views share their input's), and its last reader
        root, last = {}, {}
        for i, node in enumerate(graph.nodes):
            root[id(node)] = root[id(node.inputs[0])] if node.op in _VIEWS else id(node)
            for j in node.inputs:
                last[root[id(j)]] = i
        for node in graph.outputs:
            last[root[id(node)]] = len(graph.nodes)
        donated = {id(graph.inputs[k]) for k in donate}
        lines, name = [], {}
        for i, node in enumerate(graph.inputs):
            name[id(node)] = f"x{i}"
        for i, node in enumerate(graph.nodes):
            if node.op == "input":
                continue
            v = name[id(node)] = f"v{i}"
            if node.op == "const":
                env[v] = node.value
                continue
            args = [name[id(j)] for j in node.inputs]
            buffer = None
            if reuse_buffers and node.op in ("fused", "matmul") and id(node) not in results and node.shape:
                buffer = f"b{i}"
                env[buffer] = xp.empty(node.shape, node.dtype)
            if node.op == "fused":
                lines.append(f"{v} = {buffer or f'empty({node.shape}, {node.dtype.str!r})'}")
                for op, refs, attrs in node.attrs["program"]:
                    ufunc, extra = _ufunc(op, attrs)
                    env[ufunc.__name__] = ufunc
                    call = [v if r < 0 else args[r] for r in refs] + [repr(e) for e in extra]
                    lines.append(f"{ufunc.__name__}({', '.join(call)}, out={v})")
            elif node.op == "matmul" and buffer:
                lines.append(f"{v} = matmul({', '.join(args)}, out={buffer})")
            elif node.op == "gemm":
                c = node.inputs[2]
                in_place = id(c) in donated and last[id(c)] == i
                if in_place:
                    env[f"k{i}"] = functools.partial(_gemm_into, alpha=node.attrs["alpha"],
                                                     gemm=_blas_gemm(node.dtype) if xp is np else None)
                else:
                    env[f"k{i}"] = functools.partial(_gemm_new, alpha=node.attrs["alpha"])
                lines.append(f"{v} = k{i}({args[2]}, {args[0]}, {args[1]})")
            else:
                env[f"k{i}"] = _kernel(node)
                lines.append(f"{v} = k{i}({', '.join(args)})")
        outputs = []
        for node in graph.outputs:
            out = name[id(node)]
            if node.op in _VIEWS or node.op == "const":
                out += ".copy()"  # never hand out memory the plan (or a constant) keeps
            outputs.append(f"asarray({out})" if not node.shape else out)
        lines.append(f"return [{', '.join(outputs)}]")
        inputs = ", ".join(name[id(n)] for n in graph.inputs)
        self.source = f"def run({inputs}):\n" + "".join(f"    {line}\n" for line in lines)
        exec(self.source, env)  # our own code, made from the graph
        self.run = env["run"]

    def __call__(self, *arrays):
        if len(arrays) != len(self.graph.inputs):
            raise TypeError(f"the plan takes {len(self.graph.inputs)} arrays, not {len(arrays)}")
        for node, array in zip(self.graph.inputs, arrays, strict=True):
            if array.shape != node.shape or array.dtype != node.dtype:
                raise ValueError(f"the plan was compiled for inputs {_type(node)}, got "
                                 f"{array.dtype.name}{list(array.shape)}: trace it again")
        return self.run(*arrays)


def compile_graph(graph, reuse_buffers=True, donate=()):
    """The Plan that runs `graph` (see Plan)."""
    return Plan(graph, reuse_buffers, donate)


class jit:  # lower-case: it is used like a function, as jax.jit is
    """fn, traced, optimised and compiled once for each signature of its arguments.

    Calling it flattens the arguments (arrays, Tensors, nested lists and tuples of them) and
    looks up a plan by their structure, shapes and dtypes: a new batch size (or dtype) is a
    new signature, so fn is traced again and a new plan compiled and cached (`traces` counts
    them), as jax.jit and tf.function do. Returns arrays arranged as fn returned Proxies.
    donate_argnums: the positions of arguments whose arrays the plan may overwrite (pass the
    parameters of a training step, and use only the arrays it returns afterwards).
    """

    def __init__(self, fn, passes=None, donate_argnums=()):
        functools.update_wrapper(self, fn)
        self.fn, self.passes, self.donate_argnums = fn, passes, tuple(donate_argnums)
        self.plans, self.traces = {}, 0

    def __call__(self, *args):
        leaves, skeleton = _flatten(list(args))
        arrays = [_array(a) for a in leaves]
        key = (_hashable(skeleton), *[(a.shape, a.dtype.char) for a in arrays])
        plan = self.plans.get(key)
        if plan is None:  # a new signature: trace, optimise and compile again
            self.traces += 1
            counts = [len(_flatten(a)[0]) for a in args]
            starts = np.cumsum([0, *counts])
            donate = [k for i in self.donate_argnums for k in range(starts[i], starts[i + 1])]
            graph = optimize(trace(self.fn, *args), self.passes)
            plan = self.plans[key] = compile_graph(graph, donate=donate)
        return _unflatten(plan.graph.out_tree, plan.run(*arrays))


def _hashable(skeleton):
    return None if skeleton is None else (skeleton[0], tuple(_hashable(s) for s in skeleton[1]))
