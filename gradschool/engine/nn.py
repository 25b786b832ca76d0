"""The engine's `nn`: networks built from `Tensor`. A `Module` finds its parameters by looking
at its attributes (a `Parameter`, a sub-`Module`, or a list of them), so a model never lists
them by hand; the same walk switches every layer between training and evaluation and saves
or restores a model as a dictionary of arrays. On it: layers (Linear, Sequential, ReLU, Tanh,
GELU, Dropout, LayerNorm), losses (cross_entropy, mse_loss) and initialisations
(xavier_uniform, he_normal). Every layer is a few lines of Tensor operations, so its backward
pass is the Tensor's own.

API (`from gradschool.engine import Module, Parameter, Linear, ...`):

    Parameter(data): a Tensor that always requires grad (Python data -> float32; an array
        keeps its dtype).
    Module: m(*args) calls m.forward(*args); m.parameters() (list, attribute order, depth
        first, each parameter once); m.named_parameters() ([("layers.0.weight", p), ...]);
        m.zero_grad() (every .grad = None); m.train() / m.eval() (set .training on every
        sub-module; return m); m.children(); m.state_dict() ({name: NumPy copy});
        m.load_state_dict(state) (strict: KeyError for missing or unexpected names,
        ValueError for a shape mismatch; copies in place, in the parameter's dtype).
    Linear(in_features, out_features, *, bias=True, rng=None): y = x @ weight + bias,
        weight (in, out) He-normal from rng (a np.random.Generator), float32; bias zeros.
    Sequential(*modules) (indexable, len, iterable), ReLU(), Tanh(), GELU() (tanh
        approximation), Dropout(p, rng=None) (inverted; identity in eval),
        LayerNorm(dim, eps=1e-5) (learnable weight and bias over the last axis).
    cross_entropy(logits (n, k), targets (n,) ints): mean over the batch, stable for any
        logits. mse_loss(pred, target): mean squared error, same shapes required.
    xavier_uniform(fan_in, fan_out, rng), he_normal(fan_in, fan_out, rng): float32 arrays.
    state_dict(module), load_state_dict(module, state): the functions behind the methods.

Generated from solutions/02_engine/03_nn.ipynb by `make export`:
edit the notebook, not this file.
"""

import math

import numpy as np

from gradschool.engine.tensor import Tensor, array_module


class Parameter(Tensor):
    """A tensor that a module learns: it always requires gradients.

    Being its own type is what lets a `Module` find its parameters among its attributes
    (an input or a cached constant is a plain `Tensor`). Python numbers and lists become
    float32; an array keeps its dtype (and is not copied).
    """

    __slots__ = ()

    def __init__(self, data):
        super().__init__(data, requires_grad=True)


class Module:
    """The base of every layer and model: a forward pass plus bookkeeping done once for all.

    A subclass sets its parameters and sub-modules as attributes in `__init__` and writes
    `forward`; `Module` finds them by looking at the attributes (a `Parameter`, a `Module`,
    or a list or tuple of them), so a model never lists its parameters by hand.
    """

    training = True  # train() and eval() set it on every module of a model

    def __call__(self, *args):
        return self.forward(*args)

    def forward(self, *args):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def children(self):
        """The sub-modules held directly in attributes (lists and tuples looked into)."""
        for value in vars(self).values():
            items = value if isinstance(value, list | tuple) else (value,)
            yield from (item for item in items if isinstance(item, Module))

    def named_parameters(self):
        """[(dotted name, parameter)] for every parameter of this module and its sub-modules.

        Attributes in the order they were set, depth first: a `Parameter` attribute `w` is
        named "w", one inside a sub-module `fc` is "fc.w", one inside the i-th module of a
        list `layers` is "layers.i.w". A parameter reached twice (a layer used twice, a
        weight shared between layers) is listed once, under the first name that reached it.
        """
        found, seen = [], set()

        def visit(module, prefix):
            for name, value in vars(module).items():
                items = enumerate(value) if isinstance(value, list | tuple) else [(None, value)]
                for i, item in items:
                    full = prefix + name if i is None else f"{prefix}{name}.{i}"
                    if isinstance(item, Parameter) and id(item) not in seen:
                        seen.add(id(item))
                        found.append((full, item))
                    elif isinstance(item, Module):
                        visit(item, full + ".")

        visit(self, "")
        return found

    def parameters(self):
        """Every parameter, once each, in the order of named_parameters()."""
        return [p for _, p in self.named_parameters()]

    def zero_grad(self):
        """Forget the gradients of the last backward pass (they accumulate otherwise)."""
        for p in self.parameters():
            p.grad = None

    def train(self, mode=True):
        """Put this module and all its sub-modules in training mode (or, mode=False, eval)."""
        self.training = bool(mode)
        for child in self.children():
            child.train(mode)
        return self

    def eval(self):
        """Evaluation mode: layers such as Dropout behave deterministically. Returns self."""
        return self.train(False)

    def state_dict(self):
        """{dotted name: a NumPy copy of the parameter's data}: what saving a model saves."""
        return state_dict(self)

    def load_state_dict(self, state):
        """Copy the values of `state` into the parameters, in place (see load_state_dict)."""
        load_state_dict(self, state)
        return self

    def __repr__(self):
        head = f"{type(self).__name__}({self.extra_repr()}"
        lines = [line for child in self.children() for line in repr(child).split("\n")]
        return head + "".join(f"\n  {line}" for line in lines) + ("\n)" if lines else ")")

    def extra_repr(self):
        return ""


def xavier_uniform(fan_in, fan_out, rng=None):
    """A (fan_in, fan_out) float32 weight matrix drawn from U(-a, a), a = sqrt(6 / (fan_in + fan_out)).

    Glorot and Bengio's choice for tanh and sigmoid layers: it keeps the variance of the
    activations (forward) and of the gradients (backward) about the same from layer to layer.
    rng: a np.random.Generator (None: a fresh, unseeded one).
    """
    rng = np.random.default_rng() if rng is None else rng
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32)


def he_normal(fan_in, fan_out, rng=None):
    """A (fan_in, fan_out) float32 weight matrix drawn from N(0, 2 / fan_in).

    He et al.'s choice for ReLU layers: ReLU zeroes half of its inputs, so the weights need
    twice the variance of 1 / fan_in to keep the activations' scale from layer to layer.
    rng: a np.random.Generator (None: a fresh, unseeded one).
    """
    rng = np.random.default_rng() if rng is None else rng
    return (rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / fan_in)).astype(np.float32)


class Linear(Module):
    """y = x @ weight + bias, with weight of shape (in_features, out_features).

    The weight is stored (in, out), not PyTorch's (out, in), so that a batch of rows
    x (n, in) needs no transpose. Initialisation: He normal (`he_normal`), suited to the
    ReLU networks of the course, from the generator `rng` (None: a fresh, unseeded one);
    the bias starts at zero. bias=False: no bias (the attribute `bias` is then None).
    """

    def __init__(self, in_features, out_features, *, bias=True, rng=None):
        rng = np.random.default_rng() if rng is None else rng
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(he_normal(in_features, out_features, rng))
        self.bias = Parameter(np.zeros(out_features, dtype=np.float32)) if bias else None

    def forward(self, x):
        y = x @ self.weight
        return y if self.bias is None else y + self.bias

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Sequential(Module):
    """Modules applied one after the other: Sequential(Linear(64, 32), ReLU(), Linear(32, 10)).

    Indexable, len() and iterable; the parameters of its i-th module are named "layers.i.…".
    """

    def __init__(self, *modules):
        self.layers = list(modules)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def __getitem__(self, index):
        return Sequential(*self.layers[index]) if isinstance(index, slice) else self.layers[index]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)


class ReLU(Module):
    """max(x, 0), entry by entry."""

    def forward(self, x):
        return x.relu()


class Tanh(Module):
    """tanh(x), entry by entry."""

    def forward(self, x):
        return x.tanh()


class GELU(Module):
    """The Gaussian error linear unit, x * Phi(x), in its tanh approximation (as in GPT-2):
    0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))). Smooth where ReLU has a kink; built
    from Tensor operations, so its gradient comes for free."""

    def forward(self, x):
        inner = (x + 0.044715 * (x * x * x)) * math.sqrt(2.0 / math.pi)
        return 0.5 * x * (1.0 + inner.tanh())


class Dropout(Module):
    """Inverted dropout: in training, zero each entry with probability p and scale the
    survivors by 1 / (1 - p), so that the expected value of every entry is unchanged; in
    eval mode, the identity. rng: a np.random.Generator for the masks (None: a fresh one)."""

    def __init__(self, p=0.5, rng=None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be a probability in [0, 1], got {p}")
        self.p = float(p)
        self.rng = np.random.default_rng() if rng is None else rng

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        xp = array_module(x.data)
        keep = xp.asarray(self.rng.random(x.shape) >= self.p)
        return x * (keep * (1.0 / (1.0 - self.p))).astype(x.dtype)

    def extra_repr(self):
        return f"p={self.p}"


def cross_entropy(logits, targets):
    """The mean over the batch of -log softmax(logits)[i, targets[i]], as a 0-d Tensor.

    logits: a Tensor (n, k) of scores. targets: n integer class labels in [0, k), shape
    (n,) (an array, a list or a Tensor; a (n, 1) column is refused with a ValueError, not
    silently broadcast). Stable for any logits: each row's maximum is subtracted first,
    as a constant (softmax does not change when every score moves by the same amount), so
    exp never overflows. The loss has the logits' dtype.
    """
    logits = logits if isinstance(logits, Tensor) else Tensor(logits)
    xp = array_module(logits.data)
    targets = xp.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if logits.ndim != 2 or targets.shape != (logits.shape[0],):
        raise ValueError(f"cross_entropy: logits must be (n, k) and targets (n,); got logits "
                         f"{logits.shape} and targets {targets.shape}")
    shifted = logits - logits.data.max(axis=1, keepdims=True)  # an array: a constant
    log_probs = shifted - shifted.exp().sum(axis=1, keepdims=True).log()
    return -log_probs[xp.arange(len(targets)), targets].mean()


def mse_loss(pred, target):
    """The mean squared error, mean((pred - target)^2), as a 0-d Tensor. pred and target
    must have the same shape: (n,) against (n, 1) would broadcast to (n, n) and silently
    average the wrong thing, so it is a ValueError."""
    target = target if isinstance(target, Tensor) else Tensor(target)
    if pred.shape != target.shape:
        raise ValueError(f"mse_loss: pred has shape {pred.shape} but target has shape "
                         f"{target.shape}; they must be the same")
    diff = pred - target
    return (diff * diff).mean()


class LayerNorm(Module):
    """Normalise each row over its last axis to mean 0 and variance 1, then scale and shift:
    y = (x - mean) / sqrt(var + eps) * weight + bias, with the biased variance (divide by
    dim, as PyTorch does) and learnable weight (ones) and bias (zeros) of shape (dim,)."""

    def __init__(self, dim, eps=1e-5):
        self.dim, self.eps = dim, eps
        self.weight = Parameter(np.ones(dim, dtype=np.float32))
        self.bias = Parameter(np.zeros(dim, dtype=np.float32))

    def forward(self, x):
        centred = x - x.mean(axis=-1, keepdims=True)
        var = (centred * centred).mean(axis=-1, keepdims=True)
        return centred / (var + self.eps) ** 0.5 * self.weight + self.bias

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"


def state_dict(module):
    """{dotted name: a NumPy copy of the data} for every parameter of `module`.

    Copies, so that training on afterwards does not change what was saved; NumPy (also
    from a GPU), so that np.savez can write it.
    """
    return {name: np.array(p.numpy(), copy=True) for name, p in module.named_parameters()}


def load_state_dict(module, state):
    """Copy `state` (as state_dict returns it) into the parameters of `module`, in place.

    Strict: a name of the module missing from `state`, or a name in `state` that the module
    lacks, raises KeyError; a value whose shape differs from its parameter's raises
    ValueError. Nothing is changed unless every check passes. Values are converted to the
    parameter's dtype and written into its existing array, so whatever holds the parameter
    (an optimiser) sees the new values.
    """
    params = dict(module.named_parameters())
    missing = [name for name in params if name not in state]
    unexpected = [name for name in state if name not in params]
    if missing or unexpected:
        raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
    for name, p in params.items():
        if tuple(np.shape(state[name])) != p.shape:
            raise ValueError(f"load_state_dict: {name!r} has shape {tuple(np.shape(state[name]))} "
                             f"in the state but {p.shape} in the module")
    for name, p in params.items():
        p.data[...] = array_module(p.data).asarray(state[name], dtype=p.data.dtype)
