"""The image project (handwritten digits, a small CNN on the course's 3500-image MNIST subset) in
the course's own engine (gradschool.engine, built in Part 2): the same contract as the PyTorch,
Keras and JAX versions, read from the same spec, started from the same weights, checked against
the same first-batch reference. Conv2d, MaxPool2d, Flatten, Linear, cross_entropy, Adam,
CosineSchedule, ArrayDataset, DataLoader (with its background prefetch) and state_dict are the
classes written in 02_engine.

The engine computes on NCHW images, the spec's canonical layout is channels last: set_weights
and get_weights convert the conv kernels, (kh, kw, in, out) <-> (out, in, kh, kw), and the
rows of dense_0's kernel, (h, w, c) order <-> the (c, h, w) order of the engine's Flatten
(to_engine, to_canonical). Inputs cross over in to_nchw.

    first_batch()                      (x, y) NumPy: the first SPEC.batch_size training images,
                                       (n, 28, 28, 1) channels last, unshuffled
    build_model()                      a fresh engine Sequential from SPEC.layers, NCHW
    to_engine(name, value)             a canonical array -> the engine parameter's layout
    to_canonical(name, value)          and back
    set_weights(model, weights)        canonical dict -> the model, in place
    get_weights(model)                 the model -> canonical dict of float32 NumPy arrays
    first_batch_loss_and_gradients()   (float, canonical dict) from SPEC.initial_weights()
    RandomShift(max_shift, rng)        the augmentation: a whole batch moved by one random
                                       (dy, dx), zeros coming in
    make_loader(x, y, seed)            DataLoader: shuffled, shifted, prefetched batches
    make_schedule(optimizer, steps)    warm-up then cosine to 0 at the last step
    train(model, epochs=None)          {"loss", "val_accuracy", "seconds"} per epoch
    evaluate(model, x, y)              accuracy on channels-last NumPy images
    save(model, path), load(path)      the state_dict to an .npz file; a fresh model from it

The arrays live in XP (NumPy, or CuPy on a GPU), or, when it is None, in the runtime's choice
(GRADSCHOOL_DEVICE=cpu|gpu|auto), made at first use.

Generated from solutions/04_images/images_engine.ipynb by `make export`:
edit the notebook, not this file.
"""

import time

import numpy as np
from threadpoolctl import threadpool_limits

from gradschool import projects, runtime
from gradschool.engine.conv import Conv2d, Flatten, MaxPool2d, keep_freed_memory
from gradschool.engine.device import to_device
from gradschool.engine.nn import Linear, ReLU, Sequential, cross_entropy
from gradschool.engine.tensor import Tensor, array_module, no_grad
from gradschool.engine.training import Adam, ArrayDataset, CosineSchedule, DataLoader
from gradschool.projects import spec as neutral


def _xp():
    """XP, or the runtime's array module when it was not set."""
    global XP
    if XP is None:
        XP = runtime.setup(quiet=True, install=False).xp
    return XP


def _numpy(array):
    """A NumPy copy of an array of the engine (NumPy or CuPy)."""
    return np.array(array.get() if hasattr(array, "get") else array, copy=True)


SPEC = projects.load("images")  # read when each function runs: never copy a number out of it
XP = None  # the engine's array module (NumPy, or CuPy on a GPU); None: the runtime's choice


def _splits():
    """{"train", "val", "test"}: (x float32 (n, 28, 28, 1), y int64) NumPy arrays, pixels in [0, 1]:
    the spec's preprocessing, written once for every framework (Spec.prepare)."""
    return SPEC.prepare()


def first_batch():
    """The first SPEC.batch_size training images after preprocessing, unshuffled, channels last:
    (x, y) NumPy."""
    return SPEC.first_batch()


def to_nchw(x):
    """Images (n, h, w, c), channels last, as a contiguous float32 array (n, c, h, w) of the same
    array module: the engine's layout."""
    xp = array_module(x)
    return xp.ascontiguousarray(xp.asarray(x, dtype=np.float32).transpose(0, 3, 1, 2))


def build_model():
    """A fresh engine Sequential from SPEC.layers (Conv2D: Conv2d with "same" padding, then ReLU;
    MaxPool: MaxPool2d; Flatten: Flatten; Dense: Linear, then ReLU where its activation is "relu"),
    its arrays in the engine's array module. Its weights are the engine's He-normal start from
    np.random.default_rng(SPEC.seed): set_weights puts the project's in."""
    rng = np.random.default_rng(SPEC.seed)
    height, width, channels = SPEC.input_shape
    layers = []
    for layer in SPEC.layers:
        if isinstance(layer, neutral.Conv2D):
            k = layer.kernel_size
            layers.append(Conv2d(channels, layer.filters, k, padding=k // 2, rng=rng))
            channels = layer.filters
        elif isinstance(layer, neutral.MaxPool):
            layers.append(MaxPool2d(layer.size))
            height, width = height // layer.size, width // layer.size
        elif isinstance(layer, neutral.Flatten):
            layers.append(Flatten())
            channels = height * width * channels
        elif isinstance(layer, neutral.Dense):
            layers.append(Linear(channels, layer.units, rng=rng))
            channels = layer.units
        else:
            raise TypeError(f"images_engine has no layer for {layer!r}")
        activation = getattr(layer, "activation", None)
        if activation == "relu":
            layers.append(ReLU())
        elif activation is not None:
            raise ValueError(f"unknown activation {activation!r}")
    return to_device(Sequential(*layers), _xp())  # to the GPU when the engine runs on CuPy


def _named_layers(model):
    """The model's layers with parameters, with their canonical names: [("conv_0", layer), ...]."""
    named, counts = [], {}
    for module in model:
        kind = {Conv2d: "conv", Linear: "dense"}.get(type(module))
        if kind is not None:
            counts[kind] = counts.get(kind, -1) + 1
            named.append((f"{kind}_{counts[kind]}", module))
    return named


def _flatten_shape():
    """(h, w, c): the feature maps that SPEC's Flatten receives, channels last."""
    height, width, channels = SPEC.input_shape
    for layer in SPEC.layers:
        if isinstance(layer, neutral.Conv2D):
            channels = layer.filters
        elif isinstance(layer, neutral.MaxPool):
            height, width = height // layer.size, width // layer.size
        elif isinstance(layer, neutral.Flatten):
            return height, width, channels
    raise ValueError(f"{SPEC.name}: no Flatten in {SPEC.layers}")


def to_engine(name, value):
    """The canonical array `value` of the parameter `name` ("conv_0/kernel", "dense_0/bias", ...)
    in the layout of the engine's parameter: a conv kernel (kh, kw, in, out) -> (out, in, kh, kw);
    dense_0's kernel, whose rows follow SPEC's channels-last flatten (h, w, c) -> its rows in the
    engine's channels-first order (c, h, w); every other array as it is. `value` is not changed."""
    if name.startswith("conv_") and name.endswith("/kernel"):
        return value.transpose(3, 2, 0, 1)
    if name == "dense_0/kernel":
        h, w, c = _flatten_shape()
        return value.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
    return value


def to_canonical(name, value):
    """The inverse of to_engine: the engine's array `value` of the parameter `name` in the
    canonical layout (conv kernels (kh, kw, in, out), dense_0's rows in (h, w, c) order)."""
    if name.startswith("conv_") and name.endswith("/kernel"):
        return value.transpose(2, 3, 1, 0)
    if name == "dense_0/kernel":
        h, w, c = _flatten_shape()
        return value.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(h * w * c, -1)
    return value


def set_weights(model, weights):
    """Copy canonical weights into the model, in place, converted by to_engine to each parameter's
    layout, dtype and array module. ValueError when a name is missing or a shape is wrong."""
    xp = _xp()
    shapes = SPEC.parameter_shapes()
    for name, layer in _named_layers(model):
        for key, parameter in ((f"{name}/kernel", layer.weight), (f"{name}/bias", layer.bias)):
            if key not in weights:
                raise ValueError(f"the weights have no {key!r} (canonical names: {sorted(weights)})")
            if tuple(np.shape(weights[key])) != shapes.get(key):
                raise ValueError(f"{key} has shape {np.shape(weights[key])}, the spec's is {shapes.get(key)}")
            value = to_engine(key, np.asarray(weights[key]))
            if tuple(value.shape) != parameter.shape:
                raise ValueError(f"{key} converts to {value.shape}, the model's is {parameter.shape}")
            parameter.data[...] = xp.asarray(value, dtype=parameter.data.dtype)


def get_weights(model):
    """The model's weights as a canonical dict of float32 NumPy arrays (copies)."""
    weights = {}
    for name, layer in _named_layers(model):
        kernel = to_canonical(f"{name}/kernel", _numpy(layer.weight.data))
        weights[f"{name}/kernel"] = np.ascontiguousarray(kernel, dtype=np.float32)
        weights[f"{name}/bias"] = _numpy(layer.bias.data).astype(np.float32)
    return weights


def first_batch_loss_and_gradients():
    """(loss, gradients) on first_batch() from SPEC.initial_weights(): the mean softmax
    cross-entropy as a Python float, and the gradient of every parameter as a canonical dict of
    NumPy arrays."""
    xp = _xp()
    model = build_model()
    set_weights(model, SPEC.initial_weights())
    x, y = first_batch()
    loss = cross_entropy(model(Tensor(xp.asarray(to_nchw(x)))), xp.asarray(y))
    loss.backward()
    gradients = {}
    for name, layer in _named_layers(model):
        kernel = to_canonical(f"{name}/kernel", _numpy(layer.weight.grad))
        gradients[f"{name}/kernel"] = np.ascontiguousarray(kernel)
        gradients[f"{name}/bias"] = _numpy(layer.bias.grad)
    return float(loss.item()), gradients


class RandomShift:
    """The spec's augmentation as a DataLoader transform: a batch of images (N, C, H, W) (NumPy or
    CuPy) moved by ONE (dy, dx) drawn from `rng` (np.random.Generator), each an integer in
    [-max_shift, max_shift]: out[..., r, c] = images[..., r - dy, c - dx] where that pixel exists,
    0 where it does not (zeros coming in, nothing wrapping around). The input is not changed;
    the result is a new contiguous array of its dtype and array module."""

    def __init__(self, max_shift, rng):
        self.max_shift, self.rng = max_shift, rng

    def __call__(self, images):
        xp = array_module(images)
        s = self.max_shift
        dy, dx = (int(d) for d in self.rng.integers(-s, s + 1, size=2))
        padded = xp.pad(images, ((0, 0), (0, 0), (s, s), (s, s)))
        h, w = images.shape[2:]
        return xp.ascontiguousarray(padded[:, :, s - dy:s - dy + h, s - dx:s - dx + w])


def make_loader(x, y, seed, prefetch=2):
    """A DataLoader over ArrayDataset(x, y) (x: NCHW images, y: labels, arrays of the engine's
    array module) in batches of SPEC.batch_size (the last, smaller batch kept), reshuffled every
    epoch, each batch moved by RandomShift(SPEC.max_shift, ...), `prefetch` batches prepared ahead on
    a background thread. Everything random comes from `seed`: the same seed gives the same
    batches, epoch after epoch."""
    shuffle_rng, shift_rng = np.random.default_rng(seed).spawn(2)
    return DataLoader(ArrayDataset(x, y), batch_size=SPEC.batch_size, shuffle=True, rng=shuffle_rng,
                      transform=RandomShift(SPEC.max_shift, shift_rng), prefetch=prefetch)


def make_schedule(optimizer, total_steps):
    """The spec's schedule for a run of `total_steps` optimiser steps (numbered 0 to
    total_steps - 1): a CosineSchedule on `optimizer` whose learning rate at step t (after t calls
    of its step()) is optimizer.lr * (t + 1) / SPEC.warmup_steps during the warm-up, optimizer.lr at
    step SPEC.warmup_steps, and exactly 0 at the last step, total_steps - 1."""
    if SPEC.schedule != "warmup_cosine":
        raise ValueError(f"this module schedules \"warmup_cosine\", the spec asks for {SPEC.schedule!r}")
    return CosineSchedule(optimizer, total_steps=total_steps - 1, warmup_steps=SPEC.warmup_steps)


def _predict(model, x, batch_size=250):
    """The predicted classes (NumPy ints) for images x (n, h, w, c), channels last, batch by batch."""
    xp = _xp()
    images = to_nchw(np.asarray(x, dtype=np.float32))
    model.eval()
    predicted = []
    with no_grad(), threadpool_limits(limits=1, user_api="blas"):  # no graph: nothing is differentiated
        for start in range(0, len(images), batch_size):
            logits = model(Tensor(xp.asarray(images[start:start + batch_size])))
            predicted.append(_numpy(logits.data.argmax(axis=1)))
    model.train()
    return np.concatenate(predicted)


def evaluate(model, x, y):
    """SPEC.metric of the model on images x (n, h, w, c) in [0, 1] and labels y (n,), NumPy."""
    if SPEC.metric != "accuracy":
        raise ValueError(f"images_engine measures accuracy, the spec asks for {SPEC.metric!r}")
    return float((_predict(model, x) == np.asarray(y)).mean())


def train(model, epochs=None):
    """Train `model` in place for `epochs` (default SPEC.epochs) on the training split and return
    its history: {"loss": each epoch's mean training loss, "val_accuracy": the validation accuracy
    after each epoch, "seconds": each epoch's training time}.

    Pipeline: make_loader over the training images (NCHW, XP arrays) with SPEC.seed; the engine's
    Adam with SPEC.optimizer's learning rate, eps and weight decay; make_schedule over
    epochs * len(loader) steps, stepped after every optimiser step; BLAS on one thread.
    """
    epochs = SPEC.epochs if epochs is None else epochs
    splits = _splits()
    xp = _xp()
    keep_freed_memory()
    x, y = splits["train"]
    loader = make_loader(xp.asarray(to_nchw(x)), xp.asarray(y), SPEC.seed)
    settings = SPEC.optimizer
    optimizer = Adam(model.parameters(), lr=settings.learning_rate, eps=settings.eps,
                     weight_decay=settings.weight_decay)
    schedule = make_schedule(optimizer, epochs * len(loader))
    history = {"loss": [], "val_accuracy": [], "seconds": []}
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        total = 0.0
        with threadpool_limits(limits=1, user_api="blas"):
            for xb, yb in loader:
                loss = cross_entropy(model(Tensor(xb)), yb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                total += float(loss.item()) * len(yb)
        history["seconds"].append(time.perf_counter() - start)
        history["loss"].append(total / len(y))
        history["val_accuracy"].append(evaluate(model, *splits["val"]))
    return history


def save(model, path):
    """Write the model's state_dict (its parameters by name, NumPy arrays, the engine's layout)
    to exactly `path`, in NumPy's .npz format."""
    with open(path, "wb") as file:  # a file, not a name: np.savez would add ".npz" to the name
        np.savez(file, **model.state_dict())


def load(path):
    """A fresh model (build_model()) holding the parameters saved at `path`."""
    model = build_model()
    with np.load(path) as archive:
        model.load_state_dict({name: archive[name] for name in archive.files})
    return model
