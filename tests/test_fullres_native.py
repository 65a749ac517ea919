"""The native slab loop of the full-resolution step (ctreg.fullres_native) against the loop of
NumPy-level kernel calls it replaces: bit-identical outputs, on 1, 2 and 4 threads."""

import numpy as np
import pytest

from ctreg import ops
from ctreg.fullres import full_resolution
from ctreg.transforms import AffineTransform, ReferenceFrame
from ctreg.volume import Volume


def _case(seed=0, with_valid=True):
    rng = np.random.default_rng(seed)
    ref_aff = np.array(
        [[0.0, 0.0, 0.8, -40.0], [0.0, 0.7, 0.0, -30.0], [1.5, 0.0, 0.0, 10.0], [0, 0, 0, 1.0]]
    )
    ref = Volume(np.zeros((37, 29, 31), np.float32), ref_aff, None, {})
    flt_arr = (rng.standard_normal((33, 27, 30)) * 400).astype(np.float32)
    flt_aff = ref_aff.copy()
    flt_aff[:3, 3] += (1.0, -2.0, 1.5)
    valid = rng.random(flt_arr.shape) > 0.05 if with_valid else None
    flt = Volume(flt_arr, flt_aff, valid, {})
    box = (slice(3, 33), slice(2, 27), slice(1, 30))
    u = (rng.standard_normal((9, 8, 10, 3)) * 3).astype(np.float32)
    u_spacing = (4.5, 2.8, 3.2)
    params = np.zeros(12)
    params[:3] = (1.0, 0.5, -0.7)
    params[3:6] = (0.02, -0.01, 0.03)
    transform = AffineTransform.from_params(params, np.array([0.0, -10.0, 20.0]))
    return ref, flt, ReferenceFrame(ref), transform, u, u_spacing, box


@pytest.mark.parametrize("with_valid", [True, False])
@pytest.mark.parametrize("slab", [4, 16, 64])
def test_native_slabs_equal_numpy_loop(with_valid, slab):
    ref, flt, frame, transform, u, u_sp, box = _case(with_valid=with_valid)
    kw = dict(sentinel=-4096.0, invalid_below=-2000.0, fill_hu=-1024.0, slab=slab)
    kw.update(keep_jacobian=True)
    w0, d0, j0 = full_resolution(ref, flt, frame, transform, u, u_sp, box, native=False, **kw)
    for threads in (1, 2, 4):
        with ops.thread_limit(threads):
            w1, d1, j1 = full_resolution(ref, flt, frame, transform, u, u_sp, box, **kw)
        assert np.array_equal(w0.array, w1.array)
        assert np.array_equal(w0.valid, w1.valid)
        assert not w1.valid.all() and w1.valid.any()
        assert np.array_equal(d0, d1)
        assert np.array_equal(j0.map, j1.map)


def test_smooth_subsample_equals_smooth_then_slice():
    rng = np.random.default_rng(3)
    for _ in range(20):
        shape = tuple(int(x) for x in rng.integers(1, 30, 3))
        a = (rng.standard_normal(shape) * 300).astype(np.float32)
        sp = tuple(float(x) for x in rng.uniform(0.5, 3, 3))
        f = tuple(int(x) for x in rng.integers(1, 7, 3))
        sig = tuple(0.4 * s * q if q > 1 else 0.0 for s, q in zip(sp, f))
        want = ops.smooth(a, sig, sp)[:: f[0], :: f[1], :: f[2]]
        for threads in (1, 2, 4):
            with ops.thread_limit(threads):
                assert np.array_equal(ops.smooth_subsample(a, sig, sp, f), want)


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.float64])
def test_preprocess_fast_path_equals_numpy(dtype):
    from ctreg.level import preprocess
    from ctreg.pyramid import crop

    rng = np.random.default_rng(1)
    a = (rng.standard_normal((20, 24, 26)) * 800).astype(dtype)
    if dtype != np.int16:
        a.flat[::97] = np.nan
    for valid in (None, rng.random(a.shape) > 0.2):
        vol = Volume(a, np.eye(4), valid, {})
        for v in (vol, crop(vol, (slice(3, 17), slice(5, 20), slice(2, 25)))):
            for inv in (None, -1000.0, -4096.0):
                got = preprocess(v, (-1000.0, 400.0), invalid_value=inv).array
                want = np.clip(v.array, -1000.0, 400.0).astype(np.float32, copy=False)
                if v.valid is not None and inv is not None:
                    want = np.where(v.valid, want, np.float32(inv)).astype(np.float32)
                assert got.dtype == np.float32 and got.flags.c_contiguous
                assert np.array_equal(got, want, equal_nan=True)


def test_no_huge_pages_toggles_the_process_setting():
    import subprocess
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("prctl(PR_SET_THP_DISABLE) is Linux only")
    code = (
        "from ctreg import ops\n"
        "def thp():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('THP_enabled'):\n"
        "            return line.split()[1]\n"
        "print(ops.no_huge_pages(), thp(), ops.no_huge_pages(False), thp())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**__import__("os").environ, "CTREG_HUGE_PAGES": ""},
    ).stdout.split()
    if out[1] == "None":
        pytest.skip("this kernel does not report THP_enabled")
    assert out == ["True", "0", "True", "1"]
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**__import__("os").environ, "CTREG_HUGE_PAGES": "1"},
    ).stdout.split()
    assert out[0] == "False" and out[2] == "False"
