"""Debugging and interpretability in JAX, on the image project's Flax NNX CNN
(`gradschool.projects.images_jax`): TensorBoard event files written with the `tensorboard`
package's own `EventFileWriter` and `Event` protocol buffers (JAX has no writer of its own), read
back with TensorBoard's `EventAccumulator`; NaN and Inf hunted down operation by operation by
evaluating a function's jaxpr one equation at a time, with the `jax_debug_nans` flag (restored
afterwards) and with `checkify`; the numerically stable cross-entropy (`jax.nn.logsumexp`); and
vanilla-gradient saliency maps (`jax.grad` with respect to the image).

    scalar_event(tag, value, step)                 an Event holding one scalar (simple_value)
    log_history(logdir, history, prefix="train")  every list of a history dict as a scalar series
    read_scalars(logdir, tag)                      (steps, values) NumPy arrays from the event files
    naive_cross_entropy(logits, y)                 -log(softmax) picked at y: the planted bug
    stable_cross_entropy(logits, y)                logsumexp(z) - z_y, averaged over the batch
    standardize(x, eps=0.0)                        (x - mean) / (std + eps) per image: eps=0 is a bug
    first_nonfinite(fn, *args)                     (index, primitive name) of the first equation of
                                                   fn's jaxpr whose output holds a NaN or an Inf
    saliency(model, x, classes)                    d logit[i, classes[i]] / d x[i], channels last
    smoothgrad(model, x, classes, key, ...)        the saliency averaged over noisy copies of x

Images are NumPy arrays (n, 28, 28, 1), channels last; the model is images_jax's nnx.Module.

Generated from solutions/11_debug/debug_jax.ipynb by `make export`:
edit the notebook, not this file.
"""

import io
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.extend import core as jax_core
from matplotlib import image as mpl_image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: F401 (cells below)
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from gradschool.practice.events import read_scalars as read_scalars  # shared by the debugging notebooks


def histogram_event(tag, values, step, bins=30):
    """An Event at `step` holding a histogram (summary_pb2.HistogramProto) of the NumPy `values`:
    min, max, count, sum, sum of squares, and `bins` equal-width buckets (bucket_limit: each
    bucket's right edge; bucket: its count)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    counts, edges = np.histogram(values, bins=bins)
    histogram = summary_pb2.HistogramProto(min=values.min(), max=values.max(), num=values.size,
                                           sum=values.sum(), sum_squares=(values ** 2).sum(),
                                           bucket_limit=edges[1:].tolist(), bucket=counts.tolist())
    value = summary_pb2.Summary.Value(tag=tag, histo=histogram)
    return event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=[value]))


def image_event(tag, image, step):
    """An Event at `step` holding a grey-scale image (h, w) with values in [0, 1], encoded as an RGBA
    PNG (matplotlib's imsave, black for 0, white for 1)."""
    pixels = np.clip(np.asarray(image, dtype=np.float64), 0, 1)
    buffer = io.BytesIO()
    mpl_image.imsave(buffer, pixels, cmap="gray", vmin=0.0, vmax=1.0, format="png")
    encoded = summary_pb2.Summary.Image(height=pixels.shape[0], width=pixels.shape[1], colorspace=4,
                                        encoded_image_string=buffer.getvalue())
    value = summary_pb2.Summary.Value(tag=tag, image=encoded)
    return event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=[value]))


def scalar_event(tag, value, step, wall_time=None):
    """An event_pb2.Event at `step` (wall_time: now when None) whose summary holds one value: `tag`
    with simple_value=float(value)."""
    value = summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
    return event_pb2.Event(wall_time=time.time() if wall_time is None else wall_time, step=int(step),
                           summary=summary_pb2.Summary(value=[value]))


def log_history(logdir, history, prefix="train"):
    """Write every list of `history` ({name: [number, ...]}) to an event file in `logdir` (an
    EventFileWriter) as the scalar series "<prefix>/<name>", the i-th number at step i; close it."""
    writer = EventFileWriter(str(logdir))
    try:
        for name, values in history.items():
            for step, value in enumerate(values):
                writer.add_event(scalar_event(f"{prefix}/{name}", value, step))
    finally:
        writer.close()


def standardize(x, eps=0.0):
    """Each image of x (n, h, w, c) minus its own mean, divided by its own standard deviation plus
    eps. eps=0 divides a blank image by 0: the planted bug of this notebook."""
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    std = x.std(axis=(1, 2, 3), keepdims=True)
    return (x - mean) / (std + eps)


def first_nonfinite(fn, *args):
    """(index, primitive name) of the first equation of jax.make_jaxpr(fn)(*args), evaluated one
    equation at a time, whose output holds a NaN or an Inf; None when every output is finite."""
    closed = jax.make_jaxpr(fn)(*args)
    jaxpr = closed.jaxpr
    env = dict(zip(jaxpr.constvars, closed.consts, strict=True))
    env.update(zip(jaxpr.invars, jax.tree_util.tree_leaves(args), strict=True))

    def read(atom):
        return atom.val if isinstance(atom, jax_core.Literal) else env[atom]

    for index, eqn in enumerate(jaxpr.eqns):
        outputs = eqn.primitive.bind(*[read(atom) for atom in eqn.invars],
                                     **eqn.primitive.get_bind_params(eqn.params))
        if not eqn.primitive.multiple_results:
            outputs = [outputs]
        env.update(zip(eqn.outvars, outputs, strict=True))
        for value in outputs:
            if jnp.issubdtype(jnp.result_type(value), jnp.inexact) and not bool(jnp.isfinite(value).all()):
                return index, eqn.primitive.name
    return None


def naive_cross_entropy(logits, y):
    """-log(softmax(logits))[i, y_i] averaged over the batch, as the formula reads: the planted bug
    (softmax underflows to exactly 0 when the logits are far apart, and log(0) = -inf)."""
    log_p = jnp.log(jax.nn.softmax(logits, axis=1))
    return -jnp.mean(jnp.take_along_axis(log_p, jnp.asarray(y)[:, None], axis=1))


def stable_cross_entropy(logits, y):
    """The mean softmax cross-entropy of logits (n, C) and integer labels y (n,), computed as
    logsumexp(z_i) - z_i[y_i]: finite, with finite gradients, for any finite logits."""
    picked = jnp.take_along_axis(logits, jnp.asarray(y)[:, None], axis=1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - picked)


def saliency(model, x, classes):
    """Vanilla-gradient saliency: for images x (n, h, w, c), NumPy, channels last, and integer
    classes (n,), the gradient of logit[i, classes[i]] with respect to x[i] (jax.grad with respect
    to the images), as a NumPy array of x's shape in the dtype of the model's parameters."""
    graphdef, state = nnx.split(model)
    dtype = jax.tree_util.tree_leaves(state)[0].dtype
    chosen = jnp.asarray(classes)[:, None]

    def total_score(images):
        logits = nnx.merge(graphdef, state)(images)
        return jnp.take_along_axis(logits, chosen, axis=1).sum()

    return np.asarray(jax.grad(total_score)(jnp.asarray(x, dtype=dtype)))


def smoothgrad(model, x, classes, key, samples=16, sigma=0.15):
    """SmoothGrad: the mean of saliency(model, x + noise, classes) over `samples` draws of Gaussian
    noise of standard deviation sigma (jax.random.normal from `key`), all the noisy copies
    (samples * n images) in one saliency call."""
    x = np.asarray(x, dtype=np.float32)
    noise = np.asarray(jax.random.normal(key, (samples, *x.shape)))
    noisy = (x[None] + sigma * noise).reshape(samples * len(x), *x.shape[1:])
    maps = saliency(model, noisy, np.tile(np.asarray(classes), samples))
    return maps.reshape(samples, *x.shape).mean(axis=0)
