"""The image project (handwritten digits, the course's MNIST subset) in JAX, with Flax NNX for the
model and Optax for the optimiser and its schedule, checked against the project's spec. Everything
the implementations must agree on (data, architecture, optimiser, batch size, epochs, metric,
target, initial weights, the augmentation's SPEC.max_shift, the schedule) is read from
`SPEC = projects.load("images")` when a function runs, never copied.

JAX idioms: the model is an `nnx.Module` of `nnx.Conv` and `nnx.Linear` layers on channels-last
images (kernels (kh, kw, in, out) and (in, out), flattened in (h, w, c) order: the canonical
layout, no conversion); the loss is a pure function of the parameters' pytree (`nnx.split`),
differentiated by `jax.value_and_grad`; the training step (gradients and `optax.adam` driven by
`optax.warmup_cosine_decay_schedule`) is one `jax.jit`-compiled pure function; the input pipeline
is a NumPy batch iterator whose order and shifts come from explicit `jax.random` keys split off
SPEC.seed (each batch shifted by one random (dy, dx), zeros coming in; the last batch padded and
masked, so that every batch has one shape), run in a background thread that prefetches batches
onto the device; a checkpoint is the model's state as msgpack (`flax.serialization`).

The contract shared by every implementation (solutions/README.md, Part 3):

    first_batch()                      (x, y) NumPy: the first SPEC.batch_size training images
                                       (n, 28, 28, 1) in [0, 1], unshuffled, and their labels
    build_model(spec=None)             a fresh CNN (an nnx.Module) from SPEC.layers, on the device
    set_weights(model, weights)        canonical dict -> the model's Variables (same layout)
    get_weights(model)                 the model -> canonical dict of float32 NumPy arrays
    first_batch_loss_and_gradients(spec=None)
                                       (float, canonical dict) from SPEC.initial_weights()
    train(model, epochs=None)          augmented batches, Adam with warm-up and cosine decay;
                                       {"loss", "val_accuracy", "learning_rate", "seconds"}
    evaluate(model, x, y)              accuracy on NumPy images (n, 28, 28, 1)
    save(model, path), load(path, spec=None)
                                       the state as msgpack; a fresh model from it

The optional spec (default SPEC) lets the transfer project, the same CNN with another head, build,
check and load its models with these functions (transfer_jax imports them).

The device is DEVICE (a jax.Device), or, when it is None, the runtime's choice
(GRADSCHOOL_DEVICE=cpu|gpu|auto), made at first use.

Generated from solutions/04_images/images_jax.ipynb by `make export`:
edit the notebook, not this file.
"""

import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, serialization

from gradschool import projects, runtime
from gradschool.projects.spec import Conv2D, Dense, Flatten, MaxPool
from gradschool.projects.tabular_jax import _prefetch, loss_fn, make_train_step  # tabular's, unchanged


def _device():
    """DEVICE, or the runtime's choice when it was not set."""
    global DEVICE
    if DEVICE is None:
        DEVICE = runtime.setup(quiet=True, install=False).jax_device()
    return DEVICE


SPEC = projects.load("images")  # read when each function runs: never copy a number out of it
DEVICE = None  # a jax.Device; None: the runtime's choice (GRADSCHOOL_DEVICE), made at first use


def _splits():
    """{"train", "val", "test"}: (x float32 (n, 28, 28, 1) in [0, 1], y int64) NumPy arrays: the
    spec's preprocessing, written once for every framework (Spec.prepare)."""
    return SPEC.prepare()


def first_batch():
    """The first SPEC.batch_size training images after preprocessing, unshuffled and unaugmented:
    (x, y) NumPy."""
    return SPEC.first_batch()


class CNN(nnx.Module):
    """Conv2D, MaxPool, Flatten and Dense layers from a spec, on channels-last images."""

    def __init__(self, layers, input_shape, rngs):
        height, width, channels = input_shape
        convs, denses, plan = [], [], []
        for layer in layers:
            activation = getattr(layer, "activation", None)
            if activation not in (None, "relu"):
                raise ValueError(f"unknown activation {activation!r}")
            if isinstance(layer, Conv2D):
                size = (layer.kernel_size, layer.kernel_size)
                convs.append(nnx.Conv(channels, layer.filters, size, padding="SAME", rngs=rngs))
                channels = layer.filters
                plan.append(("conv", activation))
            elif isinstance(layer, MaxPool):
                height, width = height // layer.size, width // layer.size
                plan.append(("pool", layer.size))
            elif isinstance(layer, Flatten):
                channels = height * width * channels
                plan.append(("flatten", None))
            elif isinstance(layer, Dense):
                denses.append(nnx.Linear(channels, layer.units, rngs=rngs))
                channels = layer.units
                plan.append(("dense", activation))
            else:
                raise TypeError(f"the image project has no layer {layer!r}")
        self.conv = nnx.List(convs)  # NNX's lists: their layers' Variables belong to the model
        self.dense = nnx.List(denses)
        self.plan = tuple(plan)  # static structure, not data

    def __call__(self, x):
        convs, denses = iter(self.conv), iter(self.dense)
        for kind, setting in self.plan:
            if kind == "pool":
                x = nnx.max_pool(x, (setting, setting), strides=(setting, setting))
            elif kind == "flatten":
                x = x.reshape(x.shape[0], -1)  # (n, h, w, c) -> (n, h * w * c): canonical order
            else:
                x = next(convs if kind == "conv" else denses)(x)
                if setting == "relu":
                    x = jax.nn.relu(x)
        return x


def build_model(spec=None):
    """A fresh CNN from the layers of `spec` (default SPEC), its arrays on the device. Its weights are
    Flax's random start from nnx.Rngs(spec.seed): set_weights puts the project's in. (The argument
    lets another project with this architecture, transfer_jax, build its model here.)"""
    spec = SPEC if spec is None else spec
    with jax.default_device(_device()):
        return CNN(spec.layers, spec.input_shape, nnx.Rngs(spec.seed))


@partial(jax.jit, static_argnums=0)
def _logits(graphdef, params, x):
    """The logits of nnx.merge(graphdef, params) on x, compiled once per graph definition and shape."""
    return nnx.merge(graphdef, params)(x)


def _variables(model):
    """The model's parameters with their canonical names: [("conv_0/kernel", Variable), ...]."""
    return [(f"{prefix}_{i}/{kind}", getattr(layer, kind))
            for prefix, layers in (("conv", model.conv), ("dense", model.dense))
            for i, layer in enumerate(layers) for kind in ("kernel", "bias")]


def set_weights(model, weights):
    """Put canonical weights into the model: each Variable of _variables(model) holds, from now on,
    a device copy of weights[its canonical name] (the same layout: no transpose, no permutation).
    ValueError when a name is missing or a shape is wrong."""
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


def first_batch_loss_and_gradients(spec=None):
    """(loss, gradients) on the first batch of `spec` (default SPEC) from its initial weights: the mean
    softmax cross-entropy as a Python float, and the gradient of every parameter as a canonical dict
    of NumPy arrays, from jax.value_and_grad(loss_fn), compiled by jax.jit."""
    spec = SPEC if spec is None else spec
    model = build_model(spec)
    set_weights(model, spec.initial_weights())
    graphdef, params = nnx.split(model)
    x, y = spec.first_batch()
    loss_and_gradients = jax.jit(jax.value_and_grad(loss_fn), static_argnums=1)  # graphdef: static
    x, y = jax.device_put(x, _device()), jax.device_put(y, _device())
    loss, grads = loss_and_gradients(params, graphdef, x, y, jnp.ones(len(y), jnp.float32))
    return float(loss), get_weights(nnx.merge(graphdef, grads))


def shift(images, dy, dx):
    """images (n, h, w, c) moved down by dy and right by dx (negative: up, left), the pixels that come
    in set to 0: a new float32 array of the same shape."""
    images = np.asarray(images, dtype=np.float32)
    height, width = images.shape[1:3]
    out = np.zeros_like(images)
    out[:, max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
        images[:, max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
    return out


def _batches(x, y, batch_size, key, augment=True):
    """One epoch of (x, y, mask) NumPy batches of batch_size rows: the examples in the order
    jax.random.permutation(order_key, len(y)), each batch shifted by its own (dy, dx) from
    jax.random.randint(shift_key, (batches, 2), -m, m + 1) when augment is true (order_key, shift_key =
    jax.random.split(key); m = SPEC.max_shift); the last batch padded with zeros, whose mask is 0."""
    order_key, shift_key = jax.random.split(key)
    order = np.asarray(jax.random.permutation(order_key, len(y)))
    count = -(-len(y) // batch_size)
    m = SPEC.max_shift
    shifts = np.asarray(jax.random.randint(shift_key, (count, 2), -m, m + 1))
    for b in range(count):
        rows = order[b * batch_size:(b + 1) * batch_size]
        images = x[rows]
        if augment:
            images = shift(images, int(shifts[b, 0]), int(shifts[b, 1]))
        xb = np.zeros((batch_size, *x.shape[1:]), dtype=np.float32)
        yb = np.zeros(batch_size, dtype=y.dtype)
        mask = np.zeros(batch_size, dtype=np.float32)
        xb[:len(rows)], yb[:len(rows)], mask[:len(rows)] = images, y[rows], 1.0
        yield xb, yb, mask


def learning_rate_schedule(total_steps):
    """An Optax schedule (step count -> learning rate): 0 at step 0, rising linearly to
    SPEC.optimizer.learning_rate at step SPEC.warmup_steps, then a half cosine down to 0 at step
    total_steps."""
    if SPEC.schedule != "warmup_cosine":
        raise ValueError(f"images_jax schedules warmup_cosine, the spec asks for {SPEC.schedule!r}")
    return optax.warmup_cosine_decay_schedule(init_value=0.0, peak_value=SPEC.optimizer.learning_rate,
                                              warmup_steps=SPEC.warmup_steps, decay_steps=total_steps,
                                              end_value=0.0)


def _optimizer(total_steps):
    """optax.adam driven by learning_rate_schedule(total_steps), with SPEC.optimizer's eps."""
    return optax.adam(learning_rate_schedule(total_steps), eps=SPEC.optimizer.eps)


def _predict(model, x):
    """The predicted classes (NumPy ints) for images x (n, 28, 28, 1)."""
    graphdef, params = nnx.split(model)
    logits = _logits(graphdef, params, jax.device_put(np.asarray(x, dtype=np.float32), _device()))
    return np.asarray(jnp.argmax(logits, axis=1))


def evaluate(model, x, y):
    """SPEC.metric of the model on NumPy images x (n, 28, 28, 1) and labels y (n,)."""
    if SPEC.metric != "accuracy":
        raise ValueError(f"images_jax measures accuracy, the spec asks for {SPEC.metric!r}")
    return float((_predict(model, x) == np.asarray(y)).mean())


def train(model, epochs=None):
    """Train `model` in place for `epochs` (default SPEC.epochs) on the training split and return its
    history: {"loss": each epoch's mean training loss, "val_accuracy": the validation accuracy after
    each epoch, "learning_rate": the schedule's value at the step count reached after each epoch,
    "seconds": each epoch's training time, the first with the compilation}.

    Pipeline: _batches of SPEC.batch_size (shifted, the last padded and masked) from a key split each
    epoch off jax.random.key(SPEC.seed), prefetched onto the device by _prefetch; the jitted step of
    make_train_step with _optimizer(the run's number of steps).
    """
    epochs = SPEC.epochs if epochs is None else epochs
    splits = _splits()
    x, y = splits["train"]
    steps_per_epoch = -(-len(y) // SPEC.batch_size)
    optimizer = _optimizer(epochs * steps_per_epoch)
    schedule = learning_rate_schedule(epochs * steps_per_epoch)
    graphdef, params = nnx.split(model)
    opt_state = optimizer.init(params)
    step = make_train_step(graphdef, optimizer)
    key = jax.random.key(SPEC.seed)
    history = {"loss": [], "val_accuracy": [], "learning_rate": [], "seconds": []}
    for epoch in range(epochs):
        start = time.perf_counter()
        key, epoch_key = jax.random.split(key)
        total = 0.0
        for xb, yb, mask in _prefetch(_batches(x, y, SPEC.batch_size, epoch_key), _device()):
            params, opt_state, loss = step(params, opt_state, xb, yb, mask)
            total = total + loss * mask.sum()  # stays on the device: no wait per step
        total = float(total)  # waits for the epoch's last step
        history["seconds"].append(time.perf_counter() - start)
        history["loss"].append(total / len(y))
        history["learning_rate"].append(float(schedule((epoch + 1) * steps_per_epoch)))
        nnx.update(model, params)
        history["val_accuracy"].append(evaluate(model, *splits["val"]))
    return history


def save(model, path):
    """Write the model's state (nnx.state, as a pure dict of arrays) to `path` as msgpack bytes
    (flax.serialization.msgpack_serialize)."""
    Path(path).write_bytes(serialization.msgpack_serialize(nnx.to_pure_dict(nnx.state(model))))


def load(path, spec=None):
    """A fresh model (build_model(spec), default SPEC) holding the state saved at `path`, on the
    device; ValueError when the file holds fewer or more arrays than the model, or arrays of other
    shapes."""
    model = build_model(spec)
    state = nnx.state(model)
    shapes = [np.shape(leaf) for leaf in jax.tree_util.tree_leaves(state)]
    restored = serialization.msgpack_restore(Path(path).read_bytes())
    nnx.replace_by_pure_dict(state, restored)  # refuses names the model lacks, and only those
    if (len(jax.tree_util.tree_leaves(restored)) != len(shapes)
            or [np.shape(leaf) for leaf in jax.tree_util.tree_leaves(state)] != shapes):
        raise ValueError(f"{path} does not hold the state of a model of {(spec or SPEC).layers}")
    nnx.update(model, jax.device_put(state, _device()))
    return model
