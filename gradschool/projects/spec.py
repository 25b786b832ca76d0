"""What a Part 3 project is, written once: its data, architecture, hyperparameters, metric,
target and initial weights. Every implementation (PyTorch, Keras, JAX, the course engine)
reads its project's `Spec`; none restates a number, so they cannot quietly drift apart.

The architecture is a tuple of framework-neutral layers (`Dense`, `Conv2D`, `MaxPool`,
`Flatten`, `Embedding`, `LSTM`). From it the spec derives every parameter's name and shape in
one *canonical layout*, the layout of the mathematics `y = x @ kernel + bias` on channels-last
data (Keras' and Flax's layout):

    Dense      dense_i/kernel (in, units), dense_i/bias (units,)
    Conv2D     conv_i/kernel (kh, kw, in_channels, filters), conv_i/bias (filters,)
    Embedding  embedding_i/table (vocab, dim)
    LSTM       lstm_i/kernel (in, 4 units), lstm_i/recurrent (units, 4 units),
               lstm_i/bias (4 units,); gates in the order input, forget, cell, output
    Flatten    flattens (h, w, c) in that order (channels last)

An implementation in another layout (PyTorch's (out, in) linear weights, NCHW images, its two
LSTM biases) converts when it loads the weights: that conversion is part of its notebook.

Initial weights come from a seeded NumPy generator, are saved once to
`datasets/weights/<project>.npz` (committed, with its sha256 in the spec) and loaded from that
file by every implementation: NumPy may change its random streams between versions, the file
does not change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
WEIGHTS_DIR = REPOSITORY_ROOT / "datasets" / "weights"
FRAMEWORKS = ("torch", "keras", "jax", "engine")


# ------------------------------------------------------------------------------- layers
@dataclass(frozen=True)
class Dense:
    """A fully connected layer; activation "relu" or None (the logits)."""
    units: int
    activation: str | None = None


@dataclass(frozen=True)
class Conv2D:
    """A 2-d convolution with stride 1 and "same" padding (the output keeps height and width)."""
    filters: int
    kernel_size: int = 3
    activation: str | None = "relu"


@dataclass(frozen=True)
class MaxPool:
    """Max-pooling over size x size windows with stride size."""
    size: int = 2


@dataclass(frozen=True)
class Flatten:
    """(h, w, c) -> (h * w * c,), channels last."""


@dataclass(frozen=True)
class Embedding:
    """A lookup table: token index -> vector of `dim`."""
    vocab: int
    dim: int


@dataclass(frozen=True)
class LSTM:
    """A one-layer LSTM returning its output at every time step."""
    units: int


Layer = Dense | Conv2D | MaxPool | Flatten | Embedding | LSTM
SHORT_NAMES = {"Conv2D": "conv", "MaxPool": "pool"}  # in parameter names: conv_0/kernel


@dataclass(frozen=True)
class Optimizer:
    """The optimiser and its settings, as every framework names them (Adam: torch.optim.Adam,
    keras.optimizers.Adam, optax.adam, engine Adam; their defaults for betas and eps agree
    except Keras' epsilon, so eps is always given explicitly)."""
    name: str
    learning_rate: float
    eps: float = 1e-8
    weight_decay: float = 0.0


# -------------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class Reference:
    """The loss on a project's first batch from its initial weights, and the gradient of every
    parameter (canonical names and layout), float64."""
    loss: float
    gradients: dict[str, np.ndarray]

    def check(self, loss: float, gradients: dict[str, np.ndarray], tolerance: float = 1e-4) -> None:
        """Raise AssertionError, naming the first difference, unless `loss` and `gradients`
        (canonical names, shapes and layout) agree with the reference within `tolerance`
        (absolute, on the loss and on every gradient entry)."""
        if not isinstance(gradients, dict) or set(gradients) != set(self.gradients):
            names = sorted(gradients) if isinstance(gradients, dict) else type(gradients).__name__
            raise AssertionError(f"gradients should be a dict with the keys {sorted(self.gradients)}, "
                                 f"got {names}")
        loss = float(loss)
        if not abs(loss - self.loss) <= tolerance:
            raise AssertionError(f"first-batch loss {loss:.6f}, the reference is {self.loss:.6f}")
        for name, expected in self.gradients.items():
            got = np.asarray(gradients[name], dtype=np.float64)
            if got.shape != expected.shape:
                raise AssertionError(f"gradient of {name}: shape {got.shape}, expected {expected.shape} "
                                     f"(canonical layout: see gradschool.projects.spec)")
            error = float(np.max(np.abs(got - expected))) if got.size else 0.0
            if not error <= tolerance:
                raise AssertionError(f"gradient of {name} differs from the reference by up to {error:.2e}")


@dataclass(frozen=True)
class Spec:
    """One project: everything its implementations must agree on."""
    name: str
    title: str
    dataset: str                  # a name for gradschool.data.load
    input_shape: tuple[int, ...]  # one example, channels last: (features,), (h, w, c), (steps,)
    layers: tuple[Layer, ...]
    optimizer: Optimizer
    batch_size: int
    epochs: int
    metric: str                   # what the target is measured in, on `target_split`
    target: float
    target_split: str = "test"
    higher_is_better: bool = True
    seed: int = 0                 # initial weights and, where a framework allows, training
    standardise: bool = False     # features scaled by the training split's mean and std (ddof=0)
    alphabet: str = ""            # text: the tokens, index 0 first (the boundary token, "."), then the rest
    max_shift: int = 0            # augmentation: each training batch shifted by one random (dy, dx)
    #                               in [-max_shift, max_shift] pixels, zeros coming in; 0 none
    schedule: str = "constant"    # learning rate: "constant", or "warmup_cosine": linear warm-up
    warmup_steps: int = 0         # over warmup_steps steps, then cosine decay to 0 at the last step
    classes: tuple[int, ...] = ()  # the dataset's labels kept, in this order: class i is classes[i]; () all
    labels_per_class: int = 0     # training split only: so many examples of each class; 0 all
    label_draw: int = 0           # which disjoint set: examples [draw * n, (draw + 1) * n) of each class
    trainable: tuple[str, ...] = ()  # layers (conv_0, dense_0, ...) whose parameters train; () all
    weights_sha256: str = ""
    implementations: tuple[str, ...] = FRAMEWORKS
    notes: dict[str, str] = field(default_factory=dict)  # preprocessing, augmentation, ...

    def _walk(self):
        """(parameter shapes, output shape): the architecture followed from the input."""
        shapes, counts = {}, {}
        shape = tuple(self.input_shape)
        for layer in self.layers:
            kind = SHORT_NAMES.get(type(layer).__name__, type(layer).__name__.lower())
            counts[kind] = counts.get(kind, -1) + 1
            prefix = f"{kind}_{counts[kind]}/"
            if isinstance(layer, Dense):  # on the last axis: features, or each time step
                if len(shape) > 2:
                    raise ValueError(f"{self.name}: Dense after feature maps {shape}: put a Flatten first")
                shapes[prefix + "kernel"], shapes[prefix + "bias"] = (shape[-1], layer.units), (layer.units,)
                shape = (*shape[:-1], layer.units)
            elif isinstance(layer, Conv2D):
                h, w, c = shape
                k = layer.kernel_size
                shapes[prefix + "kernel"] = (k, k, c, layer.filters)
                shapes[prefix + "bias"] = (layer.filters,)
                shape = (h, w, layer.filters)
            elif isinstance(layer, MaxPool):
                h, w, c = shape
                shape = (h // layer.size, w // layer.size, c)
            elif isinstance(layer, Flatten):
                shape = (math.prod(shape),)
            elif isinstance(layer, Embedding):
                shapes[prefix + "table"] = (layer.vocab, layer.dim)
                shape = (*shape, layer.dim)
            elif isinstance(layer, LSTM):
                n_in, units = shape[-1], layer.units
                shapes[prefix + "kernel"] = (n_in, 4 * units)
                shapes[prefix + "recurrent"] = (units, 4 * units)
                shapes[prefix + "bias"] = (4 * units,)
                shape = (*shape[:-1], units)
            else:
                raise TypeError(f"{self.name}: unknown layer {layer!r}")
        return shapes, shape

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter's canonical name and shape, in the order of the layers."""
        return self._walk()[0]

    def output_shape(self) -> tuple[int, ...]:
        """The shape of the model's output for one example (the logits)."""
        return self._walk()[1]

    def parameter_count(self) -> int:
        return sum(math.prod(shape) for shape in self.parameter_shapes().values())

    def trainable_parameters(self) -> tuple[str, ...]:
        """The canonical names of the parameters that train: those of the layers named in
        `trainable`, or all of them; the others stay frozen at the values they were given."""
        names = tuple(self.parameter_shapes())
        if not self.trainable:
            return names
        layers = {name.split("/")[0] for name in names}
        unknown = [layer for layer in self.trainable if layer not in layers]
        if unknown:
            raise ValueError(f"{self.name}: trainable names {unknown}, which are not layers with "
                             f"parameters; choose from {sorted(layers)}")
        return tuple(name for name in names if name.split("/")[0] in self.trainable)

    def prepare(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The dataset's splits after the spec's preprocessing, written once for every framework
        (it is NumPy and belongs to none): {"train", "val", "test"}: (x, y) in the canonical layout.

        Features and images: x float32, y int64 labels. Standardising uses the training split's
        mean and standard deviation (ddof=0, computed in float64) for all three splits, so nothing
        about validation or test data leaks into training; images get their channel axis, last.
        Text (a spec with an alphabet): each string becomes a row of input_shape[0] tokens,
        x = boundary, c1, c2, ... and y = c1, c2, ..., boundary (the next token at every step),
        x padded with the boundary token and y with -1, a position no loss may count.

        A spec with `classes` keeps only those labels, renumbered 0, 1, ... in that order, in
        every split; with `labels_per_class` the training split keeps `labels_per_class`
        examples of each class (the `label_draw`-th such set, in the split's order), the few
        labels of a transfer-learning task. The statistics for `standardise` are those of the
        whole training split either way.
        """
        from gradschool import data

        splits = data.load(self.dataset)
        if self.classes or self.labels_per_class:
            splits = self._select(splits)
        if self.standardise:
            mean = splits.train.x.mean(axis=0, dtype=np.float64)
            std = splits.train.x.std(axis=0, dtype=np.float64)
        prepared = {}
        for name in data.SPLITS:
            x, y = getattr(splits, name)
            if self.alphabet:
                prepared[name] = self.encode(x)
                continue
            if self.standardise:
                x = (x - mean) / std
            if len(self.input_shape) == 3 and x.ndim == 3:  # (n, h, w) -> (n, h, w, 1)
                x = x[..., None]
            prepared[name] = (np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64))
        return prepared

    def _select(self, splits):
        """The splits with only `classes` (renumbered in their order) and, in training,
        `labels_per_class` examples of each."""
        from gradschool import data

        wanted = list(self.classes) if self.classes else sorted(np.unique(splits.train.y).tolist())
        number = np.full(max(int(splits.train.y.max()), *wanted) + 1, -1, dtype=np.int64)
        number[wanted] = np.arange(len(wanted))
        parts = {}
        for name in data.SPLITS:
            x, y = getattr(splits, name)
            keep = np.isin(y, wanted)
            x, y = x[keep], number[y[keep]]
            if name == "train" and self.labels_per_class:
                n, draw = self.labels_per_class, self.label_draw
                rows = []
                for label, original in enumerate(wanted):
                    where = np.flatnonzero(y == label)[draw * n:(draw + 1) * n]
                    if len(where) < n:
                        raise ValueError(f"{self.name}: label draw {draw} needs {n} training examples of "
                                         f"class {original}, the split has {int(np.sum(y == label))}; "
                                         f"choose a smaller labels_per_class or label_draw")
                    rows.append(where)
                order = np.sort(np.concatenate(rows))
                x, y = x[order], y[order]
            parts[name] = data.Part(x, y)
        return dataclasses.replace(splits, **parts)

    def encode(self, texts) -> tuple[np.ndarray, np.ndarray]:
        """Strings -> (inputs, next-token targets), int64 arrays (n, input_shape[0]), as `prepare`
        describes; a string too long or with a character outside the alphabet is refused."""
        steps = self.input_shape[0]
        index = {character: i for i, character in enumerate(self.alphabet)}
        x = np.zeros((len(texts), steps), dtype=np.int64)
        y = np.full((len(texts), steps), -1, dtype=np.int64)
        for row, text in enumerate(texts):
            if len(text) >= steps:
                raise ValueError(f"{self.name}: {text!r} has {len(text)} characters; at most {steps - 1} fit")
            unknown = set(text) - set(index) - {self.alphabet[0]}
            if unknown or self.alphabet[0] in text:
                raise ValueError(f"{self.name}: {text!r} has characters outside the alphabet "
                                 f"{self.alphabet[1:]!r}")
            codes = [index[c] for c in text]
            x[row, 1:len(codes) + 1] = codes
            y[row, :len(codes) + 1] = [*codes, 0]
        return x, y

    def first_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """The first batch_size training examples after preprocessing, unshuffled: (x, y)."""
        x, y = self.prepare()["train"]
        return x[:self.batch_size], y[:self.batch_size]

    def make_initial_weights(self) -> dict[str, np.ndarray]:
        """Fresh float32 weights from np.random.default_rng(seed), layer by layer.

        Kernels: Glorot-uniform (fan-in and fan-out of the layer; for a convolution both
        include kh * kw), biases zero, except an LSTM's forget-gate bias, 1 (it starts by
        remembering); embedding tables: normal, std 0.1. Used only to (re)make the weights file:
        implementations load the file (`initial_weights`).
        """
        rng = np.random.default_rng(self.seed)
        weights = {}
        for name, shape in self.parameter_shapes().items():
            kind = name.rsplit("/", 1)[1]
            if kind in ("kernel", "recurrent"):
                receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
                fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
                if kind == "kernel" and name.startswith("lstm"):
                    fan_out //= 4
                limit = math.sqrt(6 / (fan_in + fan_out))
                value = rng.uniform(-limit, limit, shape)
            elif kind == "table":
                value = rng.normal(0.0, 0.1, shape)
            else:  # a bias
                value = np.zeros(shape)
                if name.startswith("lstm"):
                    units = shape[0] // 4
                    value[units:2 * units] = 1.0  # the forget gate
            weights[name] = value.astype(np.float32)
        return weights

    @property
    def weights_path(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.npz"

    @property
    def reference_path(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.reference.npz"

    def reference(self) -> Reference:
        """The first batch's loss and gradients from the initial weights, which every
        implementation must reproduce within 1e-4 before it trains (see `save_reference`)."""
        path = self.reference_path
        if not path.exists():
            raise ValueError(f"{self.name}: {path} is missing; make it with `python -m gradschool.projects "
                             f"save-reference {self.name} --from torch`")
        try:
            with np.load(path) as archive:
                loss = float(archive["loss"])
                gradients = {key.removeprefix("grad:"): archive[key] for key in archive.files
                             if key.startswith("grad:")}
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"{self.name}: {path} cannot be read ({error}); restore it with git checkout "
                             f"or remake it with save-reference") from error
        if {key: value.shape for key, value in gradients.items()} != self.parameter_shapes():
            raise ValueError(f"{self.name}: {path} does not fit the architecture; remake it with "
                             f"`python -m gradschool.projects save-reference {self.name} --from torch`")
        return Reference(loss, gradients)

    def initial_weights(self) -> dict[str, np.ndarray]:
        """The project's initial weights, canonical layout, float32, from the committed file.

        Raises a ValueError that says how to fix it when the file is missing, damaged or
        does not fit the architecture (after a change to the spec, remake it with
        `python -m gradschool.projects save-weights <project>`).
        """
        path = self.weights_path
        if not path.exists():
            raise ValueError(f"{self.name}: {path} is missing; make it with "
                             f"`python -m gradschool.projects save-weights {self.name}`")
        raw = path.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        if digest != self.weights_sha256:
            raise ValueError(f"{self.name}: {path} has sha256 {digest}, the spec expects "
                             f"{self.weights_sha256}: restore it from the repository (git checkout "
                             f"-- {path.relative_to(REPOSITORY_ROOT)})")
        with np.load(io.BytesIO(raw)) as archive:
            weights = {name: archive[name] for name in archive.files}
        expected = self.parameter_shapes()
        got = {name: tuple(value.shape) for name, value in weights.items()}
        if got != expected:
            raise ValueError(f"{self.name}: the weights file holds {got}, the architecture needs "
                             f"{expected}; remake it with `python -m gradschool.projects save-weights "
                             f"{self.name}` and update weights_sha256")
        return weights


def save_weights(spec: Spec) -> str:
    """Write spec's fresh initial weights to its file (deterministic bytes) and return the
    file's sha256, to be written into the spec as weights_sha256."""
    buffer = io.BytesIO()
    np.savez(buffer, **spec.make_initial_weights())
    data = buffer.getvalue()
    spec.weights_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = spec.weights_path.with_suffix(".tmp")
    temporary.write_bytes(data)
    temporary.replace(spec.weights_path)
    return hashlib.sha256(data).hexdigest()


def save_reference(spec: Spec, loss: float, gradients: dict[str, np.ndarray]) -> Path:
    """Write the first batch's loss and gradients (canonical names and shapes) as the reference
    every implementation of `spec` is checked against."""
    if {name: np.shape(value) for name, value in gradients.items()} != spec.parameter_shapes():
        raise ValueError(f"{spec.name}: the gradients do not fit the architecture {spec.parameter_shapes()}")
    buffer = io.BytesIO()
    np.savez(buffer, loss=np.float64(loss),
             **{f"grad:{name}": np.asarray(value, dtype=np.float64) for name, value in gradients.items()})
    spec.reference_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = spec.reference_path.with_suffix(".tmp")
    temporary.write_bytes(buffer.getvalue())
    temporary.replace(spec.reference_path)
    return spec.reference_path
