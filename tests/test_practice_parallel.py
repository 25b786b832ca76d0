"""Properties of 08_parallel's framework-neutral pieces: the memory calculation (parallel_jax) and the
sharding and gradient arithmetic of parallel_torch (no process is started here)."""

from __future__ import annotations

import numpy as np
import pytest

from gradschool.practice.parallel_jax import BYTES_PER_PARAMETER, SHARDED, memory_per_device
from gradschool.practice.parallel_torch import combine_gradients, shard


@pytest.mark.parametrize("precision", sorted(BYTES_PER_PARAMETER))
@pytest.mark.parametrize("n_parameters", [1, 10, 12_345, 10**9, 7_500_000_000])
@pytest.mark.parametrize("n_devices", [1, 3, 8, 64])
def test_memory_parts_add_up_and_shrink_stage_by_stage(precision, n_parameters, n_devices):
    totals = {}
    for strategy in SHARDED:
        parts = memory_per_device(n_parameters, n_devices, strategy, precision)
        assert all(isinstance(v, int) for v in parts.values())
        assert parts["total"] == parts["parameters"] + parts["gradients"] + parts["optimizer"]
        totals[strategy] = parts["total"]
    assert totals["data"] == 16 * n_parameters  # 16 bytes per parameter with Adam, in both precisions
    assert totals["data"] >= totals["zero1"] >= totals["zero2"] >= totals["zero3"] == totals["model"]
    if n_devices == 1:
        assert len(set(totals.values())) == 1
    shard_size = -(-n_parameters // n_devices)
    assert totals["zero3"] == 16 * shard_size


def test_memory_rejects_unknown_settings():
    with pytest.raises(ValueError):
        memory_per_device(10, 2, "zero4")
    with pytest.raises(ValueError):
        memory_per_device(10, 2, "data", "float16")


@pytest.mark.parametrize("world_size", [1, 2, 4, 8])
def test_shards_cover_the_batch_once_in_rank_order(world_size):
    x = np.arange(64 * 3).reshape(64, 3)
    y = np.arange(64)
    parts = [shard(x, y, rank, world_size) for rank in range(world_size)]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y)
    with pytest.raises(ValueError):
        shard(x[:63], y[:63], 0, 2)


def test_combined_gradient_is_the_gradient_of_the_whole_batch():
    """For a mean-squared loss the per-example gradients are known: combining per-shard means weighted
    by the shard sizes gives the mean over all the examples, for any split."""
    rng = np.random.default_rng(0)
    per_example = rng.normal(size=(50, 4, 3)).astype(np.float32)
    for cuts in ([25], [10, 30], [1, 2, 3], [49]):
        pieces = np.split(per_example, cuts)
        grads = [{"w": p.mean(axis=0)} for p in pieces]
        combined = combine_gradients(grads, [len(p) for p in pieces])
        assert combined["w"].dtype == np.float32
        np.testing.assert_allclose(combined["w"], per_example.mean(axis=0), rtol=1e-5, atol=1e-6)
