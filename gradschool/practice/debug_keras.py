"""Debugging and interpretability in Keras 3 on TensorFlow, on the image project's CNN
(`gradschool.projects.images_keras`): TensorBoard event files written with `tf.summary` writers
and with the `keras.callbacks.TensorBoard` callback, read back with
`tf.compat.v1.train.summary_iterator`; NaN and Inf hunted down layer by layer (the first layer
whose output stops being finite) and op by op with `tf.debugging.enable_check_numerics()`; the
numerically stable cross-entropy (`tf.reduce_logsumexp`); and vanilla-gradient saliency maps from a
`tf.GradientTape` that watches the input.

    log_history(logdir, history, prefix="train")  every list of a history dict as a scalar series
    read_scalars(logdir, tag)                      (steps, values) NumPy arrays from the event files
                                                   directly in logdir (tf.summary tensors or simple values)
    naive_cross_entropy(logits, y)                 -log(softmax) picked at y: the planted bug
    stable_cross_entropy(logits, y)                reduce_logsumexp(z) - z_y, averaged over the batch
    PerImageStandardize(eps)                       a layer: (x - mean) / (std + eps) per image
    first_nonfinite(model, x)                      the name of the first layer of a Sequential model
                                                   whose output holds a NaN or an Inf
    saliency(model, x, classes)                    d logit[i, classes[i]] / d x[i], channels last
    smoothgrad(model, x, classes, rng, ...)        the saliency averaged over noisy copies of x

Images are NumPy arrays (n, 28, 28, 1), channels last; the model is images_keras's keras.Sequential.

Generated from solutions/11_debug/debug_keras.ipynb by `make export`:
edit the notebook, not this file.
"""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf


def read_scalars(logdir, tag):
    """(steps, values) of the scalar series `tag` in the event files directly in `logdir` (sorted
    by name: the order they were written): an int64 and a float64 NumPy array. A value is read from
    a tf.summary tensor or from a simple_value. KeyError when no event has that tag."""
    steps, values = [], []
    for path in sorted(Path(logdir).glob("events.out.tfevents*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag != tag:
                    continue
                steps.append(event.step)
                number = tf.make_ndarray(value.tensor) if value.HasField("tensor") else value.simple_value
                values.append(float(number))
    if not steps:
        raise KeyError(f"no scalar series {tag!r} in the event files of {logdir}")
    return np.array(steps, dtype=np.int64), np.array(values, dtype=np.float64)


def log_history(logdir, history, prefix="train"):
    """Write every list of `history` ({name: [number, ...]}) to event files in `logdir` with
    tf.summary.scalar as the series "<prefix>/<name>", the i-th number at step i; close the writer."""
    writer = tf.summary.create_file_writer(str(logdir))
    try:
        with writer.as_default():
            for name, values in history.items():
                for step, value in enumerate(values):
                    tf.summary.scalar(f"{prefix}/{name}", float(value), step=step)
    finally:
        writer.close()


class PerImageStandardize(keras.layers.Layer):
    """Each image (n, h, w, c) minus its own mean, divided by its own standard deviation plus eps.
    eps=0 divides a blank image by 0: the planted bug of this notebook."""

    def __init__(self, eps=0.0, **kwargs):
        super().__init__(**kwargs)
        self.eps = eps

    def call(self, x):
        mean = tf.reduce_mean(x, axis=(1, 2, 3), keepdims=True)
        std = tf.math.reduce_std(x, axis=(1, 2, 3), keepdims=True)
        return (x - mean) / (std + self.eps)


def first_nonfinite(model, x):
    """The name of the first layer of the Sequential `model`, in order, whose output on x holds a
    NaN or an Inf (layer by layer, x = layer(x)); None when every layer's output is finite."""
    outputs = tf.convert_to_tensor(x)
    for layer in model.layers:
        outputs = layer(outputs)
        if not all(bool(tf.reduce_all(tf.math.is_finite(t))) for t in tf.nest.flatten(outputs)):
            return layer.name
    return None


def naive_cross_entropy(logits, y):
    """-log(softmax(logits))[i, y_i] averaged over the batch, as the formula reads: the planted bug
    (softmax underflows to exactly 0 when the logits are far apart, and log(0) = -inf)."""
    return -tf.reduce_mean(tf.gather(tf.math.log(tf.nn.softmax(logits)), y, axis=1, batch_dims=1))


def stable_cross_entropy(logits, y):
    """The mean softmax cross-entropy of logits (n, C) and integer labels y (n,), computed as
    reduce_logsumexp(z_i) - z_i[y_i]: finite, with finite gradients, for any finite logits."""
    picked = tf.gather(logits, tf.cast(y, tf.int32), axis=1, batch_dims=1)
    return tf.reduce_mean(tf.reduce_logsumexp(logits, axis=1) - picked)


def saliency(model, x, classes):
    """Vanilla-gradient saliency: for images x (n, h, w, c), NumPy, channels last, and integer
    classes (n,), the gradient of logit[i, classes[i]] with respect to x[i] (tf.GradientTape
    watching the input), as a NumPy array of x's shape in the model's weight dtype."""
    images = tf.convert_to_tensor(np.asarray(x), dtype=model.weights[0].dtype)
    with tf.GradientTape() as tape:
        tape.watch(images)
        logits = model(images, training=False)
        score = tf.reduce_sum(tf.gather(logits, np.asarray(classes), axis=1, batch_dims=1))
    return tape.gradient(score, images).numpy()


def smoothgrad(model, x, classes, rng, samples=16, sigma=0.15):
    """SmoothGrad: the mean of saliency(model, x + noise, classes) over `samples` draws of Gaussian
    noise of standard deviation sigma from the NumPy Generator `rng`."""
    x = np.asarray(x, dtype=np.float32)
    total = np.zeros(x.shape, dtype=np.float64)
    for _ in range(samples):
        total += saliency(model, x + sigma * rng.standard_normal(x.shape).astype(np.float32), classes)
    return (total / samples).astype(np.float32)
