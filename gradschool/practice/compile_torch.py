"""Compilation in PyTorch, measured on Part 3's tabular model (gradschool.projects.tabular_torch):
`torch.compile` captures a training step's forward pass into a graph (TorchDynamo), derives its
backward graph (AOTAutograd) and hands both to a backend (Inductor, which writes C++ on a CPU and
Triton on a GPU); guards decide when a call can reuse what was compiled and when it must compile
again. The module holds what the notebook builds: a backend chooser that falls back when no C++
compiler is installed, a training step that can be compiled, a counting backend that shows how
many graphs were compiled, the padding that keeps a ragged last batch from recompiling, and
per-example gradients with `torch.func` (`functional_call`, `grad`, `vmap`) with DP-SGD's
per-example clipping.

    compiler_backend(device=None)          "inductor" when it can compile here, else "aot_eager"
    loss_of(model, x, y, mask=None)        mean cross-entropy over the examples where mask is 1
    make_step(model, optimizer, backend=None)
                                           step(x, y, mask) -> detached loss; backend: torch.compile's
    CountingBackend(inner="eager")         a torch.compile backend counting graphs (.graphs, .ops)
    pad_batch(x, y, size)                  (x, y, mask) padded to `size` rows, mask 1 on real rows
    per_example_gradients(model, x, y)     {parameter name: (n, *shape)} by vmap(grad(...))
    clip_per_example(gradients, max_norm)  (mean of the clipped gradients, per-example norms)

Generated from solutions/07_compile/compile_torch.ipynb by `make export`:
edit the notebook, not this file.
"""

import shutil

import torch
from torch import nn
from torch.func import functional_call, grad, vmap


def compiler_backend(device=None):
    """The torch.compile backend to use here: "inductor" when it can generate code on `device`
    (a CUDA GPU: Triton importable; a CPU: a C++ compiler on the PATH), otherwise "aot_eager",
    which compiles the same graphs (forward and backward) but runs PyTorch's own kernels."""
    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda":
        try:
            import triton  # noqa: F401 -- Inductor writes Triton kernels on a GPU
            return "inductor"
        except ImportError:
            print("note: Triton is not installed, so torch.compile uses the 'aot_eager' backend")
            return "aot_eager"
    if any(shutil.which(name) for name in ("g++", "c++", "clang++", "cl")):
        return "inductor"
    print("note: no C++ compiler found (g++, c++, clang++ or cl), so torch.compile uses the 'aot_eager' "
          "backend: the same graphs, PyTorch's own kernels, no generated code")
    return "aot_eager"


def loss_of(model, x, y, mask=None):
    """The mean softmax cross-entropy of model(x) against y over the examples whose mask is 1
    (every example when mask is None): sum(mask * loss_i) / sum(mask)."""
    losses = nn.functional.cross_entropy(model(x), y, reduction="none")
    if mask is None:
        return losses.mean()
    return (losses * mask).sum() / mask.sum()


def make_step(model, optimizer, backend=None):
    """step(x, y, mask) -> the loss (a detached 0-d tensor): zero the gradients, loss_of(model, x,
    y, mask) -- through torch.compile(loss_of, backend=backend) when backend is not None --,
    backward(), optimizer.step()."""
    loss_fn = loss_of if backend is None else torch.compile(loss_of, backend=backend)

    def step(x, y, mask):
        optimizer.zero_grad()
        loss = loss_fn(model, x, y, mask)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


class CountingBackend:
    """A torch.compile backend that counts the graphs TorchDynamo hands it: `graphs` (how many)
    and `ops` (each one's number of operation nodes, those whose op starts with "call"), then
    compiles each with the `inner` backend ("eager": gm.forward; other names:
    torch._dynamo.lookup_backend(inner)(gm, example_inputs))."""

    def __init__(self, inner="eager"):
        self.inner = inner
        self.graphs = 0
        self.ops = []

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        self.ops.append(sum(1 for node in gm.graph.nodes if node.op.startswith("call")))
        if self.inner == "eager":
            return gm.forward
        return torch._dynamo.lookup_backend(self.inner)(gm, example_inputs)


def pad_batch(x, y, size):
    """(x, y, mask) padded to `size` rows: x's padding rows zeros, y's class 0, mask a float32
    (size,) tensor on x's device, 1 on the n real rows and 0 on the padding. ValueError when
    the batch has more than `size` rows."""
    n = x.shape[0]
    if n > size:
        raise ValueError(f"a batch of {n} rows cannot be padded to {size}")
    mask = torch.zeros(size, dtype=torch.float32, device=x.device)
    mask[:n] = 1
    x = torch.cat([x, x.new_zeros((size - n, *x.shape[1:]))])
    y = torch.cat([y, y.new_zeros((size - n, *y.shape[1:]))])
    return x, y, mask


def per_example_gradients(model, x, y):
    """{name: tensor (n, *parameter.shape)} for each of model.named_parameters(): entry i is the
    gradient of example i's own cross-entropy loss, computed with torch.func (functional_call,
    grad, vmap) in one call, no Python loop over the examples. The model is not changed (no
    .grad is set)."""
    params = {name: p.detach() for name, p in model.named_parameters()}

    def loss_of_one(params, xi, yi):
        logits = functional_call(model, params, (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(logits, yi.unsqueeze(0))

    return vmap(grad(loss_of_one), in_dims=(None, 0, 0))(params, x, y)


def clip_per_example(gradients, max_norm):
    """DP-SGD's clipping of per-example gradients {name: (n, ...)}: each example's gradient, all
    parameters together as one vector, scaled by min(1, max_norm / its norm); returns (the mean
    over the examples of the clipped gradients, {name: parameter's shape}; the norms before
    clipping, a tensor (n,))."""
    n = next(iter(gradients.values())).shape[0]
    squares = sum(g.reshape(n, -1).pow(2).sum(dim=1) for g in gradients.values())
    norms = squares.sqrt()
    factors = torch.clamp(max_norm / norms, max=1.0)
    clipped = {name: (g * factors.reshape(n, *([1] * (g.dim() - 1)))).mean(dim=0)
               for name, g in gradients.items()}
    return clipped, norms
