"""Reading DICOM series by the service's input rules (ctreg.io.dicom, archive, fetch)."""

from __future__ import annotations

import functools
import http.server
import shutil
import tarfile
import threading
import zipfile

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate

from ctreg import DicomSeriesError, read_dicom_series, read_volume
from ctreg.io.dicom import (
    AXIAL_TOLERANCE_DEG,
    MAX_FRAMES,
    MIN_FRAMES,
    _read_series_files,
    list_series,
)
from ctreg.io.fetch import DownloadError, download_urls
from ctreg.samples import ct64_dicom_path
from dicom_synth import slice_values, write_enhanced, write_series
from io_reference import pydicom_folder, pydicom_series

try:  # SimpleITK cross-checks are extra tests; the pydicom / nibabel references always run
    import SimpleITK as sitk
except ImportError:
    sitk = None
needs_sitk = pytest.mark.skipif(
    sitk is None, reason="SimpleITK cross-check (pip install SimpleITK)"
)


def _sitk_affine(img) -> np.ndarray:
    """SimpleITK geometry -> (k, j, i) -> LPS affine, written independently of ctreg."""
    d = np.array(img.GetDirection()).reshape(3, 3)
    sp = np.array(img.GetSpacing())
    aff = np.eye(4)
    aff[:3, 0] = d[:, 2] * sp[2]
    aff[:3, 1] = d[:, 1] * sp[1]
    aff[:3, 2] = d[:, 0] * sp[0]
    aff[:3, 3] = img.GetOrigin()
    return aff


def _sitk_series(folder) -> "sitk.Image":
    r = sitk.ImageSeriesReader()
    r.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return r.Execute()


# -- real data -------------------------------------------------------------------------------


def test_ct64_dicom_equals_pydicom_reference():
    vol = read_dicom_series(ct64_dicom_path())
    hu, aff = pydicom_folder(ct64_dicom_path())
    assert vol.shape == hu.shape == (79, 64, 64)
    assert np.array_equal(
        vol.array[vol.valid] if vol.valid is not None else vol.array,
        hu[vol.valid] if vol.valid is not None else hu,
    )
    np.testing.assert_allclose(vol.affine, aff, atol=1e-4)


def test_popi_equals_pydicom_reference(shared_data):
    folder = shared_data("popi-00-dicom")
    vol = read_dicom_series(folder)
    hu, aff = pydicom_folder(folder)
    assert vol.shape == hu.shape
    valid = np.ones(vol.shape, bool) if vol.valid is None else vol.valid
    assert np.array_equal(vol.array[valid], hu[valid])
    np.testing.assert_allclose(vol.affine, aff, atol=1e-3)


@needs_sitk
def test_ct64_dicom_equals_nrrd_voxel_for_voxel(shared_data):
    vol = read_dicom_series(shared_data("cip-ct64", "ct-64Dicom"))
    img = sitk.ReadImage(str(shared_data("cip-ct64", "ct-64.nrrd")))
    ref = sitk.GetArrayFromImage(img).astype(np.float32)
    assert vol.shape == ref.shape == (79, 64, 64)
    assert np.array_equal(vol.array, ref)
    np.testing.assert_allclose(vol.affine, _sitk_affine(img), atol=2e-3)  # jitter ~0.0007 mm
    assert vol.meta["n_frames"] == 79 and vol.valid is None
    nrrd = read_volume(shared_data("cip-ct64", "ct-64.nrrd"))  # via SimpleITK
    assert np.array_equal(nrrd.array, vol.array)
    np.testing.assert_allclose(nrrd.affine, vol.affine, atol=2e-3)


def test_bundled_sample_is_the_ct64_series(shared_data):
    assert len(list(ct64_dicom_path().iterdir())) == 79
    a = read_dicom_series(ct64_dicom_path())
    b = read_dicom_series(shared_data("cip-ct64", "ct-64Dicom"))
    assert np.array_equal(a.array, b.array) and np.allclose(a.affine, b.affine)


@needs_sitk
def test_popi_equals_simpleitk_series_reader(shared_data):
    folder = shared_data("popi-00-dicom")
    vol = read_dicom_series(folder)
    img = _sitk_series(folder)
    assert vol.shape == (141, 512, 512)
    assert np.array_equal(vol.array, sitk.GetArrayFromImage(img).astype(np.float32))
    np.testing.assert_allclose(vol.affine, _sitk_affine(img), atol=1e-4)
    assert vol.meta["transfer_syntax"] == "1.2.840.10008.1.2"
    assert vol.meta["dicom"].Modality == "CT" and "PixelData" not in vol.meta["dicom"]


@needs_sitk
def test_totalseg_j2k_without_sop_class_or_extension_reads(shared_data):
    folder = shared_data("totalseg-j2k-dicom")
    vol = read_dicom_series(folder)
    img = _sitk_series(folder)
    assert vol.shape == (20, 512, 512)
    assert vol.meta["transfer_syntax"] == "1.2.840.10008.1.2.4.90"
    ref = sitk.GetArrayFromImage(img).astype(np.float32)
    valid = vol.valid if vol.valid is not None else np.ones(vol.shape, bool)
    assert np.array_equal(vol.array[valid], ref[valid])
    np.testing.assert_allclose(vol.affine, _sitk_affine(img), atol=1e-4)


def test_transfer_syntaxes_decode_to_the_same_hu(shared_data):
    d = shared_data("edge-cases", "pydicom-data")
    unc = _read_series_files([d / "693_UNCR.dcm"], "t", min_frames=1)
    j2k = _read_series_files([d / "693_J2KR.dcm"], "t", min_frames=1)
    assert np.array_equal(unc.array, j2k.array) and np.array_equal(unc.valid, j2k.valid)
    # PixelPaddingValue -2000 marks the outside of the field of view
    assert 0.15 < unc.meta["padding_fraction"] < 0.3
    assert np.all(unc.array[~unc.valid] == -1024.0)
    # JPEG lossless (process 14), decoded via python-gdcm / pylibjpeg, against SimpleITK (GDCM),
    # or pydicom's own pixel handlers when SimpleITK is absent
    jl = _read_series_files([d / "bad_sequence.dcm"], "t", min_frames=1)
    if sitk is not None:
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "bad_sequence.dcm"))).astype(np.float32)
    else:
        ref, _ = pydicom_series([d / "bad_sequence.dcm"])
    assert jl.meta["transfer_syntax"] == "1.2.840.10008.1.2.4.70"
    assert np.array_equal(jl.array, ref.reshape(jl.shape))


def test_enhanced_ct_per_frame_geometry(shared_data):
    path = shared_data("edge-cases", "pydicom-data", "eCT_Supplemental.dcm")
    vol = _read_series_files([path], "t", min_frames=1)
    ds = pydicom.dcmread(path)
    # by hand: IOP (-1, 0, 0, 0, 1, 0) -> columns run to -x, rows to +y, normal -z; frames at
    # z = -159 and -149: sorted along the normal the one at z = -149 comes first
    sp = [
        float(v) for v in ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    ]
    zs = [
        float(f.PlanePositionSequence[0].ImagePositionPatient[2])
        for f in ds.PerFrameFunctionalGroupsSequence
    ]
    first = int(np.argmax(zs))
    expected = np.eye(4)
    expected[:3, 0] = [0, 0, -abs(zs[0] - zs[1])]
    expected[:3, 1] = [0, sp[0], 0]
    expected[:3, 2] = [-sp[1], 0, 0]
    expected[:3, 3] = [
        float(v)
        for v in ds.PerFrameFunctionalGroupsSequence[first]
        .PlanePositionSequence[0]
        .ImagePositionPatient
    ]
    np.testing.assert_allclose(vol.affine, expected, atol=1e-6)
    frames = ds.pixel_array.astype(np.float32) - 1024.0  # slope 1, intercept -1024 (shared)
    assert np.array_equal(vol.array[0], np.maximum(frames[first], -1024))
    with pytest.raises(DicomSeriesError, match=r"has 2 frame\(s\).*8 to 600"):
        read_dicom_series(path)


# -- every bad input in the shared edge cases gets its own error -----------------------------


@pytest.mark.parametrize(
    "parts, pattern",
    [
        (("edge-cases", "oblique-synthetic"), r"not axial.*26\.\d degrees.*within 5 degrees"),
        (("edge-cases", "minimal-header"), r"0\.dcm: Modality \(0008,0060\) = '\(missing\)'.*'CT'"),
        (("cip-simple-dicom",), r"has 2 frame\(s\).*accepted: 8 to 600"),
        (("edge-cases", "pydicom-data", "explicit_VR-UN.dcm"), r"has 1 frame\(s\)"),
        (("edge-cases", "pydicom-data", "bad_sequence.dcm"), r"has 1 frame\(s\)"),
        (
            ("edge-cases", "pydicom-data"),
            r"(?s)holds 4 series(?=.*'Pancreas')(?=.*'5/5mm Plain', modality CT, 3 frame)",
        ),
    ],
)
def test_shared_edge_cases_are_refused(shared_data, parts, pattern):
    with pytest.raises(DicomSeriesError, match=pattern):
        read_dicom_series(shared_data(*parts))


# -- generated series ------------------------------------------------------------------------


def test_synthetic_series_geometry_order_and_hu(tmp_path):
    names = [f"z{(k * 7) % 10}_{k}" for k in range(10)]  # file names unrelated to position
    info = write_series(tmp_path, 10, names=names, slope=lambda k: 1 + (k % 2), intercept=-400)
    vol = read_dicom_series(tmp_path)
    assert vol.shape == (10, 8, 8)
    for k in range(10):
        expected = slice_values(k, 8, 8).astype(np.float32) * (1 + (k % 2)) - 400
        assert np.array_equal(vol.array[k], expected)
    # column index i runs along +x (0.8 mm), row index j along +y (0.7 mm), slices +z (2.5 mm)
    np.testing.assert_allclose(
        vol.index_to_world([[3, 2, 5]]), [[-10 + 5 * 0.8, 20 + 2 * 0.7, 30 + 3 * 2.5]], atol=1e-9
    )
    assert vol.meta["series_uid"] == info["series_uid"]
    assert vol.meta["series_description"] == "synthetic"
    from_list = read_dicom_series([str(p) for p in info["paths"][::-1]])  # a list of files
    assert np.array_equal(from_list.array, vol.array) and np.allclose(from_list.affine, vol.affine)


def test_flipped_and_rotated_in_plane_axes(tmp_path):
    iop = (0, -1, 0, 1, 0, 0)  # columns run to -y, rows to +x; normal = +z
    write_series(tmp_path, 8, iop=iop, pixel_spacing=(0.5, 0.9))
    vol = read_dicom_series(tmp_path)
    # voxel (k, j, i) = origin + i * 0.9 * (0,-1,0) + j * 0.5 * (1,0,0) + k * 2.5 * (0,0,1)
    np.testing.assert_allclose(
        vol.index_to_world([[1, 4, 2]]), [[-10 + 4 * 0.5, 20 - 2 * 0.9, 30 + 2.5]], atol=1e-9
    )


def test_jitter_accepted_and_step_averaged(tmp_path):
    rng = np.random.default_rng(1)
    pos = [np.array([-10.0, 20.0, 30.0 + 2.5 * k + rng.uniform(-0.002, 0.002)]) for k in range(12)]
    write_series(tmp_path, 12, positions=pos)
    vol = read_dicom_series(tmp_path)
    assert abs(vol.spacing[0] - 2.5) < 1e-3


@pytest.mark.parametrize(
    "shift, pattern",
    [
        (lambda k: (0.0, 0.3 * k, 2.5 * k), r"drifts .* sideways.*gantry tilt"),
        (lambda k: (0.0, 0.0, 2.5 * k + (0.6 if k == 5 else 0.0)), r"uneven slice spacing"),
    ],
)
def test_tilted_or_uneven_stacks_refused(tmp_path, shift, pattern):
    pos = [np.array([-10.0, 20.0, 30.0]) + shift(k) for k in range(10)]
    write_series(tmp_path, 10, positions=pos)
    with pytest.raises(DicomSeriesError, match=pattern):
        read_dicom_series(tmp_path)


def test_padding_value_and_low_hu_are_invalid(tmp_path):
    def values(k):
        v = slice_values(k, 8, 8)
        v[0, :] = -2000  # PixelPaddingValue
        v[1, :3] = -3024 + 1024  # HU -3024 via intercept -1024
        return v

    write_series(tmp_path, 8, values=values, padding_value=-2000)
    vol = read_dicom_series(tmp_path)
    assert vol.valid is not None
    assert not vol.valid[:, 0, :].any() and not vol.valid[:, 1, :3].any()
    assert vol.valid[:, 2:, :].all()
    assert np.all(vol.array[~vol.valid] == -1024.0)
    assert vol.meta["padding_fraction"] == pytest.approx(11 / 64)


def test_missing_slice_refused(tmp_path):
    info = write_series(tmp_path, 10)
    info["paths"][4].unlink()
    with pytest.raises(
        DicomSeriesError, match=r"missing slice.*gap of 5\.000 mm.*s003\.dcm.*s005\.dcm"
    ):
        read_dicom_series(tmp_path)


def test_duplicated_slice_refused(tmp_path):
    info = write_series(tmp_path / "a", 10)
    shutil.copy(info["paths"][6], tmp_path / "a" / "copy_of_6.dcm")
    with pytest.raises(
        DicomSeriesError, match=r"duplicated slice.*(s006\.dcm|copy_of_6\.dcm).*45\.000"
    ):
        read_dicom_series(tmp_path / "a")


def test_two_series_listed_and_series_uid_selects(tmp_path):
    a = write_series(tmp_path, 9, description="first", names=[f"a{k}" for k in range(9)])
    b = write_series(
        tmp_path, 8, description="second", names=[f"b{k}" for k in range(8)], origin=(0, 0, 100)
    )
    with pytest.raises(DicomSeriesError, match=r"holds 2 series") as err:
        read_dicom_series(tmp_path)
    msg = str(err.value)
    assert (
        a["series_uid"] in msg and b["series_uid"] in msg and "'second'" in msg and "9 frame" in msg
    )
    vol = read_dicom_series(tmp_path, series_uid=b["series_uid"])
    assert vol.shape == (8, 8, 8) and vol.origin[2] == pytest.approx(100)
    with pytest.raises(DicomSeriesError, match=r"no series with SeriesInstanceUID '1\.2\.3'"):
        read_dicom_series(tmp_path, series_uid="1.2.3")
    assert sorted(s["n_files"] for s in list_series(tmp_path)) == [8, 9]


def test_non_dicom_file_named(tmp_path):
    write_series(tmp_path, 8)
    # a file of no known stray kind (not README, .txt, .jpg ...: tests/test_io_folder_policy.py)
    (tmp_path / "notes.dat").write_text("not an image")
    (tmp_path / ".DS_Store").write_bytes(b"\0\1")  # hidden files are skipped
    with pytest.raises(DicomSeriesError, match=r"notes\.dat is not a DICOM file") as err:
        read_dicom_series(tmp_path)
    assert err.value.code == "InvalidFile.NotDicom"
    assert "force" not in str(err.value)  # pydicom's advice to force-read a non-DICOM file


def test_truncated_file_refused(tmp_path):
    info = write_series(tmp_path, 8, rows=16, cols=16)
    p = info["paths"][3]
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DicomSeriesError, match=r"s003\.dcm.*truncated") as err:
        read_dicom_series(tmp_path)
    assert err.value.code == "InvalidFile.NotDicom"


def test_oblique_generated_refused_slight_tilt_accepted(tmp_path):
    def tilted(deg):
        t = np.radians(deg)  # rotate the column direction about x
        return (1, 0, 0, 0, np.cos(t), np.sin(t))

    write_series(tmp_path / "ok", 8, iop=tilted(AXIAL_TOLERANCE_DEG - 1))
    assert read_dicom_series(tmp_path / "ok").shape == (8, 8, 8)
    write_series(tmp_path / "bad", 8, iop=tilted(AXIAL_TOLERANCE_DEG + 1))
    with pytest.raises(DicomSeriesError, match=r"not axial.*6\.0 degrees") as err:
        read_dicom_series(tmp_path / "bad")
    assert err.value.code == "InvalidFile.NotAxial"


@pytest.mark.parametrize("n, ok", [(MIN_FRAMES - 1, False), (MIN_FRAMES, True)])
def test_frame_count_limits(tmp_path, n, ok):
    write_series(tmp_path, n, rows=2, cols=2, step=0.5)
    if ok:
        assert read_dicom_series(tmp_path).shape == (n, 2, 2)
    else:
        with pytest.raises(DicomSeriesError, match=rf"has {n} frame\(s\).*8 to 600 frames") as err:
            read_dicom_series(tmp_path)
        assert err.value.code == "InvalidFile.FrameCount"


def test_enhanced_ct_multiframe_reads_and_601_frames_refused(tmp_path):
    info = write_enhanced(tmp_path / "a" / "enh.dcm", 9, step=1.5)
    vol = read_dicom_series(tmp_path / "a")
    assert vol.shape == (9, 4, 4) and vol.meta["n_files"] == 1
    for k in range(9):  # frames are stored in reverse position order
        assert np.array_equal(vol.array[k], slice_values(k, 4, 4) - 1024.0)
    np.testing.assert_allclose(
        vol.index_to_world([[2, 1, 3]]), [[5.0 + 3 * 0.9, -7.0 + 0.6, 11.0 + 2 * 1.5]], atol=1e-9
    )
    assert info["normal"].tolist() == [0, 0, 1]
    write_enhanced(tmp_path / "b" / "enh.dcm", MAX_FRAMES + 1, rows=2, cols=2, step=0.5)
    with pytest.raises(DicomSeriesError, match=r"has 601 frame\(s\).*8 to 600 frames") as err:
        read_dicom_series(tmp_path / "b")
    assert err.value.code == "InvalidFile.FrameCount"


def test_inconsistent_slices_refused(tmp_path):
    info = write_series(tmp_path, 8)
    ds = pydicom.dcmread(info["paths"][2])
    ds.PixelSpacing = [0.75, 0.8]
    ds.save_as(info["paths"][2])
    with pytest.raises(DicomSeriesError, match=r"s002\.dcm: PixelSpacing.*differs"):
        read_dicom_series(tmp_path)


def test_missing_decoder_names_transfer_syntax(tmp_path):
    info = write_series(tmp_path, 1)
    ds = pydicom.dcmread(info["paths"][0])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder installed
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds.save_as(info["paths"][0], enforce_file_format=True)
    with pytest.raises(
        DicomSeriesError, match=r"cannot decode.*MPEG2.*1\.2\.840\.10008\.1\.2\.4\.100"
    ):
        _read_series_files(info["paths"], "t", min_frames=1)


def test_not_ct_refused(tmp_path):
    write_series(tmp_path, 8, modality="MR")
    with pytest.raises(DicomSeriesError, match=r"Modality \(0008,0060\) = 'MR'; accepted: 'CT'"):
        read_dicom_series(tmp_path)


# -- archives and URLs -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("series") / "s"
    write_series(folder, 9, rows=4, cols=5)
    return folder, read_dicom_series(folder)


def test_zip_and_tar_gz_archives(tmp_path, small_series):
    folder, ref = small_series
    z = tmp_path / "s.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in folder.iterdir():
            zf.write(p, f"nested/{p.name}")
    t = tmp_path / "s.tar.gz"
    with tarfile.open(t, "w:gz") as tf:
        tf.add(folder, arcname="top")
    for src in (z, t):
        vol = read_volume(src)
        assert np.array_equal(vol.array, ref.array) and np.allclose(vol.affine, ref.affine)


def test_unsafe_archive_refused(tmp_path, small_series):
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("../escape.dcm", b"x")
    with pytest.raises(DicomSeriesError, match=r"unsafe member path '\.\./escape\.dcm'"):
        read_dicom_series(z)
    assert not (tmp_path.parent / "escape.dcm").exists()


def test_file_urls(small_series):
    folder, ref = small_series
    urls = [p.resolve().as_uri() for p in sorted(folder.iterdir())]
    vol = read_dicom_series(urls)
    assert np.array_equal(vol.array, ref.array)


@pytest.fixture
def http_root(tmp_path):
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


def test_http_urls_and_download_errors(http_root, small_series):
    root, base = http_root
    folder, ref = small_series
    shutil.copytree(folder, root / "s")
    urls = [f"{base}/s/{p.name}" for p in sorted(folder.iterdir())]
    vol = read_dicom_series(urls)
    assert np.array_equal(vol.array, ref.array)
    with pytest.raises(DownloadError, match=r"nothere\.dcm.*HTTP 404") as err:
        download_urls([f"{base}/nothere.dcm"], root / "dl")
    assert err.value.code == "InvalidFile.Download" and err.value.url.endswith("nothere.dcm")
    assert not list((root / "dl").iterdir())
    with pytest.raises(DownloadError, match=r"at most 100 bytes") as err:
        download_urls(urls[:2], root / "dl2", max_bytes=100)
    assert err.value.code == "InvalidFile.TooLarge"
    with pytest.raises(DownloadError, match=r"scheme 'file'") as err:
        download_urls([(folder / "s000.dcm").resolve().as_uri()], root / "dl3")  # allow_file=False
    assert err.value.code == "InvalidFile.URL"
    with pytest.raises(DownloadError, match=r"ftp"):
        download_urls(["ftp://example.org/x.dcm"], root / "dl4")


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90"])
def test_compressed_series_equal_uncompressed(tmp_path, syntax):
    """RLE (pydicom's own codec) and JPEG 2000 lossless (pylibjpeg-openjpeg) series."""
    info = write_series(tmp_path / "raw", 8, rows=64, cols=64)
    ref = read_dicom_series(tmp_path / "raw")
    (tmp_path / "c").mkdir()
    for p in info["paths"]:
        ds = pydicom.dcmread(p)
        try:
            ds.compress(syntax)
        except (RuntimeError, NotImplementedError) as exc:  # no encoder installed here
            pytest.skip(f"no encoder for {syntax}: {exc}")
        ds.save_as(tmp_path / "c" / p.name, enforce_file_format=True)
    vol = read_dicom_series(tmp_path / "c")
    assert vol.meta["transfer_syntax"] == syntax
    assert np.array_equal(vol.array, ref.array) and np.allclose(vol.affine, ref.affine)
