"""ops.reuse_freed_arrays: the NumPy memory handler that reuses freed large buffers
(cpp/bindings/bind_memory.cpp) - contents, bounds, scope, and unchanged registration results."""

import threading

import numpy as np

from ctreg import ops
from ctreg import samples
from ctreg.synthetic import BreathingMotion, make_breathing_pair

MIB = 1024 * 1024


def handler_name(a=None) -> str:
    from numpy._core.multiarray import get_handler_name

    return get_handler_name() if a is None else get_handler_name(a)


def test_handler_is_scoped_to_the_block_and_the_thread():
    before = handler_name()
    seen = {}
    with ops.reuse_freed_arrays() as stats:
        assert handler_name() == "ctreg_array_cache"
        worker = threading.Thread(target=lambda: seen.setdefault("other", handler_name()))
        worker.start()
        worker.join()
        kept = np.arange(MIB, dtype=np.float64)  # outlives the block
        small = np.arange(10)
    assert handler_name() == before
    assert seen["other"] == before
    assert handler_name(kept) == "ctreg_array_cache"
    assert kept.sum() == MIB * (MIB - 1) / 2  # still valid after the cache closed
    assert small.tolist() == list(range(10))
    assert stats is not None and stats["open"] is True
    del kept, small  # freed through the closed cache: straight back to the system


def test_freed_block_is_reused_and_zeroed_for_zeros():
    with ops.reuse_freed_arrays() as stats:
        a = np.full(4 * MIB, 7, np.uint8)
        address = a.ctypes.data
        del a
        b = np.zeros(4 * MIB, np.uint8)  # same size: the freed block, zeroed again
        assert b.ctypes.data == address
        assert not b.any()
        c = np.empty(4 * MIB, np.uint8)  # a second live block: a miss
        assert c.ctypes.data != address
    assert stats["hits"] == 1
    assert stats["misses"] == 2
    assert stats["reused_bytes"] == 4 * MIB


def test_a_block_is_reused_only_for_a_close_size():
    with ops.reuse_freed_arrays() as stats:
        a = np.ones(8 * MIB, np.uint8)
        del a
        c = np.ones(7 * MIB, np.uint8)  # within 25 %: the 8 MiB block
        assert c.sum() == 7 * MIB
        del c
        d = np.ones(4 * MIB, np.uint8)  # half the size: a miss (at most 25 % slack)
        assert d.sum() == 4 * MIB
    assert (stats["hits"], stats["misses"]) == (1, 2)
    assert stats["spare_bytes"] == 0  # the miss released the 8 MiB block


def test_a_miss_releases_spare_blocks_first():
    """What the cache keeps never adds to the memory the process would hold without it."""
    with ops.reuse_freed_arrays() as stats:
        blocks = [np.ones(2 * MIB, np.uint8) for _ in range(3)]
        del blocks
        big = np.ones(5 * MIB, np.uint8)  # no spare fits: at least 5 MiB of spares released
    assert stats["spare_bytes"] <= 6 * MIB - 5 * MIB
    assert big.sum() == 5 * MIB


def test_small_arrays_and_realloc_keep_their_contents():
    with ops.reuse_freed_arrays():
        a = np.arange(2 * MIB, dtype=np.int32)
        a.resize(3 * MIB, refcheck=False)  # grows: a new block, the old contents copied
        assert np.array_equal(a[: 2 * MIB], np.arange(2 * MIB, dtype=np.int32))
        assert not a[2 * MIB :].any()
        a.resize(10, refcheck=False)  # shrinks below the cached size: becomes a plain block
        assert a.tolist() == list(range(10))
        words = [np.arange(i) for i in range(1, 200)]
        assert sum(int(w.sum()) for w in words) == sum(i * (i - 1) // 2 for i in range(1, 200))


def test_off_by_environment(monkeypatch):
    monkeypatch.setenv("CTREG_REUSE_ARRAYS", "0")
    with ops.reuse_freed_arrays() as stats:
        assert stats is None
        assert handler_name() != "ctreg_array_cache"


def test_registration_results_identical_with_and_without_the_cache(monkeypatch):
    import ctreg

    pair = make_breathing_pair(samples.ct64_volume(), BreathingMotion(seed=3), n_landmarks=10)
    with_cache = ctreg.register(pair.reference, pair.floating)
    monkeypatch.setenv("CTREG_REUSE_ARRAYS", "0")
    without = ctreg.register(pair.reference, pair.floating)
    assert np.array_equal(with_cache.displacement, without.displacement)
    assert np.array_equal(with_cache.warped.array, without.warped.array)


def test_release_spare_arrays_empties_the_cache_of_this_block_only():
    assert ops.release_spare_arrays() == 0  # outside a block: nothing to release
    with ops.reuse_freed_arrays() as stats:
        a = np.ones(6 * MIB, np.uint8)
        b = np.ones(3 * MIB, np.uint8)
        del a, b  # two spare blocks
        assert ops.release_spare_arrays() == 9 * MIB
        assert ops.release_spare_arrays() == 0
        c = np.ones(6 * MIB, np.uint8)  # a miss: nothing is spare
        assert c.sum() == 6 * MIB
        del c
        assert ops.release_spare_arrays() == 6 * MIB  # the cache stays open after a release
    assert stats["hits"] == 0 and stats["spare_bytes"] == 0
