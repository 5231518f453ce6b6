"""Tests for bestrq2_lobes.data.manifest.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

import csv
import logging
import os

import numpy as np
import pytest
import soundfile as sf

from bestrq2_lobes.data.folder_scan import prepare_folder, scan_audio_folder, split_rows
from bestrq2_lobes.data.manifest import ManifestError, read_manifest, write_csv

SR = 16000
FIELDS = ["ID", "duration", "wav"]


def _audio(path, seconds):
    path.parent.mkdir(parents=True, exist_ok=True)
    x = 0.1 * np.sin(np.arange(int(seconds * SR)) * 0.05)
    sf.write(str(path), x, SR)


def _tree(root):
    """Good files in nested folders plus a few bad ones."""
    _audio(root / "b" / "two.flac", 1.25)
    _audio(root / "a" / "one.wav", 1.0)
    _audio(root / "a" / "deeper" / "three.WAV", 2.0)
    _audio(root / "short.wav", 0.2)
    (root / "empty.flac").touch()
    (root / "text.wav").write_text("not audio")
    (root / "dir.wav").mkdir()
    (root / "notes.txt").write_text("ignored")
    return root


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_scan_rows_and_skips(tmp_path):
    root = _tree(tmp_path / "data")
    rows, skipped = scan_audio_folder(root, min_seconds=0.5, progress=False)
    assert rows == [
        {
            "ID": "a__deeper__three",
            "duration": 2.0,
            "wav": "$data_root/a/deeper/three.WAV",
        },
        {"ID": "a__one", "duration": 1.0, "wav": "$data_root/a/one.wav"},
        {"ID": "b__two", "duration": 1.25, "wav": "$data_root/b/two.flac"},
    ]
    reasons = {os.path.basename(s["file"]): s["reason"] for s in skipped}
    assert set(reasons) == {"short.wav", "empty.flac", "text.wav"}
    assert reasons["short.wav"].startswith("shorter than 0.5 s")
    assert reasons["empty.flac"].startswith("empty file")
    assert reasons["text.wav"].startswith("cannot open as audio")
    assert scan_audio_folder(root, min_seconds=0.5, progress=False)[0] == rows


def test_scan_duplicate_stems_get_distinct_ids(tmp_path):
    _audio(tmp_path / "x.wav", 1.0)
    _audio(tmp_path / "x.flac", 1.0)
    rows, _ = scan_audio_folder(tmp_path, 0.5, progress=False)
    assert [r["ID"] for r in rows] == ["x", "x_wav"]


def test_scan_missing_and_empty_folders(tmp_path):
    with pytest.raises(ManifestError, match="audio folder not found") as err:
        scan_audio_folder(tmp_path / "missing", 1.0)
    assert "missing" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no audio files") as err:
        scan_audio_folder(tmp_path / "empty", 1.0)
    assert "empty" in str(err.value)


def test_scan_all_skipped_points_to_skipped_csv(tmp_path):
    _audio(tmp_path / "data" / "s1.wav", 0.1)
    _audio(tmp_path / "data" / "s2.wav", 0.1)
    skipped_csv = tmp_path / "skipped.csv"
    with pytest.raises(ManifestError) as err:
        scan_audio_folder(tmp_path / "data", 1.0, skipped_csv=skipped_csv)
    message = str(err.value)
    assert "no usable audio" in message and "all 2 audio files" in message
    assert str(skipped_csv) in message and "\n" not in message
    assert len(_read_csv(skipped_csv)) == 2


def _manifest(tmp_path, rows, name="m.csv", fields=FIELDS):
    path = tmp_path / name
    write_csv(rows, path, fields)
    return str(path)


def _row(uid, duration="1.0", wav=None):
    return {
        "ID": uid,
        "duration": duration,
        "wav": f"$data_root/{uid}.wav" if wav is None else wav,
    }


def test_read_manifest_substitutes_data_root(tmp_path):
    _audio(tmp_path / "a.wav", 1.0)
    _audio(tmp_path / "b.wav", 1.0)
    path = _manifest(tmp_path, [_row("a"), _row("b", "2.5")])
    rows = read_manifest(path, data_root=str(tmp_path) + "/")
    assert rows[0]["wav"] == str(tmp_path / "a.wav")
    assert rows[1]["duration"] == 2.5


@pytest.mark.parametrize(
    "rows, fragments",
    [
        ([_row("a"), _row("a")], ["row 2 (ID 'a')", "column 'ID'", "duplicate"]),
        ([_row("a"), _row("b", "abc")], ["row 2 (ID 'b')", "'duration'", "number"]),
        ([_row("a", "-1")], ["row 1 (ID 'a')", "'duration'", ">= 0"]),
        ([_row("a", "nan")], ["row 1", "'duration'", "finite"]),
        ([_row("a", "inf")], ["row 1", "'duration'", "finite"]),
        ([_row("a", "")], ["row 1", "'duration'", "empty"]),
        ([_row("a", wav="")], ["row 1 (ID 'a')", "column 'wav'", "empty"]),
        ([_row("a"), _row("")], ["row 2,", "column 'ID'", "empty"]),
    ],
)
def test_read_manifest_row_errors(tmp_path, rows, fragments):
    path = _manifest(tmp_path, rows)
    with pytest.raises(ManifestError) as err:
        read_manifest(path, data_root=str(tmp_path), check_files=False)
    message = str(err.value)
    assert message.startswith(path) and "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_read_manifest_missing_column(tmp_path):
    path = _manifest(tmp_path, [{"ID": "a", "wav": "a.wav"}], fields=["ID", "wav"])
    with pytest.raises(ManifestError, match="missing required column 'duration'"):
        read_manifest(path)


def test_read_manifest_data_root_needed(tmp_path):
    path = _manifest(tmp_path, [_row("a")])
    with pytest.raises(ManifestError, match=r"row 1 .*'wav'.*no data_root"):
        read_manifest(path, data_root=None)


def test_read_manifest_missing_audio(tmp_path):
    path = _manifest(tmp_path, [_row("a")])
    with pytest.raises(ManifestError) as err:
        read_manifest(path, data_root="/nowhere")
    message = str(err.value)
    assert "row 1 (ID 'a'), column 'wav'" in message
    assert "/nowhere/a.wav" in message and "is --data_root right?" in message
    plain = _manifest(tmp_path, [_row("a", wav="/nowhere/a.wav")], name="p.csv")
    with pytest.raises(ManifestError) as err:
        read_manifest(plain)
    assert "data_root" not in str(err.value)


def test_read_manifest_missing_or_empty_file(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "none.csv")
    path = _manifest(tmp_path, [])
    with pytest.raises(ManifestError, match="no data rows"):
        read_manifest(path)


def test_split_rows():
    rows = [{"ID": str(i)} for i in range(100)]
    train, valid = split_rows(rows, 0.1, seed=3)
    assert len(valid) == 10 and len(train) == 90
    assert sorted(r["ID"] for r in train + valid) == sorted(r["ID"] for r in rows)
    assert split_rows(rows, 0.1, seed=3) == (train, valid)
    assert split_rows(rows, 0.1, seed=4) != (train, valid)
    assert [len(p) for p in split_rows(rows[:2], 0.01, 0)] == [1, 1]
    assert [len(p) for p in split_rows(rows[:1], 0.5, 0)] == [1, 0]
    assert [len(p) for p in split_rows(rows[:3], 0.9, 0)] == [1, 2]
    assert [len(p) for p in split_rows(rows, 0.0, 0)] == [100, 0]
    with pytest.raises(ValueError):
        split_rows(rows, 1.0, 0)


def test_prepare_folder(tmp_path, caplog):
    data = _tree(tmp_path / "data")
    for i in range(7):
        _audio(data / "more" / f"{i}.flac", 0.6)
    save = tmp_path / "save"
    with caplog.at_level(logging.INFO, logger="bestrq2_lobes.data.folder_scan"):
        out = prepare_folder(data, save, 0.5, valid_fraction=0.2, progress=False)
    assert "scanned 13 files: 10 usable" in caplog.text
    assert "3 skipped -> see" in caplog.text
    assert out == {
        "train_csv": str(save / "train.csv"),
        "valid_csv": str(save / "valid.csv"),
        "skipped_csv": str(save / "skipped.csv"),
        "data_root": str(data),
    }
    train = read_manifest(out["train_csv"], out["data_root"])
    valid = read_manifest(out["valid_csv"], out["data_root"])
    assert (len(train), len(valid)) == (8, 2)
    assert len(_read_csv(out["skipped_csv"])) == 3

    # A second call with the same options does nothing.
    mtime = os.stat(out["train_csv"]).st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bestrq2_lobes.data.folder_scan"):
        assert prepare_folder(data, save, 0.5, 0.2, progress=False) == out
    assert "up to date" in caplog.text
    assert os.stat(out["train_csv"]).st_mtime_ns == mtime

    # Other options, or changed audio, redo the work.
    prepare_folder(data, save, 0.5, 0.5, progress=False)
    assert len(read_manifest(out["valid_csv"], out["data_root"])) == 5
    _audio(data / "new.wav", 1.0)
    prepare_folder(data, save, 0.5, 0.5, progress=False)
    train = read_manifest(out["train_csv"], out["data_root"])
    valid = read_manifest(out["valid_csv"], out["data_root"])
    assert len(train) + len(valid) == 11


def test_prepare_folder_with_valid_csv(tmp_path):
    data = tmp_path / "data"
    for i in range(4):
        _audio(data / f"{i}.wav", 1.0)
    valid_csv = _manifest(tmp_path, [_row("v", wav=str(data / "0.wav"))], "dev.csv")
    out = prepare_folder(data, tmp_path / "save", 0.5, valid_csv=valid_csv)
    assert out["valid_csv"] == valid_csv
    assert not (tmp_path / "save" / "valid.csv").exists()
    assert len(read_manifest(out["train_csv"], str(data))) == 4
    assert _read_csv(out["skipped_csv"]) == []
    with pytest.raises(ManifestError, match="valid_csv not found"):
        prepare_folder(data, tmp_path / "save", 0.5, valid_csv=tmp_path / "no.csv")


def test_prepare_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(ManifestError) as err:
        prepare_folder(tmp_path / "missing", tmp_path / "save", 1.0)
    assert str(tmp_path / "missing") in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError) as err:
        prepare_folder(tmp_path / "empty", tmp_path / "save", 1.0)
    assert str(tmp_path / "empty") in str(err.value)
    assert "\n" not in str(err.value)
    _audio(tmp_path / "short" / "a.wav", 0.1)
    with pytest.raises(ManifestError, match="1 audio files were skipped") as err:
        prepare_folder(tmp_path / "short", tmp_path / "save", 1.0)
    assert "skipped.csv" in str(err.value)
    assert len(_read_csv(tmp_path / "save" / "skipped.csv")) == 1
