"""Deploying the image project's CNN from JAX (Flax NNX): checkpoints of pytrees, and the model
exported as a serialized StableHLO program with `jax.export`.

- Checkpoints with Flax's msgpack: a JAX model is a function and a pytree of arrays, and so is
  its optimiser's state. `save_checkpoint` writes the model's state as a pure dict, Optax's state
  as its list of leaves, and the step, with `flax.serialization.msgpack_serialize`;
  `load_checkpoint` restores them into a fresh model and into the structure of a fresh
  `optimizer.init` (msgpack stores arrays and dicts, not the pytree's node types: the structure
  comes from the code, the leaves from the file), so that training resumes exactly.
- Checkpoints with Orbax (`orbax.checkpoint.StandardCheckpointer`): the model's `nnx.State`
  saved to a directory and restored against an abstract state (shapes and dtypes from
  `nnx.eval_shape`, no random initialisation) into a fresh model.
- `jax.export`: the jitted forward pass, the weights embedded as constants, lowered for a
  symbolic batch dimension and serialized to bytes; `jax.export.deserialize(...).call(x)` runs it
  in a process that has JAX but not the model's code. `ExportedClassifier` wraps it for
  channels-last NumPy images.

The model, its layout and its training are `gradschool.projects.images_jax`'s; arrays live on
its device (images_jax.DEVICE, or the runtime's choice).

Generated from solutions/09_deploy/deploy_jax.ipynb by `make export`:
edit the notebook, not this file.
"""

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx, serialization

from gradschool import projects
from gradschool.projects import images_jax
from gradschool.projects.tabular_jax import make_train_step


def _device():
    """The device of the image module (images_jax.DEVICE, or the runtime's choice)."""
    return images_jax._device()


SPEC = projects.load("images")  # read when each function runs: never copy a number out of it


@functools.cache
def make_optimizer():
    """optax.adam with SPEC.optimizer's learning rate (constant: no schedule) and eps; the same
    object at every call, so that the jitted step compiled for it is reused."""
    return optax.adam(SPEC.optimizer.learning_rate, eps=SPEC.optimizer.eps)


@functools.cache
def _step(graphdef, optimizer):
    """The image module's jitted training step for this model structure and optimiser, built once."""
    return make_train_step(graphdef, optimizer)


def train_steps(model, optimizer, opt_state, batches):
    """One Adam step per (x, y) NumPy batch of `batches` (channels-last images, labels), the model
    updated in place; (the new optimiser state, the list of the losses as floats)."""
    graphdef, params = nnx.split(model)
    step = _step(graphdef, optimizer)
    losses = []
    for x, y in batches:
        x, y = jax.device_put((np.asarray(x, np.float32), np.asarray(y)), _device())
        params, opt_state, loss = step(params, opt_state, x, y, jnp.ones(len(y), jnp.float32))
        losses.append(float(loss))
    nnx.update(model, params)
    return opt_state, losses


def save_checkpoint(path, model, opt_state, step):
    """Write {"model": the model's state as a pure dict, "opt_state": the leaves of opt_state (a list
    of NumPy arrays), "step": int(step)} to `path` as msgpack bytes."""
    leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(opt_state)]
    tree = {"model": nnx.to_pure_dict(nnx.state(model)), "opt_state": leaves, "step": int(step)}
    Path(path).write_bytes(serialization.msgpack_serialize(tree))


def load_checkpoint(path, optimizer):
    """(model, opt_state, step) from the checkpoint at `path`: a fresh images_jax.build_model() with
    the saved state, the saved leaves in the structure of optimizer.init(nnx.state(model)) on the
    device, and the step as an int."""
    saved = serialization.msgpack_restore(Path(path).read_bytes())
    model = images_jax.build_model()
    state = nnx.state(model)
    nnx.replace_by_pure_dict(state, saved["model"])
    nnx.update(model, jax.device_put(state, _device()))
    structure = jax.tree_util.tree_structure(optimizer.init(nnx.state(model)))
    leaves = [jax.device_put(np.asarray(leaf), _device()) for leaf in saved["opt_state"]]
    return model, jax.tree_util.tree_unflatten(structure, leaves), int(saved["step"])


def orbax_save(directory, model):
    """Save nnx.state(model) to `directory` (which must not exist yet) with Orbax's
    StandardCheckpointer; return when it is written."""
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(Path(directory).absolute(), nnx.state(model))
        checkpointer.wait_until_finished()


def orbax_restore(directory):
    """A fresh model holding the state saved by orbax_save in `directory`, restored against the
    abstract state of nnx.eval_shape(images_jax.build_model) (no random initialisation)."""
    graphdef, abstract_state = nnx.split(nnx.eval_shape(images_jax.build_model))
    with ocp.StandardCheckpointer() as checkpointer:
        state = checkpointer.restore(Path(directory).absolute(), abstract_state)
    return nnx.merge(graphdef, state)


def export_model(model):
    """The forward pass of `model` (weights embedded as constants), exported with jax.export for
    float32 inputs (batch, *SPEC.input_shape), `batch` symbolic; its serialized bytes."""
    graphdef, params = nnx.split(model)
    (batch,) = jax.export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((batch, *SPEC.input_shape), jnp.float32)
    exported = jax.export.export(jax.jit(lambda x: nnx.merge(graphdef, params)(x)))(spec)
    return exported.serialize()


class ExportedClassifier:
    """A jax.export-ed forward pass, from its serialized bytes, callable on channels-last NumPy
    images: logits (n, classes) as a float32 NumPy array; a single image (h, w, c) is a batch of
    one. The program is compiled on the first call for each batch size."""

    def __init__(self, blob):
        self.exported = jax.export.deserialize(bytearray(blob))
        self.dtype = self.exported.in_avals[0].dtype

    def __call__(self, images):
        images = np.asarray(images, dtype=self.dtype)
        if images.ndim == len(self.exported.in_avals[0].shape) - 1:
            images = images[None]
        return np.asarray(self.exported.call(jax.device_put(images, _device())))

    def predict(self, images):
        """The predicted classes (n,) of images as __call__ takes them."""
        return self(images).argmax(axis=1)
