"""The contract of ``gradschool.engine.training``: optimisers, schedules and data loading.

The optimisers against torch.optim over several steps on the same gradients (float64, so any
difference is a different rule, not rounding); the schedules against torch's schedulers and
their formulas; the loader's promises (every sample once per epoch, reproducible shuffles,
drop_last, transforms) and the prefetching thread's (order, errors raised in the consumer,
no thread left behind).
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from gradschool.engine import (
    SGD,
    Adam,
    AdamW,
    ArrayDataset,
    CosineSchedule,
    DataLoader,
    Dataset,
    StepLR,
    Tensor,
    prefetch,
)

torch = pytest.importorskip("torch")

SHAPES = [(3, 4), (4,), (2, 1, 3)]


def run_both(ours, theirs, steps=5, seed=0, dtype=np.float64):
    """Run our optimiser class and torch's on the same start and gradients; return both ends."""
    rng = np.random.default_rng(seed)
    starts = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[(rng.standard_normal(s) * 10.0 ** rng.integers(-2, 2)).astype(dtype) for s in SHAPES]
             for _ in range(steps)]
    params = [Tensor(a.copy(), requires_grad=True) for a in starts]
    arrays = [p.data for p in params]
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in starts]
    opt, topt = ours(params), theirs(tparams)
    for step in range(steps):
        for p, tp, g in zip(params, tparams, grads[step], strict=True):
            p.grad = g.copy()
            tp.grad = torch.tensor(g.copy())
        opt.step()
        topt.step()
        for p, g in zip(params, grads[step], strict=True):
            np.testing.assert_array_equal(p.grad, g)  # the optimiser leaves gradients alone
    for p, a in zip(params, arrays, strict=True):
        assert p.data is a and p.dtype == dtype  # in place, same dtype
    return [p.data for p in params], [tp.detach().numpy() for tp in tparams]


def assert_matches(ours, theirs, rtol=1e-10, atol=1e-12):
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("lr,momentum,weight_decay", [(0.1, 0.0, 0.0), (0.05, 0.9, 0.0),
                                                      (0.1, 0.0, 0.01), (0.02, 0.8, 0.1)])
def test_sgd_matches_torch(lr, momentum, weight_decay):
    kwargs = dict(lr=lr, momentum=momentum, weight_decay=weight_decay)
    assert_matches(*run_both(lambda ps: SGD(ps, **kwargs), lambda ps: torch.optim.SGD(ps, **kwargs)))


@pytest.mark.parametrize("kwargs", [dict(lr=1e-3), dict(lr=0.1, betas=(0.8, 0.99), eps=1e-6),
                                    dict(lr=0.01, weight_decay=0.1)])
def test_adam_matches_torch(kwargs):
    assert_matches(*run_both(lambda ps: Adam(ps, **kwargs), lambda ps: torch.optim.Adam(ps, **kwargs)))


@pytest.mark.parametrize("kwargs", [dict(), dict(lr=0.05, weight_decay=0.1), dict(lr=0.01, weight_decay=0.0)])
def test_adamw_matches_torch(kwargs):
    assert_matches(*run_both(lambda ps: AdamW(ps, **kwargs), lambda ps: torch.optim.AdamW(ps, **kwargs)))


@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
                                  lambda ps: Adam(ps, lr=0.01), lambda ps: AdamW(ps, lr=0.01)])
def test_float32_stays_float32_and_agrees(make):
    torch_cls = {SGD: torch.optim.SGD, Adam: torch.optim.Adam, AdamW: torch.optim.AdamW}
    probe = make([Tensor(np.zeros(1), requires_grad=True)])
    kwargs = {"lr": probe.lr}
    if isinstance(probe, SGD):
        kwargs.update(momentum=probe.momentum, weight_decay=probe.weight_decay)
    else:
        kwargs.update(betas=probe.betas, eps=probe.eps, weight_decay=probe.weight_decay)
    ours, theirs = run_both(make, lambda ps: torch_cls[type(probe)](ps, **kwargs), dtype=np.float32)
    assert_matches(ours, theirs, rtol=1e-4, atol=1e-5)


def test_parameters_without_gradient_are_skipped_like_torch():
    start = np.array([1.0, -1.0])
    params = [Tensor(start.copy(), requires_grad=True), Tensor(start.copy(), requires_grad=True)]
    tparams = [torch.tensor(start.copy(), requires_grad=True) for _ in range(2)]
    opt, topt = Adam(params, lr=0.1), torch.optim.Adam(tparams, lr=0.1)
    for step in range(4):
        g = np.array([0.5, 2.0]) * (step + 1)
        params[0].grad, tparams[0].grad = g.copy(), torch.tensor(g)
        if step >= 2:  # the second parameter joins late: its own step count starts then
            params[1].grad, tparams[1].grad = g.copy(), torch.tensor(g)
        opt.step()
        topt.step()
        if step < 2:
            np.testing.assert_array_equal(params[1].data, start)
    assert_matches([p.data for p in params], [t.detach().numpy() for t in tparams])
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_optimizer_rejects_nothing_to_do():
    with pytest.raises(ValueError):
        SGD([], lr=0.1)
    with pytest.raises(ValueError):
        Adam([Tensor(np.zeros(1), requires_grad=True)], lr=-1.0)


def lrs(schedule, optimizer, steps):
    out = []
    for _ in range(steps):
        out.append(optimizer.lr)
        schedule.step()
    return out


def torch_lrs(make_scheduler, lr, steps):
    """The learning rates a torch scheduler sets over ``steps`` steps, from ``lr``."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = make_scheduler(optimizer)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_cosine_schedule_matches_torch_without_warmup():
    opt = SGD([Tensor(np.zeros(1), requires_grad=True)], lr=0.1)
    ours = lrs(CosineSchedule(opt, total_steps=50, min_lr=0.001), opt, 51)
    theirs = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=50, eta_min=0.001),
                       0.1, 51)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_cosine_schedule_with_warmup():
    opt = Adam([Tensor(np.zeros(1), requires_grad=True)], lr=1.0)
    values = lrs(CosineSchedule(opt, total_steps=30, warmup_steps=10), opt, 40)
    np.testing.assert_allclose(values[:10], np.arange(1, 11) / 10)
    expected = [0.5 * (1 + math.cos(math.pi * (t - 10) / 20)) for t in range(10, 31)]
    np.testing.assert_allclose(values[10:31], expected, atol=1e-15)
    assert values[30:] == [0.0] * 10  # and it stays at min_lr
    with pytest.raises(ValueError):
        CosineSchedule(opt, total_steps=10, warmup_steps=10)


def test_step_lr_matches_torch():
    opt = SGD([Tensor(np.zeros(1), requires_grad=True)], lr=0.5)
    ours = lrs(StepLR(opt, step_size=7, gamma=0.3), opt, 30)
    theirs = torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.3), 0.5, 30)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def dataset(n=23):
    x = np.random.default_rng(5).standard_normal((n, 2, 3)).astype(np.float32)
    return ArrayDataset(x, np.arange(n)), x


def labels_of(loader, x):
    epoch = []
    for xb, yb in loader:
        assert xb.dtype == np.float32 and xb.shape[1:] == (2, 3) and len(xb) == len(yb)
        np.testing.assert_array_equal(xb, x[yb])  # inputs travel with their labels
        epoch.append(yb)
    return epoch


@pytest.mark.parametrize("n,batch_size", [(23, 5), (20, 5), (3, 10), (1, 1), (0, 4)])
def test_loader_covers_every_sample_once_with_a_partial_last_batch(n, batch_size):
    ds, x = dataset(n)
    loader = DataLoader(ds, batch_size=batch_size)
    epoch = labels_of(loader, x)
    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    assert [len(b) for b in epoch] == sizes and len(loader) == len(sizes)
    np.testing.assert_array_equal(np.concatenate(epoch) if epoch else [], np.arange(n))


def test_shuffles_are_new_every_epoch_and_reproducible():
    ds, x = dataset()
    before = x.copy()
    loaders = [DataLoader(ds, 5, shuffle=True, rng=np.random.default_rng(seed)) for seed in (7, 7, 8)]
    orders = [[np.concatenate(labels_of(loader, x)) for _ in range(4)] for loader in loaders]
    for order in orders[0]:
        np.testing.assert_array_equal(np.sort(order), np.arange(23))
    assert len({tuple(o) for o in orders[0]}) == 4  # every epoch a new order
    for a, b in zip(orders[0], orders[1], strict=True):
        np.testing.assert_array_equal(a, b)  # same seed, same epochs
    assert any(not np.array_equal(a, b) for a, b in zip(orders[0], orders[2], strict=True))
    np.testing.assert_array_equal(x, before)  # the data is never shuffled in place
    with pytest.raises(ValueError):
        DataLoader(ds, 5, shuffle=True)  # a shuffle needs an explicit generator


def test_drop_last():
    ds, x = dataset()
    loader = DataLoader(ds, 5, shuffle=True, rng=np.random.default_rng(0), drop_last=True)
    epoch = labels_of(loader, x)
    assert [len(b) for b in epoch] == [5] * 4 and len(loader) == 4
    assert len(np.unique(np.concatenate(epoch))) == 20


def test_transforms_per_batch_and_per_sample():
    ds, x = dataset()
    calls = []

    def flip(batch):
        calls.append(batch.shape)
        return batch[:, :, ::-1]

    for xb, yb in DataLoader(ds, 10, transform=flip):
        np.testing.assert_array_equal(xb, x[yb][:, :, ::-1])
    assert calls == [(10, 2, 3), (10, 2, 3), (3, 2, 3)]
    per_sample = ArrayDataset(x, np.arange(23), transform=lambda s: s * 2)
    for xb, yb in DataLoader(per_sample, 4):
        np.testing.assert_array_equal(xb, 2 * x[yb])


def test_generic_dataset_is_collated():
    class Squares(Dataset):
        def __len__(self):
            return 7

        def __getitem__(self, i):
            return np.array([i, i * i], dtype=np.float32), i

    batches = list(DataLoader(Squares(), 3))
    assert [b[0].shape for b in batches] == [(3, 2), (3, 2), (1, 2)]
    assert all(isinstance(b, tuple) for b in batches)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), np.arange(7))
    assert batches[0][0].dtype == np.float32


def new_threads(before):
    return [t for t in threading.enumerate() if t not in before and t.is_alive()]


def test_prefetch_keeps_order_and_runs_on_another_thread():
    before = set(threading.enumerate())
    where = []

    def source():
        for i in range(500):
            where.append(threading.get_ident())
            yield i

    assert list(prefetch(source(), 3)) == list(range(500))
    assert threading.get_ident() not in where
    assert not new_threads(before)


def test_prefetching_loader_gives_the_same_batches():
    ds, x = dataset()
    plain = DataLoader(ds, 4, shuffle=True, rng=np.random.default_rng(3))
    ahead = DataLoader(ds, 4, shuffle=True, rng=np.random.default_rng(3), prefetch=2)
    for _ in range(2):
        for (a, ya), (b, yb) in zip(plain, ahead, strict=True):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(ya, yb)


def test_prefetch_raises_worker_errors_in_the_consumer_and_cleans_up():
    before = set(threading.enumerate())

    class Broken(Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            if i == 6:
                raise OSError("unreadable sample 6")
            return np.zeros(2), i

    seen = []
    with pytest.raises(OSError, match="unreadable sample 6"):
        for _, y in DataLoader(Broken(), 2, prefetch=2):
            seen.append(y)
    assert len(seen) == 3
    assert not new_threads(before)


def test_prefetch_thread_stops_when_the_loop_is_abandoned():
    before = set(threading.enumerate())

    def endless():
        i = 0
        while True:
            time.sleep(0.001)
            yield i
            i += 1

    def take(n):
        for item in prefetch(endless(), 2):
            if item == n:
                return item

    assert take(10) == 10
    assert not new_threads(before)
    made = []

    def counting():
        for i in range(1000):
            made.append(i)
            yield i

    it = prefetch(counting(), 2)
    assert next(it) == 0
    time.sleep(0.2)
    assert len(made) <= 4  # bounded: the worker waits when the queue is full
    it.close()
    assert not new_threads(before)
