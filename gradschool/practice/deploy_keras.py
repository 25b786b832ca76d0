"""Deploying the image project's CNN from Keras 3 (TensorFlow backend): a checkpoint to resume
training from, a SavedModel to serve, and a TFLite flatbuffer to run on small devices.

- Checkpoints: the native `.keras` archive (a zip of `config.json`, the architecture;
  `model.weights.h5`, the weights and, for a compiled model, the optimiser's variables; and
  `metadata.json`), loaded by `keras.models.load_model(..., safe_mode=True)`, which refuses to
  deserialise Python code (a `Lambda` layer's lambda) from a file. `load_checkpoint` returns a
  fresh compiled model whose Adam state is restored, so that training resumes exactly.
- Serving: `model.export(path, format="tf_saved_model")` writes a TensorFlow SavedModel whose
  `serve` / `serving_default` signature takes a float32 batch (None, 28, 28, 1).
- Small devices: `tf.lite.TFLiteConverter.from_saved_model` turns the SavedModel into a TFLite
  (LiteRT) flatbuffer, the batch dimension kept dynamic (-1); `TFLiteClassifier` runs it with
  `tf.lite.Interpreter` (deprecated by TensorFlow, which warns in 2.21, in favour of the same
  `Interpreter` in LiteRT's `ai_edge_litert`, used when that package is installed), resizing
  the input tensor when the batch size changes and converting dtypes.

The model, its layout (channels last, the canonical one) and its training are
`gradschool.projects.images_keras`'s; TensorFlow computes on its device (images_keras.DEVICE, or
the runtime's choice). Keras to ONNX goes through tf2onnx, which this course does not install.

Generated from solutions/09_deploy/deploy_keras.ipynb by `make export`:
edit the notebook, not this file.
"""

import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from gradschool import projects
from gradschool.projects import images_keras


def _device():
    """TensorFlow's device for the image module (images_keras.DEVICE, or the runtime's choice)."""
    return images_keras._device()


SPEC = projects.load("images")  # read when each function runs: never copy a number out of it


def compiled_model():
    """images_keras.build_model() with SPEC.initial_weights(), compiled with Adam at
    SPEC.optimizer's learning rate and epsilon (a constant rate) and the project's loss
    (softmax cross-entropy from the logits)."""
    model = images_keras.build_model()
    images_keras.set_weights(model, SPEC.initial_weights())
    settings = SPEC.optimizer
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=settings.learning_rate, epsilon=settings.eps),
                  loss=images_keras._loss_function())
    return model


def train_steps(model, batches):
    """One model.train_on_batch per (x, y) NumPy batch of `batches` (channels-last images, labels);
    the list of the losses as floats."""
    with tf.device(_device()):
        return [float(model.train_on_batch(x, y)) for x, y in batches]


def save_checkpoint(path, model):
    """Write the model (architecture, weights, optimiser state) to the .keras archive `path`."""
    model.save(path)


def load_checkpoint(path):
    """A fresh model from the .keras archive `path`, compiled with its optimiser's state restored,
    loaded with safe_mode=True (a Lambda layer's Python code is refused: ValueError)."""
    with tf.device(_device()):
        return keras.models.load_model(path, compile=True, safe_mode=True)


def export_tflite(model, folder):
    """Export `model` to the SavedModel folder/"saved_model", convert it to a float32 TFLite
    flatbuffer (batch dimension dynamic) written to folder/"model.tflite"; return its bytes."""
    saved = os.path.join(folder, "saved_model")
    model.export(saved, format="tf_saved_model", verbose=False)
    flatbuffer = tf.lite.TFLiteConverter.from_saved_model(saved).convert()
    with open(os.path.join(folder, "model.tflite"), "wb") as file:
        file.write(flatbuffer)
    return flatbuffer


def interpreter_class():
    """The TFLite interpreter class: ai_edge_litert's (LiteRT) when that package is installed,
    else tf.lite.Interpreter (deprecated by TensorFlow for LiteRT's, the same interface)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    return Interpreter


def make_interpreter(flatbuffer, num_threads=None):
    """An interpreter for the TFLite flatbuffer (bytes), on num_threads CPU threads (None: the
    library's choice), its tensors allocated for the converted shapes; TensorFlow's deprecation
    warning silenced (it is discussed in the notebook)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*Interpreter is deprecated")
        interpreter = interpreter_class()(model_content=flatbuffer, num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


class TFLiteClassifier:
    """The image CNN in the TFLite interpreter: callable on channels-last NumPy images, like the
    project's evaluate takes them."""

    def __init__(self, flatbuffer, num_threads=None):
        self.interpreter = make_interpreter(flatbuffer, num_threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def __call__(self, images):
        """Logits (n, classes) float32, a new array, for images (n, h, w, c) channels last, any
        float dtype; a single image (h, w, c) is a batch of one."""
        images = np.asarray(images, dtype=self.input["dtype"])
        if images.ndim == 3:
            images = images[None]
        if self.interpreter.get_input_details()[0]["shape"][0] != len(images):
            self.interpreter.resize_tensor_input(self.input["index"], list(images.shape))
            self.interpreter.allocate_tensors()
        self.interpreter.set_tensor(self.input["index"], np.ascontiguousarray(images))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"]).copy()

    def predict(self, images):
        """The predicted classes (n,) of images as __call__ takes them."""
        return self(images).argmax(axis=1)
