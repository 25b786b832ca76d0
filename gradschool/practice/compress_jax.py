"""Compressing the image project's CNN in JAX (Flax NNX and Optax), three ways, each measured
against the float32 model it starts from. JAX ships no quantiser and no pruning API, so both are
written here as functions on arrays and pytrees: symmetric per-channel int8 weight quantisation
(quantize_per_channel, dequantize; the weights stored as int8 and a float32 scale per output
channel, dequantised inside the jitted forward pass), global or per-layer magnitude pruning
(magnitude_masks) kept in place while fine-tuning by an Optax transformation that zeroes the
masked updates (mask_updates), and knowledge distillation into a smaller student CNN
(distillation_loss, distill: one jax.jit step with Optax). The teacher is the image project's
model (`gradschool.projects.images_jax`), built and trained by that module; the student is the
same architecture with fewer filters (STUDENT), so the image module builds it too.

Measured: parameter bytes by dtype and the msgpack checkpoint's size (and zlib-compressed),
latency of the jitted forward pass (the median of gradschool.engine.device.time_it, with
jax.block_until_ready) and test accuracy.

Generated from solutions/10_compress/compress_jax.ipynb by `make export`:
edit the notebook, not this file.
"""

import time
import zlib
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, serialization

from gradschool import projects
from gradschool.engine.device import time_it
from gradschool.projects import images, images_jax


def build_student():
    """A fresh student (images_jax.build_model(STUDENT)) holding STUDENT.make_initial_weights()."""
    model = images_jax.build_model(STUDENT)
    images_jax.set_weights(model, STUDENT.make_initial_weights())
    return model


SPEC = projects.load("images")  # the teacher's project: read when a function runs, never copied
STUDENT = images.STUDENT  # the same network with a third of the filters (the project's)


def checkpoint_bytes(tree):
    """The size in bytes of a pytree of arrays (a dict of NumPy arrays, say) as a msgpack checkpoint
    (flax.serialization.msgpack_serialize, each array in its own dtype)."""
    return len(serialization.msgpack_serialize(jax.tree.map(np.asarray, tree)))


def compressed_bytes(tree):
    """The size in bytes of that checkpoint compressed by zlib, level 9: what zeros buy on disk."""
    return len(zlib.compress(serialization.msgpack_serialize(jax.tree.map(np.asarray, tree)), 9))


def latency(forward, x, repeat=20):
    """The median time in seconds of forward(x) on the NumPy images x, put on the image module's
    device first; time_it with jax.block_until_ready, after the warm-up call that compiles."""
    x = jax.device_put(np.asarray(x, dtype=np.float32), images_jax._device())
    times = time_it(lambda: jax.block_until_ready(forward(x)), warmup=2, repeat=repeat)
    return float(np.median(times))


def quantize_per_channel(w):
    """Symmetric int8 quantisation of an array with one scale per output channel (the LAST axis):
    returns (q, scale), q an int8 jnp array of w's shape with values in [-127, 127], scale a float32
    jnp array of shape (w.shape[-1],), max |w| / 127 over each channel (1.0 for a channel of zeros).
    Traceable by jax.jit."""
    w = jnp.asarray(w, dtype=jnp.float32)
    max_abs = jnp.max(jnp.abs(w).reshape(-1, w.shape[-1]), axis=0)
    scale = jnp.where(max_abs > 0, max_abs / 127, 1.0).astype(jnp.float32)
    q = jnp.clip(jnp.round(w / scale), -127, 127).astype(jnp.int8)
    return q, scale


def dequantize(q, scale):
    """The float32 array q * scale, each output channel (last axis) times its own scale."""
    return q.astype(jnp.float32) * scale


def quantize_weights(weights):
    """A canonical weight dict with every kernel (name ending in "/kernel") replaced by
    {"q": int8 array, "scale": float32 array} from quantize_per_channel; biases unchanged."""
    quantized = {}
    for name, value in weights.items():
        if name.endswith("/kernel"):
            q, scale = quantize_per_channel(value)
            quantized[name] = {"q": np.asarray(q), "scale": np.asarray(scale)}
        else:
            quantized[name] = np.asarray(value)
    return quantized


def canonical_to_pure(weights):
    """A canonical dict {"conv_0/kernel": array, ...} as the nested "pure dict" of the image module's
    model state, {"conv": {0: {"kernel": array, ...}}, ...} (nnx.to_pure_dict's layout)."""
    pure = {}
    for name, value in weights.items():
        layer, leaf = name.split("/")
        kind, index = layer.rsplit("_", 1)
        pure.setdefault(kind, {}).setdefault(int(index), {})[leaf] = value
    return pure


def int8_forward(model):
    """(forward, quantized): quantized = quantize_weights(the model's weights), and forward a
    function images -> logits that runs the model with them, compiled by jax.jit: the int8 kernels
    and their scales are arguments of the compiled program, dequantised inside it."""
    quantized = quantize_weights(images_jax.get_weights(model))
    graphdef, template = nnx.split(model)

    @jax.jit
    def run(tree, x):
        values = {name: dequantize(v["q"], v["scale"]) if isinstance(v, dict) else v
                  for name, v in tree.items()}
        state = jax.tree.map(lambda leaf: leaf, template)  # a fresh State to fill, the template untouched
        nnx.replace_by_pure_dict(state, canonical_to_pure(values))
        return nnx.merge(graphdef, state)(x)

    on_device = jax.device_put(quantized, images_jax._device())
    return partial(run, on_device), quantized


def magnitude_masks(weights, sparsity, per_layer=False):
    """Magnitude pruning masks: weights is a dict {name: array}; return {name: bool NumPy array of
    the same shape}, False for the weights removed, True elsewhere. Global (per_layer False): the
    round(sparsity * n) of smallest |w| among all n weights of all the arrays together; per layer:
    the round(sparsity * size) of smallest |w| of each array. Ties: the earlier position first (in
    the dict's order, then the flattened order). The weights are unchanged."""
    def keep_of(flat):
        keep = np.ones(flat.size, dtype=bool)
        keep[np.argsort(flat, kind="stable")[:round(sparsity * flat.size)]] = False
        return keep

    arrays = {name: np.abs(np.asarray(w)).ravel() for name, w in weights.items()}
    if per_layer:
        return {name: keep_of(flat).reshape(np.shape(weights[name])) for name, flat in arrays.items()}
    keep = keep_of(np.concatenate(list(arrays.values())))
    masks, start = {}, 0
    for name, flat in arrays.items():
        masks[name] = keep[start:start + flat.size].reshape(np.shape(weights[name]))
        start += flat.size
    return masks


def mask_updates(masks):
    """An optax.GradientTransformation that multiplies every update leaf by the mask leaf in the
    same place of `masks` (a pytree of 0/1 arrays with the updates' structure), so that parameters
    whose mask is 0 never change. Stateless (optax.EmptyState()); traceable by jax.jit."""
    def init(params):
        return optax.EmptyState()

    def update(updates, state, params=None):
        return jax.tree.map(lambda u, m: (u * m).astype(u.dtype), updates, masks), state

    return optax.GradientTransformation(init, update)


def prune(model, sparsity, per_layer=False):
    """(pruned, masks): a new image-project model holding the model's weights with its kernels
    pruned by magnitude_masks(kernels, sparsity, per_layer), and masks, the pytree of 0/1 float32
    arrays with the structure of nnx.split(pruned)[1] (ones for the biases), for mask_updates.
    The model itself is unchanged."""
    weights = images_jax.get_weights(model)
    keep = magnitude_masks({n: w for n, w in weights.items() if n.endswith("/kernel")}, sparsity, per_layer)
    pruned = images_jax.build_model()
    images_jax.set_weights(pruned, {n: w * keep[n] if n in keep else w for n, w in weights.items()})
    _, state = nnx.split(pruned)
    ones = {n: keep[n].astype(np.float32) if n in keep else np.ones_like(w) for n, w in weights.items()}
    masks = jax.tree.map(lambda leaf: leaf, state)
    nnx.replace_by_pure_dict(masks, canonical_to_pure(jax.device_put(ones, images_jax._device())))
    return pruned, masks


def fine_tune(model, masks, epochs):
    """Train `model` in place for `epochs` with the image project's batches, Adam and schedule, each
    update multiplied by `masks` (mask_updates chained after the optimiser): the project's jitted
    step (make_train_step) with another Optax optimiser. Returns the seconds each epoch took."""
    x, y = SPEC.prepare()["train"]
    steps = -(-len(y) // SPEC.batch_size)
    optimizer = optax.chain(images_jax._optimizer(epochs * steps), mask_updates(masks))
    graphdef, params = nnx.split(model)
    opt_state = optimizer.init(params)
    step = images_jax.make_train_step(graphdef, optimizer)
    key = jax.random.key(SPEC.seed)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        key, epoch_key = jax.random.split(key)
        for xb, yb, mask in images_jax._prefetch(images_jax._batches(x, y, SPEC.batch_size, epoch_key),
                                                 images_jax._device()):
            params, opt_state, _ = step(params, opt_state, xb, yb, mask)
        jax.block_until_ready(params)
        seconds.append(time.perf_counter() - start)
    nnx.update(model, params)
    return seconds


def sparsity(model):
    """The fraction of the kernel weights (not the biases) that are exactly zero."""
    kernels = [w for n, w in images_jax.get_weights(model).items() if n.endswith("/kernel")]
    return float(sum((w == 0).sum() for w in kernels) / sum(w.size for w in kernels))


def distillation_loss(student_logits, teacher_logits, labels, temperature=4.0, alpha=0.9):
    """alpha * T**2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * the cross-entropy
    of the student's logits with the integer labels; the KL summed over the classes and both terms
    averaged over the batch; the teacher's logits behind jax.lax.stop_gradient. A float32 scalar."""
    t = temperature
    log_p = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits) / t, axis=-1)
    log_q = jax.nn.log_softmax(student_logits / t, axis=-1)
    soft = jnp.mean(jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1))
    hard = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(student_logits, labels))
    return alpha * t * t * soft + (1 - alpha) * hard


def distill(student, teacher, epochs, temperature=4.0, alpha=0.9):
    """Train `student` in place for `epochs` with distillation_loss against `teacher` (unchanged):
    the image project's batches (the padded last batch of each epoch skipped), its Adam and schedule,
    one jax.jit step. Returns {"loss": each epoch's mean loss, "val_accuracy": after each epoch}."""
    splits = SPEC.prepare()
    x, y = splits["train"]
    steps = len(y) // SPEC.batch_size
    optimizer = images_jax._optimizer(epochs * steps)
    graphdef, params = nnx.split(student)
    teacher_graphdef, teacher_params = nnx.split(teacher)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, teacher_params, xb, yb):
        soft = nnx.merge(teacher_graphdef, teacher_params)(xb)
        def loss_of(p):
            return distillation_loss(nnx.merge(graphdef, p)(xb), soft, yb, temperature, alpha)
        loss, grads = jax.value_and_grad(loss_of)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    key = jax.random.key(SPEC.seed)
    history = {"loss": [], "val_accuracy": []}
    for _ in range(epochs):
        key, epoch_key = jax.random.split(key)
        full = (batch for batch in images_jax._batches(x, y, SPEC.batch_size, epoch_key) if batch[2].all())
        total = 0.0
        for xb, yb, _ in images_jax._prefetch(full, images_jax._device()):
            params, opt_state, loss = step(params, opt_state, teacher_params, xb, yb)
            total = total + loss
        history["loss"].append(float(total) / steps)
        nnx.update(student, params)
        history["val_accuracy"].append(images_jax.evaluate(student, *splits["val"]))
    return history
