"""Compilation in TensorFlow and Keras, measured on Part 3's tabular model
(gradschool.projects.tabular_keras): `tf.function` traces a Python function into a TensorFlow
graph (AutoGraph turns `for`/`while`/`if` on tensors into graph control flow) once per input
signature, and `jit_compile=True` hands the graph to XLA; Keras' `compile(jit_compile=...)`
chooses how `fit` runs its step. The module holds what the notebook builds: a training step that
runs eagerly, as a graph or through XLA; a step whose `input_signature` makes one graph serve
every batch size; a whole epoch as one graph, its batch loop converted by AutoGraph; and
per-example gradients with `tf.vectorized_map` over a `GradientTape`, TensorFlow's counterpart
of `vmap`.

    make_optimizer(model)                   Keras Adam from the spec, built for the model's variables
    make_step(model, optimizer, mode="eager")
                                            step(x, y) -> loss; mode "eager", "graph" or "xla"
    make_signature_step(model, optimizer)   a tf.function with an input_signature: one trace for
                                            every batch size
    make_epoch(model, optimizer, batch_size) a tf.function running a whole epoch's batches in order
    per_example_gradients(model, x, y)      [(n, *variable.shape) per trainable variable]

Generated from solutions/07_compile/compile_keras.ipynb by `make export`:
edit the notebook, not this file.
"""

import keras
import tensorflow as tf

from gradschool.projects import tabular_keras


def fresh_model():
    """The project's model (tabular_keras.build_model()) holding SPEC.initial_weights()."""
    model = tabular_keras.build_model()
    tabular_keras.set_weights(model, tabular_keras.SPEC.initial_weights())
    return model


def make_optimizer(model):
    """keras.optimizers.Adam with the spec's learning rate and epsilon, its state (moments, step
    count) built for the model's trainable variables now rather than inside a traced step."""
    settings = tabular_keras.SPEC.optimizer
    optimizer = keras.optimizers.Adam(learning_rate=settings.learning_rate, epsilon=settings.eps)
    optimizer.build(model.trainable_variables)
    return optimizer


def loss_of(model, x, y):
    """The mean softmax cross-entropy of model(x) (logits) against the integer labels y."""
    logits = model(x, training=True)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))


def make_step(model, optimizer, mode="eager"):
    """step(x, y) -> the loss (a 0-d tensor) after one update of model.trainable_variables by
    `optimizer` (GradientTape, then apply_gradients). mode "eager": plain Python; "graph": a
    tf.function; "xla": a tf.function with jit_compile=True. ValueError for any other mode."""
    if mode not in ("eager", "graph", "xla"):
        raise ValueError(f"mode is 'eager', 'graph' or 'xla', not {mode!r}")

    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_of(model, x, y)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss

    if mode == "eager":
        return step
    return tf.function(step, jit_compile=mode == "xla")


def make_signature_step(model, optimizer, features, labels_dtype=tf.int64):
    """make_step's update as a tf.function with input_signature (x: (None, features) float32,
    y: (None,) labels_dtype): one trace serves every batch size."""
    signature = [tf.TensorSpec((None, features), tf.float32), tf.TensorSpec((None,), labels_dtype)]

    @tf.function(input_signature=signature)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_of(model, x, y)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss

    return step


def make_epoch(model, optimizer, batch_size):
    """A tf.function epoch(x, y) -> the mean training loss over the examples: one update per
    batch of `batch_size` rows of x, y in order (the last one shorter), its loop a
    tf.while_loop made by AutoGraph from `for start in tf.range(...)`."""
    @tf.function
    def epoch(x, y):
        n = tf.shape(x)[0]
        total = tf.constant(0.0)
        for start in tf.range(0, n, batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            with tf.GradientTape() as tape:
                loss = loss_of(model, xb, yb)
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
            total += loss * tf.cast(tf.shape(xb)[0], tf.float32)
        return total / tf.cast(n, tf.float32)
    return epoch


def per_example_gradients(model, x, y):
    """[one tensor (n, *variable.shape) per model.trainable_variables]: entry i is the gradient of
    example i's own loss (loss_of on a batch of that one example), by tf.vectorized_map over a
    GradientTape -- no Python loop over the examples."""
    def gradient_of_one(example):
        xi, yi = example
        with tf.GradientTape() as tape:
            loss = loss_of(model, xi[None], yi[None])
        return tape.gradient(loss, model.trainable_variables)

    return tf.vectorized_map(gradient_of_one, (tf.convert_to_tensor(x), tf.convert_to_tensor(y)))
