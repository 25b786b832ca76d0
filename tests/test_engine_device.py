"""The contract of ``gradschool.engine.device``: moving arrays, tensors and models between devices,
honest timing, and the roofline.

No GPU is needed: the GPU code paths run on ``FakeGPU``, a pretend CuPy whose arrays are NumPy
arrays of their own type, so the engine computes on them unchanged while a test sees where every
array lives and which transfers were made. A model moved there keeps its Parameter objects and
dtypes, trains there with exactly the results of the CPU, and comes back bit for bit. What the
fake cannot show is what only a GPU can: that CuPy arrays come back from every engine operation
(the fake's gradients are made by NumPy, so they are plain arrays) and real timings.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gradschool.engine import (
    SGD,
    Adam,
    Linear,
    ReLU,
    Sequential,
    Tensor,
    cross_entropy,
    elementwise_cost,
    matmul_cost,
    roofline,
    synchronize,
    time_it,
    to_device,
)


class FakeGPU:
    """CuPy's transfer interface (asarray, .get(), cuda.get_current_stream().synchronize()) on NumPy."""

    calls: list[str] = []

    class ndarray(np.ndarray):
        def get(self):
            FakeGPU.calls.append("get")
            return np.array(self)

    @staticmethod
    def asarray(a, dtype=None):
        FakeGPU.calls.append("asarray")
        if type(a) is FakeGPU.ndarray and dtype is None:
            return a
        return np.array(a, dtype=dtype).view(FakeGPU.ndarray)

    cuda = SimpleNamespace(get_current_stream=lambda: SimpleNamespace(
        synchronize=lambda: FakeGPU.calls.append("sync")))


@pytest.fixture(autouse=True)
def _clear_calls():
    FakeGPU.calls.clear()


def make_model(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    model = Sequential(Linear(6, 8, rng=rng), ReLU(), Linear(8, 3, rng=rng))
    for p in model.parameters():
        p.data = p.data.astype(dtype)
    return model


def batch(dtype=np.float32, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((5, 6)).astype(dtype), rng.integers(0, 3, 5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_moved_module_has_every_parameter_on_the_device(dtype):
    model = make_model(dtype)
    before = model.parameters()
    values = [p.data.copy() for p in before]
    assert to_device(model, FakeGPU) is model
    after = model.parameters()
    assert [id(p) for p in after] == [id(p) for p in before]
    for p, v in zip(after, values, strict=True):
        assert type(p.data) is FakeGPU.ndarray and p.dtype == dtype
        np.testing.assert_array_equal(np.array(p.data), v)
    assert FakeGPU.calls.count("asarray") == len(after)


@pytest.mark.parametrize("optimizer", [lambda ps: SGD(ps, lr=0.1, momentum=0.9),
                                       lambda ps: Adam(ps, lr=1e-2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_on_the_device_matches_the_cpu_exactly(optimizer, dtype):
    cpu, dev = make_model(dtype), to_device(make_model(dtype), FakeGPU)
    cpu_opt, dev_opt = optimizer(cpu.parameters()), optimizer(dev.parameters())  # after the move
    x, y = batch(dtype)
    for _ in range(3):
        for model, opt, xs, ys in ((cpu, cpu_opt, Tensor(x), y),
                                   (dev, dev_opt, to_device(Tensor(x), FakeGPU), to_device(y, FakeGPU))):
            opt.zero_grad()
            logits = model(xs)
            loss = cross_entropy(logits, ys)
            loss.backward()
            opt.step()
        assert type(logits.data) is FakeGPU.ndarray  # the forward pass computed on the device
    for p, q in zip(cpu.parameters(), dev.parameters(), strict=True):
        assert type(q.data) is FakeGPU.ndarray and q.dtype == dtype  # the step updated in place, there
        assert q.grad is not None and q.grad.shape == q.shape and q.grad.dtype == dtype
        np.testing.assert_array_equal(np.array(q.grad), p.grad)
        np.testing.assert_array_equal(np.array(q.data), p.data)
    if isinstance(dev_opt, Adam):  # its state is made from the parameters: on the device
        assert all(type(s) is FakeGPU.ndarray for s in dev_opt.m + dev_opt.v)
    # (SGD's velocity is made from the gradient, which the fake's NumPy makes a plain array;
    # on CuPy gradients are CuPy arrays, and so is the velocity.)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_moving_back_round_trips_exactly(dtype):
    model = make_model(dtype)
    x, y = batch(dtype)
    cross_entropy(model(Tensor(x)), y).backward()
    values = {n: (p.data.copy(), p.grad.copy()) for n, p in model.named_parameters()}
    to_device(to_device(model, FakeGPU), np)
    assert "get" in FakeGPU.calls
    for name, p in model.named_parameters():
        data, grad = values[name]
        assert type(p.data) is np.ndarray and type(p.grad) is np.ndarray
        assert p.dtype == dtype and p.grad.dtype == dtype
        np.testing.assert_array_equal(p.data, data)
        np.testing.assert_array_equal(p.grad, grad)


def test_arrays_and_tensors():
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    assert to_device(a, np) is a  # no copy when already there
    on = to_device(a, FakeGPU)
    assert type(on) is FakeGPU.ndarray and on.dtype == np.int32
    a[0, 0] = 99
    assert on[0, 0] == 0  # the device holds a copy
    assert to_device(on, FakeGPU) is on
    back = to_device(on, np)
    assert type(back) is np.ndarray and back.dtype == np.int32
    np.testing.assert_array_equal(back[1:], a[1:])
    t = to_device(Tensor(np.ones(3, dtype=np.float64), requires_grad=True), FakeGPU)
    assert isinstance(t, Tensor) and t.requires_grad and t.dtype == np.float64
    assert type(t.data) is FakeGPU.ndarray
    t = to_device(t, np)
    assert isinstance(t, Tensor) and type(t.data) is np.ndarray and t.requires_grad


def test_synchronize_waits_on_the_current_stream_and_numpy_needs_nothing():
    synchronize(FakeGPU)
    assert FakeGPU.calls == ["sync"]
    synchronize(np)  # nothing to wait for, and no error


def test_time_it_warms_up_and_synchronises_before_reading_the_clock():
    log, ticks = [], iter([0.0, 2.0, 5.0, 5.5])

    def clock():
        log.append("clock")
        return next(ticks)

    times = time_it(lambda: log.append("fn"), warmup=2, repeat=2, sync=lambda: log.append("sync"),
                    clock=clock)
    assert times == [2.0, 0.5]
    assert log == ["fn", "fn", "sync", "clock", "fn", "sync", "clock", "clock", "fn", "sync", "clock"]
    for bad in ({"repeat": 0}, {"warmup": -1}):
        with pytest.raises(ValueError):
            time_it(lambda: None, **bad)
    assert all(t >= 0 for t in time_it(lambda: None, repeat=3))


def test_costs():
    assert matmul_cost(2, 3, 4) == (48, 104)
    assert matmul_cost(5, 7, 1, itemsize=8) == (70, 8 * 47)
    assert elementwise_cost(1000) == (1000, 12000)
    assert elementwise_cost(10, inputs=1, itemsize=2, flops_per_element=3) == (30, 40)


@given(flops=st.floats(1.0, 1e15), nbytes=st.floats(1.0, 1e12), peak=st.floats(1e6, 1e15),
       bandwidth=st.floats(1e6, 1e13))
def test_roofline_is_the_slower_of_compute_and_memory(flops, nbytes, peak, bandwidth):
    r = roofline(flops, nbytes, peak, bandwidth)
    assert r["time"] == pytest.approx(max(flops / peak, nbytes / bandwidth))
    assert r["attainable"] == pytest.approx(min(peak, flops / nbytes * bandwidth))
    assert r["attainable"] <= peak * (1 + 1e-12)
    assert r["bound"] == ("memory" if r["intensity"] < r["ridge"] else "compute")
    # the time and the attainable rate say the same thing
    assert flops / r["time"] == pytest.approx(r["attainable"])


def test_small_layers_are_memory_bound_and_big_ones_compute_bound():
    h100 = (67e12, 3.35e12)
    assert roofline(*matmul_cost(1, 512, 512), *h100)["bound"] == "memory"
    assert roofline(*matmul_cost(4096, 4096, 4096), *h100)["bound"] == "compute"
    assert roofline(*elementwise_cost(2**24), *h100)["bound"] == "memory"
