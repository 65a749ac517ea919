"""Folder input policy: stray files in a DICOM folder are skipped with a note; a file list is
strict."""

import logging
import shutil

import pytest

import ctreg
from ctreg import samples
from ctreg.errors import DicomSeriesError
from ctreg.io.dicom.sources import is_stray_file


@pytest.fixture()
def folder_with_strays(tmp_path):
    src = samples.ct64_dicom_path()
    dst = tmp_path / "series"
    shutil.copytree(src, dst)
    (dst / "README").write_text("scanned on the 3rd\n")
    (dst / "notes.txt").write_text("phase 00\n")
    (dst / "preview.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 200)
    (dst / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + b"\0" * 100)
    return dst


def test_a_folder_with_stray_files_is_read_with_a_note(folder_with_strays, caplog):
    plain = ctreg.read_dicom_series(samples.ct64_dicom_path())
    with caplog.at_level(logging.WARNING, logger="ctreg"):
        vol = ctreg.read_dicom_series(folder_with_strays)
    assert (vol.array == plain.array).all() and (vol.affine == plain.affine).all()
    assert sorted(vol.meta["skipped_files"]) == [".DS_Store", "README", "notes.txt", "preview.jpg"]
    note = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped 4 file(s)" in note and "preview.jpg" in note
    assert "skipped_files" not in plain.meta


def test_an_explicit_file_list_stays_strict(folder_with_strays):
    files = sorted(
        p for p in folder_with_strays.iterdir() if p.suffix == ".dcm" or p.name == "notes.txt"
    )
    assert any(p.name == "notes.txt" for p in files)
    with pytest.raises(DicomSeriesError) as err:
        ctreg.read_dicom_series(files)
    assert "notes.txt" in str(err.value) and err.value.code == "InvalidFile.NotDicom"


def test_a_dicom_file_with_a_stray_suffix_is_kept(tmp_path):
    one = sorted(samples.ct64_dicom_path().iterdir())[0]
    renamed = tmp_path / "slice.txt"
    shutil.copy(one, renamed)
    assert not is_stray_file(renamed)
    note = tmp_path / "x.txt"
    note.write_text("a note")
    assert is_stray_file(note)
