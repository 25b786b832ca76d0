"""The sequence project (a character model of first names) in JAX, with Flax NNX for the model and
Optax for the optimiser, written with the framework's own idioms and checked against the
project's spec. Everything it needs to agree on (data, architecture, optimiser, batch size,
epochs, metric, target, initial weights) is read from `SPEC = projects.load("sequences")` when a
function runs, never copied, so the PyTorch, Keras, JAX and engine versions cannot quietly drift
apart.

JAX idioms: the model is an `nnx.Module` of `nnx.Embed`, `nnx.LSTMCell` and `nnx.Linear`; the
cell runs over the time steps inside `jax.lax.scan` (one compiled loop body, not twelve copies of
it). `nnx.LSTMCell` keeps one `nnx.Linear` per gate and per input (ii, if_, ig, io without a bias;
hi, hf, hg, ho with one), so the canonical (in, 4 units) matrices are split by gate on their way
in and concatenated on their way out. The loss is a pure function of the parameters, counted only
where the target is not -1, differentiated by `jax.value_and_grad`; the training step is one
`jax.jit`-compiled pure function with `optax.adam`; the input pipeline is a NumPy batch iterator
shuffled by explicit `jax.random` keys, its last batch padded with rows of target -1 that the
loss already skips; names are drawn with `jax.random.categorical` from explicit keys; a
checkpoint is the model's state as msgpack (`flax.serialization`).

The contract shared by every implementation (solutions/README.md, Part 3):

    first_batch()                      (x, y) NumPy: the first SPEC.batch_size training names, encoded
    build_model()                      a fresh CharLSTM (an nnx.Module) from SPEC.layers, on the device
    set_weights(model, weights)        canonical dict -> the model's Variables (the LSTM split by gate)
    get_weights(model)                 the model -> canonical dict of float32 NumPy arrays
    first_batch_loss_and_gradients()   (float, canonical dict) from SPEC.initial_weights()
    train(model, epochs=None)          Adam on shuffled batches; {"loss", "val_loss", "seconds"}
    evaluate(model, x, y)              nats per character over the targets that are not -1
    save(model, path), load(path)      the state as msgpack; a fresh model from it
    sample(model, count, key, temperature=1.0)    new names, from an explicit jax.random key

The device is DEVICE (a jax.Device), or, when it is None, the runtime's choice
(GRADSCHOOL_DEVICE=cpu|gpu|auto), made at first use.

Generated from solutions/05_sequences/sequences_jax.ipynb by `make export`:
edit the notebook, not this file.
"""

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, serialization

from gradschool import projects, runtime
from gradschool.projects.spec import LSTM, Dense, Embedding


def _device():
    """DEVICE, or the runtime's choice when it was not set."""
    global DEVICE
    if DEVICE is None:
        DEVICE = runtime.setup(quiet=True, install=False).jax_device()
    return DEVICE


SPEC = projects.load("sequences")  # read when each function runs: never copy a number out of it
DEVICE = None  # a jax.Device; None: the runtime's choice (GRADSCHOOL_DEVICE), made at first use


def _splits():
    """{"train", "val", "test"}: (x, y) int64 NumPy arrays (n, 12), encoded by Spec.prepare:
    x = boundary + letters, padded with the boundary token 0; y = letters + boundary, padded with -1."""
    return SPEC.prepare()


def first_batch():
    """The first SPEC.batch_size training names after preprocessing, unshuffled: (x, y) NumPy."""
    return SPEC.first_batch()


class CharLSTM(nnx.Module):
    """Embedding -> LSTM (its output at every step) -> Dense logits at every step, from a spec's layers."""

    def __init__(self, layers, rngs):
        kinds = tuple(type(layer) for layer in layers)
        if kinds != (Embedding, LSTM, Dense) or layers[2].activation is not None:
            raise TypeError(f"a character model is Embedding, LSTM, Dense (logits), not {layers!r}")
        embedding, lstm, dense = layers
        self.embedding = nnx.Embed(embedding.vocab, embedding.dim, rngs=rngs)
        self.lstm = nnx.LSTMCell(embedding.dim, lstm.units, rngs=rngs)
        self.dense = nnx.Linear(lstm.units, dense.units, rngs=rngs)

    def initial_state(self, batch):
        """The carry before the first step: (c, h), zeros (batch, units)."""
        zeros = jnp.zeros((batch, self.lstm.hidden_features), jnp.float32)
        return zeros, zeros

    def __call__(self, x):
        """Token indices (batch, steps) -> logits (batch, steps, vocab)."""
        inputs = jnp.swapaxes(self.embedding(x), 0, 1)  # (steps, batch, dim): scan walks the first axis

        def step(carry, x_t):  # one time step: ((c, h), x_t) -> ((c, h), h)
            return self.lstm(carry, x_t)

        _, outputs = jax.lax.scan(step, self.initial_state(x.shape[0]), inputs)
        return self.dense(jnp.swapaxes(outputs, 0, 1))


def build_model():
    """A fresh CharLSTM from SPEC.layers, its arrays on the device. Its weights are Flax's random
    start from nnx.Rngs(SPEC.seed): set_weights puts the project's in."""
    with jax.default_device(_device()):
        return CharLSTM(SPEC.layers, nnx.Rngs(SPEC.seed))


def _canonical_shapes(model):
    """Each canonical name and the shape the model needs for it, from the model's own sizes."""
    vocab, dim = model.embedding.embedding.shape
    units, out = model.dense.kernel.shape
    return {"embedding_0/table": (vocab, dim), "lstm_0/kernel": (dim, 4 * units),
            "lstm_0/recurrent": (units, 4 * units), "lstm_0/bias": (4 * units,),
            "dense_0/kernel": (units, out), "dense_0/bias": (out,)}


def _variables(model):
    """{canonical name: [Variable, ...]}: the Variables that hold each canonical array, side by side
    along its last axis; for the LSTM, nnx.LSTMCell's gate layers in the order i, f, g, o."""
    cell = model.lstm
    return {"embedding_0/table": [model.embedding.embedding],
            "lstm_0/kernel": [cell.ii.kernel, cell.if_.kernel, cell.ig.kernel, cell.io.kernel],
            "lstm_0/recurrent": [cell.hi.kernel, cell.hf.kernel, cell.hg.kernel, cell.ho.kernel],
            "lstm_0/bias": [cell.hi.bias, cell.hf.bias, cell.hg.bias, cell.ho.bias],  # ii..io have none
            "dense_0/kernel": [model.dense.kernel], "dense_0/bias": [model.dense.bias]}


def set_weights(model, weights):
    """Put canonical weights into the model: each canonical array, cut by gate where the model keeps
    it in several Variables, copied onto the device into the same Variables. ValueError when a name
    is missing or a shape is wrong."""
    shapes = _canonical_shapes(model)
    for key, variables in _variables(model).items():
        if key not in weights:
            raise ValueError(f"the weights have no {key!r} (canonical names: {sorted(weights)})")
        value = np.array(weights[key], dtype=np.float32)  # a copy: device_put may share its memory
        if value.shape != shapes[key]:
            raise ValueError(f"{key} has shape {value.shape}; this model needs {shapes[key]}")
        for variable, part in zip(variables, np.split(value, len(variables), axis=-1), strict=True):
            variable[...] = jax.device_put(part, _device())


def get_weights(model):
    """The model's weights as a canonical dict of float32 NumPy arrays (writable copies), the
    LSTM's gate layers concatenated in the order i, f, g, o."""
    return {key: np.concatenate([np.array(v[...], dtype=np.float32) for v in variables], axis=-1)
            for key, variables in _variables(model).items()}


def loss_fn(params, graphdef, x, y):
    """The softmax cross-entropy of the model nnx.merge(graphdef, params) on token indices x
    (batch, steps), averaged over the positions whose target y (batch, steps) is not -1 (nats per
    character): a pure function of its arguments, to differentiate with respect to params."""
    logits = nnx.merge(graphdef, params)(x)
    counted = y >= 0
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(counted, y, 0))
    return jnp.sum(losses * counted) / jnp.sum(counted)


_loss_and_gradients = jax.jit(jax.value_and_grad(loss_fn), static_argnums=1)  # compiled once per shape


def first_batch_loss_and_gradients():
    """(loss, gradients) on first_batch() from SPEC.initial_weights(): the loss of loss_fn as a
    Python float, and the gradient of every parameter as a canonical dict of NumPy arrays."""
    model = build_model()
    set_weights(model, SPEC.initial_weights())
    graphdef, params = nnx.split(model)
    x, y = (jax.device_put(a, _device()) for a in first_batch())
    loss, grads = _loss_and_gradients(params, graphdef, x, y)
    return float(loss), get_weights(nnx.merge(graphdef, grads))


_loss = jax.jit(loss_fn, static_argnums=1)


def evaluate(model, x, y):
    """SPEC.metric, the loss in nats per character, of the model on token indices x (n, steps) and
    targets y (n, steps) (NumPy), over the targets that are not -1: a Python float."""
    if SPEC.metric != "loss":
        raise ValueError(f"sequences_jax measures the loss, the spec asks for {SPEC.metric!r}")
    graphdef, params = nnx.split(model)
    x, y = (jax.device_put(np.asarray(a), _device()) for a in (x, y))
    return float(_loss(params, graphdef, x, y))


def _optimizer():
    """optax.adam with SPEC.optimizer's learning rate and eps, held as arrays in the optimiser's
    state (optax.inject_hyperparams) rather than as constants of the compiled step, so that a spec
    with other values runs the same compiled program; weight decay, when the spec has one, added
    to the gradient first (L2, as torch.optim.Adam's weight_decay)."""
    settings = SPEC.optimizer
    adam = optax.inject_hyperparams(optax.adam)(learning_rate=settings.learning_rate, eps=settings.eps)
    if settings.weight_decay:
        return optax.chain(optax.add_decayed_weights(settings.weight_decay), adam)
    return adam


def make_train_step(graphdef, optimizer):
    """A jax.jit-compiled step(params, opt_state, x, y) -> (params, opt_state, loss): loss_fn's
    value and gradients, then one update of the Optax `optimizer`; pure."""
    @jax.jit
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, graphdef, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def _batches(x, y, batch_size, key):
    """One epoch of (x, y) NumPy batches in the order jax.random.permutation(key, len(y)), each of
    batch_size rows: the last one padded with rows of token 0 in x and target -1 in y."""
    order = np.asarray(jax.random.permutation(key, len(y)))
    for start in range(0, len(y), batch_size):
        rows = order[start:start + batch_size]
        xb = np.zeros((batch_size, *x.shape[1:]), dtype=x.dtype)
        yb = np.full((batch_size, *y.shape[1:]), -1, dtype=y.dtype)
        xb[:len(rows)], yb[:len(rows)] = x[rows], y[rows]
        yield xb, yb


def train(model, epochs=None):
    """Train `model` in place for `epochs` (default SPEC.epochs) on the training split and return
    its history: {"loss": each epoch's mean training loss per character, "val_loss": the validation
    loss after each epoch, "seconds": each epoch's training time, the first with the compilation}.

    Pipeline: _batches of SPEC.batch_size (the last padded with targets -1) in an order drawn each
    epoch from a key split off jax.random.key(SPEC.seed); the jitted step of make_train_step with
    _optimizer() (optax.adam from SPEC).
    """
    epochs = SPEC.epochs if epochs is None else epochs
    splits = _splits()
    x, y = splits["train"]
    graphdef, params = nnx.split(model)
    optimizer = _optimizer()
    opt_state = optimizer.init(params)
    step = make_train_step(graphdef, optimizer)
    key = jax.random.key(SPEC.seed)
    characters = int((y >= 0).sum())
    history = {"loss": [], "val_loss": [], "seconds": []}
    for _ in range(epochs):
        start = time.perf_counter()
        key, epoch_key = jax.random.split(key)
        total = 0.0
        for xb, yb in _batches(x, y, SPEC.batch_size, epoch_key):
            params, opt_state, loss = step(params, opt_state, xb, yb)
            total = total + loss * int((yb >= 0).sum())  # stays on the device: no wait per step
        total = float(total)  # waits for the epoch's last step
        history["seconds"].append(time.perf_counter() - start)
        history["loss"].append(total / characters)
        nnx.update(model, params)
        history["val_loss"].append(evaluate(model, *splits["val"]))
    return history


def sample(model, count, key, temperature=1.0):
    """`count` new names from the model: from the boundary token, at each step one LSTM cell step
    and a token drawn by jax.random.categorical from logits / temperature (the argmax when
    temperature is 0), with the keys jax.random.split(key, SPEC.input_shape[0] - 1), one per step;
    each name is its row's letters before its first boundary token."""
    state = model.initial_state(count)
    token = jnp.zeros(count, dtype=jnp.int32)
    drawn = []
    for step_key in jax.random.split(key, SPEC.input_shape[0] - 1):
        state, h = model.lstm(state, model.embedding(token))
        logits = model.dense(h)
        if temperature == 0:
            token = jnp.argmax(logits, axis=-1)
        else:
            token = jax.random.categorical(step_key, logits / temperature, axis=-1)
        drawn.append(np.asarray(token))
    boundary = SPEC.alphabet[0]
    return ["".join(SPEC.alphabet[i] for i in row).split(boundary)[0] for row in np.stack(drawn, axis=1)]


def save(model, path):
    """Write the model's state (nnx.state, as a pure dict of arrays) to `path` as msgpack bytes."""
    Path(path).write_bytes(serialization.msgpack_serialize(nnx.to_pure_dict(nnx.state(model))))


def load(path):
    """A fresh model (build_model()) holding the state saved at `path`, on the device; ValueError
    when the file holds fewer or more arrays than the model, or arrays of other shapes."""
    model = build_model()
    state = nnx.state(model)
    shapes = [np.shape(leaf) for leaf in jax.tree_util.tree_leaves(state)]
    restored = serialization.msgpack_restore(Path(path).read_bytes())
    nnx.replace_by_pure_dict(state, restored)  # refuses names the model lacks, and only those
    if (len(jax.tree_util.tree_leaves(restored)) != len(shapes)
            or [np.shape(leaf) for leaf in jax.tree_util.tree_leaves(state)] != shapes):
        raise ValueError(f"{path} does not hold the state of a model of SPEC.layers {SPEC.layers}")
    nnx.update(model, jax.device_put(state, _device()))
    return model
