"""The tabular project (penguin species from four measurements) in Keras 3: the seed of every real
project, written once with the framework's own idioms and checked against the project's spec.
Everything it needs to agree on (split, architecture, optimiser, batch size, epochs, metric,
target, initial weights) is read from `SPEC = projects.load("tabular")` when a function runs,
never copied, so the PyTorch, Keras, JAX and engine versions cannot quietly drift apart.

Keras idioms: the model is a `keras.Sequential` of `keras.layers.Dense` layers named after the
canonical parameters (`dense_0`, `dense_1`), whose kernels are already canonical `(in, out)`;
the data pipeline a `tf.data.Dataset` (from_tensor_slices, a seeded shuffle, batch, prefetch)
fed to `model.fit` after `model.compile` with `keras.optimizers.Adam` (epsilon given: Keras'
default differs) and `SparseCategoricalCrossentropy(from_logits=True)`; the first batch's
gradients from `tf.GradientTape`; saving in the native `.keras` format.

The contract shared by every implementation (solutions/README.md, Part 3):

    first_batch()                      (x, y) NumPy: the first SPEC.batch_size training examples,
                                       standardised with the training split's mean and std
    build_model()                      a fresh keras.Sequential from SPEC.layers
    set_weights(model, weights)        canonical dict -> the model, in place (no conversion)
    get_weights(model)                 the model -> canonical dict of float32 NumPy arrays
    first_batch_loss_and_gradients()   (float, canonical dict) from SPEC.initial_weights()
    train(model, epochs=None)          compile and fit; {"loss", "val_accuracy", "seconds"}
    evaluate(model, x, y)              accuracy on standardised NumPy inputs
    save(model, path), load(path)      a .keras archive; a fresh model from it

Besides the contract, `first_batch_loss(model)` computes the first batch's loss with Keras alone:
with it, build_model, set_weights, train and evaluate, the module runs unchanged on Keras'
JAX and PyTorch backends too (KERAS_BACKEND, fixed when keras is first imported; tf.data still
needs TensorFlow installed). TensorFlow computes on DEVICE ("/CPU:0" or "/GPU:0"), or, when it
is None, on the runtime's choice (GRADSCHOOL_DEVICE=cpu|gpu|auto), made at first use.

Generated from solutions/03_tabular/tabular_keras.ipynb by `make export`:
edit the notebook, not this file.
"""

import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from gradschool import projects, runtime
from gradschool.projects.spec import Dense


def _device():
    """DEVICE, or the runtime's choice when it was not set."""
    global DEVICE
    if DEVICE is None:
        DEVICE = runtime.setup(quiet=True, install=False).tf_device()
    return DEVICE


SPEC = projects.load("tabular")  # read when each function runs: never copy a number out of it
DEVICE = None  # "/CPU:0" or "/GPU:0"; None: the runtime's choice (GRADSCHOOL_DEVICE), made at first use


def _splits():
    """{"train", "val", "test"}: (x float32, y int64) NumPy arrays, every feature standardised
    with the training split's mean and standard deviation (ddof=0): the spec's preprocessing,
    written once for every framework (Spec.prepare in gradschool/projects/spec.py)."""
    return SPEC.prepare()


def first_batch():
    """The first SPEC.batch_size training examples after preprocessing, unshuffled: (x, y) NumPy."""
    return SPEC.first_batch()


def build_model():
    """A fresh keras.Sequential from SPEC.layers: keras.Input(SPEC.input_shape), then a
    keras.layers.Dense per spec layer, named dense_0, dense_1, ... so that Keras' weight names
    are the canonical ones. Its weights are Keras' random start: set_weights puts the project's in."""
    layers = [keras.Input(shape=SPEC.input_shape)]
    for i, layer in enumerate(SPEC.layers):
        if not isinstance(layer, Dense):
            raise TypeError(f"the tabular project is built of Dense layers, not {layer!r}")
        layers.append(keras.layers.Dense(layer.units, activation=layer.activation, name=f"dense_{i}"))
    with tf.device(_device()):  # the weights are created here, on TensorFlow's device
        return keras.Sequential(layers, name=SPEC.name)


def _canonical_variables(model):
    """The model's weights by canonical name: {"dense_0/kernel": variable, ...}, in layer order."""
    return {f"{layer.name}/{variable.name}": variable
            for layer in model.layers if isinstance(layer, keras.layers.Dense)
            for variable in (layer.kernel, layer.bias)}


def set_weights(model, weights):
    """Copy canonical weights into the model, in place (variable.assign): Keras' kernels are
    already (in, out), so nothing is converted. ValueError, before anything is assigned, when a
    name is missing or a shape is wrong."""
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
    """The model's weights as a canonical dict of float32 NumPy arrays (copies): dense_i/kernel
    (in, out) and dense_i/bias, as Keras stores them."""
    return {name: np.array(variable.numpy(), dtype=np.float32)
            for name, variable in _canonical_variables(model).items()}


def _loss_function():
    """The spec's loss: softmax cross-entropy from the logits and integer labels, the batch mean."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def first_batch_loss(model):
    """The mean cross-entropy of `model` on first_batch(), a Python float. Keras alone, no
    TensorFlow call: it runs unchanged on every Keras backend."""
    x, y = first_batch()
    return float(keras.ops.convert_to_numpy(_loss_function()(y, model(x, training=False))))


def first_batch_loss_and_gradients():
    """(loss, gradients) on first_batch() from SPEC.initial_weights(): the mean softmax
    cross-entropy as a Python float, and the gradient of every parameter as a canonical dict of
    NumPy arrays, from tf.GradientTape (TensorFlow backend)."""
    model = build_model()
    set_weights(model, SPEC.initial_weights())
    x, y = first_batch()
    variables = _canonical_variables(model)
    with tf.device(_device()):
        with tf.GradientTape() as tape:
            loss = _loss_function()(y, model(x, training=True))
        gradients = tape.gradient(loss, variables)  # the same dict structure, tensors for variables
    return float(loss), {name: gradient.numpy() for name, gradient in gradients.items()}


def _predict(model, x):
    """The predicted classes (NumPy ints) for standardised inputs x (n, features)."""
    with tf.device(_device()):
        logits = model(np.asarray(x, dtype=np.float32), training=False)  # one call: no batching needed
    return keras.ops.convert_to_numpy(logits).argmax(axis=1)


def evaluate(model, x, y):
    """SPEC.metric of the model on standardised NumPy inputs x (n, features) and labels y (n,)."""
    if SPEC.metric != "accuracy":
        raise ValueError(f"tabular_keras measures accuracy, the spec asks for {SPEC.metric!r}")
    return float((_predict(model, x) == np.asarray(y)).mean())


class _EpochTimer(keras.callbacks.Callback):
    """Each epoch's training time, without its validation: seconds[i] for epoch i."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_test_begin(self, logs=None):  # fit's validation starts: the epoch's training is over
        self.seconds.append(time.perf_counter() - self.start)


def train(model, epochs=None):
    """Compile and fit `model` in place for `epochs` (default SPEC.epochs) on the standardised
    training split; return its history: {"loss": each epoch's mean training loss,
    "val_accuracy": the validation accuracy after each epoch, "seconds": each epoch's training
    time, without validation}.

    Pipeline: tf.data from_tensor_slices, shuffled each epoch from a buffer of the whole split
    with SPEC.seed, batched by SPEC.batch_size (the last, smaller batch kept), prefetched;
    keras.optimizers.Adam with SPEC.optimizer's learning rate and epsilon.
    """
    epochs = SPEC.epochs if epochs is None else epochs
    splits = _splits()
    settings = SPEC.optimizer
    if settings.weight_decay:
        raise ValueError("the spec asks for Adam's weight decay, which Keras applies decoupled (AdamW): "
                         "not the same optimiser as the other implementations")
    timer = _EpochTimer()
    x, y = splits["train"]
    batches = (tf.data.Dataset.from_tensor_slices((x, y))
               .shuffle(len(y), seed=SPEC.seed, reshuffle_each_iteration=True)
               .batch(SPEC.batch_size)
               .prefetch(tf.data.AUTOTUNE))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=settings.learning_rate, epsilon=settings.eps),
                  loss=_loss_function(), metrics=["accuracy"])
    with tf.device(_device()):
        fitted = model.fit(batches, epochs=epochs, validation_data=splits["val"], callbacks=[timer],
                           shuffle=False, verbose=0)
    return {"loss": fitted.history["loss"], "val_accuracy": fitted.history["val_accuracy"],
            "seconds": timer.seconds}


def save(model, path):
    """Write the model as a native .keras archive (architecture, weights, optimiser state) at
    `path`, whatever its suffix: Keras' own functions want the suffix .keras."""
    path = Path(path)
    if path.suffix == ".keras":
        model.save(path)
        return
    with tempfile.TemporaryDirectory() as folder:
        temporary = Path(folder) / "model.keras"
        model.save(temporary)
        shutil.move(temporary, path)


def load(path):
    """A fresh model rebuilt from the .keras archive at `path` (keras.saving.load_model)."""
    path = Path(path)
    if path.suffix == ".keras":
        return keras.saving.load_model(path)
    with tempfile.TemporaryDirectory() as folder:
        temporary = Path(folder) / "model.keras"
        shutil.copyfile(path, temporary)
        return keras.saving.load_model(temporary)
