"""report.html: orientation of the pictures, embedded PNGs (checked with a reference reader)."""

import base64
import re
import struct
import sys
import zlib

import numpy as np
import pytest

from ctreg import report_html, report_pictures
from ctreg.result import RegistrationResult
from ctreg.transforms import AffineTransform
from ctreg.volume import Volume, affine_from_geometry

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# -- a small synthetic chest whose world content is known ------------------------------------------


def _world_image(points: np.ndarray) -> np.ndarray:
    """HU at world points (N, 3) LPS mm: a body ellipsoid, two lungs, and markers on the patient's
    left (+x), anterior (-y) and superior (+z) side."""
    x, y = points[:, 0], points[:, 1]
    v = np.full(len(points), -1000.0)
    body = (x / 80) ** 2 + (y / 60) ** 2 < 1
    v[body] = 40.0
    lungs = body & (((x - 35) / 25) ** 2 + (y / 35) ** 2 < 1) | body & (
        ((x + 35) / 25) ** 2 + (y / 35) ** 2 < 1
    )
    v[lungs] = -850.0
    v[np.linalg.norm(points - [60, 0, 0], axis=1) < 10] = 1500.0  # patient's left
    v[np.linalg.norm(points - [0, -45, 0], axis=1) < 8] = 1200.0  # anterior
    v[np.linalg.norm(points - [0, 0, 40], axis=1) < 8] = 1000.0  # superior (on the axis)
    return v


def _volume(affine: np.ndarray, shape) -> Volume:
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    return Volume(_world_image(world).reshape(shape).astype(np.float32), affine)


def _lps_volume():
    shape = (24, 36, 44)  # z, y, x
    spacing = (4.0, 4.0, 4.0)
    origin = [-(shape[2] - 1) * 2.0, -(shape[1] - 1) * 2.0, -(shape[0] - 1) * 2.0]
    return _volume(affine_from_geometry(origin, spacing), shape)


def _reordered_volume():
    """The same world content stored differently: array axes (x, z, y) with x and y reversed
    (the way a RAS / sagittal NIfTI might be stored)."""
    ref = _lps_volume()
    nz, ny, nx = ref.shape
    sz, sy, sx = ref.spacing
    lo, hi = ref.bounds()
    # array axis 0 runs along -x, axis 1 along +z, axis 2 along -y
    direction = np.array(
        [
            [-1.0, 0.0, 0.0],  # world x of axes 0, 1, 2
            [0.0, 0.0, -1.0],  # world y
            [0.0, 1.0, 0.0],
        ]
    )  # world z
    origin = [hi[0], hi[1], lo[2]]
    aff = affine_from_geometry(origin, (sx, sz, sy), direction)
    return _volume(aff, (nx, nz, ny))


def test_canonical_axes_identity_and_reordered_storage():
    assert report_html.canonical_axes(_lps_volume().affine) == ((0, 1, 2), (False, False, False))
    # canonical S = array axis 1 (+z), P = array axis 2 (-y: reversed), L = array axis 0 (-x)
    assert report_html.canonical_axes(_reordered_volume().affine) == (
        (1, 2, 0),
        (False, True, True),
    )


@pytest.mark.parametrize("plane", report_html.PLANES)
def test_pictures_do_not_depend_on_storage_order(plane):
    a, b = _lps_volume(), _reordered_volume()
    pa = report_html._take(a.array, report_html.plane_indices(a, plane))
    pb = report_html._take(b.array, report_html.plane_indices(b, plane))
    assert pa.shape == pb.shape
    np.testing.assert_array_equal(pa, pb)
    assert report_html._plane_spacing(a, plane) == report_html._plane_spacing(b, plane)


def _centroid(mask):
    r, c = np.nonzero(mask)
    return r.mean(), c.mean()


def test_pictures_are_in_radiological_orientation():
    vol = _lps_volume()
    ax = report_html._take(vol.array, report_html.plane_indices(vol, "axial", centre_xyz=(0, 0, 0)))
    h, w = ax.shape
    r, c = _centroid(ax == 1500)  # patient's left -> right of the picture
    assert c > 0.75 * w and abs(r - h / 2) < 2
    r, c = _centroid(ax == 1200)  # anterior -> top
    assert r < 0.3 * h and abs(c - w / 2) < 2
    cor = report_html._take(
        vol.array, report_html.plane_indices(vol, "coronal", centre_xyz=(0, 0, 0))
    )
    r, c = _centroid(cor == 1000)  # superior -> top
    assert r < 0.3 * cor.shape[0]
    r, c = _centroid(cor == 1500)  # left -> right
    assert c > 0.75 * cor.shape[1]
    sag = report_html._take(
        vol.array, report_html.plane_indices(vol, "sagittal", centre_xyz=(0, 0, 0))
    )
    r, c = _centroid(sag == 1000)  # superior -> top
    assert r < 0.3 * sag.shape[0]
    r, c = _centroid(sag == 1200)  # anterior -> left
    assert c < 0.3 * sag.shape[1]


# -- a result --------------------------------------------------------------------------------------


def _result(fold: bool = True) -> RegistrationResult:
    ref = _lps_volume()
    shifted = ref.affine.copy()
    shifted[:3, 3] += (6.0, -4.0, 5.0)  # the floating scan: the same anatomy moved
    flo = Volume(ref.array.copy(), shifted)
    rng = np.random.default_rng(0)
    warped = ref.with_array(ref.array + rng.normal(0, 5, ref.shape).astype(np.float32))
    valid = np.ones(ref.shape, bool)
    valid[:, :, :3] = False
    warped.valid = valid
    u = np.broadcast_to(np.float32((6.0, -4.0, 5.0)), ref.shape + (3,)).copy()
    jac = np.ones(ref.shape, np.float32)
    jac[:, :18, :] = 0.8
    if fold:
        jac[12, 18, 22] = -0.1
    report = {
        "ctreg_version": "test",
        "preset": "fast",
        "seconds_total": 1.25,
        "threads": 2,
        "jacobian": {
            "min": float(jac.min()),
            "max": 1.0,
            "percent_nonpositive": 100 / jac.size,
            "sd_log": 0.1,
        },
        "jacobian_in_body": {
            "min": float(jac.min()),
            "max": 1.0,
            "percent_nonpositive": 0.0,
            "sd_log": 0.1,
        },
        "affine": AffineTransform.identity().to_dict(),
        "seconds": {"masks": 0.1, "affine": 0.5},
        "levels": [
            {
                "stage": "affine",
                "level": 0,
                "spacing_mm": [8.0, 8.0, 8.0],
                "iterations": 12,
                "evaluations": 15,
                "metric": "ncc",
                "metric_before": -0.5,
                "metric_after": -0.9,
                "seconds": 0.2,
                "extra": {},
            }
        ],
        "reference": {
            "shape": list(ref.shape),
            "spacing_mm": ref.spacing.tolist(),
            "origin_mm": ref.origin.tolist(),
        },
        "floating": {
            "shape": list(flo.shape),
            "spacing_mm": flo.spacing.tolist(),
            "origin_mm": flo.origin.tolist(),
        },
        "options": {"clip_hu": [-1000, 1000]},
        "versions": {"numpy": np.__version__},
    }
    return RegistrationResult(
        reference=ref,
        floating=flo,
        warped=warped,
        displacement=u,
        affine=AffineTransform.identity(),
        jacobian=jac,
        report=report,
    )


def _pngs(text: str) -> list[bytes]:
    return [
        base64.b64decode(m)
        for m in re.findall(r"<img [^>]*src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    ]


def _decode_png(png: bytes) -> np.ndarray:
    """A reference PNG reader for what report_pictures writes (8-bit RGB, filter 0, no
    interlace), written from the PNG specification: chunks, CRCs, one zlib stream."""
    assert png[:8] == PNG_SIGNATURE
    pos, chunks = 8, {}
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        tag, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(tag + data)
        chunks[tag] = chunks.get(tag, b"") + data
        pos += 12 + length
    assert list(chunks)[0] == b"IHDR" and list(chunks)[-1] == b"IEND"
    width, height, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, ctype, comp, filt, interlace) == (8, 2, 0, 0, 0)
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, 1 + 3 * width)
    assert not raw[:, 0].any()  # filter type 0 on every row
    return raw[:, 1:].reshape(height, width, 3)


def test_png_writer_round_trips_against_a_reference_reader():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_decode_png(report_pictures.png_rgb(img)), img)
    with pytest.raises(ValueError):
        report_pictures.png_rgb(np.zeros((4, 4), np.uint8))


def test_colour_scales_and_true_aspect():
    v = np.array([[-1000.0, 400.0, -300.0, np.nan, 9999.0]])
    rgb = report_pictures.colorize(v, -1000.0, 400.0, report_pictures.GRAY)
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, 1].tolist() == [255, 255, 255]
    assert rgb[0, 2].tolist() == [128, 128, 128]  # the middle of the window
    assert rgb[0, 3].tolist() == [153, 153, 153]  # NaN: no data
    assert rgb[0, 4].tolist() == [255, 255, 255]  # clipped
    d = report_pictures.colorize(np.array([[-1.0, 0.0, 1.0]]), -1, 1, report_pictures.RDBU)
    assert d[0, 0, 2] > d[0, 0, 0] and d[0, 2, 0] > d[0, 2, 2]  # low blue, high red
    assert d[0, 1].tolist() == [247, 247, 247]  # the centre white
    bad = report_pictures.colorize(
        np.zeros((2, 2)), -1, 1, report_pictures.RDBU, np.eye(2), (0, 0, 0)
    )
    assert bad[0, 0].tolist() == [0, 0, 0] and bad[0, 1].tolist() == [247, 247, 247]
    # 10 rows of 4 mm and 20 columns of 1 mm: 40 x 20 mm, drawn 360 x 180 pixels
    img = np.zeros((10, 20, 3), np.uint8)
    img[0] = 255  # the first 4 mm row
    big = report_pictures.enlarge(img, (4.0, 1.0))
    assert big.shape == (360, 180, 3)
    assert big[:36].min() == 255 and big[36:].max() == 0


def test_report_html_embeds_valid_pngs(tmp_path):
    res = _result()
    path = report_html.write_report_html(res, tmp_path / "report.html")
    assert path == tmp_path / "report.html"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary left
    text = path.read_text(encoding="utf-8")
    pngs = _pngs(text)
    assert len(pngs) == 15  # checkerboard and difference: 2 rows of 3 planes; Jacobian: 3
    images = [_decode_png(png) for png in pngs]
    assert all(max(img.shape[:2]) == report_pictures.PANEL_PX for img in images)
    assert all(img.std() > 20 for img in images[:6])  # checkerboards: pictures, not blank pages
    # the difference before registration (moved by 6, -4, 5 mm) shows it, after it is flat
    assert images[6].std() > 3 * images[9].std()
    # the pictures keep the plane's proportions: the axial plane is 44 x 36 voxels of 4 mm
    assert _decode_png(pngs[0]).shape[:2] == (295, 360)
    # the side letters and colour bars are there
    assert text.count("<span class='l'>R</span>") >= 4 and "J (log scale)" in text
    # the figures of the JSON report are there
    assert "ncc" in text and "1.250" in text and "Stages and levels" in text
    assert "class='bad'" in text  # the folded voxel is flagged
    assert "1 folded pixels" in text or "folded pixels" in text


def test_report_needs_no_plotting_library(tmp_path, monkeypatch):
    for mod in ("matplotlib", "matplotlib.figure", "matplotlib.colors", "PIL"):
        monkeypatch.setitem(sys.modules, mod, None)  # import -> ImportError
    path = report_html.write_report_html(_result(), tmp_path / "report.html")
    assert len(_pngs(path.read_text(encoding="utf-8"))) == 15


def test_similarity_figures_improve_when_aligned():
    sim = report_html.similarity_figures(_result())
    assert sim["after"]["ncc"] > 0.99  # warped = reference + 5 HU noise
    assert sim["before"]["ncc"] < sim["after"]["ncc"] - 0.05
    assert sim["before"]["mean_abs_diff_hu"] > 5 * sim["after"]["mean_abs_diff_hu"]


def test_report_refuses_a_warped_scan_off_the_reference_grid(tmp_path):
    res = _result()
    res.warped = Volume(res.warped.array[:-1], res.warped.affine)
    with pytest.raises(report_html.ReportError) as info:
        report_html.write_report_html(res, tmp_path / "report.html")
    assert info.value.code == "Report.Grid"
    assert not list(tmp_path.iterdir())


def test_before_picture_reads_the_floating_data_only_where_it_has_some():
    from ctreg.report_planes import AIR_HU, _sample_floating

    ref = _lps_volume()
    flo = Volume(ref.array.copy(), ref.affine.copy())
    valid = np.ones(ref.shape, bool)
    valid[:, :, :20] = False  # no data in the first 20 columns (x)
    flo.valid = valid
    idx = report_html.plane_indices(ref, "axial", centre_xyz=(0, 0, 0))
    got = _sample_floating(flo, ref, idx)
    want = report_html._take(ref.array, idx)  # same grid: the values themselves
    cols = np.rint(idx[2]).astype(int)
    np.testing.assert_allclose(got[cols >= 20], want[cols >= 20], atol=1e-3)
    assert np.all(got[cols < 20] == AIR_HU)


def test_report_for_run_takes_figures_made_beforehand(tmp_path, caplog):
    from concurrent.futures import ThreadPoolExecutor

    res = _result()
    with ThreadPoolExecutor(1) as pool:
        made = report_html.report_for_run(
            res, tmp_path / "a.html", pool.submit(report_html.report_parts, res)
        )
        assert made == {"report_html": tmp_path / "a.html"}
        report_html.write_report_html(res, tmp_path / "b.html")
        # the same pictures as a report that makes its own
        assert _pngs((tmp_path / "a.html").read_text()) == _pngs((tmp_path / "b.html").read_text())

        def fails():
            raise report_html.ReportError("no pictures", "Report.Grid")

        with caplog.at_level("WARNING", logger="ctreg"):
            assert report_html.report_for_run(res, tmp_path / "c.html", pool.submit(fails)) == {}
    assert "Report.Grid" in caplog.text and not (tmp_path / "c.html").exists()


def test_similarity_figures_do_not_depend_on_the_piece_size(monkeypatch):
    res = _result()
    whole = report_html.similarity_figures(res)
    monkeypatch.setattr(report_html, "_SIMILARITY_PIECE", 37)  # many pieces, a ragged last one
    assert report_html.similarity_figures(res) == whole
    assert whole["before"]["overlap_percent"] > 0


def test_report_made_after_release_floating_equals_the_full_report(tmp_path):
    """ctreg register takes the "before" parts, lets the floating scan go, then makes the
    report: the same pictures and similarity figures as a report made with the scan held."""
    res = _result()
    full_figs, full_sim = report_html.report_parts(res)
    before = report_html.before_parts(res)
    flo = res.floating
    res.release_floating()
    assert res.floating is None
    assert res.floating_shape == flo.shape and np.array_equal(res.floating_affine, flo.affine)
    figs, sim = report_html.report_parts(res, before)
    assert sim == full_sim and "before" in sim
    report_html.write_report_html(res, tmp_path / "a.html", figures=full_figs, similarity=full_sim)
    report_html.write_report_html(res, tmp_path / "b.html", figures=figs, similarity=sim)
    assert _pngs((tmp_path / "a.html").read_text()) == _pngs((tmp_path / "b.html").read_text())
    # without the parts taken first, the report has no "before" row and no "before" figures
    figs2, sim2 = report_html.report_parts(res)
    assert "before" not in sim2 and report_html.before_parts(res) == {}
    report_html.write_report_html(res, tmp_path / "c.html", figures=figs2, similarity=sim2)
    assert len(_pngs((tmp_path / "c.html").read_text())) < len(
        _pngs((tmp_path / "a.html").read_text())
    )


def test_report_uses_the_kept_jacobian_planes_not_the_map(tmp_path, monkeypatch):
    from ctreg.report_planes import PLANES

    res = _result()
    with_map = report_html.report_figures(res)
    jac = res.jacobian_determinant()
    kept = {p: report_html._take(jac, report_html.plane_indices(res.reference, p)) for p in PLANES}
    planes_only = RegistrationResult(
        reference=res.reference,
        floating=res.floating,
        warped=res.warped,
        displacement=res.displacement,
        affine=res.affine,
        jacobian=None,
        jacobian_planes=kept,
        report=res.report,
    )

    def no_map(self):
        raise AssertionError("the whole Jacobian map was computed")

    monkeypatch.setattr(RegistrationResult, "jacobian_determinant", no_map)
    figs = report_html.report_figures(planes_only)
    assert figs["jacobian"].html() == with_map["jacobian"].html()
