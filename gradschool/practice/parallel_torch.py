"""Data-parallel training in PyTorch on one machine's CPU: torch.distributed with the gloo backend,
one process per replica started by torch.multiprocessing (the spawn method, so that a worker is a
function of this module, importable by a fresh interpreter), the processes meeting at a TCP port
chosen free at run time, and DistributedDataParallel (DDP) averaging the gradients of the image
project's CNN (gradschool.projects.images_torch) across them during backward(). The workers hand
their results back as pickle files in a temporary folder, and the launcher stops every worker
when one fails or the time runs out, then deletes the folder.

    free_port()                               a TCP port free on 127.0.0.1 now
    save_result(folder, rank, result), load_result(folder, rank)
                                              a worker's result through a pickle file
    shard(x, y, rank, world_size)             the contiguous block of a global batch one rank trains on
    combine_gradients(gradients, counts)      the all-reduce's arithmetic: the global-batch mean gradient
                                              from per-rank mean gradients of shards of `counts` examples
    run_workers(worker, world_size, *args, timeout=120)
                                              worker(rank, world_size, port, folder, *args) in world_size
                                              spawned processes; [each rank's result]; nothing left running
    echo_worker, failing_worker, sleeping_worker
                                              small workers that show (and test) the launcher
    training_batches(steps, batch_size)       the first steps batches of the training split, unshuffled
    ddp_worker(rank, world_size, port, folder, steps, timing_batch)
                                              DDP on the image CNN: first-batch gradient, `steps` Adam
                                              steps, final weights, timed steps; one dict per rank

The memory calculation for ZeRO/FSDP and model parallelism is gradschool.practice.parallel_jax's
memory_per_device (written once, for the three frameworks).

Generated from solutions/08_parallel/parallel_torch.ipynb by `make export`:
edit the notebook, not this file.
"""

import os
import pickle
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gradschool.engine.device import time_it
from gradschool.projects import images_torch


def free_port():
    """A TCP port that is free on 127.0.0.1 now (the operating system's choice): where rank 0 listens.
    (Another program could take it before rank 0 does; with a fresh port for every run, rarely.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def save_result(folder, rank, result):
    """Pickle a worker's `result` (any picklable object) to folder/rank<rank>.pkl."""
    with open(Path(folder) / f"rank{rank}.pkl", "wb") as file:
        pickle.dump(result, file)


def load_result(folder, rank):
    """What rank `rank` saved with save_result; RuntimeError when it saved nothing."""
    path = Path(folder) / f"rank{rank}.pkl"
    if not path.exists():
        raise RuntimeError(f"rank {rank} finished without saving a result in {folder}")
    with open(path, "rb") as file:
        return pickle.load(file)


def shard(x, y, rank, world_size):
    """Rank `rank`'s contiguous block of the global batch (x, y): rows rank * B / world_size up to
    (rank + 1) * B / world_size, B = len(y), as (x_block, y_block) slices of the inputs. ValueError when
    B is not a multiple of world_size, or rank is not in range(world_size)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not one of 0..{world_size - 1}")
    if len(y) % world_size:
        raise ValueError(f"a batch of {len(y)} cannot be split into {world_size} equal shards")
    size = len(y) // world_size
    return x[rank * size:(rank + 1) * size], y[rank * size:(rank + 1) * size]


def combine_gradients(gradients, counts):
    """The gradient of the mean loss over all the examples, from per-rank gradients of the mean loss over
    each rank's shard: sum_r counts[r] * gradients[r][name] / sum(counts), for every name of the
    canonical dicts in `gradients` (one per rank). A new dict of float32 NumPy arrays; inputs unchanged."""
    total = sum(counts)
    combined = {}
    for name in gradients[0]:
        pairs = zip(gradients, counts, strict=True)
        weighted = sum(count * np.asarray(g[name], dtype=np.float64) for g, count in pairs)
        combined[name] = (weighted / total).astype(np.float32)
    return combined


def echo_worker(rank, world_size, port, folder, value):
    """Join the gloo group, all-reduce (sum) rank + value over the ranks, and save {"rank", "world_size",
    "pid", "sum", "folder"}: the smallest worker that shows the group works."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        total = torch.tensor([rank + float(value)])
        dist.all_reduce(total)  # in place, in every process: the sum over the ranks
        save_result(folder, rank, {"rank": rank, "world_size": world_size, "pid": os.getpid(),
                                   "sum": total.item(), "folder": str(folder)})
    finally:
        dist.destroy_process_group()


def failing_worker(rank, world_size, port, folder, pid_folder):
    """Write this process's id to pid_folder/<rank>.pid, then: rank 1 raises ValueError, the other ranks
    wait at a barrier that rank 1 never reaches (without a launcher that stops them: forever)."""
    Path(pid_folder, f"{rank}.pid").write_text(str(os.getpid()))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    if rank == 1:
        raise ValueError("rank 1 fails on purpose")
    dist.barrier()


def sleeping_worker(rank, world_size, port, folder, seconds):
    """Sleep `seconds`, then save the rank: a worker that hangs, for a launcher's timeout."""
    time.sleep(seconds)
    save_result(folder, rank, rank)


def run_workers(worker, world_size, *args, timeout=120):
    """Run worker(rank, world_size, port, folder, *args) for rank 0..world_size-1 in world_size processes
    started by torch.multiprocessing with the spawn method (`worker` must be importable: a module's
    function), `port` from free_port(), `folder` a temporary directory where each worker saves its
    result with save_result. Return [load_result(folder, rank) for each rank]. A worker's exception is
    raised here (the others stopped); TimeoutError after `timeout` seconds. In every case, no worker is
    left running and the folder is deleted."""
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        context = mp.start_processes(worker, args=(world_size, port, folder, *args), nprocs=world_size,
                                     join=False, start_method="spawn")
        try:
            deadline = time.monotonic() + timeout
            while not context.join(timeout=0.2):  # True once every worker has exited cleanly
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the {world_size} workers did not finish within {timeout} s")
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
                process.join()
        return [load_result(folder, rank) for rank in range(world_size)]


def training_batches(steps, batch_size):
    """The first `steps` batches of `batch_size` examples of the image project's training split, in order
    (no shuffling, no augmentation): [(x, y), ...], the same on every rank and in a single process."""
    x, y = images_torch.SPEC.prepare()["train"]
    return [(x[i * batch_size:(i + 1) * batch_size], y[i * batch_size:(i + 1) * batch_size])
            for i in range(steps)]


def ddp_worker(rank, world_size, port, folder, steps, timing_batch):
    """One rank of data-parallel training of the image CNN with DDP (gloo, one CPU thread). Saves
    {"rank", "pid", "loss": the first batch's mean loss (all-reduced), "gradients": the first-batch
    gradient after DDP's all-reduce (canonical), "losses": the local losses of `steps` Adam steps on
    training_batches(steps, SPEC.batch_size), "weights": the canonical weights after them, "times":
    time_it of the step on this rank's shard of a global batch of `timing_batch` examples}."""
    torch.set_num_threads(1)  # two processes on two cores: one thread each
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        images_torch.DEVICE = torch.device("cpu")  # gloo on the CPU (with NCCL: f"cuda:{rank}")
        spec = images_torch.SPEC
        model = images_torch.build_model()
        images_torch.set_weights(model, spec.initial_weights())
        ddp = DistributedDataParallel(model)  # broadcasts rank 0's weights; the all-reduce in backward

        def loss_on(x, y):
            return nn.functional.cross_entropy(ddp(images_torch._nchw(x)), torch.as_tensor(y))

        loss = loss_on(*shard(*spec.first_batch(), rank, world_size))
        loss.backward()  # the gradients are averaged over the ranks here
        gradients = images_torch._canonical(model, lambda parameter: parameter.grad)
        total = loss.detach().clone()
        dist.all_reduce(total)
        settings = spec.optimizer
        optimizer = torch.optim.Adam(ddp.parameters(), lr=settings.learning_rate, eps=settings.eps)
        losses = []
        for x, y in training_batches(steps, spec.batch_size):
            optimizer.zero_grad()
            step_loss = loss_on(*shard(x, y, rank, world_size))
            step_loss.backward()
            optimizer.step()
            losses.append(step_loss.item())
        weights = images_torch.get_weights(model)
        x, y = shard(*(np.concatenate(parts) for parts in zip(*training_batches(
            timing_batch // spec.batch_size, spec.batch_size), strict=True)), rank, world_size)

        def timed_step():
            optimizer.zero_grad()
            loss_on(x, y).backward()
            optimizer.step()

        times = time_it(timed_step, warmup=1, repeat=5)
        save_result(folder, rank, {"rank": rank, "pid": os.getpid(), "loss": total.item() / world_size,
                                   "gradients": gradients, "losses": losses, "weights": weights,
                                   "times": times})
    finally:
        dist.destroy_process_group()
