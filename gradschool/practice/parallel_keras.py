"""Data-parallel training with TensorFlow's tf.distribute.MirroredStrategy and Keras 3, on the image
project's CNN (gradschool.projects.images_keras): one process, one replica per device (here two
logical CPU devices, configured before TensorFlow initialises), every variable mirrored on each
device, the step run once per replica by strategy.run on that replica's share of the global
batch, and the gradients summed across replicas, so that each replica's loss is divided by the
*global* batch size (tf.nn.compute_average_loss): the gradient of the global batch's mean loss
even when the shares are unequal. The same by hand (gradients, a custom training step) and by
Keras (model.fit under strategy.scope()).

    replica_values(variable)                  the per-device copies of a mirrored (Keras) variable, NumPy
    distribute_batch(strategy, x, y)          one global batch split across the replicas (PerReplica)
    distributed_gradients(strategy, model, x, y)
                                              (loss, canonical gradients) of the global batch, per replica
                                              then summed
    make_train_step(strategy, model, optimizer, global_batch_size)
                                              a tf.function step(x, y) -> loss: forward, backward and
                                              optimizer update on every replica, gradients all-reduced
    fit_mirrored(strategy, x, y, epochs=1)    the CNN built, compiled and fitted under strategy.scope()

The memory calculation for ZeRO/FSDP and model parallelism is gradschool.practice.parallel_jax's
memory_per_device (written once, for the three frameworks).

Generated from solutions/08_parallel/parallel_keras.ipynb by `make export`:
edit the notebook, not this file.
"""

import keras
import numpy as np
import tensorflow as tf

from gradschool.projects import images_keras


def replica_values(variable):
    """The per-device copies of a mirrored variable (a Keras Variable created under a strategy's scope, or
    the tf.distribute variable itself), as a list of NumPy arrays in the strategy's device order; a
    single-device variable gives a list of one."""
    inner = getattr(variable, "value", variable)  # Keras 3 wraps the TensorFlow variable
    components = getattr(inner, "values", None)
    if components is None:
        return [np.asarray(inner)]
    return [np.asarray(component.numpy()) for component in components]


def distribute_batch(strategy, x, y):
    """The global batch (x, y) as the strategy hands it to its replicas: a pair of PerReplica values
    (one share per replica, from strategy.experimental_distribute_dataset of a one-batch dataset)."""
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(len(y))
    return next(iter(strategy.experimental_distribute_dataset(dataset)))


def distributed_gradients(strategy, model, x, y):
    """(loss, gradients) of the mean softmax cross-entropy of `model` (built under strategy.scope()) on
    the global batch (x, y), computed per replica and summed: each replica's per-example losses divided
    by the global batch size (tf.nn.compute_average_loss), differentiated with tf.GradientTape, then
    strategy.reduce("SUM") of the loss and of each gradient. The loss a float, the gradients a dict
    {canonical name: NumPy array} (images_keras._canonical_variables)."""
    variables = images_keras._canonical_variables(model)
    per_example = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    global_batch = len(y)

    def replica_step(xs, ys):
        with tf.GradientTape() as tape:
            losses = per_example(ys, model(xs, training=True))
            replica_loss = tf.nn.compute_average_loss(losses, global_batch_size=global_batch)
        return replica_loss, tape.gradient(replica_loss, list(variables.values()))

    @tf.function
    def step(xs, ys):
        replica_loss, grads = strategy.run(replica_step, args=(xs, ys))
        return (strategy.reduce("SUM", replica_loss, axis=None),
                [strategy.reduce("SUM", g, axis=None) for g in grads])

    total, grads = step(*distribute_batch(strategy, x, y))
    return float(total), {name: g.numpy() for name, g in zip(variables, grads, strict=True)}


def make_train_step(strategy, model, optimizer, global_batch_size):
    """A tf.function step(xs, ys) -> the global batch's mean loss, for a distributed batch (xs, ys): on
    every replica (strategy.run), the per-example softmax cross-entropies, the replica's loss divided by
    global_batch_size (tf.nn.compute_average_loss), its gradients with respect to
    model.trainable_variables and optimizer.apply_gradients (which all-reduces them under the strategy);
    the replicas' losses summed with strategy.reduce. The optimizer (created under strategy.scope()) has
    its variables built under the scope first."""
    per_example = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    with strategy.scope():
        optimizer.build(model.trainable_variables)

    def replica_step(xs, ys):
        with tf.GradientTape() as tape:
            losses = per_example(ys, model(xs, training=True))
            replica_loss = tf.nn.compute_average_loss(losses, global_batch_size=global_batch_size)
        grads = tape.gradient(replica_loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return replica_loss

    @tf.function
    def step(xs, ys):
        return strategy.reduce("SUM", strategy.run(replica_step, args=(xs, ys)), axis=None)

    return step


def fit_mirrored(strategy, x, y, epochs=1):
    """The image CNN created and compiled under strategy.scope() (initial weights from the spec; Adam with
    the spec's learning rate and eps; softmax cross-entropy from the logits), then model.fit on (x, y)
    with the spec's batch size as the global batch, unshuffled, for `epochs`: (model, history.history)."""
    spec = images_keras.SPEC
    with strategy.scope():
        model = images_keras.build_model()
        images_keras.set_weights(model, spec.initial_weights())
        settings = spec.optimizer
        model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate, epsilon=settings.eps),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=spec.batch_size, epochs=epochs, shuffle=False, verbose=0)
    return model, history.history
