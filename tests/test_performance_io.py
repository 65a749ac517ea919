"""Streamed, parallel-gzip outputs (issue 13): the bytes nibabel / tarfile would write, readable
by nibabel, gzip, tarfile and SimpleITK, without a copy of the file in memory."""

import gzip
import io
import os
import tarfile

import nibabel as nib
import numpy as np
import pytest

from ctreg import Volume
from ctreg.io import archive, nifti


def _volume(shape=(19, 13, 11), seed=0):
    rng = np.random.default_rng(seed)
    arr = (rng.standard_normal(shape) * 400).astype(np.float32)
    arr[0, 0, :3] = [40000.0, -40000.0, 0.5]  # clipped to int16; rint half to even
    aff = np.array([[0, 0, 0.7, -100], [0, 0.8, 0, -90], [2.5, 0, 0, 30], [0, 0, 0, 1.0]])
    return Volume(arr, aff, None, {"series_description": "test"})


def _legacy_bytes_int16(vol):
    """What write_nifti wrote before streaming: nibabel's to_bytes of the whole int16 image."""
    data = np.clip(np.rint(vol.array), -32768, 32767).astype(np.int16)
    aff = nifti.affine_to_nifti(vol.affine)
    img = nib.Nifti1Image(data.T, aff)
    img.header.set_data_dtype(np.int16)
    img.header.set_slope_inter(1.0, 0.0)
    nifti._set_geometry(img, aff)
    img.header["descrip"] = b"test"
    return img.to_bytes()


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_streamed_nifti_equals_nibabel_bytes(tmp_path, suffix):
    vol = _volume(shape=(21, 13, 11))  # 21 slices: the last slab is partial
    path = nifti.write_nifti(vol, tmp_path / f"a{suffix}")
    raw = path.read_bytes()
    if suffix == ".nii.gz":
        raw = gzip.decompress(raw)
    assert raw == _legacy_bytes_int16(vol)
    back = nifti.read_nifti(path)
    np.testing.assert_array_equal(back.array, np.clip(np.rint(vol.array), -32768, 32767))
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-6)


def test_streamed_float32_nifti_and_displacement_read_back(tmp_path):
    vol = _volume()
    back = nifti.read_nifti(nifti.write_nifti(vol, tmp_path / "f.nii.gz", dtype="float32"))
    np.testing.assert_array_equal(back.array, vol.array)
    rng = np.random.default_rng(1)
    u = rng.standard_normal(vol.shape + (3,)).astype(np.float32)
    p = nifti.write_displacement_nifti(u, vol.affine, tmp_path / "d.nii.gz")
    img = nib.load(str(p))
    assert img.shape == vol.shape[::-1] + (1, 3)
    data = np.asarray(img.dataobj)[:, :, :, 0, :].transpose(2, 1, 0, 3)
    expect = u.copy()
    expect[..., :2] *= -1  # ITK's DISPVECT convention: RAS components in the file
    np.testing.assert_array_equal(data, expect)
    assert img.header.get_intent()[0] == "vector" or int(img.header["intent_code"]) == 1006
    sitk = pytest.importorskip("SimpleITK")
    tx = sitk.DisplacementFieldTransform(sitk.ReadImage(str(p), sitk.sitkVectorFloat64))
    k, j, i = 5, 7, 3
    pt = vol.index_to_world(np.array([[k, j, i]], float))[0]
    np.testing.assert_allclose(np.array(tx.TransformPoint(tuple(pt))) - pt, u[k, j, i], atol=1e-5)


@pytest.mark.parametrize("level", [1, 0])
def test_gzip_stream_is_independent_of_write_sizes_and_threads(level):
    data = os.urandom(1 << 20) + bytes(9 * (1 << 20) + 12345)
    one = io.BytesIO()
    archive.write_gzip(data, one, threads=1, compresslevel=level)
    many = io.BytesIO()
    with archive.GzipStreamWriter(many, threads=4, compresslevel=level) as gz:
        for i in range(0, len(data), 999_999):
            gz.write(data[i : i + 999_999])
    assert one.getvalue() == many.getvalue()
    assert gzip.decompress(one.getvalue()) == data
    import zlib

    d = zlib.decompressobj(wbits=31)  # several members: as pigz writes
    assert d.decompress(one.getvalue()) == data[: archive.GZIP_BLOCK]
    if level == 0:  # stored: the data and 5 bytes per 64 KiB block, plus 18 per member
        members = -(-len(data) // archive.GZIP_BLOCK)
        blocks = sum(
            -(-min(archive.GZIP_BLOCK, len(data) - m * archive.GZIP_BLOCK) // 65535)
            for m in range(members)
        )
        assert len(one.getvalue()) == len(data) + 5 * blocks + 18 * members


@pytest.mark.parametrize("n", [0, 1, 65534, 65535, 65536, 3 * 65535, 3 * 65535 + 1])
def test_stored_gzip_member_is_standard_gzip(n):
    import zlib

    data = os.urandom(n)
    member = archive._stored_member(data)
    assert gzip.decompress(member) == data
    d = zlib.decompressobj(wbits=31)
    assert d.decompress(member) == data and d.eof and not d.unused_data
    assert member[-8:-4] == (zlib.crc32(data) & 0xFFFFFFFF).to_bytes(4, "little")
    assert archive._stored_member(memoryview(data)) == member


def test_displacement_nifti_is_stored_and_int16_images_compressed(tmp_path):
    vol = _volume(shape=(24, 40, 40))
    u = np.random.default_rng(2).standard_normal(vol.shape + (3,)).astype(np.float32)
    d = nifti.write_displacement_nifti(u, vol.affine, tmp_path / "d.nii.gz")
    raw = gzip.decompress(d.read_bytes())
    assert len(raw) > u.nbytes and d.stat().st_size - len(raw) < 200  # stored: no deflate pass
    zeros = Volume(np.zeros(vol.shape, np.float32), vol.affine, None, {})
    w = nifti.write_nifti(zeros, tmp_path / "w.nii.gz")
    assert w.stat().st_size < vol.array.size * 2 // 20  # int16 images are deflated


def test_streamed_tar_gz_reads_back(tmp_path):
    members = [(f"series/IM{k:04d}.dcm", os.urandom(1000 + k) * (k + 1)) for k in range(40)]
    path = archive.write_tar_gz(iter(members), tmp_path / "s.tar.gz")
    with tarfile.open(path, "r:gz") as tf:
        assert tf.getnames() == ["series"] + [n for n, _ in members]
        for n, data in members:
            assert tf.extractfile(n).read() == data
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
