"""The tabular project (penguin species from four measurements) in JAX, with Flax NNX for the model
and Optax for the optimiser: the seed of every real project, written once with the framework's
own idioms and checked against the project's spec. Everything it needs to agree on (split,
architecture, optimiser, batch size, epochs, metric, target, initial weights) is read from
`SPEC = projects.load("tabular")` when a function runs, never copied, so the PyTorch, Keras, JAX
and engine versions cannot quietly drift apart.

JAX idioms: the model is an `nnx.Module` of `nnx.Linear` layers (kernels (in, out), the canonical
layout: no conversion); `nnx.split` turns it into a static graph definition and a pytree of
arrays, so that the loss is a pure function of the parameters, differentiated by
`jax.value_and_grad`; the training step (gradients and `optax.adam`) is one `jax.jit`-compiled
pure function; the input pipeline is a NumPy batch iterator (shuffled by explicit `jax.random`
keys from SPEC.seed, the last batch padded and masked so that every batch has one shape) with a
background thread that prefetches batches onto the device; a checkpoint is the model's state as a
dictionary of arrays in msgpack (`flax.serialization`).

The contract shared by every implementation (solutions/README.md, Part 3):

    first_batch()                      (x, y) NumPy: the first SPEC.batch_size training examples,
                                       standardised with the training split's mean and std
    build_model()                      a fresh MLP (an nnx.Module) from SPEC.layers, on the device
    set_weights(model, weights)        canonical dict -> the model's Variables (same layout)
    get_weights(model)                 the model -> canonical dict of float32 NumPy arrays
    first_batch_loss_and_gradients()   (float, canonical dict) from SPEC.initial_weights()
    train(model, epochs=None)          Adam on shuffled batches; {"loss", "val_accuracy", "seconds"}
    evaluate(model, x, y)              accuracy on standardised NumPy inputs
    save(model, path), load(path)      the state as msgpack; a fresh model from it

The device is DEVICE (a jax.Device), or, when it is None, the runtime's choice
(GRADSCHOOL_DEVICE=cpu|gpu|auto), made at first use.

Generated from solutions/03_tabular/tabular_jax.ipynb by `make export`:
edit the notebook, not this file.
"""

import queue
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, serialization

from gradschool import projects, runtime
from gradschool.projects.spec import Dense


def _device():
    """DEVICE, or the runtime's choice when it was not set."""
    global DEVICE
    if DEVICE is None:
        DEVICE = runtime.setup(quiet=True, install=False).jax_device()
    return DEVICE


SPEC = projects.load("tabular")  # read when each function runs: never copy a number out of it
DEVICE = None  # a jax.Device; None: the runtime's choice (GRADSCHOOL_DEVICE), made at first use


def _splits():
    """{"train", "val", "test"}: (x float32, y int64) NumPy arrays, every feature standardised
    with the training split's mean and standard deviation (ddof=0): the spec's preprocessing,
    written once for every framework (Spec.prepare in gradschool/projects/spec.py)."""
    return SPEC.prepare()


def first_batch():
    """The first SPEC.batch_size training examples after preprocessing, unshuffled: (x, y) NumPy."""
    return SPEC.first_batch()


class MLP(nnx.Module):
    """Dense layers from a spec: nnx.Linear each, then ReLU where the layer asks for it."""

    def __init__(self, layers, in_features, rngs):
        linears, relu, width = [], [], in_features
        for layer in layers:
            if not isinstance(layer, Dense):
                raise TypeError(f"the tabular project is built of Dense layers, not {layer!r}")
            if layer.activation not in (None, "relu"):
                raise ValueError(f"unknown activation {layer.activation!r}")
            linears.append(nnx.Linear(width, layer.units, rngs=rngs))
            relu.append(layer.activation == "relu")
            width = layer.units
        self.dense = nnx.List(linears)  # NNX's list: its layers' Variables belong to the model
        self.relu = tuple(relu)  # static structure, not data

    def __call__(self, x):
        for linear, relu in zip(self.dense, self.relu, strict=True):
            x = linear(x)
            if relu:
                x = jax.nn.relu(x)
        return x


def build_model():
    """A fresh MLP from SPEC.layers, its arrays on the device. Its weights are Flax's random
    start from nnx.Rngs(SPEC.seed): set_weights puts the project's in."""
    with jax.default_device(_device()):
        return MLP(SPEC.layers, SPEC.input_shape[-1], nnx.Rngs(SPEC.seed))


def _variables(model):
    """The model's parameters with their canonical names: [("dense_0/kernel", Variable), ...]."""
    return [(f"dense_{i}/{kind}", getattr(linear, kind)) for i, linear in enumerate(model.dense)
            for kind in ("kernel", "bias")]


def set_weights(model, weights):
    """Put canonical weights into the model: each Variable of _variables(model) holds, from now
    on, a device copy of weights[its canonical name] (the same layout: no transpose). The
    Variables stay the same objects. ValueError when a name is missing or a shape is wrong."""
    for key, variable in _variables(model):
        if key not in weights:
            raise ValueError(f"the weights have no {key!r} (canonical names: {sorted(weights)})")
        value = np.array(weights[key], dtype=np.float32)  # a copy: device_put may share its memory
        if value.shape != tuple(variable.shape):
            raise ValueError(f"{key} has shape {value.shape}; this model needs {tuple(variable.shape)}")
        variable[...] = jax.device_put(value, _device())


def get_weights(model):
    """The model's weights as a canonical dict of float32 NumPy arrays (writable copies)."""
    return {key: np.array(variable[...], dtype=np.float32) for key, variable in _variables(model)}


def loss_fn(params, graphdef, x, y, mask):
    """The mean softmax cross-entropy of the model nnx.merge(graphdef, params) on inputs x
    (batch, features) and integer labels y (batch,), over the examples whose mask is 1: a pure
    function of its arguments, to differentiate with respect to params."""
    logits = nnx.merge(graphdef, params)(x)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return jnp.sum(losses * mask) / jnp.sum(mask)


def first_batch_loss_and_gradients():
    """(loss, gradients) on first_batch() from SPEC.initial_weights(): the mean softmax
    cross-entropy as a Python float, and the gradient of every parameter as a canonical dict of
    NumPy arrays, from jax.value_and_grad(loss_fn), compiled by jax.jit."""
    model = build_model()
    set_weights(model, SPEC.initial_weights())
    graphdef, params = nnx.split(model)
    x, y = first_batch()
    loss_and_gradients = jax.jit(jax.value_and_grad(loss_fn), static_argnums=1)  # graphdef: static
    x, y = jax.device_put(x, _device()), jax.device_put(y, _device())
    loss, grads = loss_and_gradients(params, graphdef, x, y, jnp.ones(len(y), jnp.float32))
    return float(loss), get_weights(nnx.merge(graphdef, grads))


def _batches(x, y, batch_size, key):
    """One epoch of (x, y, mask) NumPy batches in the order jax.random.permutation(key, len(y)),
    every batch of batch_size rows: the last one padded with zeros, whose mask is 0."""
    order = np.asarray(jax.random.permutation(key, len(y)))
    for start in range(0, len(y), batch_size):
        rows = order[start:start + batch_size]
        xb = np.zeros((batch_size, *x.shape[1:]), dtype=np.float32)
        yb = np.zeros(batch_size, dtype=y.dtype)
        mask = np.zeros(batch_size, dtype=np.float32)
        xb[:len(rows)], yb[:len(rows)], mask[:len(rows)] = x[rows], y[rows], 1.0
        yield xb, yb, mask


def _prefetch(iterator, device, size=2):
    """The items of `iterator`, put on `device` by a background thread that keeps up to `size`
    of them ready in a queue; an exception in the thread is raised here."""
    ready = queue.Queue(maxsize=size)
    end = object()

    def produce():
        try:
            for item in iterator:
                ready.put(jax.device_put(item, device))
        except Exception as error:  # handed to the consumer, raised in the training loop
            ready.put(error)
        ready.put(end)

    threading.Thread(target=produce, daemon=True).start()
    while (item := ready.get()) is not end:
        if isinstance(item, Exception):
            raise item
        yield item


def _optimizer():
    """optax.adam with SPEC.optimizer's learning rate and eps; weight decay, when the spec has
    one, added to the gradient first (L2, as torch.optim.Adam's weight_decay)."""
    settings = SPEC.optimizer
    adam = optax.adam(settings.learning_rate, eps=settings.eps)
    if settings.weight_decay:
        return optax.chain(optax.add_decayed_weights(settings.weight_decay), adam)
    return adam


def make_train_step(graphdef, optimizer):
    """A jax.jit-compiled step(params, opt_state, x, y, mask) -> (params, opt_state, loss): the
    loss and gradients of loss_fn by jax.value_and_grad, then one update of the Optax
    `optimizer`; pure, so it returns the new parameters and state."""
    @jax.jit
    def step(params, opt_state, x, y, mask):
        loss, grads = jax.value_and_grad(loss_fn)(params, graphdef, x, y, mask)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def _predict(model, x):
    """The predicted classes (NumPy ints) for standardised inputs x (n, features)."""
    logits = model(jax.device_put(np.asarray(x, dtype=np.float32), _device()))
    return np.asarray(jnp.argmax(logits, axis=1))


def evaluate(model, x, y):
    """SPEC.metric of the model on standardised NumPy inputs x (n, features) and labels y (n,)."""
    if SPEC.metric != "accuracy":
        raise ValueError(f"tabular_jax measures accuracy, the spec asks for {SPEC.metric!r}")
    return float((_predict(model, x) == np.asarray(y)).mean())


def train(model, epochs=None):
    """Train `model` in place for `epochs` (default SPEC.epochs) on the standardised training
    split and return its history: {"loss": each epoch's mean training loss, "val_accuracy":
    the validation accuracy after each epoch, "seconds": each epoch's training time, the first
    with the compilation}.

    Pipeline: _batches of SPEC.batch_size (the last padded and masked) in an order drawn each
    epoch from a key split off jax.random.key(SPEC.seed), prefetched onto the device by
    _prefetch; the jitted step of make_train_step with _optimizer() (optax.adam from SPEC).
    """
    epochs = SPEC.epochs if epochs is None else epochs
    splits = _splits()
    x, y = splits["train"]
    graphdef, params = nnx.split(model)
    optimizer = _optimizer()
    opt_state = optimizer.init(params)
    step = make_train_step(graphdef, optimizer)
    key = jax.random.key(SPEC.seed)
    history = {"loss": [], "val_accuracy": [], "seconds": []}
    for _ in range(epochs):
        start = time.perf_counter()
        key, epoch_key = jax.random.split(key)
        total = 0.0
        for xb, yb, mask in _prefetch(_batches(x, y, SPEC.batch_size, epoch_key), _device()):
            params, opt_state, loss = step(params, opt_state, xb, yb, mask)
            total = total + loss * mask.sum()  # stays on the device: no wait per step
        total = float(total)  # waits for the epoch's last step
        history["seconds"].append(time.perf_counter() - start)
        history["loss"].append(total / len(y))
        nnx.update(model, params)
        history["val_accuracy"].append(evaluate(model, *splits["val"]))
    return history


def save(model, path):
    """Write the model's state (nnx.state, as a pure dict of arrays) to `path` as msgpack bytes
    (flax.serialization.msgpack_serialize)."""
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
