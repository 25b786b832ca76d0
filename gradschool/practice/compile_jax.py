"""Compilation in JAX, measured on Part 3's tabular model (gradschool.projects.tabular_jax):
`jax.jit` traces a pure function once per input signature (shapes, dtypes, weak types, and the
values of static arguments) into a jaxpr, lowers it to StableHLO and lets XLA compile it; a call
with a new signature traces and compiles again. The module holds what the notebook builds: a
whole training epoch compiled into one XLA program with `jax.lax.scan`, a `jax.jit` wrapper that
counts its traces, padding to a few bucket sizes so that ragged batches compile a bounded number
of times, and per-example gradients with `jax.vmap(jax.grad(...))` with DP-SGD's per-example
clipping over a pytree of parameters.

    make_epoch(graphdef, optimizer)       jitted epoch(params, opt_state, xs, ys, masks)
                                          -> (params, opt_state, losses): lax.scan over the batches
    CountingJit(fn, **jit_options)        jax.jit(fn) counting its traces (.traces, .cache_size())
    pad_to_bucket(x, y, buckets)          (x, y, mask) padded to the smallest bucket that holds x
    per_example_gradients(params, graphdef, x, y)
                                          the params pytree, each leaf (n, *shape), by vmap(grad)
    clip_per_example(gradients, max_norm) (mean of the clipped gradients, per-example norms)

Generated from solutions/07_compile/compile_jax.ipynb by `make export`:
edit the notebook, not this file.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gradschool.projects import tabular_jax


def make_epoch(graphdef, optimizer):
    """A jax.jit-compiled epoch(params, opt_state, xs, ys, masks) -> (params, opt_state, losses):
    jax.lax.scan over the batches xs[i], ys[i], masks[i] (first axis: the batch index), each an
    update of tabular_jax.make_train_step's (value_and_grad of tabular_jax.loss_fn, then the
    Optax `optimizer`); losses holds each batch's loss, in order."""
    def body(carry, batch):
        params, opt_state = carry
        x, y, mask = batch
        loss, grads = jax.value_and_grad(tabular_jax.loss_fn)(params, graphdef, x, y, mask)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    @jax.jit
    def epoch(params, opt_state, xs, ys, masks):
        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), (xs, ys, masks))
        return params, opt_state, losses

    return epoch


class CountingJit:
    """jax.jit(fn, **jit_options) that counts its traces: `traces` goes up by one each time JAX
    traces fn (a Python side effect runs once per trace, never when the compiled program runs);
    calling the object calls the jitted function; cache_size() is the jitted function's number of
    cached programs."""

    def __init__(self, fn, **jit_options):
        self.traces = 0
        def counted(*args):
            self.traces += 1
            return fn(*args)

        self.jitted = jax.jit(counted, **jit_options)

    def __call__(self, *args):
        return self.jitted(*args)

    def cache_size(self):
        return self.jitted._cache_size()


def pad_to_bucket(x, y, buckets):
    """(x, y, mask) padded to the smallest size in `buckets` that is >= len(x): x's padding rows
    zeros, y's class 0, mask float32, 1 on the real rows and 0 on the padding; jax arrays.
    ValueError when len(x) is larger than every bucket."""
    n = len(x)
    fitting = [size for size in buckets if size >= n]
    if not fitting:
        raise ValueError(f"{n} examples do not fit in any bucket of {sorted(buckets)}")
    size = min(fitting)
    x, y = np.asarray(x), np.asarray(y)  # padded on the host, in the input pipeline, then sent once
    padded_x = np.zeros((size, *x.shape[1:]), x.dtype)
    padded_y = np.zeros((size, *y.shape[1:]), y.dtype)
    mask = np.zeros(size, np.float32)
    padded_x[:n], padded_y[:n], mask[:n] = x, y, 1.0
    return jnp.asarray(padded_x), jnp.asarray(padded_y), jnp.asarray(mask)


def per_example_gradients(params, graphdef, x, y):
    """The gradient of each example's own loss (tabular_jax.loss_fn on a batch of that one
    example): a pytree like params, each leaf with a leading axis of len(x), from
    jax.vmap(jax.grad(...)) -- no Python loop over the examples."""
    def loss_of_one(params, xi, yi):
        return tabular_jax.loss_fn(params, graphdef, xi[None], yi[None], jnp.ones(1, jnp.float32))

    return jax.vmap(jax.grad(loss_of_one), in_axes=(None, 0, 0))(params, x, y)


def clip_per_example(gradients, max_norm):
    """DP-SGD's clipping of per-example gradients (a pytree, each leaf (n, ...)): each example's
    gradient, all leaves together as one vector, scaled by min(1, max_norm / its norm); returns
    (the mean over the examples of the clipped gradients, a pytree of the parameters' shapes; the
    norms before clipping, an array (n,))."""
    leaves = jax.tree.leaves(gradients)
    n = leaves[0].shape[0]
    norms = jnp.sqrt(sum(jnp.sum(leaf.reshape(n, -1) ** 2, axis=1) for leaf in leaves))
    factors = jnp.minimum(1.0, max_norm / norms)
    clipped = jax.tree.map(lambda g: jnp.mean(g * factors.reshape(n, *([1] * (g.ndim - 1))), axis=0),
                           gradients)
    return clipped, norms
