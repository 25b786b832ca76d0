"""The image project (handwritten digits, the course's MNIST subset) in PyTorch: a small CNN
(two 3x3 convolutions with ReLU, each followed by 2x2 max-pooling, then one dense layer) built
from the project's spec, loaded with the project's initial weights and trained with the
framework's own input pipeline. Every number it agrees on with the Keras, JAX and engine
versions (architecture, optimiser, batch size, epochs, target, weights) is read from
`SPEC = projects.load("images")` when a function runs, never copied.

PyTorch idioms: NCHW tensors; an `nn.Sequential` of `nn.Conv2d(padding="same")`, `nn.ReLU`,
`nn.MaxPool2d`, `nn.Flatten`, `nn.Linear`, kept in the channels-last *memory format* (its
shapes stay NCHW; only the strides change, which makes max-pooling much faster on the CPU); a
`TensorDataset` and a `DataLoader` shuffled by an explicit `torch.Generator`, whose `collate_fn`
(`RandomShift`) shifts each batch by one random (dy, dx) drawn from its own generator, zeros
coming in; `torch.optim.Adam` with a `LambdaLR` for the linear warm-up and the cosine decay;
`torch.save(model.state_dict())`.

The canonical layout (gradschool.projects.spec) differs from PyTorch's twice, and
`to_torch`/`to_canonical` convert: a convolution kernel (kh, kw, in, out) is PyTorch's weight
(out, in, kh, kw), and the dense layer after the Flatten reads its inputs flattened in (h, w, c)
order in the canonical layout but (c, h, w) in PyTorch's, so its kernel's rows are reordered,
not only transposed.

The contract shared by every implementation (solutions/README.md, Part 3):

    first_batch()                      (x, y) NumPy: the first SPEC.batch_size training images,
                                       (n, 28, 28, 1) channels last, pixels in [0, 1], unshuffled
    build_model()                      a fresh nn.Sequential from SPEC.layers, on the device
    set_weights(model, weights)        canonical dict -> the model, in place (layouts converted)
    get_weights(model)                 the model -> canonical dict of float32 NumPy arrays
    first_batch_loss_and_gradients()   (float, canonical dict) from SPEC.initial_weights()
    train(model, epochs=None)          augmented batches, Adam, warm-up + cosine schedule;
                                       {"loss", "val_accuracy", "seconds", "lr"}
    evaluate(model, x, y)              accuracy on channels-last NumPy images
    save(model, path), load(path)      the state_dict to a file; a fresh model from it

The augmentation and the schedule come from the spec too: SPEC.max_shift, SPEC.schedule
("warmup_cosine") and SPEC.warmup_steps.
The device is DEVICE (a torch.device), or, when it is None, the runtime's choice
(GRADSCHOOL_DEVICE=cpu|gpu|auto), made at first use.

Generated from solutions/04_images/images_torch.ipynb by `make export`:
edit the notebook, not this file.
"""

import math
import time
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, default_collate

from gradschool import projects, runtime
from gradschool.projects.spec import Conv2D, Dense, Flatten, MaxPool


def _device():
    """DEVICE, or the runtime's choice when it was not set."""
    global DEVICE
    if DEVICE is None:
        DEVICE = runtime.setup(quiet=True, install=False).torch_device()
    return DEVICE


SPEC = projects.load("images")  # read when each function runs: never copy a number out of it
DEVICE = None  # a torch.device; None: the runtime's choice (GRADSCHOOL_DEVICE), made at first use


def _splits():
    """{"train", "val", "test"}: (x float32 (n, 28, 28, 1), channels last, pixels in [0, 1];
    y int64), the spec's preprocessing (Spec.prepare in gradschool/projects/spec.py)."""
    return SPEC.prepare()


def first_batch():
    """The first SPEC.batch_size training images after preprocessing, unshuffled: (x, y) NumPy,
    x channels last (the canonical layout)."""
    return SPEC.first_batch()


def _nchw(x):
    """NumPy images (n, h, w, c), channels last -> a float32 tensor (n, c, h, w) on the CPU."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.float32).transpose(0, 3, 1, 2)))


def _feature_map(spec=None):
    """(h, w, c): the shape, channels last, of the feature maps the Flatten of `spec` (default
    SPEC) flattens."""
    spec = SPEC if spec is None else spec
    height, width, channels = spec.input_shape
    for layer in spec.layers:
        if isinstance(layer, Flatten):
            return height, width, channels
        if isinstance(layer, Conv2D):
            channels = layer.filters
        elif isinstance(layer, MaxPool):
            height, width = height // layer.size, width // layer.size
    raise ValueError(f"the image project needs a Flatten among its layers: {spec.layers}")


def build_model(spec=None):
    """A fresh nn.Sequential from the layers of `spec` (default SPEC), named as the spec names
    them (conv_0, relu_0, pool_0, ..., flatten_0, dense_0), in the channels-last memory format,
    on the device. Its weights are PyTorch's random start: set_weights puts the project's in."""
    spec = SPEC if spec is None else spec
    layers, counts = [], {}
    height, width, channels = spec.input_shape
    features = None

    def add(kind, module):
        counts[kind] = counts.get(kind, -1) + 1
        layers.append((f"{kind}_{counts[kind]}", module))

    for layer in spec.layers:
        if isinstance(layer, Conv2D):
            add("conv", nn.Conv2d(channels, layer.filters, layer.kernel_size, padding="same"))
            channels = layer.filters
        elif isinstance(layer, MaxPool):
            add("pool", nn.MaxPool2d(layer.size))
            height, width = height // layer.size, width // layer.size
        elif isinstance(layer, Flatten):
            add("flatten", nn.Flatten())
            features = height * width * channels
        elif isinstance(layer, Dense) and features is not None:
            add("dense", nn.Linear(features, layer.units))
            features = layer.units
        else:
            raise TypeError(f"the image project cannot build {layer!r} here")
        if getattr(layer, "activation", None) == "relu":
            add("relu", nn.ReLU())
        elif getattr(layer, "activation", None) is not None:
            raise ValueError(f"unknown activation {layer.activation!r}")
    return nn.Sequential(OrderedDict(layers)).to(_device(), memory_format=torch.channels_last)


def _parameter_layers(model, spec=None):
    """[(canonical name, layer, feature_map), ...] for each nn.Conv2d and nn.Linear of the model,
    in order; feature_map is _feature_map(spec) for a layer right after the nn.Flatten, else None."""
    found, previous = [], None
    for name, module in model.named_children():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            found.append((name, module, _feature_map(spec) if isinstance(previous, nn.Flatten) else None))
        previous = module
    return found


def set_weights(model, weights, spec=None):
    """Copy canonical weights into the model, in place, converted by to_torch. The model keeps
    its Parameter objects and shares no memory with `weights`. ValueError when a name is missing
    or a shape is wrong (for `spec`, default SPEC, or after the conversion, for the model)."""
    shapes = (SPEC if spec is None else spec).parameter_shapes()
    with torch.no_grad():  # copying into parameters is not a computation to differentiate
        for prefix, layer, feature_map in _parameter_layers(model, spec):
            for key, parameter in ((f"{prefix}/kernel", layer.weight), (f"{prefix}/bias", layer.bias)):
                if key not in weights:
                    raise ValueError(f"the weights have no {key!r} (canonical names: {sorted(weights)})")
                if np.shape(weights[key]) != shapes.get(key):
                    raise ValueError(f"{key} has shape {np.shape(weights[key])}; the spec says "
                                     f"{shapes.get(key)}")
                value = np.asarray(to_torch(key, np.asarray(weights[key], dtype=np.float32), feature_map))
                if value.shape != tuple(parameter.shape):
                    raise ValueError(f"{key} became {value.shape} in PyTorch's layout; the model's parameter "
                                     f"is {tuple(parameter.shape)}")
                parameter.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def _canonical(model, read, spec=None):
    """{canonical name: read(parameter) converted by to_canonical, as a C-contiguous float32
    NumPy copy} for every parameter of the model (built from `spec`, default SPEC)."""
    result = {}
    for prefix, layer, feature_map in _parameter_layers(model, spec):
        for key, parameter in ((f"{prefix}/kernel", layer.weight), (f"{prefix}/bias", layer.bias)):
            value = read(parameter).detach().cpu().numpy()
            result[key] = np.array(to_canonical(key, value, feature_map), dtype=np.float32, order="C")
    return result


def get_weights(model, spec=None):
    """The model's weights as a canonical dict of float32 NumPy arrays (copies, on the CPU)."""
    return _canonical(model, lambda parameter: parameter, spec)


def to_torch(name, value, feature_map=None):
    """The canonical parameter `name` (conv_i/kernel, conv_i/bias, dense_i/kernel, dense_i/bias),
    a NumPy array, in PyTorch's layout: a conv kernel (kh, kw, in, out) becomes (out, in, kh, kw);
    a dense kernel (in, out) becomes (out, in), its inputs reordered from (h, w, c) to PyTorch's
    (c, h, w) flattening when feature_map = (h, w, c) is given; a bias is unchanged."""
    value = np.asarray(value)
    if not name.endswith("/kernel"):
        return value
    if name.startswith("conv"):
        return value.transpose(3, 2, 0, 1)
    if feature_map is not None:
        height, width, channels = feature_map
        return value.reshape(height, width, channels, -1).transpose(3, 2, 0, 1).reshape(value.shape[-1], -1)
    return value.T


def to_canonical(name, value, feature_map=None):
    """The inverse of to_torch: the parameter `name` in PyTorch's layout (a NumPy array) ->
    canonical (conv kernel (kh, kw, in, out), dense kernel (in, out) with its inputs in (h, w, c)
    order when feature_map = (h, w, c) is given, bias unchanged)."""
    value = np.asarray(value)
    if not name.endswith("/kernel"):
        return value
    if name.startswith("conv"):
        return value.transpose(2, 3, 1, 0)
    if feature_map is not None:
        height, width, channels = feature_map
        value = value.reshape(-1, channels, height, width).transpose(2, 3, 1, 0)
        return value.reshape(height * width * channels, -1)
    return value.T


def first_batch_loss_and_gradients(spec=None):
    """(loss, gradients) on the first batch of `spec` (default SPEC) from its initial weights:
    the mean softmax cross-entropy as a Python float, and the gradient of every parameter as a
    canonical dict of float32 NumPy arrays."""
    spec = SPEC if spec is None else spec
    model = build_model(spec)
    set_weights(model, spec.initial_weights(), spec)
    x, y = spec.first_batch()
    device = _device()
    loss = nn.functional.cross_entropy(model(_nchw(x).to(device)), torch.as_tensor(y, device=device))
    loss.backward()
    return loss.item(), _canonical(model, lambda parameter: parameter.grad, spec)


def shift(images, dy, dx):
    """A batch of images (n, c, h, w) moved dy pixels down and dx pixels right (negative: up,
    left): output pixel (i, j) is input pixel (i - dy, j - dx), zero where that lies outside
    the image. A new tensor; `images` is unchanged."""
    height, width = images.shape[-2:]
    pad = max(abs(dy), abs(dx))
    padded = nn.functional.pad(images, (pad, pad, pad, pad))
    return padded[..., pad - dy:pad - dy + height, pad - dx:pad - dx + width]


class RandomShift:
    """A DataLoader collate_fn: stacks a list of (image, label) examples into a batch with
    default_collate, then shifts the whole batch by one (dy, dx), each in
    -SPEC.max_shift..SPEC.max_shift, drawn by torch.randint from its own generator,
    torch.Generator().manual_seed(seed)."""

    def __init__(self, seed):
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, examples):
        images, labels = default_collate(examples)
        dy, dx = torch.randint(-SPEC.max_shift, SPEC.max_shift + 1, (2,), generator=self.generator).tolist()
        return shift(images, dy, dx), labels


def make_loader(x, y, seed):
    """The training batches: a DataLoader over a TensorDataset of the images x (NumPy, (n, h, w,
    c), channels last) as NCHW float32 tensors and the labels y; SPEC.batch_size, reshuffled every
    epoch by torch.Generator().manual_seed(seed), the last, smaller batch kept; every batch
    shifted by RandomShift(seed + 1); num_workers=0 (the batches are made in this process)."""
    dataset = TensorDataset(_nchw(x), torch.as_tensor(np.asarray(y)))
    return DataLoader(dataset, batch_size=SPEC.batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(seed), collate_fn=RandomShift(seed + 1),
                      num_workers=0)


def lr_factor(step, total_steps):
    """The learning rate of optimiser step `step` (0, 1, ..., total_steps - 1) as a fraction of
    the peak, for SPEC.schedule "warmup_cosine": step / SPEC.warmup_steps during the warm-up (0 at
    step 0), then a cosine from 1 at step SPEC.warmup_steps down to 0 at the last step,
    total_steps - 1, and 0 after it. (SPEC.schedule "constant": 1.)"""
    if SPEC.schedule == "constant":
        return 1.0
    if SPEC.schedule != "warmup_cosine":
        raise ValueError(f"unknown schedule {SPEC.schedule!r}")
    warmup = SPEC.warmup_steps
    if step < warmup:
        return step / warmup
    decay_steps = max(total_steps - 1 - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, decay_steps) / decay_steps))


def make_scheduler(optimizer, total_steps):
    """A LambdaLR that sets the optimiser's learning rate to its initial value times
    lr_factor(step, total_steps); call its step() after every optimizer.step()."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps))


def _predict(model, x, batch=1000):
    """The predicted classes (NumPy ints) for images x (n, h, w, c), channels last."""
    model.eval()  # layers such as dropout behave as at test time (none here: a habit)
    with torch.no_grad():  # no graph: nothing here will be differentiated
        return np.concatenate([model(_nchw(x[i:i + batch]).to(_device())).argmax(dim=1).cpu().numpy()
                               for i in range(0, len(x), batch)])


def evaluate(model, x, y):
    """SPEC.metric of the model on NumPy images x (n, h, w, c), channels last, and labels y (n,)."""
    if SPEC.metric != "accuracy":
        raise ValueError(f"images_torch measures accuracy, the spec asks for {SPEC.metric!r}")
    return float((_predict(model, np.asarray(x, dtype=np.float32)) == np.asarray(y)).mean())


def train(model, epochs=None):
    """Train `model` in place for `epochs` (default SPEC.epochs) and return its history:
    {"loss": each epoch's mean training loss, "val_accuracy": after each epoch, "seconds": each
    epoch's training time, "lr": the learning rate of every optimiser step}.

    Pipeline: make_loader(training split, SPEC.seed) (shuffled, every batch shifted);
    torch.optim.Adam with SPEC.optimizer's learning rate, eps and weight decay; make_scheduler
    over all the run's steps, stepped after every optimiser step; the batches moved to the device.
    """
    epochs = SPEC.epochs if epochs is None else epochs
    splits = _splits()
    device = _device()
    x, y = splits["train"]
    loader = make_loader(x, y, SPEC.seed)
    settings = SPEC.optimizer
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, eps=settings.eps,
                                 weight_decay=settings.weight_decay)
    scheduler = make_scheduler(optimizer, epochs * len(loader))
    history = {"loss": [], "val_accuracy": [], "seconds": [], "lr": []}
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        total = 0.0
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = nn.functional.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            history["lr"].append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(yb)
        history["seconds"].append(time.perf_counter() - start)
        history["loss"].append(total / len(y))
        history["val_accuracy"].append(evaluate(model, *splits["val"]))
    return history


def save(model, path):
    """Write the model's state_dict (its parameters by name) to `path` with torch.save."""
    torch.save(model.state_dict(), path)


def load(path):
    """A fresh model (build_model()) holding the parameters saved at `path`, on the device."""
    model = build_model()
    model.load_state_dict(torch.load(path, map_location=_device(), weights_only=True))
    return model
