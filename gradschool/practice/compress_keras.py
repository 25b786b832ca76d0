"""Compressing the image project's CNN with Keras 3 and TensorFlow, three ways, each measured
against the float32 model it starts from: post-training full-integer int8 quantisation with the
TFLite converter (a representative dataset calibrates the activations; int8 weights, activations,
input and output) run by the TFLite interpreter; magnitude pruning by hand (a global mask, kept
on while the model fine-tunes by a Keras constraint that the optimiser applies after every step);
and knowledge distillation into a smaller student CNN in a GradientTape loop compiled by
tf.function. The teacher is the image project's model (`gradschool.projects.images_keras`),
built and trained by that module; the student is the same architecture with fewer filters
(STUDENT), so the image module builds it too.

Written by hand and checked against TFLite or a direct formula: the affine int8 quantisation of
a TFLite model's input and output (quantize, dequantize), the global magnitude-pruning mask
(magnitude_masks) and the distillation loss (distillation_loss). Measured: the size of each
model as a TFLite flatbuffer (and zlib-compressed), its latency through the interpreter (the
median of gradschool.engine.device.time_it) and its test accuracy.

Not used: tensorflow-model-optimization (Keras' pruning and quantisation-aware training
wrappers) is not installed, and it does not support Keras 3 (it needs the legacy tf-keras).
tf.lite.Interpreter is deprecated in favour of the separate ai-edge-litert package (LiteRT),
with the same interface; the TFLite converter stays in TensorFlow.

Generated from solutions/10_compress/compress_keras.ipynb by `make export`:
edit the notebook, not this file.
"""

import contextlib
import io
import warnings
import zlib

import keras
import numpy as np
import tensorflow as tf

from gradschool import projects
from gradschool.engine.device import time_it
from gradschool.projects import images, images_keras


def build_student():
    """A fresh student (images_keras.build_model(STUDENT)) holding STUDENT.make_initial_weights()."""
    model = images_keras.build_model(STUDENT)
    images_keras.set_weights(model, STUDENT.make_initial_weights())
    return model


SPEC = projects.load("images")  # the teacher's project: read when a function runs, never copied
STUDENT = images.STUDENT  # the same network with a third of the filters (the project's)


def to_tflite(model, representative=None):
    """The model as TFLite flatbuffer bytes: float32, or, given NumPy images `representative`
    (n, 28, 28, 1), full-integer int8 (Optimize.DEFAULT, calibrated on those images one at a time,
    only int8 built-in operations, int8 input and output)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:
        def calibration():
            for image in representative:
                yield [image[None].astype(np.float32)]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel("ERROR")  # the converter logs every step; its stdout notes go to a buffer
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return converter.convert()
    finally:
        logger.setLevel(level)


def interpreter(flatbuffer, batch):
    """A tf.lite.Interpreter for the flatbuffer, its input resized to `batch` images and its tensors
    allocated (tf.lite.Interpreter is deprecated for ai_edge_litert's, same interface)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runner = tf.lite.Interpreter(model_content=flatbuffer, num_threads=1)
    runner.resize_tensor_input(runner.get_input_details()[0]["index"], [batch, *SPEC.input_shape])
    runner.allocate_tensors()
    return runner


def compressed_bytes(data):
    """The size in bytes of `data` (bytes) compressed by zlib, level 9: what zeros buy on disk."""
    return len(zlib.compress(data, 9))


def quantize(x, scale, zero_point):
    """Affine int8 quantisation: round(x / scale) + zero_point, clipped to [-128, 127], as an int8
    NumPy array of x's shape. x is unchanged."""
    q = np.round(np.asarray(x, dtype=np.float64) / scale) + zero_point
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize(q, scale, zero_point):
    """The float32 NumPy array scale * (q - zero_point)."""
    return (scale * (np.asarray(q, dtype=np.float64) - zero_point)).astype(np.float32)


def tflite_logits(flatbuffer, x):
    """The float32 logits of a TFLite model for the NumPy images x (n, 28, 28, 1): the input
    quantised with the model's input scale and zero point when it is int8, one call of the
    interpreter, the output dequantised when it is int8."""
    runner = interpreter(flatbuffer, len(x))
    source, target = runner.get_input_details()[0], runner.get_output_details()[0]
    x = np.asarray(x, dtype=np.float32)
    if source["dtype"] == np.int8:
        x = quantize(x, *source["quantization"])
    runner.set_tensor(source["index"], x)
    runner.invoke()
    out = runner.get_tensor(target["index"])
    return dequantize(out, *target["quantization"]) if target["dtype"] == np.int8 else out


def tflite_accuracy(flatbuffer, x, y):
    """The fraction of the images x whose class predicted by the TFLite model is y."""
    return float((tflite_logits(flatbuffer, x).argmax(axis=1) == np.asarray(y)).mean())


def tflite_latency(flatbuffer, x, repeat=20):
    """The median time in seconds of one interpreter call on the NumPy images x (time_it: warm-up,
    then `repeat` calls), the input already set (quantised for an int8 model)."""
    runner = interpreter(flatbuffer, len(x))
    source = runner.get_input_details()[0]
    x = np.asarray(x, dtype=np.float32)
    if source["dtype"] == np.int8:
        x = quantize(x, *source["quantization"])
    runner.set_tensor(source["index"], x)
    return float(np.median(time_it(runner.invoke, warmup=3, repeat=repeat)))


def magnitude_masks(weights, sparsity):
    """Global magnitude pruning masks: weights is a dict {name: NumPy array}; return {name: bool
    array of the same shape}, False for the round(sparsity * n) weights of smallest |w| among all n
    weights of all the arrays together (ties: the earlier position first, in the dict's order,
    then the flattened order), True elsewhere. The weights are unchanged."""
    flat = np.concatenate([np.abs(np.asarray(w)).ravel() for w in weights.values()])
    k = round(sparsity * flat.size)
    keep = np.ones(flat.size, dtype=bool)
    keep[np.argsort(flat, kind="stable")[:k]] = False
    masks, start = {}, 0
    for name, w in weights.items():
        size = np.size(w)
        masks[name] = keep[start:start + size].reshape(np.shape(w))
        start += size
    return masks


class MaskConstraint(keras.constraints.Constraint):
    """A Keras constraint that multiplies a weight by a fixed 0/1 mask (pruned weights stay zero)."""

    def __init__(self, mask):
        self.mask = np.asarray(mask, dtype=np.float32)

    def __call__(self, w):
        return w * keras.ops.convert_to_tensor(self.mask, dtype=w.dtype)


def prune(model, sparsity):
    """A new image-project model holding the model's weights with global magnitude pruning at
    `sparsity` over every kernel (magnitude_masks), each kernel's variable given a MaskConstraint
    so that training keeps the pruned weights at zero. The model itself is unchanged."""
    weights = images_keras.get_weights(model)
    masks = magnitude_masks({n: w for n, w in weights.items() if n.endswith("/kernel")}, sparsity)
    pruned = images_keras.build_model()
    images_keras.set_weights(pruned, {n: w * masks[n] if n in masks else w for n, w in weights.items()})
    for layer in pruned.layers:
        if f"{layer.name}/kernel" in masks:
            layer.kernel.constraint = MaskConstraint(masks[f"{layer.name}/kernel"])
    return pruned


def sparsity(model):
    """The fraction of the kernel weights (not the biases) that are exactly zero."""
    kernels = [w for n, w in images_keras.get_weights(model).items() if n.endswith("/kernel")]
    return float(sum((w == 0).sum() for w in kernels) / sum(w.size for w in kernels))


def distillation_loss(student_logits, teacher_logits, labels, temperature=4.0, alpha=0.9):
    """alpha * T**2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * the cross-entropy
    of the student's logits with the integer labels; the KL summed over the classes and both terms
    averaged over the batch; no gradient reaches the teacher's logits. A scalar float32 tensor."""
    t = temperature
    teacher_logits = tf.stop_gradient(tf.cast(teacher_logits, tf.float32))
    student_logits = tf.cast(student_logits, tf.float32)
    log_p = tf.nn.log_softmax(teacher_logits / t, axis=-1)
    log_q = tf.nn.log_softmax(student_logits / t, axis=-1)
    soft = tf.reduce_mean(tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1))
    hard = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=student_logits))
    return alpha * t * t * soft + (1 - alpha) * hard


def distill(student, teacher, epochs, temperature=4.0, alpha=0.9):
    """Train `student` in place for `epochs` with distillation_loss against `teacher` (unchanged):
    images_keras.training_batches, Adam on images_keras.learning_rate_schedule, one tf.function step
    around a tf.GradientTape. Returns {"loss": each epoch's mean loss, "val_accuracy": after each}."""
    splits = SPEC.prepare()
    x, y = splits["train"]
    steps = -(-len(y) // SPEC.batch_size)
    optimizer = keras.optimizers.Adam(learning_rate=images_keras.learning_rate_schedule(epochs * steps),
                                      epsilon=SPEC.optimizer.eps)

    @tf.function
    def step(images, labels):
        soft = teacher(images, training=False)
        with tf.GradientTape() as tape:
            loss = distillation_loss(student(images, training=True), soft, labels, temperature, alpha)
        variables = student.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    history = {"loss": [], "val_accuracy": []}
    batches = iter(images_keras.training_batches(x, y, epochs))
    with tf.device(images_keras._device()):
        for _ in range(epochs):
            total = 0.0
            for _ in range(steps):
                images, labels = next(batches)
                total += float(step(images, labels)) * len(labels)
            history["loss"].append(total / len(y))
            history["val_accuracy"].append(images_keras.evaluate(student, *splits["val"]))
    return history
