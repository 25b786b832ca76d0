"""Data parallelism in JAX, on several devices of one machine (the CPU's host devices, made with
XLA_FLAGS=--xla_force_host_platform_device_count=N before jax is imported, or several GPUs): the
image project's CNN (gradschool.projects.images_jax) replicated on every device of a one-axis
Mesh, the global batch split across them along the axis DATA (NamedSharding(mesh,
PartitionSpec(DATA))), each device differentiating the mean loss of its own shard, and the
all-reduce that averages the per-device gradients written by hand with jax.shard_map and
jax.lax.pmean; the result is the single-device gradient of the global batch to float32 rounding.

It also holds the course's framework-neutral memory calculation, memory_per_device, which
parallel_torch and parallel_keras import: the bytes each device holds for the parameters,
gradients and Adam's two moments under plain data parallelism, the ZeRO stages (FSDP's full
sharding is stage 3) and model (tensor or pipeline) parallelism, in float32 or in bfloat16 with
float32 master weights.

    data_mesh(devices)                          a Mesh with one axis, DATA, over the devices
    replicate(tree, mesh)                       every array of a pytree copied onto every device
    shard_batch(mesh, *arrays)                  arrays split along their first axis over the mesh
    data_parallel_gradients(params, graphdef, x, y, mesh)
                                                (loss, gradients) of the global batch, data-parallel
    replicas_identical(tree)                    whether every device holds the same copy of each array
    memory_per_device(n_parameters, n_devices, strategy, precision)
                                                {"parameters", "gradients", "optimizer", "total"} bytes

Generated from solutions/08_parallel/parallel_jax.ipynb by `make export`:
edit the notebook, not this file.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gradschool.projects.tabular_jax import loss_fn


def data_mesh(devices):
    """A Mesh with one axis, DATA, over `devices` (a list of jax.Device, in that order)."""
    return Mesh(np.array(devices), (DATA,))


DATA = "data"  # the name of the mesh axis the batch is split along


def replicate(tree, mesh):
    """Every array of the pytree `tree` copied whole onto every device of `mesh` (PartitionSpec())."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def replicas_identical(tree):
    """True when, for every array of the pytree `tree`, all of its device copies hold the same values
    bit for bit (what a replicated parameter must stay during data-parallel training)."""
    for leaf in jax.tree_util.tree_leaves(tree):
        first = np.asarray(leaf.addressable_shards[0].data)
        for shard in leaf.addressable_shards[1:]:
            if not np.array_equal(np.asarray(shard.data), first):
                return False
    return True


def shard_batch(mesh, *arrays):
    """The arrays (NumPy or JAX), each split along its first axis into mesh.size equal blocks, block d
    on the d-th device of the mesh (NamedSharding(mesh, P(DATA))): a tuple of jax.Arrays, dtypes as JAX
    keeps them. ValueError when a first dimension is not a multiple of mesh.size."""
    for array in arrays:
        if np.shape(array)[0] % mesh.size:
            raise ValueError(f"a batch of {np.shape(array)[0]} cannot be split into {mesh.size} equal "
                             "shards: pad it to a multiple and mask the padding")
    sharding = NamedSharding(mesh, P(DATA))
    return tuple(jax.device_put(array, sharding) for array in arrays)


def data_parallel_gradients(params, graphdef, x, y, mesh):
    """(loss, gradients) of the mean softmax cross-entropy of nnx.merge(graphdef, params) on the global
    batch (x, y), data-parallel on `mesh`: x and y split along DATA, params replicated, each device
    differentiating the mean loss of its own shard (loss_fn, a mask of ones), then jax.lax.pmean over
    DATA (the all-reduce) of the loss and the gradients; jax.shard_map with check_vma=False, under
    jax.jit. The loss a scalar, the gradients a pytree like params, both replicated on the mesh."""
    def per_device(params, x, y):
        mask = jnp.ones(x.shape[0], jnp.float32)
        loss, grads = jax.value_and_grad(loss_fn)(params, graphdef, x, y, mask)
        return jax.lax.pmean((loss, grads), DATA)

    step = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(DATA), P(DATA)), out_specs=P(),
                         check_vma=False)
    return jax.jit(step)(replicate(params, mesh), x, y)


BYTES_PER_PARAMETER = {  # (parameters, gradients, optimizer state) per parameter, with Adam
    "float32": (4, 4, 8),  # float32 weights and gradients; Adam's m and v
    "mixed": (2, 2, 12),  # bfloat16 weights and gradients; float32 master weights, m and v
}
SHARDED = {  # which of (parameters, gradients, optimizer state) each device holds only 1/N of
    "data": (False, False, False),
    "zero1": (False, False, True),
    "zero2": (False, True, True),
    "zero3": (True, True, True),  # FSDP's full sharding
    "model": (True, True, True),  # tensor or pipeline parallelism, perfectly balanced
}


def memory_per_device(n_parameters, n_devices, strategy="data", precision="float32"):
    """Bytes each of n_devices holds for a model of n_parameters trained with Adam: {"parameters",
    "gradients", "optimizer", "total"} (ints; no activations). BYTES_PER_PARAMETER[precision] gives
    the bytes per parameter of each part; SHARDED[strategy] says which parts are split across the
    devices, a sharded part of q bytes per parameter taking q * ceil(n_parameters / n_devices) bytes.
    ValueError for a strategy or precision not in those tables."""
    if precision not in BYTES_PER_PARAMETER:
        raise ValueError(f"precision {precision!r} is not one of {sorted(BYTES_PER_PARAMETER)}")
    if strategy not in SHARDED:
        raise ValueError(f"strategy {strategy!r} is not one of {sorted(SHARDED)}")
    per_device = -(-n_parameters // n_devices)  # ceil: the last shard padded
    parts = {}
    for name, size, sharded in zip(("parameters", "gradients", "optimizer"), BYTES_PER_PARAMETER[precision],
                                   SHARDED[strategy], strict=True):
        parts[name] = size * (per_device if sharded else n_parameters)
    parts["total"] = sum(parts.values())
    return parts
