"""Training machinery of the course's engine: the optimisers that turn gradients into parameter
updates, learning-rate schedules, and the data pipeline that feeds batches to a model. The
optimisers follow PyTorch's update rules exactly (a test compares them step by step with
torch.optim), and update each parameter's array in place, in its own dtype. The data side is
deliberately small: a dataset is anything with `len` and indexing, a loader batches it in a
reproducible order drawn from an explicit random generator, applies augmentation per batch,
and can prepare batches ahead on a background thread.

API (`from gradschool.engine import SGD, Adam, AdamW, ...`):

    optimisers (params: a list of Tensors, e.g. model.parameters()):
    SGD(params, lr, momentum=0.0, weight_decay=0.0)
    Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)   (L2 in the gradient)
    AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2) (decoupled decay)
    opt.step(): updates every parameter whose .grad is not None, in place (same array, same
        dtype); opt.zero_grad(): sets every .grad to None; opt.lr may be changed between steps.
    schedules (call sch.step() after each opt.step(); they set opt.lr):
    CosineSchedule(optimizer, total_steps, warmup_steps=0, min_lr=0.0), StepLR(optimizer,
        step_size, gamma=0.1)
    data:
    Dataset (len and [i]), ArrayDataset(x, y, transform=None), collate(samples)
    DataLoader(dataset, batch_size, shuffle=False, rng=None, drop_last=False, transform=None,
        prefetch=0): `for x, y in loader` yields tuples of batch arrays; a new shuffled order
        every epoch from rng; transform(x_batch) per batch; prefetch > 0 prepares that many
        batches ahead on a thread.
    prefetch(iterable, size): any iterable, consumed on a background thread; order kept,
        exceptions raised in the consumer, the thread joined when the loop ends or stops.

Generated from solutions/02_engine/04_optim_data.ipynb by `make export`:
edit the notebook, not this file.
"""

import numpy as np


class Optimizer:
    """What every optimiser shares: the parameters it updates, a learning rate, and
    `zero_grad()`. Subclasses write `step()`, which reads each parameter's `.grad` and changes
    its `.data` in place (same array, same dtype), so that every layer holding the parameter
    sees the update.
    """

    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError("the optimiser got no parameters to update")
        if lr < 0:
            raise ValueError(f"the learning rate must be at least 0, got {lr}")
        self.lr = lr  # a schedule changes it between steps

    def zero_grad(self):
        """Forget every parameter's gradient (`backward()` adds to `.grad`, so reset it each step)."""
        for p in self.params:
            p.grad = None

    def step(self):
        """Update every parameter that has a gradient."""
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with momentum and L2 weight decay, as torch.optim.SGD:

        g = grad + weight_decay * p
        v = momentum * v + g        (v starts at 0; without momentum, v = g)
        p = p - lr * v
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr)
        self.momentum, self.weight_decay = momentum, weight_decay
        self.velocity = [None] * len(self.params)  # one array per parameter, made at its first step

    def step(self):
        """One update of every parameter whose `.grad` is not None, in place."""
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            if self.momentum:
                if self.velocity[i] is None:
                    self.velocity[i] = g.astype(p.data.dtype, copy=True)  # a copy, never p.grad itself
                else:
                    self.velocity[i] *= self.momentum
                    self.velocity[i] += g
                g = self.velocity[i]
            p.data -= (self.lr * g).astype(p.data.dtype, copy=False)


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015), as torch.optim.Adam: a step per parameter scaled by running
    averages of its gradient (m) and squared gradient (v), with their bias from starting at
    zero corrected. `weight_decay` adds weight_decay * p to the gradient (L2, coupled), as
    torch.optim.Adam does; AdamW instead shrinks the parameter directly.
    """

    decoupled = False  # AdamW sets True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.betas, self.eps, self.weight_decay = tuple(betas), eps, weight_decay
        self.m = [None] * len(self.params)
        self.v = [None] * len(self.params)
        self.t = [0] * len(self.params)  # steps taken by each parameter

    def step(self):
        """One Adam update of every parameter whose `.grad` is not None, in place."""
        beta1, beta2 = self.betas
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad
            if self.weight_decay and self.decoupled:
                p.data *= 1 - self.lr * self.weight_decay
            elif self.weight_decay:
                g = g + self.weight_decay * p.data
            if self.m[i] is None:
                self.m[i] = np.zeros_like(p.data)  # NumPy hands CuPy arrays to CuPy
                self.v[i] = np.zeros_like(p.data)
            m, v = self.m[i], self.v[i]
            m *= beta1
            m += (1 - beta1) * g
            v *= beta2
            v += (1 - beta2) * g * g
            self.t[i] += 1
            m_hat = m / (1 - beta1 ** self.t[i])
            v_hat = v / (1 - beta2 ** self.t[i])
            p.data -= (self.lr * m_hat / (np.sqrt(v_hat) + self.eps)).astype(p.data.dtype, copy=False)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter, 2019), as torch.optim.AdamW:
    p = p - lr * weight_decay * p before the Adam step, so the decay is not rescaled by the
    running averages (as L2 in the gradient would be)."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


class CosineSchedule:
    """Linear warm-up from lr / warmup_steps to lr over `warmup_steps` steps, then a half cosine
    from lr down to `min_lr` at `total_steps` (and `min_lr` after). Without warm-up it gives the
    values of torch.optim.lr_scheduler.CosineAnnealingLR(T_max=total_steps, eta_min=min_lr).
    Call `step()` after each optimiser step; it sets `optimizer.lr`.
    """

    def __init__(self, optimizer, total_steps, warmup_steps=0, min_lr=0.0):
        if not 0 <= warmup_steps < total_steps:
            raise ValueError(f"need 0 <= warmup_steps < total_steps, got {warmup_steps}, {total_steps}")
        self.optimizer, self.total_steps, self.warmup_steps = optimizer, total_steps, warmup_steps
        self.base_lr, self.min_lr, self.steps = optimizer.lr, min_lr, 0
        optimizer.lr = self.lr_at(0)

    def lr_at(self, t):
        """The learning rate after t calls of step()."""
        if t < self.warmup_steps:
            return self.base_lr * (t + 1) / self.warmup_steps
        progress = min(1.0, (t - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + float(np.cos(np.pi * progress)))

    def step(self):
        self.steps += 1
        self.optimizer.lr = self.lr_at(self.steps)


class StepLR:
    """lr * gamma ** (steps // step_size): the learning rate divided by 1 / gamma every
    `step_size` steps, as torch.optim.lr_scheduler.StepLR."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.optimizer, self.step_size, self.gamma = optimizer, step_size, gamma
        self.base_lr, self.steps = optimizer.lr, 0

    def step(self):
        self.steps += 1
        self.optimizer.lr = self.base_lr * self.gamma ** (self.steps // self.step_size)


class Dataset:
    """A sized collection of samples: `len(ds)` and `ds[i]`, a tuple such as (input, label).
    Subclass it for data that is read or computed one sample at a time."""

    def __len__(self):
        raise NotImplementedError

    def __getitem__(self, index):
        raise NotImplementedError


class ArrayDataset(Dataset):
    """Inputs x and labels y held as arrays (NumPy or CuPy) of the same length; ds[i] is
    (x[i], y[i]), with `transform` (if any) applied to the input. `batch(indices)` slices
    whole batches at once, the fast path the DataLoader takes."""

    def __init__(self, x, y, transform=None):
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} and {len(y)}")
        self.x, self.y, self.transform = x, y, transform

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        x = self.x[index]
        return (self.transform(x) if self.transform else x), self.y[index]

    def batch(self, indices):
        """(inputs, labels) of the samples at `indices`, one fancy-index per array."""
        if self.transform:  # a per-sample transform needs the samples one by one
            return collate([self[int(i)] for i in indices])
        return self.x[indices], self.y[indices]


def collate(samples):
    """Stack a list of samples (tuples of arrays or numbers) into a tuple of batch arrays."""
    return tuple(np.stack(fields) for fields in zip(*samples, strict=True))  # CuPy arrays stack on CuPy


class DataLoader:
    """Batches of a dataset, one epoch per `for` loop: `for x, y in loader`.

    shuffle: a new order every epoch, drawn from `rng` (an explicit np.random.Generator, so a
    run can be repeated exactly). drop_last: skip the last batch when it is smaller than
    `batch_size`. transform: a function of a batch of inputs, applied to each batch (data
    augmentation: give it a random generator of its own). prefetch: when > 0, prepare up to
    that many batches ahead on a background thread while the model trains on the current one.
    """

    def __init__(self, dataset, batch_size, shuffle=False, rng=None, drop_last=False,
                 transform=None, prefetch=0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if shuffle and rng is None:
            raise ValueError("shuffle=True needs rng=np.random.default_rng(seed)")
        self.dataset, self.batch_size, self.shuffle, self.rng = dataset, batch_size, shuffle, rng
        self.drop_last, self.transform, self.prefetch = drop_last, transform, prefetch

    def __len__(self):
        """The number of batches in one epoch."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        batches = self.batches()
        return prefetch(batches, self.prefetch) if self.prefetch > 0 else batches

    def load(self, indices):
        """The batch of the samples at `indices` (a NumPy integer array)."""
        if hasattr(self.dataset, "batch"):
            return self.dataset.batch(indices)
        return collate([self.dataset[int(i)] for i in indices])

    def batches(self):
        """Yield one epoch of batches, (inputs, labels, ...) tuples, in this epoch's order."""
        n = len(self.dataset)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            batch = self.load(order[start:start + self.batch_size])
            if self.transform is not None:
                batch = (self.transform(batch[0]), *batch[1:])
            yield tuple(batch)


_DONE = object()  # put on the queue by the worker when its iterable is exhausted


class _Failure:
    """An exception raised in the worker, carried across the queue to be raised again."""

    def __init__(self, error):
        self.error = error


def prefetch(iterable, size):
    """Iterate over `iterable` on a background thread, at most `size` items ahead.

    Yields the items in their order. An exception in the worker is raised again here. When the
    consumer stops early (break, an exception, or dropping the iterator), the worker is told
    to stop and joined, so no thread outlives the loop.
    """
    import queue  # here, not at the top: only prefetching needs threads
    import threading

    ready = queue.Queue(maxsize=size)
    stop = threading.Event()

    def put(item):
        while not stop.is_set():  # a timeout, so that a full queue never blocks a stop
            try:
                ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def work():
        try:
            for item in iterable:
                if not put(item):
                    return
            put(_DONE)
        except Exception as error:  # carried to the consumer, raised there
            put(_Failure(error))

    worker = threading.Thread(target=work, name="prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join()
