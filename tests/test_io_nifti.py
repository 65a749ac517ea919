"""NIfTI read/write (ctreg.io.nifti): RAS <-> LPS, sform/qform, int16 and vector fields."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from ctreg import Volume, read_nifti, read_volume, write_displacement_nifti, write_nifti
from ctreg.errors import GeometryError
from io_reference import nibabel_lps

try:  # SimpleITK cross-checks are extra tests; the pydicom / nibabel references always run
    import SimpleITK as sitk
except ImportError:
    sitk = None
needs_sitk = pytest.mark.skipif(
    sitk is None, reason="SimpleITK cross-check (pip install SimpleITK)"
)


def _rotation(deg_z: float, deg_x: float) -> np.ndarray:
    a, b = np.radians(deg_z), np.radians(deg_x)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


@pytest.fixture
def oblique_volume():
    """A small volume with a rotated, flipped, anisotropic grid (columns: z, y, x axes)."""
    rng = np.random.default_rng(0)
    arr = rng.uniform(-1000, 1500, size=(5, 6, 7)).astype(np.float32)
    rot = _rotation(20, 10)
    direction = np.stack([rot[:, 2], -rot[:, 1], rot[:, 0]], axis=1)  # a flipped y axis
    aff = np.eye(4)
    aff[:3, :3] = direction * np.array([2.5, 1.2, 0.8])
    aff[:3, 3] = [-12.0, 30.5, 101.25]
    return Volume(arr, aff)


def _sitk_world(img, index_kji):
    k, j, i = (int(v) for v in index_kji)
    return np.array(img.TransformIndexToPhysicalPoint((i, j, k)))


def test_write_read_round_trip_float32(tmp_path, oblique_volume):
    p = write_nifti(oblique_volume, tmp_path / "v.nii.gz", dtype="float32")
    back = read_nifti(p)
    assert np.array_equal(back.array, oblique_volume.array)
    np.testing.assert_allclose(back.affine, oblique_volume.affine, atol=1e-5)
    assert back.meta["affine_source"] == "sform"


@needs_sitk
def test_simpleitk_and_nibabel_agree_on_every_voxel(tmp_path, oblique_volume):
    p = write_nifti(oblique_volume, tmp_path / "v.nii.gz", dtype="float32")
    img = sitk.ReadImage(str(p))
    assert np.array_equal(sitk.GetArrayFromImage(img), oblique_volume.array)
    n = nib.load(str(p))
    assert int(n.header["sform_code"]) == 1 and int(n.header["qform_code"]) == 1
    np.testing.assert_allclose(n.get_qform(), n.get_sform(), atol=1e-5)
    for idx in [(0, 0, 0), (4, 5, 6), (2, 1, 3)]:
        lps = oblique_volume.index_to_world([idx])[0]
        np.testing.assert_allclose(_sitk_world(img, idx), lps, atol=1e-4)
        ras = n.affine @ np.array([idx[2], idx[1], idx[0], 1.0])
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-4)
        # nibabel array order is (i, j, k)
        assert n.get_fdata(dtype=np.float32)[idx[2], idx[1], idx[0]] == oblique_volume.array[idx]


def test_int16_rounds_and_clips(tmp_path):
    arr = np.array(
        [1.4, 1.6, -2.5, -40000.0, 40000.0, -1024.0, 0.49, 7.0], dtype=np.float32
    ).reshape(2, 2, 2)
    vol = Volume(arr, np.diag([3.0, 1.0, 1.0, 1.0]))
    p = write_nifti(vol, tmp_path / "i.nii.gz")
    n = nib.load(str(p))
    assert n.get_data_dtype() == np.int16
    assert np.asarray(n.dataobj).T.ravel().tolist() == [1, 2, -2, -32768, 32767, -1024, 0, 7]


def test_gzip_is_standard(tmp_path, oblique_volume):
    big = Volume(np.tile(oblique_volume.array, (20, 20, 20)), oblique_volume.affine)  # > 4 MiB
    p = write_nifti(big, tmp_path / "b.nii.gz", dtype="float32")
    raw = gzip.decompress(p.read_bytes())  # multi-member gzip decompresses as one stream
    n = nib.Nifti1Image.from_bytes(raw)
    assert np.array_equal(np.asarray(n.dataobj).T, big.array)
    if sitk is not None:
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(p))), big.array)
    plain = write_nifti(big, tmp_path / "b.nii", dtype="float32")
    assert plain.read_bytes() == raw


def test_nibabel_reference_reads_what_we_write(tmp_path, oblique_volume):
    arr, aff = nibabel_lps(write_nifti(oblique_volume, tmp_path / "v.nii.gz", dtype="float32"))
    assert np.array_equal(arr, oblique_volume.array)
    np.testing.assert_allclose(aff, oblique_volume.affine, atol=1e-5)
    arr16, _ = nibabel_lps(
        write_nifti(
            oblique_volume.with_array(np.round(oblique_volume.array)),
            tmp_path / "i.nii.gz",
            dtype="int16",
        )
    )
    assert np.array_equal(arr16, np.round(oblique_volume.array))


def test_totalseg_ras_nifti_matches_nibabel_reference(shared_data):
    path = shared_data("totalseg-ras-nifti", "example_ct.nii.gz")
    vol = read_volume(path)
    arr, aff = nibabel_lps(path)
    assert np.array_equal(vol.array, arr)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-4)
    assert vol.direction[0, 2] < -0.99  # stored RAS: the x array axis runs to the patient's right


@needs_sitk
def test_totalseg_ras_nifti_geometry_matches_simpleitk(shared_data):
    path = shared_data("totalseg-ras-nifti", "example_ct.nii.gz")
    vol = read_volume(path)
    img = sitk.ReadImage(str(path))
    assert vol.shape == (112, 101, 122)
    assert np.array_equal(vol.array, sitk.GetArrayFromImage(img).astype(np.float32))
    for idx in [(0, 0, 0), (111, 100, 121), (50, 20, 70)]:
        np.testing.assert_allclose(vol.index_to_world([idx])[0], _sitk_world(img, idx), atol=1e-3)
    # stored RAS: the x array axis runs towards the patient's right (-x in LPS)
    assert vol.direction[0, 2] < -0.99


@needs_sitk
def test_displacement_field_maps_p_to_p_plus_u(tmp_path, oblique_volume):
    rng = np.random.default_rng(3)
    u = rng.normal(scale=3.0, size=oblique_volume.shape + (3,)).astype(np.float32)
    p = write_displacement_nifti(u, oblique_volume.affine, tmp_path / "d.nii.gz")
    hdr = nib.load(str(p)).header
    assert int(hdr["intent_code"]) == 1006 and hdr.get_data_shape() == (7, 6, 5, 1, 3)
    tx = sitk.DisplacementFieldTransform(sitk.ReadImage(str(p), sitk.sitkVectorFloat64))
    for idx in [(0, 0, 0), (4, 5, 6), (2, 3, 1), (3, 2, 5)]:
        pt = oblique_volume.index_to_world([idx])[0]
        np.testing.assert_allclose(np.array(tx.TransformPoint(tuple(pt))), pt + u[idx], atol=1e-4)


def test_bad_inputs(tmp_path, oblique_volume):
    with pytest.raises(GeometryError, match=r"\(z, y, x, 3\)"):
        write_displacement_nifti(np.zeros((2, 2, 2)), np.eye(4), tmp_path / "d.nii.gz")
    with pytest.raises(ValueError, match="dtype"):
        write_nifti(oblique_volume, tmp_path / "x.nii.gz", dtype="uint8")
    with pytest.raises(Exception, match=r"\.nii or \.nii\.gz"):
        write_nifti(oblique_volume, tmp_path / "x.img")
    four_d = nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.float32), np.eye(4))
    nib.save(four_d, str(tmp_path / "f.nii"))
    with pytest.raises(GeometryError, match="3-D scalar"):
        read_nifti(tmp_path / "f.nii")


def test_qform_used_when_sform_unset(tmp_path):
    data = np.arange(24, dtype=np.int16).reshape(4, 3, 2)  # (i, j, k)
    img = nib.Nifti1Image(data, None)
    q = np.array([[-2.0, 0, 0, 10], [0, 1.5, 0, -5], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    img.set_qform(q, code=1)
    img.set_sform(np.diag([9.0, 9.0, 9.0, 1.0]), code=0)
    nib.save(img, str(tmp_path / "q.nii.gz"))
    vol = read_nifti(tmp_path / "q.nii.gz")
    assert vol.meta["affine_source"] == "qform"
    assert vol.shape == (2, 3, 4) and vol.array[1, 2, 3] == data[3, 2, 1]
    # voxel (i, j, k) = (3, 2, 1): RAS (10 - 6, -5 + 3, 7 + 3) -> LPS (-4, 2, 10)
    np.testing.assert_allclose(vol.index_to_world([[1, 2, 3]])[0], [-4.0, 2.0, 10.0], atol=1e-5)
