"""``make gpu-smoke``: one training step per stack on the GPU, against the same step on the CPU.

For each stack -- NumPy (CuPy on a GPU), the course's engine, PyTorch, Keras and JAX -- a child
process takes the course's GPU switch (``runtime.setup(device=...)``), builds the same small
network (784 -> 512 -> 10, ReLU, softmax cross-entropy, SGD) and times one training step on a
batch of 1024 (after a warm-up step that compiles what there is to compile). It reports the
device its arrays lived on, the loss before and after the step (it must go down), and the time.
Run once with ``device="gpu"`` and once with ``device="cpu"`` (which hides the GPU from every
framework), the two give the speed-up.

Without a GPU it says so and exits 0: CI has none. ``python -m bench gpu --cpu`` runs the CPU
half alone (the test suite does, to keep this script working where there is no GPU).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from gradschool.engine.device import synchronize  # waits for a GPU's queue; nothing on NumPy

ROOT = Path(__file__).resolve().parent.parent
STACKS = ("numpy", "engine", "torch", "keras", "jax")
BATCH, SIZES, LEARNING_RATE, REPEAT = 1024, (784, 512, 10), 0.1, 5


def _data(xp):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, SIZES[0])).astype("float32")
    y = rng.integers(0, SIZES[-1], BATCH)
    w1 = (rng.standard_normal(SIZES[:2]) / SIZES[0] ** 0.5).astype("float32")
    w2 = (rng.standard_normal(SIZES[1:]) / SIZES[1] ** 0.5).astype("float32")
    return [xp.asarray(a) for a in (x, y, w1, w2)]


def _numpy_step(rt):
    """Backprop by hand, as in Part 1, on rt.xp (NumPy, or CuPy on a GPU)."""
    xp = rt.xp
    x, y, w1, w2 = _data(xp)

    def step():
        h = xp.maximum(x @ w1, 0)
        logits = h @ w2
        logits = logits - logits.max(axis=1, keepdims=True)
        p = xp.exp(logits) / xp.exp(logits).sum(axis=1, keepdims=True)
        loss = -xp.log(p[xp.arange(BATCH), y]).mean()
        d = p
        d[xp.arange(BATCH), y] -= 1
        d /= BATCH
        dw2 = h.T @ d
        dh = (d @ w2.T) * (h > 0)
        w1[...] -= LEARNING_RATE * (x.T @ dh)
        w2[...] -= LEARNING_RATE * dw2
        return float(loss)

    return step, lambda: synchronize(xp), f"{xp.__name__} arrays on {_array_device(x)}"


def _array_device(array) -> str:
    return f"gpu:{array.device.id}" if type(array).__module__.startswith("cupy") else "cpu"


def _engine_step(rt):
    """The engine of Part 2 on rt.xp's arrays, moved there with its own ``to_device``."""
    from gradschool.engine import SGD, Linear, ReLU, Sequential, Tensor, to_device
    from gradschool.engine.nn import cross_entropy

    x, y, _, _ = _data(rt.xp)
    rng = np.random.default_rng(0)
    model = to_device(Sequential(Linear(*SIZES[:2], rng=rng), ReLU(), Linear(*SIZES[1:], rng=rng)), rt.xp)
    optimiser = SGD(model.parameters(), lr=LEARNING_RATE)
    inputs = Tensor(x)

    def step():
        loss = cross_entropy(model(inputs), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return float(loss.data)

    where = _array_device(model.parameters()[0].data)
    return step, lambda: synchronize(rt.xp), f"engine on {rt.xp.__name__} arrays on {where}"


def _torch_step(rt):
    import torch

    device = rt.torch_device()
    x, y, _, _ = _data(np)
    x, y = torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(*SIZES[:2]), torch.nn.ReLU(),
                                torch.nn.Linear(*SIZES[1:])).to(device)
    optimiser = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return float(loss.detach())

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    return step, sync, f"torch on {next(model.parameters()).device}"


def _keras_step(rt):
    import keras
    import tensorflow as tf

    x, y, _, _ = _data(np)
    with tf.device(rt.tf_device()):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((SIZES[0],)), keras.layers.Dense(SIZES[1], activation="relu"),
                                  keras.layers.Dense(SIZES[2])])
        model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        xt, yt = tf.constant(x), tf.constant(y)

    def step():
        with tf.device(rt.tf_device()):
            return float(model.train_on_batch(xt, yt))

    device = str(model.weights[0].value.device or rt.tf_device()).split("device:")[-1]
    return step, lambda: None, f"keras (TensorFlow) on {device}"


def _jax_step(rt):
    import jax
    import optax
    from flax import nnx

    device = rt.jax_device()
    x, y, _, _ = _data(np)
    x, y = jax.device_put(x, device), jax.device_put(y, device)
    with jax.default_device(device):
        model = nnx.Sequential(nnx.Linear(*SIZES[:2], rngs=nnx.Rngs(0)), nnx.relu,
                               nnx.Linear(*SIZES[1:], rngs=nnx.Rngs(1)))
        optimiser = nnx.Optimizer(model, optax.sgd(LEARNING_RATE), wrt=nnx.Param)

    @nnx.jit
    def train(model, optimiser, x, y):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimiser.update(model, grads)
        return loss

    def step():
        return float(train(model, optimiser, x, y))

    weights = nnx.state(model, nnx.Param)
    where = next(iter(jax.tree.leaves(weights))).devices()
    return step, lambda: None, f"jax on {', '.join(str(d) for d in where)}"


STEPS = {"numpy": _numpy_step, "engine": _engine_step, "torch": _torch_step, "keras": _keras_step,
         "jax": _jax_step}


def child(stack: str, device: str) -> dict:
    """One stack's step, in this process (``python -m bench.gpu STACK DEVICE``)."""
    sys.path.insert(0, str(ROOT))
    from gradschool import runtime

    rt = runtime.setup(device=device, quiet=True, install=False)
    step, sync, used = STEPS[stack](rt)
    before = step()  # the warm-up: compiles, allocates, moves the weights
    sync()
    times = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        after = step()
        sync()
        times.append(time.perf_counter() - start)
    return {"stack": stack, "asked": device, "device": used, "loss before": before, "loss after": after,
            "seconds": sorted(times)[len(times) // 2]}


def run(stack: str, device: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-m", "bench.gpu", stack, device], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"stack": stack, "asked": device, "error": last}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from gradschool import runtime

    gpu = runtime.visible_gpu()
    cpu_only = "--cpu" in argv
    if gpu is None and not cpu_only:
        print("gpu-smoke: skipped: no GPU is visible here (nvidia-smi finds none); "
              "run it where there is one (Colab with a GPU runtime, a CUDA machine)")
        return 0
    print(f"one training step per stack, batch {BATCH}, {' -> '.join(map(str, SIZES))}; "
          f"GPU: {gpu or 'none (CPU only)'}")
    print(f"  {'stack':<7} {'device used':<44} {'CPU ms':>8} {'GPU ms':>8} {'speed-up':>9}")
    failed = 0
    for stack in STACKS:
        cpu = run(stack, "cpu")
        on_gpu = run(stack, "gpu") if not cpu_only else None
        shown = on_gpu or cpu
        if "error" in cpu or (on_gpu and "error" in on_gpu):
            failed += 1
            print(f"  {stack:<7} failed: {(on_gpu if on_gpu and 'error' in on_gpu else cpu)['error']}")
            continue
        learned = all(r["loss after"] < r["loss before"] for r in (cpu, on_gpu) if r)
        if not learned:
            failed += 1
        gpu_ms = f"{on_gpu['seconds'] * 1e3:8.2f}" if on_gpu else f"{'-':>8}"
        ratio = f"{cpu['seconds'] / on_gpu['seconds']:8.1f}x" if on_gpu else f"{'-':>9}"
        print(f"  {stack:<7} {shown['device']:<44} {cpu['seconds'] * 1e3:8.2f} {gpu_ms} {ratio}"
              + ("" if learned else "  (the loss did not go down)"))
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in STACKS:
        print(json.dumps(child(sys.argv[1], sys.argv[2])))
    else:
        raise SystemExit(main())
