"""The tabular project (penguin species from four measurements) in PyTorch: the seed of every real
project, written once with the framework's own idioms and checked against the project's spec.
Everything it needs to agree on (split, architecture, optimiser, batch size, epochs, metric,
target, initial weights) is read from `SPEC = projects.load("tabular")` when a function runs,
never copied, so the PyTorch, Keras, JAX and engine versions cannot quietly drift apart.

PyTorch idioms: the model is an `nn.Sequential` of `nn.Linear` and `nn.ReLU`; the data pipeline
a `TensorDataset` and a `DataLoader` shuffled by an explicit `torch.Generator`; the optimiser
`torch.optim.Adam`; saving is `torch.save(model.state_dict())`. `nn.Linear` stores its weight
(out, in), the transpose of the canonical (in, out) kernel: `set_weights` and `get_weights`
convert.

The contract shared by every implementation (solutions/README.md, Part 3):

    first_batch()                      (x, y) NumPy: the first SPEC.batch_size training examples,
                                       standardised with the training split's mean and std
    build_model()                      a fresh nn.Sequential from SPEC.layers, on the device
    set_weights(model, weights)        canonical dict -> the model, in place (kernels transposed)
    get_weights(model)                 the model -> canonical dict of float32 NumPy arrays
    first_batch_loss_and_gradients()   (float, canonical dict) from SPEC.initial_weights()
    train(model, epochs=None)          Adam on shuffled batches; {"loss", "val_accuracy", "seconds"}
    evaluate(model, x, y)              accuracy on standardised NumPy inputs
    save(model, path), load(path)      the state_dict to a file; a fresh model from it

The device is DEVICE (a torch.device), or, when it is None, the runtime's choice
(GRADSCHOOL_DEVICE=cpu|gpu|auto), made at first use.

Generated from solutions/03_tabular/tabular_torch.ipynb by `make export`:
edit the notebook, not this file.
"""

import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gradschool import projects, runtime
from gradschool.projects.spec import Dense


def _device():
    """DEVICE, or the runtime's choice when it was not set."""
    global DEVICE
    if DEVICE is None:
        DEVICE = runtime.setup(quiet=True, install=False).torch_device()
    return DEVICE


SPEC = projects.load("tabular")  # read when each function runs: never copy a number out of it
DEVICE = None  # a torch.device; None: the runtime's choice (GRADSCHOOL_DEVICE), made at first use


def _splits():
    """{"train", "val", "test"}: (x float32, y int64) NumPy arrays, every feature standardised
    with the training split's mean and standard deviation (ddof=0): the spec's preprocessing,
    written once for every framework (Spec.prepare in gradschool/projects/spec.py)."""
    return SPEC.prepare()


def first_batch():
    """The first SPEC.batch_size training examples after preprocessing, unshuffled: (x, y) NumPy."""
    return SPEC.first_batch()


def build_model():
    """A fresh nn.Sequential from SPEC.layers (each Dense: an nn.Linear, then an nn.ReLU where
    its activation is "relu"), on the device. Its weights are PyTorch's random start:
    set_weights puts the project's in."""
    layers, width = [], SPEC.input_shape[-1]
    for layer in SPEC.layers:
        if not isinstance(layer, Dense):
            raise TypeError(f"the tabular project is built of Dense layers, not {layer!r}")
        layers.append(nn.Linear(width, layer.units))
        if layer.activation == "relu":
            layers.append(nn.ReLU())
        elif layer.activation is not None:
            raise ValueError(f"unknown activation {layer.activation!r}")
        width = layer.units
    return nn.Sequential(*layers).to(_device())


def _dense_layers(model):
    """The model's nn.Linear layers with their canonical names: [("dense_0", layer), ...]."""
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    return [(f"dense_{i}", layer) for i, layer in enumerate(linears)]


def set_weights(model, weights):
    """Copy canonical weights into the model, in place: dense_i/kernel (in, out) becomes the
    i-th nn.Linear's weight (out, in), transposed; dense_i/bias its bias. The model keeps its
    Parameter objects (an optimiser holding them sees the new values), and shares no memory
    with `weights`. ValueError when a name is missing or a shape is wrong."""
    with torch.no_grad():  # copying into parameters is not a computation to differentiate
        for name, layer in _dense_layers(model):
            for key, parameter, transpose in ((f"{name}/kernel", layer.weight, True),
                                              (f"{name}/bias", layer.bias, False)):
                if key not in weights:
                    raise ValueError(f"the weights have no {key!r} (canonical names: {sorted(weights)})")
                value = np.asarray(weights[key])
                value = value.T if transpose else value
                if value.shape != tuple(parameter.shape):
                    needed = tuple(parameter.shape)[::-1] if transpose else tuple(parameter.shape)
                    raise ValueError(f"{key} has shape {np.shape(weights[key])}; this model needs {needed}")
                parameter.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def get_weights(model):
    """The model's weights as a canonical dict of float32 NumPy arrays (copies, on the CPU):
    dense_i/kernel (in, out), the transpose of nn.Linear's (out, in) weight, and dense_i/bias."""
    weights = {}
    for name, layer in _dense_layers(model):
        weights[f"{name}/kernel"] = layer.weight.detach().cpu().numpy().T.copy()
        weights[f"{name}/bias"] = layer.bias.detach().cpu().numpy().copy()
    return weights


def first_batch_loss_and_gradients():
    """(loss, gradients) on first_batch() from SPEC.initial_weights(): the mean softmax
    cross-entropy as a Python float, and the gradient of every parameter as a canonical dict of
    NumPy arrays (kernels (in, out))."""
    model = build_model()
    set_weights(model, SPEC.initial_weights())
    x, y = first_batch()
    logits = model(torch.as_tensor(x, device=_device()))
    loss = nn.functional.cross_entropy(logits, torch.as_tensor(y, device=_device()))
    loss.backward()
    gradients = {}
    for name, layer in _dense_layers(model):
        gradients[f"{name}/kernel"] = layer.weight.grad.cpu().numpy().T.copy()
        gradients[f"{name}/bias"] = layer.bias.grad.cpu().numpy().copy()
    return loss.item(), gradients


def _predict(model, x):
    """The predicted classes (NumPy ints) for standardised inputs x (n, features)."""
    model.eval()  # layers such as dropout behave as at test time (none here: a habit)
    with torch.no_grad():  # no graph: nothing here will be differentiated
        logits = model(torch.as_tensor(np.asarray(x, dtype=np.float32), device=_device()))
    return logits.argmax(dim=1).cpu().numpy()


def evaluate(model, x, y):
    """SPEC.metric of the model on standardised NumPy inputs x (n, features) and labels y (n,)."""
    if SPEC.metric != "accuracy":
        raise ValueError(f"tabular_torch measures accuracy, the spec asks for {SPEC.metric!r}")
    return float((_predict(model, x) == np.asarray(y)).mean())


def train(model, epochs=None):
    """Train `model` in place for `epochs` (default SPEC.epochs) on the standardised training
    split and return its history: {"loss": each epoch's mean training loss, "val_accuracy":
    the validation accuracy after each epoch, "seconds": each epoch's training time}.

    Pipeline: a TensorDataset and a DataLoader of SPEC.batch_size reshuffled every epoch from
    torch.Generator().manual_seed(SPEC.seed) (the last, smaller batch kept); torch.optim.Adam
    with SPEC.optimizer's learning rate, eps and weight decay; the batches moved to the device.
    """
    epochs = SPEC.epochs if epochs is None else epochs
    splits = _splits()
    device = _device()
    x, y = splits["train"]
    dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    loader = DataLoader(dataset, batch_size=SPEC.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(SPEC.seed))
    settings = SPEC.optimizer
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, eps=settings.eps,
                                 weight_decay=settings.weight_decay)
    history = {"loss": [], "val_accuracy": [], "seconds": []}
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
        history["loss"].append(total / len(dataset))
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
