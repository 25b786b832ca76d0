"""Deploying the image project's CNN from PyTorch: a checkpoint to resume training from, a program
to run without the model's Python code, and a runtime to run it in.

- Checkpoints: the `state_dict` of the model and of the optimiser, with the step count, written
  by `torch.save` and read back by `torch.load(..., weights_only=True)`, which unpickles tensors,
  containers and numbers only: a pickle can name any Python callable to run while it loads, and
  a checkpoint is often a file from somebody else. `load_checkpoint` rebuilds a fresh model and a
  fresh Adam, so that training resumes exactly where it stopped.
- Programs: `torch.export.export` traces the model into an `ExportedProgram` (a graph of ATen
  operations with the weights, the batch dimension symbolic), saved as a `.pt2` archive; and
  `torch.onnx.export(..., dynamo=True)`, which goes through `torch.export` and translates the
  graph into ONNX, the open format that ONNX Runtime, TensorRT, OpenVINO and others read.
- The runtime: `onnxruntime.InferenceSession` with the CPU provider (CUDA first when the device
  is a GPU and ONNX Runtime has it), wrapped by `OnnxClassifier`, which takes the course's
  channels-last NumPy images and converts them to the float32 NCHW batch the graph expects.
- `parity` compares two inference paths: the largest absolute difference of their logits and
  how often their predicted classes agree.

The model, its layouts and its training are `gradschool.projects.images_torch`'s; its device is
that module's (images_torch.DEVICE, or the runtime's choice).

Generated from solutions/09_deploy/deploy_torch.ipynb by `make export`:
edit the notebook, not this file.
"""

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from gradschool import projects
from gradschool.projects import images_torch


def _device():
    """The device of the image module (images_torch.DEVICE, or the runtime's choice)."""
    return images_torch._device()


SPEC = projects.load("images")  # read when each function runs: never copy a number out of it


def make_optimizer(model):
    """torch.optim.Adam over the model's parameters with SPEC.optimizer's learning rate, eps and
    weight decay (a constant rate: the project's schedule is left out here)."""
    settings = SPEC.optimizer
    return torch.optim.Adam(model.parameters(), lr=settings.learning_rate, eps=settings.eps,
                            weight_decay=settings.weight_decay)


def train_steps(model, optimizer, batches):
    """One optimiser step per (x, y) batch of `batches` (NCHW float32 images, int64 labels, moved
    to the device); the list of the losses as floats."""
    device = _device()
    model.train()
    losses = []
    for x, y in batches:
        loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def save_checkpoint(path, model, optimizer, step):
    """Write {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
    to `path` with torch.save."""
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": int(step)}, path)


def load_checkpoint(path):
    """(model, optimizer, step) from the checkpoint at `path`, read with weights_only=True: a fresh
    images_torch.build_model() and a fresh make_optimizer(model) with the saved states loaded, and
    the step as an int."""
    checkpoint = torch.load(path, map_location=_device(), weights_only=True)
    model = images_torch.build_model()
    model.load_state_dict(checkpoint["model"])
    optimizer = make_optimizer(model)
    optimizer.load_state_dict(checkpoint["optimizer"])
    return model, optimizer, int(checkpoint["step"])


def export_program(model, batch_name="batch"):
    """torch.export.export of the model (put in eval mode) on an example batch of 2 zero images
    (2, *NCHW image shape) on the model's device, its batch dimension symbolic
    (torch.export.Dim(batch_name)): an ExportedProgram."""
    model.eval()
    height, width, channels = SPEC.input_shape
    example = torch.zeros(2, channels, height, width, device=next(model.parameters()).device)
    return torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim(batch_name)},))


def export_onnx(model, path):
    """Export the model (eval mode) to the ONNX file `path` with the torch.export-based exporter
    (dynamo=True): input "images" (batch, C, H, W) float32 with a symbolic batch dimension "batch",
    output "logits". Return the file read back with onnx.load, after onnx.checker.check_model
    (full_check=True)."""
    model.eval()
    height, width, channels = SPEC.input_shape
    example = torch.zeros(2, channels, height, width, device=next(model.parameters()).device)
    torch.onnx.export(model, (example,), str(path), dynamo=True, input_names=["images"],
                      output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                      external_data=False, verbose=False)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def providers(device=None):
    """ONNX Runtime's execution providers for `device` (default: the image module's): CUDA first
    when it is a CUDA device and this onnxruntime has the CUDA provider, the CPU always last."""
    device = _device() if device is None else torch.device(device)
    chosen = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        chosen.insert(0, "CUDAExecutionProvider")
    return chosen


def make_session(path, device=None):
    """An ort.InferenceSession for the ONNX file `path`, on providers(device), its CPU work on
    torch.get_num_threads() threads (the same budget as PyTorch's)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=providers(device))


class OnnxClassifier:
    """The image CNN in ONNX Runtime: callable on channels-last NumPy images, like the project's
    evaluate takes them."""

    def __init__(self, path, device=None):
        self.session = make_session(path, device)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, images):
        """Logits (n, classes) float32 for images (n, h, w, c), channels last, any float dtype; a
        single image (h, w, c) is a batch of one."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[None]
        nchw = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        return self.session.run(None, {self.input_name: nchw})[0]

    def predict(self, images):
        """The predicted classes (n,) of images as __call__ takes them."""
        return self(images).argmax(axis=1)


def parity(reference, other):
    """{"max_abs": the largest |reference - other| (a float), "argmax_agreement": the fraction of
    rows whose argmax is the same (a float)} for two arrays of logits (n, classes)."""
    reference, other = np.asarray(reference, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if reference.shape != other.shape:
        raise ValueError(f"logits of different shapes: {reference.shape} and {other.shape}")
    return {"max_abs": float(np.abs(reference - other).max()),
            "argmax_agreement": float((reference.argmax(axis=1) == other.argmax(axis=1)).mean())}
