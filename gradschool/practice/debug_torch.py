"""Debugging and interpretability in PyTorch, on the image project's CNN
(`gradschool.projects.images_torch`): TensorBoard event files written with
`torch.utils.tensorboard.SummaryWriter` and read back with TensorBoard's own `EventAccumulator`;
NaN and Inf hunted down with forward hooks (the first layer whose output stops being finite) and
with autograd's anomaly mode (the first backward function that returns NaN, with the forward
line that made it); the numerically stable cross-entropy that fixes the most common source of
them; and vanilla-gradient saliency maps (which input pixels the class score is most sensitive to).

    log_history(logdir, history, prefix="train")  every list of a history dict as a scalar series
    read_scalars(logdir, tag)                      (steps, values) NumPy arrays from the event files
    log_parameters(writer, model, step)            a histogram per parameter (and its gradient)
    naive_cross_entropy(logits, y)                 -log(softmax) picked at y: the planted bug
    stable_cross_entropy(logits, y)                logsumexp(z) - z_y, averaged over the batch
    PerImageStandardize(eps)                       (x - mean) / (std + eps) per image: eps=0 is a bug
    first_nonfinite(model, x)                      the name of the first leaf module, in execution
                                                   order, whose output holds a NaN or an Inf
    saliency(model, x, classes)                    d logit[i, classes[i]] / d x[i], channels last
    smoothgrad(model, x, classes, generator, ...)  the saliency averaged over noisy copies of x

Images are NumPy arrays (n, 28, 28, 1), channels last, as everywhere in the course; the model is
images_torch's nn.Sequential on its device.

Generated from solutions/11_debug/debug_torch.ipynb by `make export`:
edit the notebook, not this file.
"""

import numpy as np
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: F401 (cells below)
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from gradschool.practice.events import read_scalars as read_scalars  # shared by the debugging notebooks


def log_parameters(writer, model, step):
    """Add a histogram of every parameter of `model` to `writer` at `step`, tagged
    "weights/<name>", and of its gradient, "gradients/<name>", where it has one."""
    for name, parameter in model.named_parameters():
        writer.add_histogram(f"weights/{name}", parameter.detach().cpu(), step)
        if parameter.grad is not None:
            writer.add_histogram(f"gradients/{name}", parameter.grad.detach().cpu(), step)


def log_history(logdir, history, prefix="train"):
    """Write every list of `history` ({name: [number, ...]}) to event files in `logdir` as the
    scalar series "<prefix>/<name>", the i-th number at step i; close the writer before returning."""
    writer = SummaryWriter(str(logdir))
    try:
        for name, values in history.items():
            for step, value in enumerate(values):
                writer.add_scalar(f"{prefix}/{name}", float(value), step)
    finally:
        writer.close()


class PerImageStandardize(nn.Module):
    """Each image (n, c, h, w) minus its own mean, divided by its own standard deviation plus eps.
    eps=0 divides a blank image by 0: the planted bug of this notebook."""

    def __init__(self, eps=0.0):
        super().__init__()
        self.eps = eps

    def forward(self, x):
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        return (x - mean) / (std + self.eps)


def first_nonfinite(model, x):
    """The name of the first leaf module of `model`, in execution order, whose output (a tensor, or
    a tuple/list of tensors) holds a NaN or an Inf on the input tensor x; None if all are finite.
    Forward hooks, all removed again before returning."""
    names = {module: name for name, module in model.named_modules() if not list(module.children())}
    found = []

    def check(module, inputs, output):
        outputs = output if isinstance(output, tuple | list) else (output,)
        if not found and any(torch.is_tensor(t) and not torch.isfinite(t).all() for t in outputs):
            found.append(names[module])

    handles = [module.register_forward_hook(check) for module in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None


def naive_cross_entropy(logits, y):
    """-log(softmax(logits))[i, y_i] averaged over the batch, as the formula reads: the planted bug
    (softmax underflows to exactly 0 when the logits are far apart, and log(0) = -inf)."""
    return -torch.log(torch.softmax(logits, dim=1))[torch.arange(len(y)), y].mean()


def stable_cross_entropy(logits, y):
    """The mean softmax cross-entropy of logits (n, C) and integer labels y (n,), computed as
    logsumexp(z_i) - z_i[y_i]: finite, with finite gradients, for any finite logits."""
    picked = logits.gather(1, y.view(-1, 1)).squeeze(1)
    return (torch.logsumexp(logits, dim=1) - picked).mean()


def saliency(model, x, classes):
    """Vanilla-gradient saliency: for images x (n, h, w, c), NumPy, channels last, and integer
    classes (n,), the gradient of logit[i, classes[i]] with respect to x[i], as a NumPy array of
    x's shape in the model's dtype. The model is put in eval mode; its parameters get no .grad."""
    model.eval()
    parameter = next(model.parameters())
    images = torch.as_tensor(np.asarray(x).transpose(0, 3, 1, 2), dtype=parameter.dtype,
                             device=parameter.device).requires_grad_(True)
    chosen = torch.as_tensor(np.asarray(classes), device=parameter.device).view(-1, 1)
    score = model(images).gather(1, chosen).sum()
    (gradient,) = torch.autograd.grad(score, images)
    return gradient.permute(0, 2, 3, 1).cpu().numpy()


def smoothgrad(model, x, classes, generator, samples=16, sigma=0.15):
    """SmoothGrad: the mean of saliency(model, x + noise, classes) over `samples` draws of Gaussian
    noise of standard deviation sigma, drawn on the CPU from the torch.Generator `generator`."""
    total = np.zeros(np.shape(x), dtype=np.float64)
    for _ in range(samples):
        noise = torch.randn(np.shape(x), generator=generator).numpy()
        total += saliency(model, np.asarray(x, dtype=np.float32) + sigma * noise, classes)
    return (total / samples).astype(np.float32)
