"""The engine on a device: moving arrays, tensors and models between the CPU (NumPy) and a GPU
(CuPy), timing device code honestly, and the roofline model that says how fast an operation can
possibly run. The engine computes through whatever array module holds its data
(`tensor.array_module`), so the same training step runs on NumPy and on CuPy; all that changes
is where the arrays live. A GPU queues its work and returns at once, so a timer has to wait
for the device (`synchronize`) and run the code once first (CuPy compiles kernels and grows
its memory pool on first use). The roofline turns an operation's FLOPs and bytes into its
best possible time on a machine: whichever of compute or memory traffic takes longer. CuPy is
never imported here: a CuPy array (or the array module passed in) brings it.

API (`from gradschool.engine import to_device, synchronize, time_it, matmul_cost, ...`):

    to_device(obj, xp): xp is the target array module (numpy, or cupy). An array -> the array
        on that device (the same object if it is already there; dtype and values kept;
        device -> host through the array's `.get()`, host -> device through `xp.asarray`);
        a Tensor -> a new Tensor holding the moved data, same requires_grad, outside any
        graph; a Module -> the same module, every parameter's data (and gradient, if any)
        moved in place. Create the optimiser after moving the model.
    synchronize(xp): wait until the device of xp has finished its queued work (CuPy: the
        current stream); nothing to do for NumPy.
    time_it(fn, *, warmup=1, repeat=5, sync=None, clock=time.perf_counter): run fn warmup
        times untimed, then repeat times, each timed from clock() to sync() + clock();
        returns the list of repeat durations in seconds.
    matmul_cost(m, k, n, itemsize=4) -> (flops, bytes) of an (m, k) @ (k, n) product;
    elementwise_cost(size, inputs=2, itemsize=4, flops_per_element=1) -> (flops, bytes);
    roofline(flops, bytes_moved, peak_flops, bandwidth) -> {"intensity", "ridge",
        "attainable", "time", "bound"}: bound is "compute" or "memory".

Generated from solutions/02_engine/08_gpu.ipynb by `make export`:
edit the notebook, not this file.
"""

import time

import numpy as np

from gradschool.engine.nn import Module
from gradschool.engine.tensor import Tensor


def to_device(obj, xp):
    """Put `obj` (an array, a Tensor or a Module) on the device whose array module is `xp`.

    Arrays move with `xp.asarray` (host -> device) or their own `.get()` (device -> host, as
    CuPy's arrays have); one already there is returned unchanged. A Tensor comes back as a new
    Tensor with the same requires_grad; a Module is moved in place, parameter by parameter
    (gradients too), and returned. Create the optimiser after moving the model.
    """
    if isinstance(obj, Module):
        for p in obj.parameters():
            p.data = to_device(p.data, xp)
            if p.grad is not None:
                p.grad = to_device(p.grad, xp)
        return obj
    if isinstance(obj, Tensor):
        return Tensor(to_device(obj.data, xp), requires_grad=obj.requires_grad)
    if xp is np:
        if type(obj) is np.ndarray:
            return obj
        return obj.get() if hasattr(obj, "get") else np.asarray(obj)
    return xp.asarray(obj)


def synchronize(xp):
    """Wait until the device of array module `xp` has finished the work queued on it.

    A GPU runs asynchronously: CuPy queues kernels on a stream and returns at once, so a timer
    must wait for the stream before reading the clock. NumPy is done when it returns: nothing
    to wait for.
    """
    cuda = getattr(xp, "cuda", None)
    if cuda is not None:
        cuda.get_current_stream().synchronize()


def time_it(fn, *, warmup=1, repeat=5, sync=None, clock=time.perf_counter):
    """Durations in seconds of `repeat` calls of fn(), after `warmup` untimed calls.

    Each measurement runs from clock() to sync() then clock(), so that asynchronous device work
    is finished before the clock is read: pass sync=lambda: synchronize(xp) for a GPU.
    """
    if repeat < 1 or warmup < 0:
        raise ValueError(f"time_it needs repeat >= 1 and warmup >= 0, got repeat={repeat}, warmup={warmup}")
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        start = clock()
        fn()
        sync()
        times.append(clock() - start)
    return times


def matmul_cost(m, k, n, itemsize=4):
    """(FLOPs, bytes moved) of an (m, k) @ (k, n) product: 2mkn multiply-adds, and each of the
    three matrices read or written once, itemsize bytes per entry (4: float32)."""
    return 2 * m * k * n, itemsize * (m * k + k * n + m * n)


def elementwise_cost(size, inputs=2, itemsize=4, flops_per_element=1):
    """(FLOPs, bytes moved) of an elementwise operation on `size` entries with `inputs` input
    arrays and one output (x + y: inputs=2; relu(x): inputs=1)."""
    return flops_per_element * size, itemsize * size * (inputs + 1)


def roofline(flops, bytes_moved, peak_flops, bandwidth):
    """What the roofline model says about an operation on a machine: its arithmetic intensity
    (FLOPs per byte), the machine's ridge point (peak / bandwidth), the attainable FLOP/s
    min(peak, intensity * bandwidth), the least possible time max(flops / peak, bytes /
    bandwidth) in seconds, and whether it is "memory"- or "compute"-bound."""
    intensity = flops / bytes_moved
    ridge = peak_flops / bandwidth
    return {
        "intensity": intensity,
        "ridge": ridge,
        "attainable": min(peak_flops, intensity * bandwidth),
        "time": max(flops / peak_flops, bytes_moved / bandwidth),
        "bound": "memory" if intensity < ridge else "compute",
    }
