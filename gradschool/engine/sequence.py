"""The engine's sequence layers: `Embedding` (a learned vector per token), the recurrent cells
`RNNCell` and `LSTMCell` and the `LSTM` that runs a cell over a sequence, a numerically stable
`softmax`, and causal self-attention (`causal_attention`, one head, and the multi-head layer
`CausalSelfAttention`), in which position t sees only positions 0..t. Everything is written
with `Tensor` operations, so backpropagation through time and through attention is the
ordinary backward pass of the unrolled graph, and every gradient is the engine's own.

API (`from gradschool.engine import Embedding, LSTMCell, LSTM, RNNCell, softmax, ...`):

    softmax(x, axis=-1): Tensor in, Tensor out (same shape and dtype); the axis' maximum is
        subtracted first, so any scores work, and -inf scores get probability 0.
    Embedding(num_embeddings, embedding_dim, *, rng=None): weight (num, dim) N(0, 1) float32;
        emb(indices) -> indices.shape + (dim,), indices integers (array, list or Tensor).
    RNNCell(input_size, hidden_size, *, rng=None): h' = tanh(x @ weight_ih + h @ weight_hh
        + bias); cell(x, h=None).
    LSTMCell(input_size, hidden_size, *, rng=None): weight_ih (in, 4H), weight_hh (H, 4H),
        bias (4H,), gates in torch's order i, f, g, o, forget-gate bias + 1 at init;
        cell(x (N, in), state=None) -> (h, c), each (N, H); state None means zeros.
    LSTM(input_size, hidden_size, *, rng=None): lstm(x (N, T, in), state=None) ->
        (outputs (N, T, H), (h, c)).
    causal_mask(size, dtype=float32, xp=np): (size, size) array, 0 on and below the diagonal,
        -inf above.
    causal_attention(q, k, v): Tensors (..., T, d) -> softmax(q k^T / sqrt(d) + mask) v,
        as torch's scaled_dot_product_attention(q, k, v, is_causal=True).
    CausalSelfAttention(dim, heads=1, *, rng=None): attn(x (N, T, dim)) -> (N, T, dim);
        layers qkv = Linear(dim, 3 dim) and proj = Linear(dim, dim).

Generated from solutions/02_engine/06_sequences.ipynb by `make export`:
edit the notebook, not this file.
"""

import math

import numpy as np

from gradschool.engine.nn import Linear, Module, Parameter
from gradschool.engine.tensor import Tensor, array_module, stack


def _uniform(rng, size, hidden_size):
    """float32 weights from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)): PyTorch's recurrent
    initialisation, which keeps a state's scale about the same from step to step."""
    bound = 1.0 / math.sqrt(hidden_size)
    return rng.uniform(-bound, bound, size).astype(np.float32)


class Embedding(Module):
    """A lookup table of learned vectors: row i of `weight` (num_embeddings, embedding_dim) is
    the vector of token i. Same as a Linear layer applied to one-hot inputs, without building
    them: picking a row is indexing, and indexing's backward pass adds each output's gradient
    to the row it came from (a token used twice gets both gradients). The weight is drawn from
    N(0, 1) (as torch.nn.Embedding), float32, from the generator `rng` (None: a fresh one)."""

    def __init__(self, num_embeddings, embedding_dim, *, rng=None):
        rng = np.random.default_rng() if rng is None else rng
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(rng.standard_normal((num_embeddings, embedding_dim)).astype(np.float32))

    def forward(self, indices):
        """indices: integers in [0, num_embeddings), any shape (an array, a list or a Tensor).
        Returns a Tensor of shape indices.shape + (embedding_dim,), in the weight's dtype.
        Raises TypeError for indices that are not integers."""
        xp = array_module(self.weight.data)
        indices = xp.asarray(indices.data if isinstance(indices, Tensor) else indices)
        if indices.dtype.kind not in "iu":
            raise TypeError(f"Embedding: indices must be integers, got {indices.dtype}")
        return self.weight[indices]

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along `axis`, as a Tensor of x's shape and dtype, for any scores.

    x: a Tensor. Stable: the maximum along the axis is subtracted first, as a constant (an
    array, not a Tensor: softmax does not change when every score moves by the same amount,
    so it needs no gradient), so exp never overflows; scores of -inf (a mask) get
    probability 0. Built from Tensor operations, so its gradient comes with them.
    """
    shifted = x - x.data.max(axis=axis, keepdims=True)
    e = shifted.exp()
    return e / e.sum(axis=axis, keepdims=True)


class RNNCell(Module):
    """The plain (Elman) recurrent cell: h' = tanh(x @ weight_ih + h @ weight_hh + bias).

    Weights (input_size, hidden_size) and (hidden_size, hidden_size), bias (hidden_size,),
    all from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)) as in torch.nn.RNNCell (whose
    weights are the transposes, and whose two biases add up to this one). forward(x, h=None):
    x (N, input_size), h (N, hidden_size) or None for zeros; returns the new h.
    """

    def __init__(self, input_size, hidden_size, *, rng=None):
        rng = np.random.default_rng() if rng is None else rng
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = Parameter(_uniform(rng, (input_size, hidden_size), hidden_size))
        self.weight_hh = Parameter(_uniform(rng, (hidden_size, hidden_size), hidden_size))
        self.bias = Parameter(_uniform(rng, hidden_size, hidden_size))

    def forward(self, x, h=None):
        gates = x @ self.weight_ih + self.bias
        return (gates if h is None else gates + h @ self.weight_hh).tanh()

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}"


class LSTMCell(Module):
    """A long short-term memory cell (Hochreiter and Schmidhuber, 1997), one time step.

    State: h (the output, N x H) and c (the cell, N x H). From x (N, input_size) and h, one
    matrix product makes the four gates' pre-activations z = x @ weight_ih + h @ weight_hh +
    bias, of shape (N, 4H), in torch's order i, f, g, o (columns [0, H), [H, 2H), ...):
        i = sigmoid(z_i)  input gate: how much of the candidate to write
        f = sigmoid(z_f)  forget gate: how much of the old cell to keep
        g = tanh(z_g)     the candidate
        o = sigmoid(z_o)  output gate: how much of the cell to show
        c' = f * c + i * g,    h' = o * tanh(c').
    The cell is updated by adding, not by a matrix product and a squashing function, so a
    gradient flows back along c multiplied only by the forget gates: it survives as long as
    they stay near 1. Weights (input_size, 4H) and (H, 4H) and bias (4H,) from
    U(-1/sqrt(H), 1/sqrt(H)) as torch.nn.LSTMCell (its weights are the transposes, its two
    biases add up to this one), plus 1 on the forget gate's bias, so that the cell remembers
    by default at the start of training (Jozefowicz et al., 2015). float32.
    """

    def __init__(self, input_size, hidden_size, *, rng=None):
        rng = np.random.default_rng() if rng is None else rng
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = Parameter(_uniform(rng, (input_size, 4 * hidden_size), hidden_size))
        self.weight_hh = Parameter(_uniform(rng, (hidden_size, 4 * hidden_size), hidden_size))
        bias = _uniform(rng, 4 * hidden_size, hidden_size)
        bias[hidden_size:2 * hidden_size] += 1.0  # the forget gate starts mostly open
        self.bias = Parameter(bias)

    def forward(self, x, state=None):
        """x: a Tensor (N, input_size). state: (h, c), Tensors (N, hidden_size), or None for
        zeros (of the weights' dtype). Returns the new (h, c), Tensors (N, hidden_size)."""
        hs = self.hidden_size
        z = x @ self.weight_ih + self.bias
        if state is None:
            c = 0.0  # h = c = 0: nothing to add from the previous step
        else:
            h, c = state
            z = z + h @ self.weight_hh
        i = z[:, :hs].sigmoid()
        f = z[:, hs:2 * hs].sigmoid()
        g = z[:, 2 * hs:3 * hs].tanh()
        o = z[:, 3 * hs:].sigmoid()
        c = f * c + i * g
        return o * c.tanh(), c

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}"


class LSTM(Module):
    """An LSTMCell run over a sequence: (N, T, input_size) -> outputs (N, T, hidden_size) and
    the last state (h, c). One graph node per operation and time step: backpropagation
    through time is the ordinary backward pass over the unrolled loop."""

    def __init__(self, input_size, hidden_size, *, rng=None):
        self.cell = LSTMCell(input_size, hidden_size, rng=rng)

    def forward(self, x, state=None):
        outputs = []
        for t in range(x.shape[1]):
            state = self.cell(x[:, t], state)
            outputs.append(state[0])
        return stack(outputs, axis=1), state


def causal_mask(size, dtype=np.float32, xp=np):
    """A (size, size) array to add to attention scores: 0 where query t may look at key s
    (s <= t), -inf where it may not (s > t, the future), in `dtype` so that adding it keeps
    the scores' dtype. After softmax, -inf becomes exactly 0."""
    return xp.triu(xp.full((size, size), -np.inf, dtype=dtype), k=1)


def causal_attention(q, k, v):
    """Scaled dot-product attention in which position t sees only positions 0..t.

    q, k, v: Tensors (..., T, d) (any leading batch or head axes, the same for all three).
    Returns softmax(q @ k^T / sqrt(d) + causal_mask(T)) @ v, a Tensor (..., T, d) of q's
    dtype: output t is an average of the values v[0..t], weighted by how well their keys
    match query t. The same as torch.nn.functional.scaled_dot_product_attention(q, k, v,
    is_causal=True).
    """
    size, d = q.shape[-2], q.shape[-1]
    axes = tuple(range(k.ndim - 2)) + (k.ndim - 1, k.ndim - 2)  # swap the last two axes
    scores = (q @ k.transpose(axes)) * (1.0 / math.sqrt(d))
    scores = scores + causal_mask(size, scores.dtype, array_module(q.data))
    return softmax(scores, axis=-1) @ v


class CausalSelfAttention(Module):
    """Multi-head causal self-attention over x (N, T, dim): one Linear layer makes queries,
    keys and values for every position, `heads` heads of size dim // heads attend
    independently (causal_attention on (N, heads, T, dim // heads)), and a second Linear
    layer mixes the heads' outputs back to dim. Several small heads can each follow a
    different relation (the previous letter, the start of the word, ...) for the cost of one."""

    def __init__(self, dim, heads=1, *, rng=None):
        if dim % heads:
            raise ValueError(f"CausalSelfAttention: dim {dim} is not a multiple of heads {heads}")
        rng = np.random.default_rng() if rng is None else rng
        self.dim, self.heads = dim, heads
        self.qkv = Linear(dim, 3 * dim, rng=rng)
        self.proj = Linear(dim, dim, rng=rng)

    def forward(self, x):
        n, t, dim = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, dim // self.heads).transpose(2, 0, 3, 1, 4)
        out = causal_attention(qkv[0], qkv[1], qkv[2])  # (N, heads, T, dim // heads)
        return self.proj(out.transpose(0, 2, 1, 3).reshape(n, t, dim))

    def extra_repr(self):
        return f"{self.dim}, heads={self.heads}"
