"""Writing DICOM series and archives; round trips; atomic (kill-safe) outputs."""

from __future__ import annotations

import tarfile

import numpy as np
import pydicom
import pytest

import ctreg.io.archive as archive
import ctreg.io.dicom as dicom_mod
from ctreg import Volume, read_dicom_series, read_nifti, write_dicom_series, write_nifti
from ctreg.samples import ct64_dicom_path
from io_reference import nibabel_lps, pydicom_folder

try:  # SimpleITK cross-checks are extra tests; the pydicom / nibabel references always run
    import SimpleITK as sitk
except ImportError:
    sitk = None
needs_sitk = pytest.mark.skipif(
    sitk is None, reason="SimpleITK cross-check (pip install SimpleITK)"
)


def _sitk_affine(img) -> np.ndarray:
    d = np.array(img.GetDirection()).reshape(3, 3)
    sp = np.array(img.GetSpacing())
    aff = np.eye(4)
    for c in range(3):
        aff[:3, 2 - c] = d[:, c] * sp[c]
    aff[:3, 3] = img.GetOrigin()
    return aff


@pytest.fixture(scope="module")
def ct64():
    return read_dicom_series(ct64_dicom_path())


def _headers(folder):
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.iterdir())]


def test_round_trip_folder_keeps_hu_geometry_and_tags(tmp_path, ct64):
    out = write_dicom_series(ct64, tmp_path / "series", reference=ct64, floating=ct64)
    back = read_dicom_series(out)
    assert np.array_equal(back.array, ct64.array)
    np.testing.assert_allclose(back.affine, ct64.affine, atol=1e-4)
    hdrs = _headers(out)
    assert len(hdrs) == 79
    src = ct64.meta["dicom"]
    h = hdrs[0]
    assert h.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert h.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert list(h.ImageType[:2]) == ["DERIVED", "SECONDARY"]
    assert h.SeriesInstanceUID != src.SeriesInstanceUID
    assert (
        len({x.SOPInstanceUID for x in hdrs}) == 79
        and len({x.SeriesInstanceUID for x in hdrs}) == 1
    )
    assert h.StudyInstanceUID == src.StudyInstanceUID and h.PatientID == src.PatientID
    assert h.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert h.SeriesDescription.startswith("ctreg: ") and "registered to" in h.SeriesDescription
    assert (h.BitsAllocated, h.PixelRepresentation) == (16, 1)
    assert back.meta["series_description"] == h.SeriesDescription


def test_pydicom_and_nibabel_references_read_our_series_and_nifti(tmp_path, ct64):
    out = write_dicom_series(ct64, tmp_path / "series")
    hu, aff = pydicom_folder(out)
    assert np.array_equal(hu, ct64.array)
    np.testing.assert_allclose(aff, ct64.affine, atol=1e-4)
    arr, aff = nibabel_lps(write_nifti(ct64, tmp_path / "v.nii.gz"))
    assert np.array_equal(arr, ct64.array)
    np.testing.assert_allclose(aff, ct64.affine, atol=1e-4)


@needs_sitk
def test_simpleitk_reads_our_series_and_nifti(tmp_path, ct64):
    out = write_dicom_series(ct64, tmp_path / "series")
    r = sitk.ImageSeriesReader()
    r.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(out)))
    img = r.Execute()
    assert img.GetSize() == (64, 64, 79)
    assert np.array_equal(sitk.GetArrayFromImage(img).astype(np.float32), ct64.array)
    np.testing.assert_allclose(_sitk_affine(img), ct64.affine, atol=1e-4)
    nii = write_nifti(ct64, tmp_path / "v.nii.gz")
    img = sitk.ReadImage(str(nii))
    assert np.array_equal(sitk.GetArrayFromImage(img).astype(np.float32), ct64.array)
    np.testing.assert_allclose(_sitk_affine(img), ct64.affine, atol=1e-4)
    back = read_nifti(nii)
    assert np.array_equal(back.array, ct64.array)


def test_tar_gz_has_one_top_folder_and_reads_back(tmp_path, ct64):
    out = write_dicom_series(ct64, tmp_path / "warped.tar.gz")
    with tarfile.open(out) as tf:
        names = tf.getnames()
    files = [n for n in names if n.endswith(".dcm")]
    assert len(files) == 79 and all(n.startswith("warped/") for n in files)
    back = read_dicom_series(out)
    assert np.array_equal(back.array, ct64.array)


def test_popi_round_trip(tmp_path, shared_data):
    vol = read_dicom_series(shared_data("popi-00-dicom"))
    out = write_dicom_series(vol, tmp_path / "popi", reference=vol, floating=vol)
    back = read_dicom_series(out)
    assert back.shape == (141, 512, 512)
    assert np.array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)


def test_from_nifti_fresh_uids_rescale_and_padding(tmp_path):
    """No DICOM provenance: fresh UIDs; values beyond int16 get a slope; padding survives."""
    rng = np.random.default_rng(0)
    arr = rng.uniform(-1000, 90000, size=(8, 6, 5)).astype(np.float32)
    valid = np.ones(arr.shape, bool)
    valid[:, 0, :] = False
    arr[~valid] = -1024
    aff = np.eye(4)
    aff[:3, :3] = np.array([[0, 0, 0.6], [0, -0.5, 0], [3.0, 0, 0]])  # rows j run to -y
    aff[:3, 3] = [5, 6, 7]
    vol = Volume(arr, aff, valid, {"series_description": "nifti input"})
    out = write_dicom_series(vol, tmp_path / "s", series_description="custom description")
    h = _headers(out)[0]
    assert float(h.RescaleSlope) > 1 and h.SeriesDescription == "custom description"
    assert h.PatientID and h.StudyInstanceUID and h.FrameOfReferenceUID
    back = read_dicom_series(out)
    slope = float(h.RescaleSlope)
    # rows (0.6 mm along +x) x columns (0.5 mm along -y) give a slice normal of -z, while the
    # slices advance along +z: a reader sorts along the normal, so the slices come back in
    # reverse order on the same world grid
    flipped = aff.copy()
    flipped[:3, 0] = -aff[:3, 0]
    flipped[:3, 3] = aff[:3, 3] + 7 * aff[:3, 0]
    np.testing.assert_allclose(back.affine, flipped, atol=1e-5)
    assert np.abs(back.array[valid[::-1]] - arr[::-1][valid[::-1]]).max() <= slope / 2 + 1e-2
    assert np.array_equal(back.valid, valid[::-1])


def test_failed_dicom_write_leaves_nothing(tmp_path, ct64, monkeypatch):
    calls = {"n": 0}
    real_encode = dicom_mod._SliceEncoder.encode
    real_write = type(tmp_path).write_bytes

    def flaky_encode(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 40:
            raise OSError("encoding failed (simulated)")
        return real_encode(self, *a, **k)

    monkeypatch.setattr(dicom_mod._SliceEncoder, "encode", flaky_encode)
    for target in (tmp_path / "dir", tmp_path / "a.tar.gz"):
        calls["n"] = 0
        with pytest.raises(OSError, match="simulated"):
            write_dicom_series(ct64, target)
        assert not target.exists()
    monkeypatch.setattr(dicom_mod._SliceEncoder, "encode", real_encode)

    def flaky_write(self, data):  # the disk fills up after 30 files of the folder output
        calls["n"] += 1
        if calls["n"] == 30:
            raise OSError("disk full (simulated)")
        return real_write(self, data)

    calls["n"] = 0
    monkeypatch.setattr(type(tmp_path), "write_bytes", flaky_write)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_series(ct64, tmp_path / "dir")
    assert not (tmp_path / "dir").exists()
    assert list(tmp_path.iterdir()) == []


def test_encoded_files_are_what_pydicom_writes(tmp_path, ct64):
    """The spliced fast encoding gives byte for byte pydicom's own encoding of the dataset."""
    out = write_dicom_series(ct64, tmp_path / "s", reference=ct64, floating=ct64)
    for p in sorted(out.iterdir())[::20]:
        data = p.read_bytes()
        ds = pydicom.dcmread(p)
        again = tmp_path / "again.dcm"
        ds.save_as(again, enforce_file_format=True)
        assert again.read_bytes() == data


def test_failed_compression_midway_leaves_nothing(tmp_path, ct64, monkeypatch):
    real = archive._deflate.compress
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise MemoryError("simulated")
        return real(*a, **k)

    monkeypatch.setattr(archive, "GZIP_BLOCK", 64 * 1024)  # many blocks: fail after the first
    monkeypatch.setattr(archive._deflate, "compress", flaky)
    for writer, target in (
        (lambda p: write_nifti(ct64, p), tmp_path / "v.nii.gz"),
        (lambda p: write_dicom_series(ct64, p), tmp_path / "s.tar.gz"),
    ):
        calls["n"] = 0
        with pytest.raises(MemoryError):
            writer(target)
        assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_folder_refused(tmp_path, ct64):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        write_dicom_series(ct64, tmp_path / "s")
    assert (tmp_path / "s" / "keep.txt").read_text() == "x"


def test_value_range_equals_the_selected_values_range():
    rng = np.random.default_rng(5)
    arr = rng.normal(0, 500, (6, 7, 8)).astype(np.float32)
    valid = rng.random(arr.shape) > 0.3
    n, lo, hi = dicom_mod.write._value_range(arr, valid)
    assert (n, lo, hi) == (int(valid.sum()), float(arr[valid].min()), float(arr[valid].max()))
    assert dicom_mod.write._value_range(arr, None) == (arr.size, float(arr.min()), float(arr.max()))
    n, lo, hi = dicom_mod.write._value_range(arr, np.zeros(arr.shape, bool))
    assert n == 0 and np.isnan(lo) and np.isnan(hi)
    arr[valid.nonzero()[0][0], valid.nonzero()[1][0], valid.nonzero()[2][0]] = np.nan
    _, lo, hi = dicom_mod.write._value_range(arr, valid)  # NaN propagates, as arr[valid].min()
    assert np.isnan(lo) and np.isnan(hi) and np.isnan(arr[valid].min())


def test_floating_tags_from_a_meta_mapping_equal_those_from_the_volume(tmp_path, ct64):
    """RegistrationResult.release_floating() keeps the floating scan's meta only: the series
    written from that mapping carries the same patient and study tags."""
    a = write_dicom_series(ct64, tmp_path / "a", reference=ct64, floating=ct64)
    b = write_dicom_series(ct64, tmp_path / "b", reference=ct64.meta, floating=dict(ct64.meta))
    ha, hb = _headers(a)[0], _headers(b)[0]
    for tag in ("PatientID", "PatientName", "StudyInstanceUID", "FrameOfReferenceUID"):
        assert ha.get(tag) == hb.get(tag) == ct64.meta["dicom"].get(tag)
    assert ha.SeriesDescription == hb.SeriesDescription
