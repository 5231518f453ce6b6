"""The frame every corpus preparer shares, and the shell command.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from bestrq2_lobes.data.manifest import read_manifest
from bestrq2_lobes.datasets import CORPORA, get_preparer, preparation
from bestrq2_lobes.datasets.preparation import (
    OPTS_FILE,
    Clip,
    PrepareError,
    _wav_entry,
    check_clips,
    prepare,
)
from bestrq2_lobes.datasets.recipe_data import fill_manifests, prepare_corpus


def write_wav(path, seconds=1.0, rate=16000):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, np.random.default_rng(0).normal(0, 0.1, int(seconds * rate)), rate)


@pytest.fixture
def toy(tmp_path):
    """A toy corpus: meta.txt lists `name split label` lines, audio in wav/."""
    root = tmp_path / "toy"
    for name in ("a", "b", "c"):
        write_wav(str(root / "wav" / f"{name}.wav"))
    (root / "meta.txt").write_text("a train dog\nb train cat\nc test dog\n")
    return root


def toy_prepare(root, save, label_prefix="", **kwargs):
    def collect():
        clips = []
        for line in (root / "meta.txt").read_text().split("\n"):
            if line:
                name, split, label = line.split()
                fields = {"label": label_prefix + label}
                clips.append(Clip(name, f"wav/{name}.wav", split, fields))
        return clips, []

    return prepare(
        "toy",
        str(root),
        str(save),
        {"label_prefix": label_prefix},
        ["meta.txt", "wav"],
        collect,
        fields=("label",),
        progress=False,
        **kwargs,
    )


def test_prepare_writes_one_csv_per_split_under_data_root(toy, tmp_path):
    out = toy_prepare(toy, tmp_path / "save")
    assert set(k for k in out if k.endswith("_csv")) == {
        "train_csv",
        "test_csv",
        "skipped_csv",
    }
    rows = read_manifest(out["train_csv"], data_root=out["data_root"])
    assert [r["ID"] for r in rows] == ["a", "b"]
    assert rows[0]["wav"] == str(toy / "wav" / "a.wav")
    assert open(out["train_csv"]).read().splitlines()[1].startswith(
        "a,1.0,$data_root/wav/a.wav"
    )
    assert (out["clips"], out["skipped"]) == (3, 0)


def test_a_rerun_with_the_same_options_reads_no_clip(toy, tmp_path, monkeypatch):
    first = toy_prepare(toy, tmp_path / "save")
    stamp = os.stat(tmp_path / "save" / OPTS_FILE).st_mtime_ns

    def no_checks(*args, **kwargs):
        raise AssertionError("a skipped rerun checked clips")

    monkeypatch.setattr(preparation, "check_clips", no_checks)
    assert toy_prepare(toy, tmp_path / "save") == first
    assert os.stat(tmp_path / "save" / OPTS_FILE).st_mtime_ns == stamp


def test_a_changed_option_or_file_prepares_again(toy, tmp_path):
    toy_prepare(toy, tmp_path / "save")
    out = toy_prepare(toy, tmp_path / "save", label_prefix="x_")
    assert read_manifest(out["train_csv"], out["data_root"])[0]["label"] == "x_dog"
    with pytest.raises(PrepareError, match=r"3 skipped: too short 3; first: shorter"):
        toy_prepare(toy, tmp_path / "save", label_prefix="x_", min_seconds=2.0)
    assert len(read_manifest_rows(tmp_path / "save" / "skipped.csv")) == 3
    # a new clip listed in the metadata: the metadata changed, so prepare again
    write_wav(str(toy / "wav" / "d.wav"))
    with open(toy / "meta.txt", "a") as fout:
        fout.write("d test cat\n")
    out = toy_prepare(toy, tmp_path / "save")
    assert [r["ID"] for r in read_manifest(out["test_csv"], out["data_root"])] == [
        "c",
        "d",
    ]


def test_too_short_and_missing_clips_go_to_skipped_csv(toy, tmp_path):
    write_wav(str(toy / "wav" / "b.wav"), seconds=0.1)
    os.remove(toy / "wav" / "c.wav")
    (toy / "wav" / "a.wav").write_bytes(b"RIFF not really a wav file")
    with pytest.raises(PrepareError, match="no usable clip"):
        toy_prepare(toy, tmp_path / "save", min_seconds=0.5)
    write_wav(str(toy / "wav" / "a.wav"))
    out = toy_prepare(toy, tmp_path / "save", min_seconds=0.5)
    skipped = {
        os.path.basename(r["file"]): r["reason"]
        for r in read_manifest_rows(out["skipped_csv"])
    }
    assert skipped["b.wav"].startswith("shorter than 0.5 s")
    assert skipped["c.wav"] == "file does not exist"
    assert "test_csv" not in out


def read_manifest_rows(path):
    import csv

    with open(path, newline="") as fin:
        return list(csv.DictReader(fin))


def test_a_cut_off_preparation_is_redone(toy, tmp_path, monkeypatch):
    toy_prepare(toy, tmp_path / "save")
    os.remove(tmp_path / "save" / "train.csv")  # e.g. deleted by hand
    calls = []
    real = preparation.check_clips
    monkeypatch.setattr(
        preparation,
        "check_clips",
        lambda *a, **k: calls.append(1) or real(*a, **k),
    )
    toy_prepare(toy, tmp_path / "save")
    assert calls and os.path.isfile(tmp_path / "save" / "train.csv")


def test_repeated_ids_stop_with_one_line(toy, tmp_path):
    (toy / "meta.txt").write_text("a train dog\na test dog\n")
    with pytest.raises(PrepareError, match=r"1 clip IDs repeat \(first: 'a'\)"):
        toy_prepare(toy, tmp_path / "save")


def test_skip_prep_returns_the_earlier_outputs_or_says_there_are_none(toy, tmp_path):
    with pytest.raises(PrepareError, match="nothing prepared in"):
        toy_prepare(toy, tmp_path / "save", skip_prep=True)
    first = toy_prepare(toy, tmp_path / "save")
    assert toy_prepare(toy, tmp_path / "save", skip_prep=True) == first


def test_parallel_checks_equal_the_serial_ones(tmp_path):
    paths = []
    for i in range(70):
        path = str(tmp_path / f"{i}.wav")
        write_wav(path, seconds=0.05 + 0.01 * (i % 7))
        paths.append(path)
    (tmp_path / "3.wav").write_bytes(b"broken")
    paths.append(str(tmp_path / "absent.wav"))
    serial = check_clips(paths, 0.08, jobs=1, progress=False)
    assert check_clips(paths, 0.08, jobs=2, progress=False) == serial
    assert serial[3][1].startswith("cannot open as audio")
    assert serial[-1] == (None, "file does not exist")
    assert check_clips(paths, 0.08, "header", jobs=2, progress=False)[0] == serial[0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "..", "x y", "é"]), min_size=1, max_size=4))
def test_wav_entries_under_the_root_use_data_root_and_others_stay_absolute(parts):
    root = "/data/corpus"
    path = os.path.normpath(os.path.join(root, *parts))
    entry = _wav_entry(path, root)
    if entry.startswith("$data_root/"):
        assert os.path.normpath(os.path.join(root, entry[11:])) == path
    else:
        assert entry == path and not path.startswith(root + os.sep)


def test_every_registered_corpus_has_its_preparer():
    for corpus in CORPORA:
        path = os.path.join(
            os.path.dirname(preparation.__file__), f"{CORPORA[corpus]}.py"
        )
        if not os.path.isfile(path):
            pytest.fail(f"{corpus}: no module {path}")
        preparer = get_preparer(corpus)
        assert preparer.__name__ == f"prepare_{corpus}"
        assert preparer.__doc__ and "Arguments" in preparer.__doc__
    with pytest.raises(PrepareError, match="unknown corpus 'nope'; known: "):
        get_preparer("nope")


def test_recipe_glue_prepares_and_fills_only_what_is_not_given(toy, tmp_path):
    assert prepare_corpus({"corpus": None}) is None
    with pytest.raises(PrepareError, match="unknown corpus"):
        prepare_corpus({"corpus": "toy", "data_folder": str(toy)})
    hparams = {"train_csv": None, "valid_csv": None, "test_csv": "mine.csv"}
    out = {"train_csv": "t.csv", "test_csv": "e.csv", "data_root": "/r"}
    assert fill_manifests(hparams, out) == {
        "train_csv": "t.csv",
        "valid_csv": None,
        "test_csv": "mine.csv",
        "data_root": "/r",
    }


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "bestrq2_lobes.datasets", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_shell_command_prepares_lists_and_stops_with_one_line(tmp_path):
    root = tmp_path / "ESC-50-master"
    write_wav(str(root / "audio" / "1-100032-A-0.wav"), rate=44100)
    (root / "meta").mkdir()
    (root / "meta" / "esc50.csv").write_text(
        "filename,fold,target,category,esc10,src_file,take\n"
        "1-100032-A-0.wav,1,0,dog,True,100032,A\n"
    )
    proc = run_cli("prepare", "esc50", str(root), str(tmp_path / "out"), "--jobs", "1")
    assert proc.returncode == 0, proc.stderr
    assert f"fold1_csv: {tmp_path / 'out' / 'fold1.csv'}" in proc.stdout
    saved = json.loads((tmp_path / "out" / OPTS_FILE).read_text())
    assert saved["record"]["options"]["esc10"] is False
    proc = run_cli("prepare", "esc50", str(tmp_path), str(tmp_path / "out"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "expected meta/esc50.csv" in lines[0]
    proc = run_cli("prepare", "esc50", str(root), str(tmp_path / "o"), "--colour", "1")
    assert proc.returncode == 2 and "has no option --colour" in proc.stderr
    proc = run_cli("list")
    assert proc.returncode == 0 and "esc50" in proc.stdout


def test_a_root_relative_to_the_working_directory_works_when_called_directly(
    tmp_path, monkeypatch
):
    from bestrq2_lobes.datasets.esc50 import prepare_esc50

    root = tmp_path / "ESC-50-master"
    write_wav(str(root / "audio" / "1-100032-A-0.wav"), rate=44100)
    (root / "meta").mkdir()
    (root / "meta" / "esc50.csv").write_text(
        "filename,fold,target,category,esc10,src_file,take\n"
        "1-100032-A-0.wav,1,0,dog,True,100032,A\n"
    )
    monkeypatch.chdir(tmp_path)
    out = prepare_esc50("ESC-50-master", "out", jobs=1, progress=False)
    assert (out["clips"], out["skipped"]) == (1, 0)
    assert out["data_root"] == str(root)
