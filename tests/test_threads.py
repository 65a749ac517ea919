"""Every native kernel gives bit-identical results on 1, 2 and 4 threads, and so does register().

Add a kernel by appending ``(name, fn)`` to KERNELS, where ``fn(rng)`` returns an array (or a
tuple of arrays) computed with the current thread setting from inputs drawn from ``rng``.
"""

from __future__ import annotations

import numpy as np
import pytest

import ctreg
from ctreg import ops

_SHAPE = (13, 17, 19)


def _img(rng, shape=_SHAPE):
    return rng.standard_normal(shape).astype(np.float32)


def _field(rng, shape=_SHAPE, amp=2.0):
    return (rng.standard_normal(tuple(shape) + (3,)) * amp).astype(np.float32)


def _aff(rng):
    m = np.eye(4)
    m[:3, :3] = np.diag([2.0, 0.8, 0.9]) + rng.normal(0, 0.05, (3, 3))
    m[:3, 3] = rng.normal(0, 3, 3)
    return m


def _resample_affine(rng):
    m = np.eye(4)
    m[:3, :3] += rng.normal(0, 0.1, (3, 3))
    m[:3, 3] = rng.normal(0, 1, 3)
    img = _img(rng)
    return ops.resample_affine(img, m, (11, 19, 21)), ops.resample_affine(
        img, m, (11, 19, 21), order=0
    )


def _resample_displacement(rng):
    img, aff = _img(rng), _aff(rng)
    w2i = np.linalg.inv(aff)
    a = ops.resample_displacement(img, _field(rng), out_to_world=aff, world_to_image=w2i)
    f2o = np.diag([0.4, 0.3, 0.35, 1.0])
    b = ops.resample_displacement(
        img,
        _field(rng, (6, 5, 7)),
        out_to_world=aff,
        world_to_image=w2i,
        field_from_out=f2o,
        out_shape=(12, 14, 16),
        order=0,
        fill=-1.0,
    )
    return a, b


KERNELS = [
    ("resample_affine", _resample_affine),
    ("resample_displacement", _resample_displacement),
    ("gradient", lambda rng: ops.gradient(_img(rng), (2.0, 0.7, 0.8))),
    ("smooth", lambda rng: ops.smooth(_img(rng), (3.0, 1.0, 1.5), (2.0, 0.7, 0.8))),
    ("smooth_vector", lambda rng: ops.smooth(_field(rng), 1.2, (2.0, 0.7, 0.8))),
    (
        "demons_forces_inline_gradient",
        lambda rng: ops.demons_forces(
            _img(rng) * 100,
            _img(rng) * 100,
            _field(rng),
            None,
            spacing=(2.0, 0.7, 0.8),
            mask=_img(rng) > -0.5,
        )[0],
    ),
    ("jacobian_determinant", lambda rng: ops.jacobian_determinant(_field(rng), (2.0, 0.7, 0.8))),
    (
        "resample_field",
        lambda rng: ops.resample_field(
            _field(rng), (2.0, 0.7, 0.8), (17, 21, 15), (1.3, 0.5, 0.9), origin_mm=(-1.0, 0.5, 2.0)
        ),
    ),
    (
        "resample_composed",
        lambda rng: ops.resample_composed(
            _img(rng),
            _field(rng),
            _field(rng),
            (2.0, 0.7, 0.8),
            out_to_world=np.diag([2.0, 0.7, 0.8, 1.0]),
            world_to_image=np.linalg.inv(_aff(rng)),
            fill=-1.0,
        ),
    ),
]

# Numba field kernels (ctreg/_kernels.py)
_SP = (2.0, 0.7, 0.8)


def _warp_with_gradient(rng):
    img, aff = _img(rng), _aff(rng)
    grads = [_img(rng) for _ in range(3)]
    w2i = np.linalg.inv(aff)
    a = ops.warp_with_gradient(
        img,
        grads,
        _field(rng),
        out_to_world=aff,
        world_to_image=w2i,
        out_shape=_SHAPE,
        fill=-9.0,
        valid_min=-1.0,
        invalid_value=-1.0,
    )
    b = ops.warp_with_gradient(
        img,
        grads,
        None,
        out_to_world=aff,
        world_to_image=w2i,
        out_shape=(11, 19, 21),
        fill=-9.0,
        valid_min=-1.0,
        invalid_value=-1.0,
    )
    return a + b


KERNELS += [("warp_with_gradient", _warp_with_gradient)]

KERNELS += [
    ("compose_fields", lambda rng: ops.compose_fields(_field(rng), _field(rng), _SP)),
    ("exp_field", lambda rng: ops.exp_field(_field(rng), _SP)),
    ("jacobian_determinant", lambda rng: ops.jacobian_determinant(_field(rng), _SP)),
    (
        "jacobian_statistics",
        lambda rng: np.array(
            [
                v
                for v in ops.jacobian_statistics(_img(rng) + 1.0, rng.random(_SHAPE) > 0.3).values()
            ],
            dtype=np.float64,
        ),
    ),
    (
        "affine_field",
        lambda rng: ops.affine_field(
            _field(rng), rng.normal(0, 1, (3, 3)), rng.normal(0, 1, (3, 4))
        ),
    ),
    ("invert_field", lambda rng: ops.invert_field(_field(rng, amp=0.3), _SP)),
    ("jacobian_determinant", lambda rng: ops.jacobian_determinant(_field(rng), (2.0, 0.7, 0.8))),
    (
        "resample_field",
        lambda rng: ops.resample_field(_field(rng), _SP, (7, 9, 11), (3.9, 1.3, 1.4)),
    ),
    (
        "demons_forces",
        lambda rng: tuple(
            np.asarray(a)
            for a in ops.demons_forces(
                _img(rng),
                _img(rng),
                _field(rng),
                _field(rng),
                mask=rng.random(_SHAPE) > 0.4,
                spacing=_SP,
            )
        ),
    ),
]


# B-spline FFD and metric kernels (cpp/include/ctreg/{bspline,metrics}.hpp); metric values as
# 0-d arrays
_T = (3, 4, 5)
_GRID = ops.bspline_grid_shape(_SHAPE, _T)


def _metric(fn, **kw):
    def run(rng):
        r, w, wg = _img(rng), _img(rng), _field(rng)
        m = (rng.random(_SHAPE) > 0.3).astype(np.uint8)
        (v0, g0), (v1, g1) = fn(r, w, mask=m, **kw), fn(r, w, warped_gradient=wg, **kw)
        return np.asarray(v0), g0, np.asarray(v1), g1

    return run


KERNELS += [
    ("bspline_to_dense", lambda rng: ops.bspline_to_dense(_field(rng, _GRID), _T, _SHAPE)),
    ("bspline_adjoint", lambda rng: ops.bspline_adjoint(_field(rng), _T, _GRID)),
    (
        "bending_energy",
        lambda rng: tuple(np.asarray(a) for a in ops.bending_energy(_field(rng, _GRID), _T, _SP)),
    ),
    ("ssd", _metric(ops.ssd)),
    ("ncc", _metric(ops.ncc)),
    ("lncc", _metric(ops.lncc, radius_vox=(2, 1, 2))),
    ("mattes_mi", _metric(ops.mattes_mi, bins=16, ref_range=(-3.0, 3.0), warped_range=(-3.0, 3.0))),
]


@pytest.fixture
def restore_threads():
    n = ctreg.get_num_threads()
    yield
    ctreg.set_num_threads(n)


@pytest.mark.parametrize("name,fn", KERNELS, ids=[k[0] for k in KERNELS])
def test_same_result_on_1_2_and_4_threads(name, fn, restore_threads):
    results = []
    for n in (1, 2, 4):
        ctreg.set_num_threads(n)
        assert ctreg.get_num_threads() == n
        out = fn(np.random.default_rng(123))
        results.append(out if isinstance(out, tuple) else (out,))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert a.shape == b.shape and a.size > 0
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_register_is_bit_identical_on_1_2_and_4_threads(restore_threads):
    """The whole registration, every stage and the full-resolution slabs: the same warped scan,
    displacement, Jacobian and report numbers on any thread count."""
    from ctreg.samples import sample_pair

    pair = sample_pair()
    runs = []
    for n in (1, 2, 4):
        ctreg.set_num_threads(n)
        r = ctreg.register(pair.reference, pair.floating, preset="fast")
        runs.append(
            (
                r.warped.array,
                r.warped.valid,
                r.displacement,
                r.jacobian_determinant(),
                np.array([lv["metric_after"] for lv in r.report["levels"]]),
            )
        )
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


# -- BLAS threads while register() runs ------------------------------------------------------


def _blas_threads():
    from threadpoolctl import threadpool_info

    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


def test_register_runs_blas_on_one_thread_and_restores_it(monkeypatch):
    """L-BFGS-B calls BLAS each iteration; threaded BLAS workers would then spin against the
    native kernels' OpenMP threads (ops.serial_blas).  Inside register() every BLAS library
    must run one thread; afterwards, and after a failure, the caller's setting is back."""
    from threadpoolctl import threadpool_limits

    import scipy.optimize  # noqa: F401  (loads scipy's BLAS, which L-BFGS-B uses)
    from ctreg import pipeline, samples
    from ctreg.errors import GeometryError

    if not _blas_threads():
        pytest.skip("no BLAS library that threadpoolctl can see")
    ct64 = samples.ct64_volume()
    seen = []
    real = pipeline.run_ffd_level

    def spy(*args, **kw):
        seen.append(_blas_threads())
        return real(*args, **kw)

    monkeypatch.setattr(pipeline, "run_ffd_level", spy)
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        assert set(before.values()) == {2}
        ctreg.register(
            ct64,
            ct64,
            preset="fast",
            demons={"enabled": False},
            ffd={"iterations": (2,)},
            affine={"iterations": (2,)},
        )
        assert seen and all(set(s.values()) == {1} for s in seen), seen
        assert _blas_threads() == before
        with pytest.raises(GeometryError):  # an empty floating scan fails inside register()
            empty = ct64.with_array(np.full(ct64.shape, -1000, np.float32))
            ctreg.register(ct64, empty, preset="fast")
        assert _blas_threads() == before


def test_register_and_preload_import_no_numba():
    """Every kernel is C++: neither preload_kernels() nor a registration loads Numba."""
    import subprocess
    import sys

    code = (
        "import sys, ctreg\nfrom ctreg import ops, samples\n"
        "from ctreg.synthetic import BreathingMotion, make_breathing_pair\n"
        "ops.preload_kernels()\n"
        "pair = make_breathing_pair(samples.ct64_volume(), BreathingMotion(seed=2), "
        "n_landmarks=10)\n"
        "ctreg.set_num_threads(2)\n"
        "r = ctreg.register(pair.reference, pair.floating, preset='fast', ffd={'iterations': (2,)},"
        " demons={'iterations': (2,)}, affine={'iterations': (2,)})\n"
        "ops.invert_field(r.displacement[:4, :4, :4].copy(), (1.0, 1.0, 1.0))\n"
        "assert 'numba' not in sys.modules, 'numba was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_register_pauses_the_garbage_collector_and_restores_it(monkeypatch):
    """A full cyclic collection of the caller's objects in the middle of a registration cost
    ~50 ms (ops.gc_paused): register() pauses the collector and gives back the caller's state,
    enabled or not, also after a failure."""
    import gc

    from ctreg import pipeline, samples
    from ctreg.errors import GeometryError

    ct64 = samples.ct64_volume()
    seen = []
    real = pipeline.run_ffd_level

    def spy(*args, **kw):
        seen.append(gc.isenabled())
        return real(*args, **kw)

    monkeypatch.setattr(pipeline, "run_ffd_level", spy)
    kw = dict(
        preset="fast",
        demons={"enabled": False},
        ffd={"iterations": (2,)},
        affine={"iterations": (2,)},
    )
    was = gc.isenabled()
    try:
        for state in (True, False):
            (gc.enable if state else gc.disable)()
            seen.clear()
            ctreg.register(ct64, ct64, **kw)
            assert seen and not any(seen)  # every B-spline level (lung shape, then ffd)
            assert gc.isenabled() is state
            with pytest.raises(GeometryError):
                ctreg.register(ct64, ct64.with_array(np.full(ct64.shape, -1000, np.float32)), **kw)
            assert gc.isenabled() is state
    finally:
        (gc.enable if was else gc.disable)()


_MALLINFO_SCRIPT = """
import ctypes, sys
import numpy as np
from ctreg import ops

_MALLINFO2_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")


class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in _MALLINFO2_FIELDS]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2

def mmapped_while_held(n_bytes):
    before = libc.mallinfo2().hblks
    a = np.ones(n_bytes // 4, np.float32)
    held = libc.mallinfo2().hblks - before
    del a
    return held

out = [mmapped_while_held(8 << 20)]  # glibc's default: a fresh mmap
if sys.argv[1] == "tuned":
    out.append(int(ops.keep_freed_memory()))
    out.append(int(ops.keep_freed_memory()))
# a different size, so that glibc's own raise after the first free does not apply
out.append(mmapped_while_held(16 << 20))
out.append(mmapped_while_held((ops.MMAP_THRESHOLD_BYTES) + (4 << 20)))
print(*out)
"""


def test_keep_freed_memory_serves_large_arrays_without_mmap():
    """After ops.keep_freed_memory() (which ``ctreg register`` calls) glibc serves 8-16 MB arrays
    from its heap, without a fresh mmap each time (and so without page-faulting them in again);
    arrays above 32 MiB are still mmap'ed.  Checked in fresh interpreters, with and without."""
    import ctypes
    import os
    import subprocess
    import sys

    if any(
        k in os.environ
        for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
    ):
        pytest.skip("malloc thresholds set by the environment")
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallinfo2"):
        pytest.skip("not glibc >= 2.33")

    def run(mode):
        out = subprocess.run(
            [sys.executable, "-c", _MALLINFO_SCRIPT, mode],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        return [int(x) for x in out]

    assert run("default") == [1, 1, 1]  # every large array is a fresh mapping
    assert run("tuned") == [1, 1, 1, 0, 1]  # after it, only the one above 32 MiB


def test_cli_keeps_freed_memory_only_for_small_scans(monkeypatch, tmp_path):
    """ops.keep_freed_memory pays on small scans (page faults are a large share of a 0.1 s run)
    but keeps heap holes on large ones.  It is a process-wide setting that cannot be undone, so
    register() never makes it; ``ctreg register``, which owns its process, does below a voxel
    count."""
    from ctreg import pipeline, samples
    from ctreg.cli import main

    ct64 = samples.ct64_volume()
    ctreg.write_nifti(ct64, tmp_path / "ct64.nii.gz")
    calls = []
    monkeypatch.setattr(ops, "keep_freed_memory", lambda: calls.append(1) or True)
    kw = dict(
        preset="fast",
        demons={"enabled": False},
        ffd={"iterations": (2,)},
        affine={"iterations": (2,)},
    )
    ctreg.register(ct64, ct64, **kw)
    assert calls == []
    args = [str(tmp_path / "ct64.nii.gz")] * 2 + ["--preset", "fast", "--no-dicom"]
    assert main(["register", *args, "-o", str(tmp_path / "a")]) == 0
    assert calls == [1]
    monkeypatch.setattr(pipeline, "KEEP_FREED_MEMORY_MAX_VOXELS", 2 * ct64.array.size - 1)
    assert main(["register", *args, "-o", str(tmp_path / "b")]) == 0
    assert calls == [1]


def test_run_concurrently_keeps_order_context_and_thread_count():
    import contextvars
    import threading

    var = contextvars.ContextVar("probe", default="unset")
    var.set("caller")
    seen = []

    def probe(tag):
        def call():
            seen.append(tag)
            return (tag, var.get(), ops.get_num_threads(), threading.get_ident())

        return call

    with ops.thread_limit(1):
        out = ops.run_concurrently(probe("a"), probe("b"), probe("c"))
    assert [o[0] for o in out] == ["a", "b", "c"] and sorted(seen) == ["a", "b", "c"]
    assert all(o[1] == "caller" and o[2] == 1 for o in out)  # the caller's context and limit
    assert out[0][3] == threading.get_ident() and out[1][3] != out[0][3]

    def fails(msg):
        def call():
            raise ValueError(msg)

        return call

    with pytest.raises(ValueError, match="first"):  # the first failure in order, after all end
        ops.run_concurrently(probe("d"), fails("first"), fails("second"))
    assert "d" in seen
