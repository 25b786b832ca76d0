"""The transfer-learning project in Keras 3 on TensorFlow: the image project's CNN pretrained on
the digits 0-4 (`SPEC = projects.load("transfer")`), then a fresh five-way head fine-tuned on
the digits 5-9 from two labelled examples per class with the convolutional body frozen
(`transfer.FINETUNE`), against the same network trained from scratch on the same ten examples.

The network, its canonical weights and the first batch's gradients come from
`gradschool.projects.images_keras`, imported, not copied: `build_model(spec)` and
`first_batch_loss_and_gradients(spec)` take this project's spec. Keras idioms: freezing is
`layer.trainable = False`, set before the training step is traced (`freeze`), so that
`model.trainable_weights` and the optimiser's state hold the head only; the data pipeline is
`tf.data` (a seeded shuffle, batch, repeat, prefetch) fed to `compile` and `fit` with a constant
learning rate and no augmentation.

The contract shared by every implementation (solutions/README.md, Part 3):

    first_batch()                      (x, y) NumPy: the first SPEC.batch_size training images of
                                       the digits 0-4, labels renumbered 0..4, unshuffled
    build_model()                      a fresh keras.Sequential from SPEC.layers
    set_weights(model, weights)        canonical dict -> the model, in place (no conversion)
    get_weights(model)                 the model -> canonical dict of float32 NumPy arrays
    first_batch_loss_and_gradients()   (float, canonical dict) from SPEC.initial_weights()
    train(model, spec=None, epochs=None)  freeze what spec does not train, compile and fit;
                                       {"loss", "seconds"}
    evaluate(model, x, y)              accuracy on NumPy images (n, 28, 28, 1)
    save(model, path), load(path)      a .keras archive; a fresh model from it

Besides the contract: freeze(model, spec), fine_tune_start(pretrained) (a new model: the
pretrained body, the initial head) and few_label_experiment(pretrained, specs) (test accuracies
fine-tuned and from scratch, one per spec).

Generated from solutions/06_transfer/transfer_keras.ipynb by `make export`:
edit the notebook, not this file.
"""

import dataclasses
import time

import keras
import numpy as np
import tensorflow as tf

from gradschool import projects
from gradschool.projects import images_keras, transfer
from gradschool.projects.images_keras import get_weights, load, save, set_weights


def first_batch():
    """The first SPEC.batch_size training images (digits 0-4, labels renumbered), unshuffled: (x, y)."""
    return SPEC.first_batch()


def build_model():
    """A fresh keras.Sequential from SPEC.layers: the image project's CNN with SPEC's head."""
    return images_keras.build_model(SPEC)


def first_batch_loss_and_gradients():
    """(loss, canonical gradients) on first_batch() from SPEC.initial_weights(), tf.GradientTape."""
    return images_keras.first_batch_loss_and_gradients(SPEC)


def evaluate(model, x, y):
    """SPEC.metric (accuracy) of the model on NumPy images x (n, 28, 28, 1) and labels y (n,)."""
    if SPEC.metric != "accuracy":
        raise ValueError(f"transfer_keras measures accuracy, the spec asks for {SPEC.metric!r}")
    return float((images_keras._predict(model, x) == np.asarray(y)).mean())


SPEC = projects.load("transfer")  # pretraining on the digits 0-4; read when each function runs
FINETUNE = transfer.FINETUNE  # a fresh head on the digits 5-9, two labels per class, the body frozen
__all__ = ["FINETUNE", "SPEC", "build_model", "evaluate", "few_label_experiment", "fine_tune_start",
           "first_batch", "first_batch_loss_and_gradients", "freeze", "get_weights", "load", "save",
           "set_weights", "train"]


def freeze(model, spec):
    """Set each weighted layer's `trainable` flag from spec: True when its parameters are among
    spec.trainable_parameters() (every parameter when spec.trainable is empty), else False.
    In place; layers without weights are left alone. Call it before compile."""
    training = {name.split("/")[0] for name in spec.trainable_parameters()}
    for layer in model.layers:
        if layer.weights:
            layer.trainable = layer.name in training


class _EpochTimer(keras.callbacks.Callback):
    """Each epoch's training time: seconds[i] for epoch i."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def train(model, spec=None, epochs=None):
    """Train `model` in place with `spec` (default SPEC): its training split, batch size, epochs
    (unless `epochs` is given) and Adam at a constant learning rate, updating only the parameters
    in spec.trainable_parameters() (the others come out bit-identical). Batches shuffled every
    epoch with spec.seed, no augmentation, no validation. Returns {"loss": each epoch's mean
    training loss, "seconds": each epoch's time}."""
    spec = SPEC if spec is None else spec
    epochs = spec.epochs if epochs is None else epochs
    x, y = spec.prepare()["train"]
    steps = -(-len(y) // spec.batch_size)
    if spec.optimizer.weight_decay:
        raise ValueError("the spec asks for Adam's weight decay, which Keras applies decoupled (AdamW)")
    timer = _EpochTimer()
    freeze(model, spec)  # before compile: the step is traced with these trainable variables
    batches = (tf.data.Dataset.from_tensor_slices((x, y))
               .shuffle(len(y), seed=spec.seed, reshuffle_each_iteration=True)
               .batch(spec.batch_size)
               .repeat(epochs)
               .prefetch(tf.data.AUTOTUNE))
    optimizer = keras.optimizers.Adam(learning_rate=spec.optimizer.learning_rate, epsilon=spec.optimizer.eps)
    model.compile(optimizer=optimizer, loss=images_keras._loss_function())
    with tf.device(images_keras._device()):
        fitted = model.fit(batches, epochs=epochs, steps_per_epoch=steps, callbacks=[timer], shuffle=False,
                           verbose=0)
    return {"loss": fitted.history["loss"], "seconds": timer.seconds}


def fine_tune_start(pretrained):
    """A new model (no variable shared with `pretrained`, which is left unchanged): the pretrained
    model's weights, except dense_0/kernel and dense_0/bias, which are SPEC.initial_weights()'."""
    weights = get_weights(pretrained)
    initial = SPEC.initial_weights()
    for name in ("dense_0/kernel", "dense_0/bias"):
        weights[name] = initial[name]
    model = build_model()
    set_weights(model, weights)
    return model


def few_label_experiment(pretrained, specs):
    """For each spec of `specs` (FINETUNE-like: classes, few labels, trainable dense_0): the test
    accuracy on spec.prepare()["test"] of fine_tune_start(pretrained) trained with spec, and of a
    new model from SPEC.initial_weights() trained with spec with every layer trainable
    (dataclasses.replace(spec, trainable=())). Returns {"fine_tuned": [...], "scratch": [...]},
    floats in the order of specs; `pretrained` is left unchanged."""
    fine_tuned, scratch = [], []
    for spec in specs:
        x_test, y_test = spec.prepare()["test"]
        model = fine_tune_start(pretrained)
        train(model, spec)
        fine_tuned.append(evaluate(model, x_test, y_test))
        model = build_model()
        set_weights(model, SPEC.initial_weights())
        train(model, dataclasses.replace(spec, trainable=()))
        scratch.append(evaluate(model, x_test, y_test))
    return {"fine_tuned": fine_tuned, "scratch": scratch}
