"""The sequence project (a character model of first names) in Keras 3: an embedding, an LSTM
read at every step and a dense layer to 27 scores, trained to predict each next letter, checked
against the project's spec and reference before it trains, then used to invent names. Every
number it needs (the alphabet, architecture, optimiser, batch size, epochs, target, initial
weights) is read from `SPEC = projects.load("sequences")` when a function runs, never copied.

Keras idioms: a `keras.Sequential` of `Embedding`, `LSTM(return_sequences=True)` and `Dense`
layers named after the canonical parameters; Keras' LSTM keeps its weights in its cell
(`kernel`, `recurrent_kernel`, `bias`, gates in the order input, forget, cell, output), which is
the canonical layout itself, so nothing is transposed or reordered. The loss is Keras'
`SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1)`, whose mean runs over the
positions that hold a character (the plain function of the same name averages over all of them);
the pipeline a seeded `tf.data` shuffle fed to `model.fit`, the validation split scored in one
batch so that `val_loss` is the exact per-character mean; sampling steps the LSTM's cell by hand
and draws with `keras.random.categorical` from an explicit `keras.random.SeedGenerator`.

The contract shared by every implementation (solutions/README.md, Part 3):

    first_batch()                      (x, y) int64 NumPy: the first SPEC.batch_size training names,
                                       x = boundary + letters, y = letters + boundary, y padded with -1
    build_model()                      a fresh keras.Sequential from SPEC.layers
    set_weights(model, weights)        canonical dict -> the model, in place (no conversion)
    get_weights(model)                 the model -> canonical dict of float32 NumPy arrays
    first_batch_loss_and_gradients()   (float, canonical dict) from SPEC.initial_weights()
    train(model, epochs=None)          compile and fit; {"loss", "val_loss", "seconds"}
    evaluate(model, x, y)              the masked loss in nats per character (a float)
    save(model, path), load(path)      a .keras archive; a fresh model from it

Besides: masked_loss(y, logits), the loss itself, and sample(model, count, seed, temperature),
new names. TensorFlow computes on DEVICE ("/CPU:0" or "/GPU:0"), or, when it is None, on the
runtime's choice (GRADSCHOOL_DEVICE=cpu|gpu|auto), made at first use.

Generated from solutions/05_sequences/sequences_keras.ipynb by `make export`:
edit the notebook, not this file.
"""

import keras
import numpy as np
import tensorflow as tf

from gradschool import projects, runtime
from gradschool.projects.spec import LSTM, Dense, Embedding
from gradschool.projects.tabular_keras import _EpochTimer, load, save  # noqa: F401 -- tabular_keras's, unchanged


def _device():
    """DEVICE, or the runtime's choice when it was not set."""
    global DEVICE
    if DEVICE is None:
        DEVICE = runtime.setup(quiet=True, install=False).tf_device()
    return DEVICE


SPEC = projects.load("sequences")  # read when each function runs: never copy a number out of it
DEVICE = None  # "/CPU:0" or "/GPU:0"; None: the runtime's choice (GRADSCHOOL_DEVICE), made at first use


def _splits():
    """{"train", "val", "test"}: (x, y) int64 NumPy arrays (n, 12), the spec's encoding
    (Spec.prepare in gradschool/projects/spec.py), written once for every framework."""
    return SPEC.prepare()


def first_batch():
    """The first SPEC.batch_size training names after encoding, unshuffled: (x, y) NumPy."""
    return SPEC.first_batch()


def build_model():
    """A fresh keras.Sequential from SPEC.layers: keras.Input(SPEC.input_shape) of token
    indices, then per spec layer a keras.layers.Embedding, LSTM (return_sequences=True: an output
    at every step) or Dense, named embedding_0, lstm_0, dense_0, ... as the canonical parameters.
    Its weights are Keras' random start: set_weights puts the project's in."""
    layers, counts = [keras.Input(shape=SPEC.input_shape, dtype="int32")], {}
    for layer in SPEC.layers:
        kind = type(layer).__name__.lower()
        counts[kind] = counts.get(kind, -1) + 1
        name = f"{kind}_{counts[kind]}"
        if isinstance(layer, Embedding):
            layers.append(keras.layers.Embedding(layer.vocab, layer.dim, name=name))
        elif isinstance(layer, LSTM):
            layers.append(keras.layers.LSTM(layer.units, return_sequences=True, name=name))
        elif isinstance(layer, Dense):
            layers.append(keras.layers.Dense(layer.units, activation=layer.activation, name=name))
        else:
            raise TypeError(f"the sequence project is built of Embedding, LSTM and Dense, not {layer!r}")
    with tf.device(_device()):  # the weights are created here, on TensorFlow's device
        return keras.Sequential(layers, name=SPEC.name)


def _canonical_variables(model):
    """The model's weights by canonical name, in the canonical order: {"embedding_0/table":
    the Embedding's embeddings, "lstm_0/kernel", "lstm_0/recurrent", "lstm_0/bias": its cell's
    kernel, recurrent_kernel and bias, "dense_0/kernel", "dense_0/bias": the Dense layer's}."""
    variables = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Embedding):
            variables[f"{layer.name}/table"] = layer.embeddings
        elif isinstance(layer, keras.layers.LSTM):
            cell = layer.cell
            variables.update({f"{layer.name}/kernel": cell.kernel,
                              f"{layer.name}/recurrent": cell.recurrent_kernel,
                              f"{layer.name}/bias": cell.bias})
        elif isinstance(layer, keras.layers.Dense):
            variables.update({f"{layer.name}/kernel": layer.kernel, f"{layer.name}/bias": layer.bias})
    return variables


def set_weights(model, weights):
    """Copy canonical weights into the model, in place (variable.assign): Keras' layout is the
    canonical one, so nothing is converted. ValueError, before anything is assigned, when a name
    is missing or a shape is wrong."""
    variables = _canonical_variables(model)
    values = {}
    for name, variable in variables.items():
        if name not in weights:
            raise ValueError(f"the weights have no {name!r} (canonical names: {sorted(weights)})")
        values[name] = np.asarray(weights[name], dtype=np.float32)
        if values[name].shape != tuple(variable.shape):
            needed = tuple(variable.shape)
            raise ValueError(f"{name} has shape {values[name].shape}; this model needs {needed}")
    for name, variable in variables.items():
        variable.assign(values[name])


def get_weights(model):
    """The model's weights as a canonical dict of float32 NumPy arrays (copies), in the
    canonical order."""
    return {name: np.array(variable.numpy(), dtype=np.float32)
            for name, variable in _canonical_variables(model).items()}


@keras.saving.register_keras_serializable(package="gradschool.sequences")  # named in a compiled archive
def masked_loss(y, logits):
    """The mean softmax cross-entropy of `logits` (n, T, vocab) against the next tokens `y`
    (n, T), over the positions where y is not -1 (padding): a scalar tensor, nats per character.
    y may be integers or, as fit passes them, floats holding integers."""
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1)
    return loss(y, logits)  # the object's mean divides by the kept positions; the function's would not


def first_batch_loss_and_gradients():
    """(loss, gradients) on first_batch() from SPEC.initial_weights(): the masked loss as a
    Python float and the gradient of every parameter as a canonical dict of NumPy arrays, from
    tf.GradientTape (the embedding's IndexedSlices made dense)."""
    model = build_model()
    set_weights(model, SPEC.initial_weights())
    x, y = first_batch()
    variables = _canonical_variables(model)
    with tf.device(_device()):
        with tf.GradientTape() as tape:
            loss = masked_loss(y, model(x, training=True))
        gradients = tape.gradient(loss, variables)  # the same dict structure
    return float(loss), {name: tf.convert_to_tensor(gradient).numpy() for name, gradient in gradients.items()}


def evaluate(model, x, y):
    """SPEC.metric of the model on encoded NumPy names: the masked loss over every character of
    (x, y), in nats per character, a Python float (one call of the model: no batching)."""
    if SPEC.metric != "loss":
        raise ValueError(f"sequences_keras measures the loss, the spec asks for {SPEC.metric!r}")
    with tf.device(_device()):
        return float(masked_loss(np.asarray(y), model(np.asarray(x), training=False)))


def train(model, epochs=None):
    """Compile and fit `model` in place for `epochs` (default SPEC.epochs) on the training names;
    return its history: {"loss": each epoch's mean training loss, "val_loss": the validation
    split's masked loss after each epoch (scored in one batch: the spec's metric), "seconds":
    each epoch's training time, without validation}.

    Pipeline: tf.data from_tensor_slices, shuffled each epoch from a buffer of the whole split
    with SPEC.seed, batched by SPEC.batch_size (the last, smaller batch kept), prefetched;
    keras.optimizers.Adam with SPEC.optimizer's learning rate and epsilon; masked_loss.
    """
    epochs = SPEC.epochs if epochs is None else epochs
    splits = _splits()
    settings = SPEC.optimizer
    if settings.weight_decay:
        raise ValueError("the spec asks for Adam's weight decay, which Keras applies decoupled (AdamW): "
                         "not the same optimiser as the other implementations")
    timer = _EpochTimer()
    x, y = splits["train"]
    batches = (tf.data.Dataset.from_tensor_slices((x, y))
               .shuffle(len(y), seed=SPEC.seed, reshuffle_each_iteration=True)
               .batch(SPEC.batch_size)
               .prefetch(tf.data.AUTOTUNE))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=settings.learning_rate, epsilon=settings.eps),
                  loss=masked_loss)
    with tf.device(_device()):
        fitted = model.fit(batches, epochs=epochs, callbacks=[timer], shuffle=False, verbose=0,
                           validation_data=splits["val"], validation_batch_size=len(splits["val"][1]))
    return {"loss": fitted.history["loss"], "val_loss": fitted.history["val_loss"], "seconds": timer.seconds}


def sample(model, count, seed=0, temperature=1.0):
    """`count` new names (a list of str) drawn from the model, one letter at a time: from the
    boundary token and a zero state, step the LSTM's cell, draw the next token from
    softmax(logits / temperature) with keras.random.categorical (temperature 0: the argmax), feed
    it back; at most SPEC.input_shape[0] steps, fewer once every name has drawn the boundary.
    seed: an int or a keras.random.SeedGenerator (explicit random state; it advances)."""
    generator = seed if isinstance(seed, keras.random.SeedGenerator) else keras.random.SeedGenerator(seed)
    embedding, lstm, dense = model.layers
    token = np.zeros(count, dtype="int32")
    state = [np.zeros((count, lstm.units), dtype="float32")] * 2  # h and c
    drawn = []
    with tf.device(_device()):
        for _ in range(SPEC.input_shape[0]):
            h, state = lstm.cell(embedding(token), state)
            logits = dense(h)
            if temperature == 0:
                token = keras.ops.argmax(logits, axis=-1)
            else:
                token = keras.random.categorical(logits / temperature, 1, seed=generator)[:, 0]
            token = keras.ops.convert_to_numpy(token).astype("int32")
            drawn.append(token)
            if (np.stack(drawn, axis=1) == 0).any(axis=1).all():
                break
    boundary = SPEC.alphabet[0]
    return ["".join(SPEC.alphabet[i] for i in row).split(boundary)[0] for row in np.stack(drawn, axis=1)]
