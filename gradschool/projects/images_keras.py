"""The image project (handwritten digits, a small CNN on the course's 3500-image MNIST subset) in
Keras 3 on TensorFlow, written with the framework's own idioms and checked against the
project's spec. Everything the implementations must agree on (architecture, optimiser, batch
size, epochs, metric, target, initial weights) is read from `SPEC = projects.load("images")`
when a function runs, never copied.

Keras idioms: the model is a `keras.Sequential` of `Conv2D`, `MaxPooling2D`, `Flatten` and
`Dense` layers named after the canonical parameters (`conv_0`, `conv_1`, `dense_0`). Keras is
channels-last, so its conv kernels `(kh, kw, in, out)` and its Flatten order `(h, w, c)` are the
canonical layout: nothing is converted. The input pipeline is `tf.data`: a seeded shuffle,
batch, repeat over the epochs, `enumerate` to number the batches, a `map` that shifts each batch
by one random `(dy, dx)` drawn by `tf.random.stateless_uniform` from the seed (seed, step) with
zeros coming in (`shift`), and `prefetch(AUTOTUNE)`. Adam's learning rate follows Keras'
`CosineDecay` with its linear warm-up (`learning_rate_schedule`); `compile` and `fit` train;
the first batch's gradients come from `tf.GradientTape`; saving uses the native `.keras` format.

The contract shared by every implementation (solutions/README.md, Part 3):

    first_batch()                      (x, y) NumPy: the first SPEC.batch_size training images
                                       (n, 28, 28, 1), pixels in [0, 1], unshuffled
    build_model(spec=None)             a fresh keras.Sequential from SPEC.layers (or spec's)
    set_weights(model, weights)        canonical dict -> the model, in place (no conversion)
    get_weights(model)                 the model -> canonical dict of float32 NumPy arrays
    first_batch_loss_and_gradients(spec=None)  (float, canonical dict) from SPEC.initial_weights()
    train(model, epochs=None)          compile and fit; {"loss", "val_accuracy", "seconds"}
    evaluate(model, x, y)              accuracy on NumPy images (n, 28, 28, 1)
    save(model, path), load(path)      a .keras archive; a fresh model from it

Besides the contract: shift(images, dy, dx), training_batches(x, y, epochs, seed=None) and
learning_rate_schedule(total_steps). TensorFlow computes on DEVICE ("/CPU:0" or "/GPU:0"), or,
when it is None, on the runtime's choice (GRADSCHOOL_DEVICE=cpu|gpu|auto), made at first use.

Generated from solutions/04_images/images_keras.ipynb by `make export`:
edit the notebook, not this file.
"""

import keras
import numpy as np
import tensorflow as tf

from gradschool import projects, runtime
from gradschool.projects.spec import Conv2D, Dense, Flatten, MaxPool
from gradschool.projects.tabular_keras import _EpochTimer, load, save  # noqa: F401 -- tabular_keras's, unchanged


def _device():
    """DEVICE, or the runtime's choice when it was not set."""
    global DEVICE
    if DEVICE is None:
        DEVICE = runtime.setup(quiet=True, install=False).tf_device()
    return DEVICE


SPEC = projects.load("images")  # read when each function runs: never copy a number out of it
DEVICE = None  # "/CPU:0" or "/GPU:0"; None: the runtime's choice (GRADSCHOOL_DEVICE), made at first use


def _splits():
    """{"train", "val", "test"}: (x float32 (n, 28, 28, 1), y int64) NumPy arrays, pixels in
    [0, 1], channels last: the spec's preprocessing (Spec.prepare), written once for every framework."""
    return SPEC.prepare()


def first_batch():
    """The first SPEC.batch_size training images after preprocessing, unshuffled: (x, y) NumPy."""
    return SPEC.first_batch()


_LAYER_KINDS = {Conv2D: "conv", MaxPool: "pool", Flatten: "flatten", Dense: "dense"}


def build_model(spec=None):
    """A fresh keras.Sequential from spec.layers (spec None: SPEC), channels last:
    keras.Input(spec.input_shape), then Conv2D ("same" padding, stride 1), MaxPooling2D, Flatten
    and Dense layers named conv_0, pool_0, ..., dense_0, so that Keras' weight names are the
    canonical ones. Its weights are Keras' random start: set_weights puts the project's in."""
    spec = SPEC if spec is None else spec
    layers = [keras.Input(shape=spec.input_shape)]
    counts = {}
    for layer in spec.layers:
        kind = _LAYER_KINDS.get(type(layer))
        if kind is None:
            raise TypeError(f"the image project has no Keras layer for {layer!r}")
        counts[kind] = counts.get(kind, -1) + 1
        name = f"{kind}_{counts[kind]}"
        if isinstance(layer, Conv2D):
            layers.append(keras.layers.Conv2D(layer.filters, layer.kernel_size, padding="same",
                                              activation=layer.activation, name=name))
        elif isinstance(layer, MaxPool):
            layers.append(keras.layers.MaxPooling2D(layer.size, name=name))
        elif isinstance(layer, Flatten):
            layers.append(keras.layers.Flatten(name=name))
        else:
            layers.append(keras.layers.Dense(layer.units, activation=layer.activation, name=name))
    with tf.device(_device()):  # the weights are created here, on TensorFlow's device
        return keras.Sequential(layers, name=spec.name)


def _canonical_variables(model):
    """The model's weights by canonical name, {"conv_0/kernel": variable, ...}, in layer order."""
    return {f"{layer.name}/{variable.name}": variable
            for layer in model.layers if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense)
            for variable in (layer.kernel, layer.bias)}


def set_weights(model, weights):
    """Copy canonical weights into the model, in place (variable.assign): Keras' layout is the
    canonical one, so nothing is converted. ValueError, before anything is assigned, when a name
    is missing or a shape is wrong."""
    variables = _canonical_variables(model)
    values = {}
    for name, variable in variables.items():
        if name not in weights:
            raise ValueError(f"the weights have no {name!r} (canonical names: {sorted(weights)})")
        values[name] = np.asarray(weights[name], dtype=np.float32)
        if values[name].shape != tuple(variable.shape):
            needed = tuple(variable.shape)
            raise ValueError(f"{name} has shape {values[name].shape}; this model needs {needed}")
    for name, variable in variables.items():
        variable.assign(values[name])


def get_weights(model):
    """The model's weights as a canonical dict of float32 NumPy arrays (copies)."""
    return {name: np.array(variable.numpy(), dtype=np.float32)
            for name, variable in _canonical_variables(model).items()}


def _loss_function():
    """The spec's loss: softmax cross-entropy from the logits and integer labels, the batch mean."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def first_batch_loss_and_gradients(spec=None):
    """(loss, gradients) on the first batch from the initial weights of `spec` (None: SPEC): the
    mean softmax cross-entropy as a Python float, and the gradient of every parameter as a
    canonical dict of NumPy arrays, from tf.GradientTape."""
    spec = SPEC if spec is None else spec
    model = build_model(spec)
    set_weights(model, spec.initial_weights())
    x, y = spec.first_batch()
    variables = _canonical_variables(model)
    with tf.device(_device()):
        with tf.GradientTape() as tape:
            loss = _loss_function()(y, model(x, training=True))
        gradients = tape.gradient(loss, variables)  # the same dict structure, tensors for variables
    return float(loss), {name: gradient.numpy() for name, gradient in gradients.items()}


def shift(images, dy, dx):
    """The images (n, h, w, c) moved down by dy rows and right by dx columns, zeros coming in:
    out[:, i, j] = images[:, i - dy, j - dx] where that pixel is inside the image, else 0.
    dy, dx: ints or int32 scalar tensors in [-SPEC.max_shift, SPEC.max_shift]. TensorFlow operations only
    (it runs inside tf.data); returns a tensor of the images' shape and dtype."""
    images = tf.convert_to_tensor(images)
    height, width = images.shape[1], images.shape[2]
    m = SPEC.max_shift
    padded = tf.pad(images, [[0, 0], [m, m], [m, m], [0, 0]])  # zeros around, the image at (m, m)
    return tf.image.crop_to_bounding_box(padded, m - dy, m - dx, height, width)


def training_batches(x, y, epochs, seed=None):
    """The training pipeline: a tf.data.Dataset of (images, labels) batches for `epochs` epochs in
    one stream, epochs * ceil(n / SPEC.batch_size) batches: the n examples shuffled anew each epoch
    (a buffer of all n, `seed`), batched by SPEC.batch_size (the last batch of each epoch smaller),
    each batch shifted by one (dy, dx) drawn uniformly from [-SPEC.max_shift, SPEC.max_shift] with
    tf.random.stateless_uniform and the seed (seed, step), step = the batch's index in the whole
    run; prefetched. seed None: SPEC.seed. The same seed gives the same batches."""
    seed = SPEC.seed if seed is None else seed
    def augment(step, batch):
        images, labels = batch
        offset = tf.random.stateless_uniform([2], seed=tf.stack([tf.cast(seed, tf.int64), step]),
                                             minval=-SPEC.max_shift, maxval=SPEC.max_shift + 1,
                                             dtype=tf.int32)
        return shift(images, offset[0], offset[1]), labels

    return (tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
            .batch(SPEC.batch_size)
            .repeat(epochs)
            .enumerate()
            .map(augment, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def learning_rate_schedule(total_steps):
    """The spec's learning rate for a run of total_steps optimiser steps, numbered 0 .. total_steps - 1,
    as a Keras CosineDecay schedule: 0 at step 0, rising linearly to SPEC.optimizer.learning_rate at
    step SPEC.warmup_steps, then a cosine decay that reaches 0 at the last step, total_steps - 1."""
    if SPEC.schedule != "warmup_cosine":
        raise ValueError(f"this module schedules \"warmup_cosine\", the spec asks for {SPEC.schedule!r}")
    if total_steps <= SPEC.warmup_steps + 1:
        raise ValueError(f"a run of {total_steps} steps is too short for a warm-up of "
                         f"{SPEC.warmup_steps} steps and a decay")
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=total_steps - 1 - SPEC.warmup_steps, alpha=0.0,
        warmup_target=SPEC.optimizer.learning_rate, warmup_steps=SPEC.warmup_steps)


def _predict(model, x):
    """The predicted digits (NumPy ints) for images x (n, 28, 28, 1), pixels in [0, 1]."""
    with tf.device(_device()):
        logits = model(np.asarray(x, dtype=np.float32), training=False)  # one call: no batching needed
    return keras.ops.convert_to_numpy(logits).argmax(axis=1)


def evaluate(model, x, y):
    """SPEC.metric (accuracy) of the model on NumPy images x (n, 28, 28, 1) and labels y (n,)."""
    if SPEC.metric != "accuracy":
        raise ValueError(f"images_keras measures accuracy, the spec asks for {SPEC.metric!r}")
    return float((_predict(model, x) == np.asarray(y)).mean())


def train(model, epochs=None):
    """Compile and fit `model` in place for `epochs` (default SPEC.epochs) on the training split
    through training_batches (shuffled, shifted, prefetched), with Adam (SPEC.optimizer's epsilon)
    following learning_rate_schedule over the whole run; return its history: {"loss": each epoch's
    mean training loss, "val_accuracy": the validation accuracy after each epoch, "seconds": each
    epoch's training time, without validation}."""
    epochs = SPEC.epochs if epochs is None else epochs
    splits = _splits()
    x, y = splits["train"]
    steps = -(-len(y) // SPEC.batch_size)  # batches per epoch, the last one smaller
    settings = SPEC.optimizer
    if settings.weight_decay:
        raise ValueError("the spec asks for Adam's weight decay, which Keras applies decoupled (AdamW): "
                         "not the same optimiser as the other implementations")
    timer = _EpochTimer()
    schedule = learning_rate_schedule(epochs * steps)  # over the whole run, not one epoch
    optimizer = keras.optimizers.Adam(learning_rate=schedule, epsilon=settings.eps)
    model.compile(optimizer=optimizer, loss=_loss_function(), metrics=["accuracy"])
    with tf.device(_device()):
        fitted = model.fit(training_batches(x, y, epochs), epochs=epochs, steps_per_epoch=steps,
                           validation_data=splits["val"], callbacks=[timer], shuffle=False, verbose=0)
    return {"loss": fitted.history["loss"], "val_accuracy": fitted.history["val_accuracy"],
            "seconds": timer.seconds}
