"""The transfer-learning project in JAX: the image project's CNN pretrained on the digits 0-4
(`SPEC = projects.load("transfer")`), then its convolutional body frozen and a fresh head trained
on the digits 5-9 from two labels per class (`transfer.FINETUNE`), against the same network trained
from scratch on the same ten examples, averaged over `transfer.DRAWS` disjoint draws of labels.

The model, its weights in and out, the first-batch check, the batch iterator and its prefetching
thread, prediction and the msgpack checkpoint are the image project's, imported from
`gradschool.projects.images_jax` (which takes a spec for this purpose), not copied. What this module
adds is freezing, the JAX way: there is no `requires_grad`; `nnx.split(model, is_trainable, ...)`
cuts the parameters into a trainable and a frozen state, the loss is differentiated with respect
to the trainable one only, Optax's Adam holds moments for it only, and the frozen arrays go through
the compiled step as constants, so they come out bit-identical. The step is one module-level
`jax.jit` function whose graph definition and optimiser are static arguments (the optimiser cached
per setting), so that all the fine-tuning runs of the experiment share one compilation.

The contract (solutions/README.md, Part 3; train takes the spec to train on):

    first_batch()                      (x, y) NumPy: the first SPEC.batch_size training images of 0-4
    build_model()                      a fresh CNN (an nnx.Module) from SPEC.layers, on the device
    set_weights(model, weights)        canonical dict -> the model's Variables (images_jax)
    get_weights(model)                 the model -> canonical dict of float32 NumPy arrays (images_jax)
    first_batch_loss_and_gradients()   (float, canonical dict) from SPEC.initial_weights()
    train(model, spec=None, epochs=None)
                                       Adam on spec's training split, only spec.trainable_parameters()
                                       change; {"loss", "seconds"}
    evaluate(model, x, y)              accuracy on NumPy images (n, 28, 28, 1)
    save(model, path), load(path)      the state as msgpack; a fresh model from it

The device is images_jax's: images_jax.DEVICE, or the runtime's choice when it is None.

Generated from solutions/06_transfer/transfer_jax.ipynb by `make export`:
edit the notebook, not this file.
"""

import dataclasses
import functools
import time
from functools import partial

import jax
import numpy as np
import optax
from flax import nnx

from gradschool import projects
from gradschool.projects import images_jax, transfer
from gradschool.projects.images_jax import _batches, _predict, _prefetch, get_weights, loss_fn, set_weights


def _device():
    """images_jax's device: images_jax.DEVICE, or the runtime's choice when it is None."""
    return images_jax._device()


SPEC = projects.load("transfer")  # read when each function runs: never copy a number out of it


def first_batch():
    """The first SPEC.batch_size training images of SPEC.classes (labels renumbered), unshuffled."""
    return SPEC.first_batch()


def build_model():
    """A fresh CNN from SPEC.layers (images_jax.build_model), on the device."""
    return images_jax.build_model(SPEC)


def first_batch_loss_and_gradients():
    """(loss, canonical gradients) on first_batch() from SPEC.initial_weights() (images_jax's)."""
    return images_jax.first_batch_loss_and_gradients(SPEC)


def evaluate(model, x, y):
    """SPEC.metric of the model on NumPy images x (n, 28, 28, 1) and labels y (n,)."""
    if SPEC.metric != "accuracy":
        raise ValueError(f"transfer_jax measures accuracy, the spec asks for {SPEC.metric!r}")
    return float((_predict(model, x) == np.asarray(y)).mean())


def save(model, path):
    """Write the model's state to `path` as msgpack (images_jax.save)."""
    images_jax.save(model, path)


def load(path):
    """A fresh model of SPEC holding the state saved at `path` (images_jax.load)."""
    return images_jax.load(path, SPEC)


def _canonical(path):
    """The canonical name of the parameter at an NNX path: ("conv", 1, "kernel") -> "conv_1/kernel"."""
    layer, index, kind = path
    return f"{layer}_{index}/{kind}"


def partition(model, spec):
    """(graphdef, trainable, frozen): the model cut by nnx.split into the state of the parameters in
    spec.trainable_parameters() and the state of all the rest."""
    names = set(spec.trainable_parameters())

    def is_trainable(path, value):
        return isinstance(value, nnx.Param) and _canonical(path) in names

    return nnx.split(model, is_trainable, ...)


@functools.cache
def _adam(learning_rate, eps):
    """optax.adam at a constant learning rate: one object per setting, so jax.jit's cache of
    _train_step (keyed by its static arguments) serves every run with the same settings."""
    return optax.adam(learning_rate, eps=eps)


@partial(jax.jit, static_argnums=(0, 1))
def _train_step(graphdef, optimizer, trainable, frozen, opt_state, x, y, mask):
    """One Adam step on the trainable state only: (trainable, opt_state, loss); `frozen` is a
    constant of the step, never differentiated or returned."""
    def loss_of(trainable):
        return loss_fn(nnx.merge_state(trainable, frozen), graphdef, x, y, mask)

    loss, grads = jax.value_and_grad(loss_of)(trainable)
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, loss


def train(model, spec=None, epochs=None):
    """Train `model` in place on spec's training split (default SPEC) for `epochs` (default
    spec.epochs), changing only spec.trainable_parameters(); return {"loss": each epoch's mean
    training loss, "seconds": each epoch's time}."""
    spec = SPEC if spec is None else spec
    epochs = spec.epochs if epochs is None else epochs
    x, y = spec.prepare()["train"]
    graphdef, trainable, frozen = partition(model, spec)
    optimizer = _adam(spec.optimizer.learning_rate, spec.optimizer.eps)
    opt_state = optimizer.init(trainable)
    batch_size = min(spec.batch_size, len(y))  # ten examples: one batch of ten, not 54 rows of padding
    key = jax.random.key(spec.seed)
    history = {"loss": [], "seconds": []}
    for _ in range(epochs):
        start = time.perf_counter()
        key, epoch_key = jax.random.split(key)
        total = 0.0
        batches = _batches(x, y, batch_size, epoch_key, augment=False)
        for xb, yb, mask in _prefetch(batches, _device()):
            trainable, opt_state, loss = _train_step(graphdef, optimizer, trainable, frozen, opt_state,
                                                     xb, yb, mask)
            total = total + loss * mask.sum()
        history["loss"].append(float(total) / len(y))
        history["seconds"].append(time.perf_counter() - start)
    nnx.update(model, trainable)
    return history


def with_fresh_head(pretrained, spec):
    """A new model with the weights of `pretrained`, except those in spec.trainable_parameters(),
    which start again from spec.initial_weights()."""
    weights = get_weights(pretrained)
    initial = spec.initial_weights()
    for name in spec.trainable_parameters():
        weights[name] = initial[name]
    model = build_model()
    set_weights(model, weights)
    return model


def few_label_experiment(pretrained, specs=None):
    """For each spec of `specs` (default transfer.draws()), fine-tune a fresh head on the pretrained
    body and train the same network from SPEC.initial_weights() with every layer trainable, on the
    same few labels; {"fine_tuned": [test accuracy per draw], "scratch": [...], "seconds": [...]}."""
    results = {"fine_tuned": [], "scratch": [], "seconds": []}
    for spec in transfer.draws() if specs is None else specs:
        x_test, y_test = spec.prepare()["test"]
        start = time.perf_counter()
        fine = with_fresh_head(pretrained, spec)
        train(fine, spec)
        results["seconds"].append(time.perf_counter() - start)
        results["fine_tuned"].append(float((_predict(fine, x_test) == y_test).mean()))
        scratch_spec = dataclasses.replace(spec, trainable=())
        scratch = with_fresh_head(pretrained, scratch_spec)  # every parameter from the initial weights
        train(scratch, scratch_spec)
        results["scratch"].append(float((_predict(scratch, x_test) == y_test).mean()))
    return results
