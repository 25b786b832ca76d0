"""Compressing the image project's CNN in PyTorch, three ways, each measured against the float32
model it starts from: post-training int8 quantisation (eager-mode static quantisation of
`torch.ao.quantization`: fused conv + ReLU, observers calibrated on training images, int8
kernels on the CPU), magnitude pruning (`torch.nn.utils.prune.global_unstructured`, masks that
stay on while the model fine-tunes, then made permanent), and knowledge distillation into a
smaller student CNN (soft targets at a temperature T, the T-squared factor, a mix with the hard
labels). The teacher is the image project's model (`gradschool.projects.images_torch`), built,
loaded and trained by that module; the student is the same architecture with fewer filters
(STUDENT), so the image module builds it too.

The pieces written by hand, each checked against the library: symmetric per-channel int8
weight quantisation (quantize_per_channel, dequantize), the global magnitude-pruning mask
(magnitude_masks, the same mask as torch's L1Unstructured), and the distillation loss
(distillation_loss). Then the measurements: serialized_bytes and compressed_bytes (the
state_dict as torch.save writes it, and zlib-compressed), latency (the median of
gradschool.engine.device.time_it) and accuracy.

torch.ao.quantization is deprecated in PyTorch 2.13 (it still works, with a warning): its
successor is the separate torchao package (`quantize_` with configs such as
`Int8DynamicActivationInt8WeightConfig`, and the PT2E flow on `torch.export`), not installed
here. Quantised kernels run on the CPU only, so the int8 model always lives on the CPU.

Generated from solutions/10_compress/compress_torch.ipynb by `make export`:
edit the notebook, not this file.
"""

import copy
import io
import warnings
import zlib

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from gradschool import projects
from gradschool.engine.device import time_it
from gradschool.projects import images, images_torch


def _device():
    """The device the image module computes on (images_torch.DEVICE, or the runtime's choice)."""
    return images_torch._device()


SPEC = projects.load("images")  # the teacher's project: read when a function runs, never copied
STUDENT = images.STUDENT  # the same network with a third of the filters (the project's)


def build_student():
    """A fresh student (images_torch.build_model(STUDENT)) holding STUDENT.make_initial_weights()."""
    model = images_torch.build_model(STUDENT)
    images_torch.set_weights(model, STUDENT.make_initial_weights(), STUDENT)
    return model


def predict(model, x, device=None, batch=1000):
    """The logits (a float32 NumPy array) of `model` for NumPy images x (n, 28, 28, 1), computed in
    batches on `device` (default: the image module's device; an int8 model needs the CPU)."""
    device = _device() if device is None else device
    model.eval()
    with torch.no_grad():
        return np.concatenate([model(images_torch._nchw(x[i:i + batch]).to(device)).float().cpu().numpy()
                               for i in range(0, len(x), batch)])


def accuracy(model, x, y, device=None):
    """The fraction of the images x whose predicted class is y."""
    return float((predict(model, x, device).argmax(axis=1) == np.asarray(y)).mean())


def serialized_bytes(model):
    """The size in bytes of the model's state_dict as torch.save writes it (an uncompressed zip)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return len(buffer.getvalue())


def compressed_bytes(model):
    """The size in bytes of that file compressed by zlib (level 9): what zeros buy on disk."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return len(zlib.compress(buffer.getvalue(), 9))


def latency(model, x, device=None, repeat=20):
    """The median time in seconds of one forward pass of `model` on the NumPy images x, on `device`
    (default: the image module's), timed by time_it (warm-up, then `repeat` calls, CUDA synced)."""
    device = _device() if device is None else device
    batch = images_torch._nchw(x).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    model.eval()
    with torch.no_grad():
        return float(np.median(time_it(lambda: model(batch), warmup=3, repeat=repeat, sync=sync)))


def quantize_per_channel(weight):
    """Symmetric int8 quantisation of a float tensor with one scale per output channel (axis 0):
    returns (q, scale), q a torch.int8 tensor of weight's shape with values in [-127, 127], and
    scale a float32 tensor of shape (weight.shape[0],), max |w| / 127 over each channel's values
    (1.0 for a channel of zeros). weight is unchanged."""
    w = weight.detach().float()
    max_abs = w.abs().reshape(w.shape[0], -1).amax(dim=1)
    scale = torch.where(max_abs > 0, max_abs / 127, torch.ones_like(max_abs))
    shape = (-1,) + (1,) * (w.dim() - 1)
    q = torch.clamp(torch.round(w / scale.reshape(shape)), -127, 127).to(torch.int8)
    return q, scale


def dequantize(q, scale):
    """The float32 tensor scale * q, each channel (axis 0) times its own scale."""
    return q.float() * scale.reshape((-1,) + (1,) * (q.dim() - 1))


def fake_quantize_weights(model):
    """A copy of the model whose conv and linear weights are dequantize(*quantize_per_channel(w));
    biases and the model itself are unchanged."""
    copied = copy.deepcopy(model)
    with torch.no_grad():
        for module in copied.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                module.weight.copy_(dequantize(*quantize_per_channel(module.weight)))
    return copied


def quantize_int8(model, calibration, batch=256):
    """A post-training statically quantised int8 copy of an image-project model, on the CPU:
    conv + ReLU fused, QuantWrapper's stubs around it, the backend's default qconfig
    (torch.backends.quantized.engine), observers calibrated on the NumPy images `calibration`
    (n, 28, 28, 1), then converted. The model itself is unchanged."""
    copied = copy.deepcopy(model).cpu().eval()
    names = [name for name, _ in copied.named_children()]
    pairs = [[a, b] for a, b in zip(names, names[1:], strict=False)
             if a.startswith("conv") and b.startswith("relu")]  # each conv with the ReLU after it
    for name in names:
        module = getattr(copied, name)
        if isinstance(module, nn.Conv2d) and module.padding == "same":
            module.padding = tuple(k // 2 for k in module.kernel_size)  # int8 conv wants numbers
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated (torchao replaces it)
        warnings.simplefilter("ignore")
        fused = torch.ao.quantization.fuse_modules(copied, pairs)
        wrapped = torch.ao.quantization.QuantWrapper(fused)
        wrapped.qconfig = torch.ao.quantization.get_default_qconfig(torch.backends.quantized.engine)
        torch.ao.quantization.prepare(wrapped, inplace=True)
        with torch.no_grad():
            for i in range(0, len(calibration), batch):
                wrapped(images_torch._nchw(calibration[i:i + batch]))
        return torch.ao.quantization.convert(wrapped)


def magnitude_masks(weights, sparsity):
    """Global magnitude pruning masks: weights is a dict {name: tensor}; return {name: bool tensor
    of the same shape}, False for the round(sparsity * n) weights of smallest |w| among all n
    weights of all the tensors together (ties: the earlier position goes first, in the dict's
    order, then the flattened order), True elsewhere. The weights are unchanged."""
    flat = torch.cat([w.detach().abs().reshape(-1).float().cpu() for w in weights.values()])
    k = round(sparsity * flat.numel())
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    keep[torch.argsort(flat, stable=True)[:k]] = False
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = keep[start:start + w.numel()].reshape(w.shape).to(w.device)
        start += w.numel()
    return masks


def prune_global(model, sparsity):
    """A copy of the model with torch.nn.utils.prune's global L1 (magnitude) pruning over the
    weights of every Conv2d and Linear layer at `sparsity`: each such module keeps weight_orig,
    a weight_mask buffer and the hook that multiplies them. The model itself is unchanged."""
    copied = copy.deepcopy(model).to(memory_format=torch.contiguous_format)  # prune views the weights
    layers = [(module, "weight") for module in copied.modules() if isinstance(module, nn.Conv2d | nn.Linear)]
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=sparsity)
    return copied


def make_permanent(model):
    """prune.remove on every pruned module, in place: weight becomes a plain parameter again
    (zeros included), the mask and the hook go; the model back in the channels-last memory format
    (the image module's, faster for max-pooling on the CPU). Returns the model."""
    for module in model.modules():
        if hasattr(module, "weight_mask"):
            prune.remove(module, "weight")
    return model.to(memory_format=torch.channels_last)


def sparsity(model):
    """The fraction of the Conv2d and Linear weights (not biases) that are exactly zero."""
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    return float(sum((w == 0).sum().item() for w in weights) / sum(w.numel() for w in weights))


def distillation_loss(student_logits, teacher_logits, labels, temperature=4.0, alpha=0.9):
    """alpha * T**2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * the cross-entropy
    of the student's logits with the integer labels; the KL summed over the classes and both terms
    averaged over the batch; the teacher's logits a constant (no gradient reaches them). A scalar tensor."""
    t = temperature
    log_q = nn.functional.log_softmax(student_logits / t, dim=1)
    log_p = nn.functional.log_softmax(teacher_logits.detach() / t, dim=1)
    soft = nn.functional.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
    hard = nn.functional.cross_entropy(student_logits, labels)
    return alpha * t * t * soft + (1 - alpha) * hard


def distill(student, teacher, epochs, temperature=4.0, alpha=0.9):
    """Train `student` in place for `epochs` on the training split with distillation_loss against
    `teacher`'s logits (unchanged, in eval mode): images_torch's loader, Adam and schedule, with the
    spec's settings. Returns {"loss": each epoch's mean loss, "val_accuracy": after each epoch}."""
    device = _device()
    splits = SPEC.prepare()
    x, y = splits["train"]
    loader = images_torch.make_loader(x, y, SPEC.seed)
    settings = SPEC.optimizer
    optimizer = torch.optim.Adam(student.parameters(), lr=settings.learning_rate, eps=settings.eps,
                                 weight_decay=settings.weight_decay)
    scheduler = images_torch.make_scheduler(optimizer, epochs * len(loader))
    teacher.eval()
    history = {"loss": [], "val_accuracy": []}
    for _ in range(epochs):
        student.train()
        total = 0.0
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            with torch.no_grad():
                soft = teacher(xb)
            loss = distillation_loss(student(xb), soft, yb, temperature, alpha)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(yb)
        history["loss"].append(total / len(y))
        history["val_accuracy"].append(accuracy(student, *splits["val"]))
    return history
