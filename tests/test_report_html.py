"""report.html: orientation of the pictures, embedded PNGs, the path without matplotlib."""

import base64
import io
import logging
import re
import struct
import sys

import numpy as np
import pytest

from ctreg import report_html
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


def test_report_html_embeds_three_valid_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.image

    res = _result()
    path = report_html.write_report_html(res, tmp_path / "report.html")
    assert path == tmp_path / "report.html"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary left
    text = path.read_text(encoding="utf-8")
    assert text.count("<img ") >= 3
    pngs = _pngs(text)
    assert len(pngs) >= 3
    for png in pngs:
        assert png[:8] == PNG_SIGNATURE
        assert png[12:16] == b"IHDR"
        width, height = struct.unpack(">II", png[16:24])
        assert width >= 400 and height >= 200
        img = matplotlib.image.imread(io.BytesIO(png), format="png")
        assert img.shape[:2] == (height, width) and img.shape[2] in (3, 4)
        assert img[..., :3].std() > 0.05  # a picture, not a blank page
    assert "not installed" not in text
    # the figures of the JSON report are there
    assert "ncc" in text and "1.250" in text and "Stages and levels" in text
    assert "class='bad'" in text  # the folded voxel is flagged


def test_similarity_figures_improve_when_aligned():
    sim = report_html.similarity_figures(_result())
    assert sim["after"]["ncc"] > 0.99  # warped = reference + 5 HU noise
    assert sim["before"]["ncc"] < sim["after"]["ncc"] - 0.05
    assert sim["before"]["mean_abs_diff_hu"] > 5 * sim["after"]["mean_abs_diff_hu"]


def test_report_without_matplotlib_has_tables_and_a_note(tmp_path, monkeypatch, caplog):
    for mod in ("matplotlib", "matplotlib.figure", "matplotlib.colors"):
        monkeypatch.setitem(sys.modules, mod, None)  # import matplotlib -> ImportError
    res = _result()
    with caplog.at_level(logging.WARNING, logger="ctreg"):
        path = report_html.write_report_html(res, tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    assert "<img" not in text
    assert "matplotlib is not installed" in text
    assert "pip install &quot;ctreg[report]&quot;" in text
    assert "Jacobian determinant" in text and "Stages and levels" in text
    assert any("ctreg[report]" in r.getMessage() for r in caplog.records)
    with pytest.raises(report_html.ReportError) as info:
        report_html.report_figures(res)
    assert info.value.code == "Report.NoMatplotlib"


def test_report_refuses_a_warped_scan_off_the_reference_grid(tmp_path):
    pytest.importorskip("matplotlib")
    res = _result()
    res.warped = Volume(res.warped.array[:-1], res.warped.affine)
    with pytest.raises(report_html.ReportError) as info:
        report_html.write_report_html(res, tmp_path / "report.html")
    assert info.value.code == "Report.Grid"
    assert not list(tmp_path.iterdir())
