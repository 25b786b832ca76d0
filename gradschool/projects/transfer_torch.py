"""The transfer-learning project in PyTorch: the image project's CNN pretrained on the digits
0-4 (`SPEC = projects.load("transfer")`), then its convolutional body kept frozen while a fresh
head learns the digits 5-9 from two labelled examples per class (`transfer.FINETUNE` and its
`transfer.draws()`), against the same network trained from scratch on the same ten examples.

The network, its layout conversions and its parity check are the image project's:
`gradschool.projects.images_torch` builds, loads and reads models for any spec of that
architecture (its functions take a `spec` argument), and this module calls it with its own
spec rather than copying it. What is new is the freezing, PyTorch's way: `requires_grad_(False)`
on every parameter outside `spec.trainable_parameters()`, and an optimiser given only the
trainable ones, so the frozen parameters come out bit-identical.

The contract (solutions/README.md, Part 3), for SPEC, with one more argument to train:

    first_batch()                      (x, y) NumPy: the first SPEC.batch_size training images
                                       of the digits 0-4 (labels 0-4), unshuffled
    build_model(spec=None)             a fresh nn.Sequential for `spec` (default SPEC), on the device
    set_weights(model, weights)        canonical dict -> the model (images_torch's conversions)
    get_weights(model)                 the model -> canonical dict of float32 NumPy arrays
    first_batch_loss_and_gradients()   (float, canonical dict) from SPEC.initial_weights()
    train(model, spec=None, epochs=None)
                                       Adam at a constant rate on `spec`'s training split, only
                                       spec.trainable_parameters() changing; {"loss", "seconds"}
    evaluate(model, x, y)              accuracy on channels-last NumPy images
    save(model, path), load(path)      the state_dict to a file; a fresh model from it

and the experiment: freeze(model, spec), fresh_head(pretrained), experiment(pretrained, specs).
The device is images_torch's (images_torch.DEVICE, or the runtime's choice).

Generated from solutions/06_transfer/transfer_torch.ipynb by `make export`:
edit the notebook, not this file.
"""

import dataclasses
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gradschool import projects
from gradschool.projects import images_torch, transfer


def _device():
    """The device the image module computes on (images_torch.DEVICE, or the runtime's choice)."""
    return images_torch._device()


SPEC = projects.load("transfer")  # pretraining on 0-4; transfer.FINETUNE and draws() for 5-9


def first_batch():
    """The first SPEC.batch_size training images (digits 0-4, labels 0-4), unshuffled: (x, y)."""
    return SPEC.first_batch()


def build_model(spec=None):
    """A fresh nn.Sequential for `spec` (default SPEC): the image project's CNN, on the device."""
    return images_torch.build_model(SPEC if spec is None else spec)


def set_weights(model, weights):
    """Canonical weights into the model, in place (images_torch's layout conversions)."""
    images_torch.set_weights(model, weights, SPEC)


def get_weights(model):
    """The model's weights as a canonical dict of float32 NumPy arrays (copies)."""
    return images_torch.get_weights(model, SPEC)


def first_batch_loss_and_gradients():
    """(loss, canonical gradients) on first_batch() from SPEC.initial_weights()."""
    return images_torch.first_batch_loss_and_gradients(SPEC)


def evaluate(model, x, y):
    """SPEC.metric (accuracy) on channels-last NumPy images x and labels y (as the spec numbers them)."""
    if SPEC.metric != "accuracy":
        raise ValueError(f"transfer_torch measures accuracy, the spec asks for {SPEC.metric!r}")
    return float((images_torch._predict(model, np.asarray(x, dtype=np.float32)) == np.asarray(y)).mean())


def save(model, path):
    """The model's state_dict to `path` (torch.save)."""
    images_torch.save(model, path)


def load(path):
    """A fresh model (build_model()) holding the parameters saved at `path`."""
    model = build_model()
    model.load_state_dict(torch.load(path, map_location=_device(), weights_only=True))
    return model


def freeze(model, spec):
    """Make exactly spec.trainable_parameters() trainable: requires_grad_(True) on those,
    requires_grad_(False) on every other parameter of the model; return the trainable
    Parameters in the model's order (what the optimiser gets)."""
    trainable = set(spec.trainable_parameters())
    chosen = []
    for name, layer, _ in images_torch._parameter_layers(model, spec):
        for key, parameter in ((f"{name}/kernel", layer.weight), (f"{name}/bias", layer.bias)):
            parameter.requires_grad_(key in trainable)
            if key in trainable:
                chosen.append(parameter)
    return chosen


def train(model, spec=None, epochs=None):
    """Train `model` in place on spec's training split (default SPEC) for `epochs` (default
    spec.epochs), only spec.trainable_parameters() changing (the others frozen, bit for bit);
    return {"loss": each epoch's mean training loss, "seconds": each epoch's time}.

    Pipeline: a DataLoader of spec.batch_size reshuffled every epoch from
    torch.Generator().manual_seed(spec.seed); torch.optim.Adam over freeze(model, spec) with
    spec.optimizer's learning rate, eps and weight decay, constant."""
    spec = SPEC if spec is None else spec
    epochs = spec.epochs if epochs is None else epochs
    x, y = spec.prepare()["train"]
    device = _device()
    dataset = TensorDataset(images_torch._nchw(x), torch.as_tensor(y))
    loader = DataLoader(dataset, batch_size=spec.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(spec.seed))
    settings = spec.optimizer
    optimizer = torch.optim.Adam(freeze(model, spec), lr=settings.learning_rate, eps=settings.eps,
                                 weight_decay=settings.weight_decay)
    history = {"loss": [], "seconds": []}
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        total = 0.0
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = nn.functional.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(yb)
        history["seconds"].append(time.perf_counter() - start)
        history["loss"].append(total / len(y))
    return history


def fresh_head(pretrained):
    """A new model (build_model()) with the pretrained model's weights, except the layers
    transfer.FINETUNE trains (the head, dense_0), which are reset to SPEC.initial_weights()'.
    `pretrained` is unchanged and shares no memory with the result."""
    weights = get_weights(pretrained)
    initial = SPEC.initial_weights()
    for name in initial:
        if name.split("/")[0] in transfer.FINETUNE.trainable:
            weights[name] = initial[name]
    model = build_model()
    set_weights(model, weights)
    return model


def experiment(pretrained, specs=None):
    """For each spec of `specs` (default transfer.draws()), the test accuracy on
    spec.prepare()["test"] of fresh_head(pretrained) trained with `spec` and of a model from
    SPEC.initial_weights() trained with dataclasses.replace(spec, trainable=()):
    {"finetuned": [...], "scratch": [...]}, floats, one per spec. `pretrained` is unchanged."""
    specs = transfer.draws() if specs is None else specs
    result = {"finetuned": [], "scratch": []}
    for spec in specs:
        x_test, y_test = spec.prepare()["test"]
        model = fresh_head(pretrained)
        train(model, spec)
        result["finetuned"].append(evaluate(model, x_test, y_test))
        model = build_model()
        set_weights(model, SPEC.initial_weights())
        train(model, dataclasses.replace(spec, trainable=()))
        result["scratch"].append(evaluate(model, x_test, y_test))
    return result
