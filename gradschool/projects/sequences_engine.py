"""The sequence project (a character model of first names) in the course's own engine
(gradschool.engine, built in Part 2): the same contract as the PyTorch, Keras and JAX versions,
read from the same spec, started from the same weights, checked against the same first-batch
reference. Nothing is imported from a framework: Embedding, LSTM, Linear, cross_entropy, Adam,
ArrayDataset, DataLoader and state_dict are the classes written in 02_engine.

The engine's LSTMCell keeps its weights as the canonical layout does (weight_ih (in, 4H),
weight_hh (H, 4H), one bias (4H,), gates i, f, g, o), so set_weights and get_weights copy without
a conversion. The loss counts only the positions whose target is not -1 (the padding).

    first_batch()                      (x, y) int64 NumPy: the first SPEC.batch_size training names,
                                       encoded by SPEC.prepare (x boundary + letters, y letters +
                                       boundary, padded with 0 and -1)
    build_model()                      a fresh NameModel (Embedding, LSTM, Linear) from SPEC.layers
    set_weights(model, weights)        canonical dict -> the model, in place
    get_weights(model)                 the model -> canonical dict of float32 NumPy arrays
    masked_loss(logits, targets)       the mean cross-entropy over the positions whose target is not -1
    first_batch_loss_and_gradients()   (float, canonical dict) from SPEC.initial_weights()
    train(model, epochs=None)          Adam on shuffled batches; {"loss", "val_loss", "seconds"}
    evaluate(model, x, y)              the loss in nats per character on encoded NumPy inputs
    sample(model, count, rng, temperature=1.0)   new names, drawn letter by letter
    save(model, path), load(path)      the state_dict to an .npz file; a fresh model from it

The arrays live in XP (NumPy, or CuPy on a GPU), or, when it is None, in the runtime's choice
(GRADSCHOOL_DEVICE=cpu|gpu|auto), made at first use. Training and evaluation limit NumPy's BLAS
to one thread: the products of one time step are far too small to share.

Generated from solutions/05_sequences/sequences_engine.ipynb by `make export`:
edit the notebook, not this file.
"""

import time

import numpy as np
from threadpoolctl import threadpool_limits

from gradschool import projects, runtime
from gradschool.engine.device import to_device
from gradschool.engine.nn import Linear, Module, ReLU, cross_entropy
from gradschool.engine.sequence import LSTM, Embedding
from gradschool.engine.tensor import no_grad
from gradschool.engine.training import Adam, ArrayDataset, DataLoader
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


SPEC = projects.load("sequences")  # read when each function runs: never copy a number out of it
XP = None  # the engine's array module (NumPy, or CuPy on a GPU); None: the runtime's choice


def _splits():
    """{"train", "val", "test"}: (x, y) int64 NumPy arrays (n, steps): the spec's encoding
    (Spec.prepare in gradschool/projects/spec.py), written once for every framework."""
    return SPEC.prepare()


def first_batch():
    """The first SPEC.batch_size training names after encoding, unshuffled: (x, y) NumPy."""
    return SPEC.first_batch()


class NameModel(Module):
    """The engine layers of SPEC.layers, applied in order to token indices (N, T): an Embedding
    gives (N, T, dim), an LSTM its outputs at every step (N, T, units) (its last state is
    dropped), a Linear acts on the last axis. forward returns the logits (N, T, vocab)."""

    def __init__(self, layers):
        self.layers = list(layers)

    def forward(self, tokens):
        h = tokens
        for layer in self.layers:
            h = layer(h)
            if isinstance(layer, LSTM):
                h = h[0]  # (outputs, (h, c)): the outputs at every step
        return h


def build_model():
    """A fresh NameModel from SPEC.layers (Embedding, LSTM, Dense: an engine Embedding, LSTM
    and Linear, and a ReLU after a Dense whose activation is "relu"), its arrays in the engine's
    array module. Its weights are the engine's own start from np.random.default_rng(SPEC.seed):
    set_weights puts the project's in."""
    rng = np.random.default_rng(SPEC.seed)
    layers, width = [], None
    for layer in SPEC.layers:
        if isinstance(layer, neutral.Embedding):
            layers.append(Embedding(layer.vocab, layer.dim, rng=rng))
            width = layer.dim
        elif isinstance(layer, neutral.LSTM):
            layers.append(LSTM(width, layer.units, rng=rng))
            width = layer.units
        elif isinstance(layer, neutral.Dense):
            layers.append(Linear(width, layer.units, rng=rng))
            if layer.activation == "relu":
                layers.append(ReLU())
            elif layer.activation is not None:
                raise ValueError(f"unknown activation {layer.activation!r}")
            width = layer.units
        else:
            raise TypeError(f"the sequence project is built of Embedding, LSTM and Dense, not {layer!r}")
    return to_device(NameModel(layers), _xp())  # to the GPU when the engine runs on CuPy


def _named_layers(model):
    """The model's layers that hold weights, with their canonical names:
    [("embedding_0", Embedding), ("lstm_0", LSTM), ("dense_0", Linear)]."""
    prefixes = {Embedding: "embedding", LSTM: "lstm", Linear: "dense"}
    named, counts = [], {}
    for layer in model.layers:
        prefix = prefixes.get(type(layer))
        if prefix is not None:
            counts[prefix] = counts.get(prefix, -1) + 1
            named.append((f"{prefix}_{counts[prefix]}", layer))
    return named


def _parameters(model):
    """{canonical name: the engine Parameter holding it} for every weight of the model:
    embedding_i/table -> the Embedding's weight; lstm_i/kernel, lstm_i/recurrent, lstm_i/bias ->
    its cell's weight_ih, weight_hh, bias; dense_i/kernel, dense_i/bias -> the Linear's weight,
    bias. In the order of the layers."""
    parameters = {}
    for name, layer in _named_layers(model):
        if isinstance(layer, Embedding):
            parameters[f"{name}/table"] = layer.weight
        elif isinstance(layer, LSTM):
            cell = layer.cell
            parameters.update({f"{name}/kernel": cell.weight_ih, f"{name}/recurrent": cell.weight_hh,
                               f"{name}/bias": cell.bias})
        else:
            parameters.update({f"{name}/kernel": layer.weight, f"{name}/bias": layer.bias})
    return parameters


def set_weights(model, weights):
    """Copy canonical weights into the model, in place (every array as it is: the engine's layout
    is the canonical one), converted to each parameter's dtype and array module. ValueError
    when a name is missing or a shape is wrong."""
    xp = _xp()
    for key, parameter in _parameters(model).items():
        if key not in weights:
            raise ValueError(f"the weights have no {key!r} (canonical names: {sorted(weights)})")
        if tuple(np.shape(weights[key])) != parameter.shape:
            raise ValueError(f"{key} has shape {np.shape(weights[key])}, not {parameter.shape}")
        parameter.data[...] = xp.asarray(weights[key], dtype=parameter.data.dtype)


def get_weights(model):
    """The model's weights as a canonical dict of float32 NumPy arrays (copies)."""
    return {key: _numpy(parameter.data).astype(np.float32) for key, parameter in _parameters(model).items()}


def masked_loss(logits, targets):
    """The mean softmax cross-entropy over the positions whose target is not -1, as a 0-d Tensor
    (nats per character). logits: a Tensor (N, T, vocab); targets: integers (N, T) (an array of
    the engine's array module), -1 where there is no character to predict."""
    xp = _xp()
    targets = xp.asarray(targets)
    keep = xp.flatnonzero(targets.reshape(-1) >= 0)
    flat = logits.reshape(-1, logits.shape[-1])
    return cross_entropy(flat[keep], targets.reshape(-1)[keep])


def first_batch_loss_and_gradients():
    """(loss, gradients) on first_batch() from SPEC.initial_weights(): masked_loss as a Python
    float, and the gradient of every parameter as a canonical dict of NumPy arrays."""
    xp = _xp()
    model = build_model()
    set_weights(model, SPEC.initial_weights())
    x, y = first_batch()
    with threadpool_limits(limits=1, user_api="blas"):
        loss = masked_loss(model(xp.asarray(x)), xp.asarray(y))
        loss.backward()
    return float(loss.item()), {name: _numpy(p.grad) for name, p in _parameters(model).items()}


def evaluate(model, x, y):
    """SPEC.metric (the loss in nats per character, a Python float) of the model on encoded NumPy
    inputs x (n, steps) and targets y (n, steps), -1 at the padding."""
    if SPEC.metric != "loss":
        raise ValueError(f"sequences_engine measures the loss, the spec asks for {SPEC.metric!r}")
    xp = _xp()
    model.eval()
    with no_grad(), threadpool_limits(limits=1, user_api="blas"):  # no graph: nothing to differentiate
        loss = masked_loss(model(xp.asarray(x)), xp.asarray(y))
    return float(loss.item())


def train(model, epochs=None):
    """Train `model` in place for `epochs` (default SPEC.epochs) on the encoded training names and
    return its history: {"loss": each epoch's training loss per character, "val_loss": the
    validation loss after each epoch, "seconds": each epoch's training time}.

    Pipeline: an ArrayDataset and a DataLoader of SPEC.batch_size reshuffled every epoch from
    np.random.default_rng(SPEC.seed) (the last, smaller batch kept), each batch cut to its longest
    name; masked_loss; the engine's Adam with SPEC.optimizer's learning rate, eps and weight decay.
    """
    epochs = SPEC.epochs if epochs is None else epochs
    splits = _splits()
    xp = _xp()
    with threadpool_limits(limits=1, user_api="blas"):  # tiny products: one thread is faster
        x, y = splits["train"]
        loader = DataLoader(ArrayDataset(xp.asarray(x), xp.asarray(y)), batch_size=SPEC.batch_size,
                            shuffle=True, rng=np.random.default_rng(SPEC.seed))
        settings = SPEC.optimizer
        optimizer = Adam(model.parameters(), lr=settings.learning_rate, eps=settings.eps,
                         weight_decay=settings.weight_decay)
        history = {"loss": [], "val_loss": [], "seconds": []}
        for _ in range(epochs):
            start = time.perf_counter()
            model.train()
            total, characters = 0.0, 0
            for xb, yb in loader:
                width = int((yb >= 0).sum(axis=1).max())  # the longest name of the batch, + 1
                xb, yb = xb[:, :width], yb[:, :width]
                loss = masked_loss(model(xb), yb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                count = int((yb >= 0).sum())
                total += float(loss.item()) * count
                characters += count
            history["seconds"].append(time.perf_counter() - start)
            history["loss"].append(total / characters)
            history["val_loss"].append(evaluate(model, *splits["val"]))
        return history


def _step(model, tokens, states=None):
    """One time step of the model for n sequences at once: tokens (n,) integers and the states of
    its LSTM layers (a list from the previous step; None at the start) -> (logits (n, vocab) as a
    NumPy array, the new states). Computes no gradients."""
    xp = _xp()
    states = [None] * len(model.layers) if states is None else list(states)
    h = xp.asarray(tokens)
    with no_grad():
        for i, layer in enumerate(model.layers):
            if isinstance(layer, LSTM):
                states[i] = layer.cell(h, states[i])
                h = states[i][0]
            else:
                h = layer(h)
    return _numpy(h.data), states


def sample(model, count, rng, temperature=1.0):
    """`count` new names (a list of strings of SPEC.alphabet's letters), drawn letter by letter
    from the model at `temperature` with the generator `rng` (np.random.default_rng(seed)): the
    same generator state gives the same names. temperature 0: the argmax at every step."""
    alphabet, steps = SPEC.alphabet, SPEC.input_shape[0]
    tokens, states = np.zeros(count, dtype=np.int64), None  # every name starts at the boundary token
    drawn = []
    ended = np.zeros(count, dtype=bool)
    for _ in range(steps):
        logits, states = _step(model, tokens, states)
        if temperature == 0:
            tokens = logits.argmax(axis=1).astype(np.int64)
        else:
            scaled = (logits.astype(np.float64) - logits.max(axis=1, keepdims=True)) / temperature
            p = np.exp(scaled)
            cumulative = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
            u = rng.random(count)
            tokens = np.minimum((cumulative <= u[:, None]).sum(axis=1), len(alphabet) - 1).astype(np.int64)
        drawn.append(tokens)
        ended |= tokens == 0
        if ended.all():
            break
    names = []
    for row in np.stack(drawn, axis=1):
        letters = []
        for token in row[:steps - 1]:
            if token == 0:
                break
            letters.append(alphabet[token])
        names.append("".join(letters))
    return names


def save(model, path):
    """Write the model's state_dict (its parameters by dotted name, NumPy arrays) to exactly
    `path`, in NumPy's .npz format."""
    with open(path, "wb") as file:  # a file, not a name: np.savez would add ".npz" to the name
        np.savez(file, **model.state_dict())


def load(path):
    """A fresh model (build_model()) holding the parameters saved at `path`."""
    model = build_model()
    with np.load(path) as archive:
        model.load_state_dict({name: archive[name] for name in archive.files})
    return model
