"""save -> load_result -> warp round trips, damaged result folders, and transform.h5 (read with
h5py alone, and with SimpleITK when installed)."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest

import ctreg
from ctreg import ResultFolderError, Volume, load_result
from test_apply import FLT_SHAPE, REF_SHAPE, _world, make_result


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    res = make_result()
    res.warped = res.warp(res.floating, default=-1024.0)
    out = tmp_path_factory.mktemp("saved") / "result"
    paths = res.save(out)
    return res, out, paths


def _copy(saved, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(saved[1], dst)
    return dst


def test_save_writes_the_reusable_files(saved):
    _, out, paths = saved
    assert {"displacement", "report", "nifti", "dicom", "itk_transform", "index"} <= set(paths)
    assert sorted(p.name for p in out.iterdir()) == [
        "displacement.nii.gz",
        "registered.nii.gz",
        "registered.tar.gz",
        "report.json",
        "result.json",
        "transform.h5",
    ]
    index = json.loads((out / "result.json").read_text())
    assert index["format"] == "ctreg.result" and index["format_version"] == 1
    assert index["reference_grid"]["shape"] == list(REF_SHAPE)
    assert index["floating_grid"]["shape"] == list(FLT_SHAPE)


def test_round_trip_gives_identical_arrays(saved):
    res, out, _ = saved
    back = load_result(out)
    assert back.reference is None and back.floating is None
    np.testing.assert_array_equal(back.displacement, res.displacement)
    np.testing.assert_array_equal(back.grid_affine, res.grid_affine)
    np.testing.assert_array_equal(back.affine.homogeneous(), res.affine.homogeneous())
    for interp in ("linear", "nearest", "bspline"):
        a = res.warp(res.floating, interpolation=interp, default=-1024.0)
        b = back.warp(res.floating, interpolation=interp, default=-1024.0)
        np.testing.assert_array_equal(a.array, b.array)
        np.testing.assert_array_equal(a.valid, b.valid)
    labels = np.random.default_rng(0).integers(0, 2**20, size=FLT_SHAPE).astype(np.int32)
    np.testing.assert_array_equal(
        back.warp(labels, interpolation="nearest"), res.warp(labels, interpolation="nearest")
    )  # floating grid known
    pts = _world(res.grid_affine, REF_SHAPE)[2:6, 3, 4:9].reshape(-1, 3)
    np.testing.assert_array_equal(back.transform_points(pts), res.transform_points(pts))
    np.testing.assert_array_equal(back.warped.array, np.rint(res.warped.array))
    assert back.report == json.loads((out / "report.json").read_text())
    assert np.isfinite(back.jacobian_determinant()).all()


def test_loaded_result_saves_again_and_reloads(saved, tmp_path):
    back = load_result(saved[1], warped=False)
    assert back.warped is None
    paths = back.save(tmp_path / "again")
    assert "nifti" not in paths
    again = load_result(tmp_path / "again")
    np.testing.assert_array_equal(again.displacement, back.displacement)
    np.testing.assert_array_equal(again.grid_affine, back.grid_affine)


def test_legacy_folder_without_index_loads_from_the_nifti_header(saved, tmp_path):
    res, _, _ = saved
    folder = _copy(saved, tmp_path)
    (folder / "result.json").unlink()
    # the report of a real run holds the affine; this synthetic one gets it here
    (folder / "report.json").write_text(json.dumps({"affine": res.affine.to_dict()}))
    back = load_result(folder)
    np.testing.assert_allclose(back.grid_affine, res.grid_affine, atol=1e-4)
    a = res.warp(res.floating).array
    b = back.warp(res.floating).array
    np.testing.assert_allclose(a, b, atol=0.05)
    with pytest.raises(ValueError, match="affine="):  # the floating grid is unknown there
        back.warp(res.floating.array)


def _code(folder):
    with pytest.raises(ResultFolderError) as info:
        load_result(folder)
    assert isinstance(info.value, ctreg.CTRegError)
    return info.value.code


def test_damaged_or_incomplete_folders_name_what_is_wrong(saved, tmp_path):
    assert _code(tmp_path / "nowhere") == "InvalidResult.NotFound"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _code(empty) == "InvalidResult.MissingFile"

    f = _copy(saved, tmp_path / "a")
    (f / "displacement.nii.gz").unlink()
    assert _code(f) == "InvalidResult.MissingFile"

    f = _copy(saved, tmp_path / "b")
    data = (f / "displacement.nii.gz").read_bytes()
    (f / "displacement.nii.gz").write_bytes(data[: len(data) // 2])  # truncated download
    assert _code(f) == "InvalidResult.Damaged"

    f = _copy(saved, tmp_path / "c")
    (f / "report.json").write_text('{"levels": [')
    assert _code(f) == "InvalidResult.Damaged"

    f = _copy(saved, tmp_path / "d")
    (f / "report.json").unlink()
    assert _code(f) == "InvalidResult.MissingFile"

    f = _copy(saved, tmp_path / "e")
    index = json.loads((f / "result.json").read_text())
    index["reference_grid"]["shape"] = [1, 2, 3]
    (f / "result.json").write_text(json.dumps(index))
    assert _code(f) == "InvalidResult.Mismatch"

    f = _copy(saved, tmp_path / "f")
    index = json.loads((f / "result.json").read_text())
    index["reference_grid"]["affine"][0][3] += 25.0  # the field of another result
    (f / "result.json").write_text(json.dumps(index))
    assert _code(f) == "InvalidResult.Mismatch"

    f = _copy(saved, tmp_path / "g")
    index = json.loads((f / "result.json").read_text())
    index["format_version"] = 99
    (f / "result.json").write_text(json.dumps(index))
    assert _code(f) == "InvalidResult.Version"

    f = _copy(saved, tmp_path / "h")
    index = json.loads((f / "result.json").read_text())
    del index["affine"]["matrix"]
    (f / "result.json").write_text(json.dumps(index))
    assert _code(f) == "InvalidResult.Damaged"

    f = _copy(saved, tmp_path / "i")  # a scalar image where the field should be
    shutil.copy(f / "registered.nii.gz", f / "displacement.nii.gz")
    assert _code(f) == "InvalidResult.Damaged"

    f = _copy(saved, tmp_path / "j")
    (f / "registered.nii.gz").write_bytes(gzip.compress(b"not nifti"))
    assert _code(f) == "InvalidResult.Damaged"
    assert load_result(f, warped=False).warped is None  # the image is optional


# -- transform.h5 ------------------------------------------------------------------------------


def test_transform_h5_holds_the_map_without_itk(saved):
    from ctreg.io.itk_transform import read_itk_transform

    res, out, _ = saved
    got = read_itk_transform(out / "transform.h5")
    np.testing.assert_allclose(got["grid_affine"], res.grid_affine, atol=1e-12)
    np.testing.assert_allclose(got["matrix"], res.affine.matrix, atol=1e-15)
    np.testing.assert_allclose(got["displacement"], res.displacement, atol=1e-4)


def test_simpleitk_reads_transform_h5_and_maps_points_like_transform_points(saved):
    sitk = pytest.importorskip("SimpleITK")
    res, out, _ = saved
    tx = sitk.ReadTransform(str(out / "transform.h5"))
    assert tx.GetName() == "CompositeTransform"
    rng = np.random.default_rng(5)
    idx = rng.uniform(0, np.array(REF_SHAPE) - 1, size=(200, 3))  # anywhere inside the grid
    pts = idx @ res.grid_affine[:3, :3].T + res.grid_affine[:3, 3]
    ours = res.transform_points(pts)
    itk = np.array([tx.TransformPoint(tuple(map(float, p))) for p in pts])
    assert np.abs(itk - ours).max() < 1e-3  # the requirement is 0.05 mm
    # far outside the grid ITK's field is zero: the affine alone
    far = res.grid_affine[:3, 3] - 200.0
    np.testing.assert_allclose(
        tx.TransformPoint(tuple(far)), res.affine.apply(far[None])[0], atol=1e-6
    )


@pytest.mark.parametrize("compress", [True, False])
def test_transform_h5_large_field_in_chunks(tmp_path, monkeypatch, compress):
    """A field of many HDF5 chunks (the last one partial) goes through the parallel chunk
    compressor; h5py and SimpleITK read it back bit for bit."""
    import scipy.ndimage as ndi

    from ctreg.io import itk_transform
    from ctreg.io.itk_transform import read_itk_transform, write_itk_transform
    from ctreg.transforms import AffineTransform

    monkeypatch.setattr(itk_transform, "_CHUNK", 1 << 12)
    shape = (20, 30, 41)
    rng = np.random.default_rng(0)
    u = ndi.gaussian_filter(rng.normal(size=shape + (3,)), (2, 2, 2, 0)).astype(np.float32)
    aff = np.diag([2.0, 0.8, 0.7, 1.0])[[2, 1, 0, 3]]  # z, y, x columns -> world z, y, x
    vol = Volume(np.zeros(shape, np.float32), aff)
    write_itk_transform(
        tmp_path / "t.h5", u, vol.affine, AffineTransform.identity(), compress=compress
    )
    got = read_itk_transform(tmp_path / "t.h5")
    np.testing.assert_array_equal(got["field"], u)
    import h5py

    with h5py.File(tmp_path / "t.h5") as f:
        dset = f["TransformGroup/2/TransformParameters"]
        assert dset.chunks[0] <= 1 << 12 and dset.chunks[0] % 3 == 0  # whole voxels per chunk
        assert (dset.compression == "gzip" and dset.shuffle) == compress
    try:
        import SimpleITK as sitk
    except ImportError:
        return
    tx = sitk.CompositeTransform(sitk.ReadTransform(str(tmp_path / "t.h5")))
    field = sitk.DisplacementFieldTransform(tx.GetNthTransform(1)).GetDisplacementField()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(field), u)


@pytest.mark.parametrize("simd", [True, False])
def test_transform_h5_native_chunks_equal_the_numpy_path(tmp_path, monkeypatch, simd):
    """The native chunk kernel (w = A^-1 U + offsets, byte-shuffled) writes the same compressed
    chunks as the NumPy path, with and without the AVX2+FMA dispatch, partial last chunk
    included, under a general affine."""
    import h5py

    from ctreg import _native, ops
    from ctreg.io import itk_transform
    from ctreg.transforms import AffineTransform

    monkeypatch.setattr(itk_transform, "_CHUNK", 1 << 12)
    rng = np.random.default_rng(1)
    u = rng.normal(0.0, 7.0, (9, 13, 37, 3)).astype(np.float32)
    grid = np.array(
        [[0.0, 0.1, 0.9, -20.0], [0.05, 0.8, 0.0, 11.0], [2.5, 0.0, 0.02, 3.5], [0, 0, 0, 1]]
    )
    affine = AffineTransform.from_params(
        np.array([4.0, -3.0, 2.0, 0.05, -0.08, 0.1, 0.03, -0.02, 0.04, 0.01, 0.02, -0.015]),
        np.array([5.0, -2.0, 1.0]),
    )
    chunks = []
    _native._set_simd_dispatch(simd)
    try:
        for native in (True, False):
            with h5py.File(tmp_path / f"{native}.h5", "w") as f:
                itk_transform._write_field(
                    f.create_group("g"),
                    "w",
                    u,
                    grid,
                    affine.homogeneous(),
                    compress=True,
                    threads=2,
                    chunk_kernel=ops.itk_field_chunk if native else None,
                )
            with h5py.File(tmp_path / f"{native}.h5") as f:
                d = f["g/w"]
                chunks.append(
                    [
                        d.id.read_direct_chunk(d.id.get_chunk_info(i).chunk_offset)[1]
                        for i in range(d.id.get_num_chunks())
                    ]
                )
    finally:
        _native._set_simd_dispatch(True)
    assert len(chunks[0]) > 3 and chunks[0] == chunks[1]
