"""The sequence project (a character model of first names) in PyTorch, written with the
framework's own idioms and checked against the project's spec. Everything it needs to agree on
(data and encoding, architecture, optimiser, batch size, epochs, metric, target, initial weights)
is read from `SPEC = projects.load("sequences")` when a function runs, never copied, so the
PyTorch, Keras, JAX and engine versions cannot quietly drift apart.

PyTorch idioms: the model is a small `nn.Module` of `nn.Embedding`, `nn.LSTM` (batch first,
the loop over time steps run inside PyTorch) and `nn.Linear`; the loss is
`nn.functional.cross_entropy(..., ignore_index=-1)`, so padding counts for nothing; the data
pipeline a `TensorDataset` and a `DataLoader` shuffled by an explicit `torch.Generator`; the
optimiser `torch.optim.Adam`; sampling draws with `torch.multinomial` from an explicit
generator; saving is `torch.save(model.state_dict())`. `nn.LSTM` stores its matrices (4H, in)
and (4H, H), the transposes of the canonical kernels, with the same gate order (input, forget,
cell, output) and two biases that are added: `set_weights` puts the canonical bias into
`bias_ih_l0` and zeros into `bias_hh_l0`, `get_weights` returns their sum.

The contract shared by every implementation (solutions/README.md, Part 3):

    first_batch()                      (x, y) int64 NumPy (batch_size, 12): the first training
                                       names, encoded by SPEC.prepare(), unshuffled
    build_model()                      a fresh CharModel from SPEC.layers, on the device
    set_weights(model, weights)        canonical dict -> the model, in place (matrices transposed)
    get_weights(model)                 the model -> canonical dict of float32 NumPy arrays
    first_batch_loss_and_gradients()   (float, canonical dict) from SPEC.initial_weights()
    train(model, epochs=None)          Adam on shuffled batches; {"loss", "val_loss", "seconds"}
    evaluate(model, x, y)              the loss in nats per character over the non-padding positions
    save(model, path), load(path)      the state_dict to a file; a fresh model from it

and, for this project, sequence_loss(logits, targets) (the masked loss) and
sample(model, count, generator, temperature=1.0) (new names).

The device is DEVICE (a torch.device), or, when it is None, the runtime's choice
(GRADSCHOOL_DEVICE=cpu|gpu|auto), made at first use.

Generated from solutions/05_sequences/sequences_torch.ipynb by `make export`:
edit the notebook, not this file.
"""

import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gradschool import projects, runtime
from gradschool.projects.spec import LSTM, Dense, Embedding


def _device():
    """DEVICE, or the runtime's choice when it was not set."""
    global DEVICE
    if DEVICE is None:
        DEVICE = runtime.setup(quiet=True, install=False).torch_device()
    return DEVICE


SPEC = projects.load("sequences")  # read when each function runs: never copy a number out of it
DEVICE = None  # a torch.device; None: the runtime's choice (GRADSCHOOL_DEVICE), made at first use


def _splits():
    """{"train", "val", "test"}: (x, y) int64 NumPy arrays (n, 12), the names encoded by the spec
    (Spec.prepare in gradschool/projects/spec.py): x = boundary + letters, padded with the
    boundary token 0; y = letters + boundary, padded with -1 (no loss may count those)."""
    return SPEC.prepare()


def first_batch():
    """The first SPEC.batch_size training names after encoding, unshuffled: (x, y) int64 NumPy."""
    return SPEC.first_batch()


class CharModel(nn.Module):
    """Embedding -> LSTM (its output at every step) -> Linear: next-token logits at every step."""

    def __init__(self, vocab, dim, units, outputs):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, units, batch_first=True)
        self.dense = nn.Linear(units, outputs)

    def forward(self, tokens, state=None):
        """tokens: int64 (n, steps); state: (h, c), each (1, n, units), or None for zeros.
        Returns (logits (n, steps, outputs), the LSTM's state after the last step)."""
        outputs, state = self.lstm(self.embedding(tokens), state)
        return self.dense(outputs), state


def build_model():
    """A fresh CharModel from SPEC.layers (Embedding, LSTM, Dense without activation), on the
    device. Its weights are PyTorch's random start: set_weights puts the project's in."""
    if tuple(type(layer) for layer in SPEC.layers) != (Embedding, LSTM, Dense):
        raise TypeError(f"the sequence project is Embedding, LSTM, Dense; the spec has {SPEC.layers}")
    embedding, lstm, dense = SPEC.layers
    if dense.activation is not None:
        raise ValueError(f"the last layer gives logits: no activation, not {dense.activation!r}")
    return CharModel(embedding.vocab, embedding.dim, lstm.units, dense.units).to(_device())


def set_weights(model, weights):
    """Copy canonical weights into a CharModel, in place (its Parameter objects are kept, and
    share no memory with `weights`):

        embedding_0/table (vocab, dim)   -> embedding.weight, as it is
        lstm_0/kernel (in, 4H)           -> lstm.weight_ih_l0 (4H, in), transposed
        lstm_0/recurrent (H, 4H)         -> lstm.weight_hh_l0 (4H, H), transposed
        lstm_0/bias (4H,)                -> lstm.bias_ih_l0; lstm.bias_hh_l0 becomes zeros
        dense_0/kernel (H, outputs)      -> dense.weight (outputs, H), transposed
        dense_0/bias (outputs,)          -> dense.bias

    Gates in the same order (input, forget, cell, output) in both layouts. ValueError when a
    name is missing or a shape is wrong."""
    lstm = model.lstm
    targets = {  # canonical name: (the PyTorch parameter, transposed?)
        "embedding_0/table": (model.embedding.weight, False),
        "lstm_0/kernel": (lstm.weight_ih_l0, True),
        "lstm_0/recurrent": (lstm.weight_hh_l0, True),
        "lstm_0/bias": (lstm.bias_ih_l0, False),
        "dense_0/kernel": (model.dense.weight, True),
        "dense_0/bias": (model.dense.bias, False),
    }
    with torch.no_grad():  # copying into parameters is not a computation to differentiate
        for key, (parameter, transpose) in targets.items():
            if key not in weights:
                raise ValueError(f"the weights have no {key!r} (canonical names: {sorted(weights)})")
            value = np.asarray(weights[key], dtype=np.float32)
            value = value.T if transpose else value
            if value.shape != tuple(parameter.shape):
                needed = tuple(parameter.shape)[::-1] if transpose else tuple(parameter.shape)
                raise ValueError(f"{key} has shape {np.shape(weights[key])}; this model needs {needed}")
            parameter.copy_(torch.from_numpy(np.ascontiguousarray(value)))
        lstm.bias_hh_l0.zero_()  # the canonical bias is the sum of PyTorch's two


def get_weights(model):
    """A CharModel's weights as a canonical dict of float32 NumPy arrays (copies, on the CPU):
    the matrices transposed back, and lstm_0/bias the sum bias_ih_l0 + bias_hh_l0."""
    def array(tensor, transpose=False):
        value = tensor.detach().cpu().numpy()
        return np.ascontiguousarray(value.T if transpose else value).copy()

    lstm = model.lstm
    return {
        "embedding_0/table": array(model.embedding.weight),
        "lstm_0/kernel": array(lstm.weight_ih_l0, transpose=True),
        "lstm_0/recurrent": array(lstm.weight_hh_l0, transpose=True),
        "lstm_0/bias": array(lstm.bias_ih_l0 + lstm.bias_hh_l0),
        "dense_0/kernel": array(model.dense.weight, transpose=True),
        "dense_0/bias": array(model.dense.bias),
    }


def sequence_loss(logits, targets):
    """The mean softmax cross-entropy over the positions whose target is not -1 (nats per
    character): a 0-d tensor that can be differentiated.

    logits: float tensor (n, steps, vocab); targets: int64 tensor (n, steps), -1 at padding.
    Padding neither adds to the sum nor counts in the average, and gets no gradient."""
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                       ignore_index=-1)


def first_batch_loss_and_gradients():
    """(loss, gradients) on first_batch() from SPEC.initial_weights(): sequence_loss as a Python
    float, and the gradient of every parameter as a canonical dict of NumPy arrays (matrices
    transposed back; lstm_0/bias: the gradient of bias_ih_l0, equal to that of bias_hh_l0)."""
    model = build_model()
    set_weights(model, SPEC.initial_weights())
    x, y = first_batch()
    logits, _ = model(torch.as_tensor(x, device=_device()))
    loss = sequence_loss(logits, torch.as_tensor(y, device=_device()))
    loss.backward()
    lstm = model.lstm
    gradients = {
        "embedding_0/table": model.embedding.weight.grad,
        "lstm_0/kernel": lstm.weight_ih_l0.grad.T,
        "lstm_0/recurrent": lstm.weight_hh_l0.grad.T,
        "lstm_0/bias": lstm.bias_ih_l0.grad,  # not + bias_hh_l0.grad: the canonical bias is one number
        "dense_0/kernel": model.dense.weight.grad.T,
        "dense_0/bias": model.dense.bias.grad,
    }
    return loss.item(), {name: np.ascontiguousarray(g.cpu().numpy()).copy() for name, g in gradients.items()}


def evaluate(model, x, y):
    """SPEC.metric, the loss in nats per character over every non-padding position of NumPy
    inputs x and targets y (n, steps), as a float."""
    if SPEC.metric != "loss":
        raise ValueError(f"sequences_torch measures the loss, the spec asks for {SPEC.metric!r}")
    model.eval()  # layers such as dropout behave as at test time (none here: a habit)
    with torch.no_grad():  # no graph: nothing here will be differentiated
        logits, _ = model(torch.as_tensor(np.asarray(x, dtype=np.int64), device=_device()))
        return float(sequence_loss(logits, torch.as_tensor(np.asarray(y, dtype=np.int64), device=_device())))


def train(model, epochs=None):
    """Train `model` in place for `epochs` (default SPEC.epochs) on the training names and return
    its history: {"loss": each epoch's mean training loss per character, "val_loss": the
    validation loss after each epoch, "seconds": each epoch's training time}.

    Pipeline: a TensorDataset and a DataLoader of SPEC.batch_size reshuffled every epoch from
    torch.Generator().manual_seed(SPEC.seed) (the last, smaller batch kept); torch.optim.Adam
    with SPEC.optimizer's learning rate, eps and weight decay; the batches moved to the device;
    sequence_loss on the logits at every step.
    """
    epochs = SPEC.epochs if epochs is None else epochs
    splits = _splits()
    device = _device()
    x, y = splits["train"]
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=SPEC.batch_size,
                        shuffle=True, generator=torch.Generator().manual_seed(SPEC.seed))
    settings = SPEC.optimizer
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, eps=settings.eps,
                                 weight_decay=settings.weight_decay)
    history = {"loss": [], "val_loss": [], "seconds": []}
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        total, characters = 0.0, 0
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            logits, _ = model(xb)
            loss = sequence_loss(logits, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            count = int((yb >= 0).sum())
            total += loss.item() * count
            characters += count
        history["seconds"].append(time.perf_counter() - start)
        history["loss"].append(total / characters)
        history["val_loss"].append(evaluate(model, *splits["val"]))
    return history


def sample(model, count, generator, temperature=1.0):
    """`count` new names from the model, all at once, one LSTM step at a time.

    Every name starts from the boundary token (index 0) and a zero state. At each step, run the
    model on the last tokens (count, 1) with the state the previous step returned, and pick the
    next token of every name from softmax(logits / temperature): with one call of
    torch.multinomial(probabilities (count, vocab), 1, generator=generator) on the CPU (the
    generator is a CPU torch.Generator), or, at temperature 0, the argmax (nothing drawn). A
    name ends at its first boundary token, which is not part of it; one that has not ended after
    SPEC.input_shape[0] - 1 letters (the longest the model was trained on) is cut there.
    Returns a list of `count` strings of letters of SPEC.alphabet. Nothing is differentiated.
    """
    device = _device()
    model.eval()
    token = torch.zeros(count, 1, dtype=torch.int64, device=device)
    state, drawn = None, []
    with torch.no_grad():
        for _ in range(SPEC.input_shape[0] - 1):
            logits, state = model(token, state)
            logits = logits[:, -1].cpu()
            if temperature == 0:
                token = logits.argmax(dim=-1, keepdim=True)
            else:
                token = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1, generator=generator)
            drawn.append(token)
            token = token.to(device)
    names = []
    for row in torch.cat(drawn, dim=1).tolist():
        end = row.index(0) if 0 in row else len(row)  # the first boundary token ends the name
        names.append("".join(SPEC.alphabet[i] for i in row[:end]))
    return names


def save(model, path):
    """Write the model's state_dict (its parameters by name) to `path` with torch.save."""
    torch.save(model.state_dict(), path)


def load(path):
    """A fresh model (build_model()) holding the parameters saved at `path`, on the device."""
    model = build_model()
    model.load_state_dict(torch.load(path, map_location=_device(), weights_only=True))
    return model
