"""The tabular project (penguin species from four measurements) in the course's own engine
(gradschool.engine, built in Part 2): the same contract as the PyTorch, Keras and JAX versions,
read from the same spec, started from the same weights, checked against the same first-batch
reference. Nothing is imported from a framework: Linear, ReLU, Sequential, cross_entropy, Adam,
ArrayDataset, DataLoader and state_dict are the classes written in 02_engine.

The engine's Linear stores its weight (in, out), which is the canonical layout: set_weights and
get_weights copy without a transpose. A model is saved as its state_dict with np.savez.

    first_batch()                      (x, y) NumPy: the first SPEC.batch_size training examples,
                                       standardised with the training split's mean and std
    build_model()                      a fresh engine Sequential from SPEC.layers
    set_weights(model, weights)        canonical dict -> the model, in place
    get_weights(model)                 the model -> canonical dict of float32 NumPy arrays
    first_batch_loss_and_gradients()   (float, canonical dict) from SPEC.initial_weights()
    train(model, epochs=None)          Adam on shuffled batches; {"loss", "val_accuracy", "seconds"}
    evaluate(model, x, y)              accuracy on standardised NumPy inputs
    save(model, path), load(path)      the state_dict to an .npz file; a fresh model from it

The arrays live in XP (NumPy, or CuPy on a GPU), or, when it is None, in the runtime's choice
(GRADSCHOOL_DEVICE=cpu|gpu|auto), made at first use.

Generated from solutions/03_tabular/tabular_engine.ipynb by `make export`:
edit the notebook, not this file.
"""

import time

import numpy as np

from gradschool import projects, runtime
from gradschool.engine.device import to_device
from gradschool.engine.nn import Linear, ReLU, Sequential, cross_entropy
from gradschool.engine.tensor import Tensor, no_grad
from gradschool.engine.training import Adam, ArrayDataset, DataLoader
from gradschool.projects.spec import Dense


def _xp():
    """XP, or the runtime's array module when it was not set."""
    global XP
    if XP is None:
        XP = runtime.setup(quiet=True, install=False).xp
    return XP


def _numpy(array):
    """A NumPy copy of an array of the engine (NumPy or CuPy)."""
    return np.array(array.get() if hasattr(array, "get") else array, copy=True)


SPEC = projects.load("tabular")  # read when each function runs: never copy a number out of it
XP = None  # the engine's array module (NumPy, or CuPy on a GPU); None: the runtime's choice


def _splits():
    """{"train", "val", "test"}: (x float32, y int64) NumPy arrays, every feature standardised
    with the training split's mean and standard deviation (ddof=0): the spec's preprocessing,
    written once for every framework (Spec.prepare in gradschool/projects/spec.py)."""
    return SPEC.prepare()


def first_batch():
    """The first SPEC.batch_size training examples after preprocessing, unshuffled: (x, y) NumPy."""
    return SPEC.first_batch()


def build_model():
    """A fresh engine Sequential from SPEC.layers (each Dense: a Linear, then a ReLU where its
    activation is "relu"), its arrays in the engine's array module. Its weights are the engine's
    He-normal start from np.random.default_rng(SPEC.seed): set_weights puts the project's in."""
    rng = np.random.default_rng(SPEC.seed)
    layers, width = [], SPEC.input_shape[-1]
    for layer in SPEC.layers:
        if not isinstance(layer, Dense):
            raise TypeError(f"the tabular project is built of Dense layers, not {layer!r}")
        layers.append(Linear(width, layer.units, rng=rng))
        if layer.activation == "relu":
            layers.append(ReLU())
        elif layer.activation is not None:
            raise ValueError(f"unknown activation {layer.activation!r}")
        width = layer.units
    return to_device(Sequential(*layers), _xp())  # to the GPU when the engine runs on CuPy


def _dense_layers(model):
    """The model's Linear layers with their canonical names: [("dense_0", layer), ...]."""
    return [(f"dense_{i}", layer) for i, layer in enumerate(m for m in model if isinstance(m, Linear))]


def set_weights(model, weights):
    """Copy canonical weights into the model, in place: dense_i/kernel (in, out) into the i-th
    Linear's weight (in, out), dense_i/bias into its bias, converted to the parameter's dtype
    and array module. ValueError when a name is missing or a shape is wrong."""
    xp = _xp()
    for name, layer in _dense_layers(model):
        for key, parameter in ((f"{name}/kernel", layer.weight), (f"{name}/bias", layer.bias)):
            if key not in weights:
                raise ValueError(f"the weights have no {key!r} (canonical names: {sorted(weights)})")
            if tuple(np.shape(weights[key])) != parameter.shape:
                raise ValueError(f"{key} has shape {np.shape(weights[key])}, not {parameter.shape}")
            parameter.data[...] = xp.asarray(weights[key], dtype=parameter.data.dtype)


def get_weights(model):
    """The model's weights as a canonical dict of float32 NumPy arrays (copies)."""
    weights = {}
    for name, layer in _dense_layers(model):
        weights[f"{name}/kernel"] = _numpy(layer.weight.data).astype(np.float32)
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
    loss = cross_entropy(model(Tensor(xp.asarray(x))), xp.asarray(y))
    loss.backward()
    gradients = {}
    for name, layer in _dense_layers(model):
        gradients[f"{name}/kernel"] = _numpy(layer.weight.grad)
        gradients[f"{name}/bias"] = _numpy(layer.bias.grad)
    return float(loss.item()), gradients


def _predict(model, x):
    """The predicted classes (NumPy ints) for standardised inputs x (n, features)."""
    model.eval()
    with no_grad():  # no graph: nothing here will be differentiated
        logits = model(Tensor(_xp().asarray(np.asarray(x, dtype=np.float32))))
    return _numpy(logits.data.argmax(axis=1))


def evaluate(model, x, y):
    """SPEC.metric of the model on standardised NumPy inputs x (n, features) and labels y (n,)."""
    if SPEC.metric != "accuracy":
        raise ValueError(f"tabular_engine measures accuracy, the spec asks for {SPEC.metric!r}")
    return float((_predict(model, x) == np.asarray(y)).mean())


def train(model, epochs=None):
    """Train `model` in place for `epochs` (default SPEC.epochs) on the standardised training
    split and return its history: {"loss": each epoch's mean training loss, "val_accuracy":
    the validation accuracy after each epoch, "seconds": each epoch's training time}.

    Pipeline: an ArrayDataset and a DataLoader of SPEC.batch_size reshuffled every epoch from
    np.random.default_rng(SPEC.seed) (the last, smaller batch kept); the engine's Adam with
    SPEC.optimizer's learning rate, eps and weight decay.
    """
    epochs = SPEC.epochs if epochs is None else epochs
    splits = _splits()
    xp = _xp()
    x, y = splits["train"]
    loader = DataLoader(ArrayDataset(xp.asarray(x), xp.asarray(y)), batch_size=SPEC.batch_size, shuffle=True,
                        rng=np.random.default_rng(SPEC.seed))
    settings = SPEC.optimizer
    optimizer = Adam(model.parameters(), lr=settings.learning_rate, eps=settings.eps,
                     weight_decay=settings.weight_decay)
    history = {"loss": [], "val_accuracy": [], "seconds": []}
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        total = 0.0
        for xb, yb in loader:
            loss = cross_entropy(model(Tensor(xb)), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.item()) * len(yb)
        history["seconds"].append(time.perf_counter() - start)
        history["loss"].append(total / len(y))
        history["val_accuracy"].append(evaluate(model, *splits["val"]))
    return history


def save(model, path):
    """Write the model's state_dict (its parameters by name, NumPy arrays) to exactly `path`,
    in NumPy's .npz format."""
    with open(path, "wb") as file:  # a file, not a name: np.savez would add ".npz" to the name
        np.savez(file, **model.state_dict())


def load(path):
    """A fresh model (build_model()) holding the parameters saved at `path`."""
    model = build_model()
    with np.load(path) as archive:
        model.load_state_dict({name: archive[name] for name in archive.files})
    return model
