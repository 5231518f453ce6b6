"""The pretraining corpora: AudioSet (lists, three clip layouts, PANNs HDF5) and
Libri-Light, each in its official layout, prepared, then read by the recipe.

The fixtures are generated audio with the real names and metadata formats:
AudioSet's three ``#`` header lines and quoted label lists, its
``class_labels_indices.csv`` with quoted display names, the PANNs HDF5 datasets
and attribute, and Libri-Light's ``<subset>/<speaker>/<book>/*.flac`` beside
their ``.json``.
"""

import csv
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from bestrq2_lobes.data.shards import check_shard_set, decode_clip, resolve_shards
from bestrq2_lobes.datasets import __main__ as datasets_cli
from bestrq2_lobes.datasets import preparation
from bestrq2_lobes.datasets.audioset import parse_segment_line, prepare_audioset
from bestrq2_lobes.datasets.librilight import (
    prepare_librilight,
    speaker_draw,
    valid_speakers,
)
from bestrq2_lobes.datasets.preparation import OPTS_FILE, PrepareError

h5py = pytest.importorskip("h5py")
from bestrq2_lobes.datasets import audioset_hdf5  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RATE = 16000
VOCAB = [
    ("/m/09x0r", "Speech"),
    ("/m/05zppz", "Male speech, man speaking"),
    ("/m/04rlf", "Music"),
    ("/m/0jbk", "Animal"),
    ("/t/dd00088", "Inside, small room"),
]
HEADER = (
    "# Segments csv created Sun Mar  5 10:54:31 2017\n"
    "# num_ytids={n}, num_segs={n}, num_unique_labels=527, "
    "num_positive_labels={labels}\n"
    "# YTID, start_seconds, end_seconds, positive_labels\n"
)
# (set, YTID, start, labels, what the fixture makes of it)
SEGMENTS = [
    ("balanced_train", "--PJHxphWEs", 30, "/m/09x0r,/t/dd00088", "ok"),
    ("balanced_train", "--ZhevVpy1s", 50, "/m/04rlf", "ok"),
    ("balanced_train", "-0BIyqJj9ZU", 30, "/m/0jbk", "missing"),
    ("balanced_train", "-1nGDaaLWHE", 10, "/m/04rlf", "corrupt"),
    ("balanced_train", "-2PDE7hUArE", 30, "/m/04rlf,/m/0zzzzz", "ok"),  # bad label
    ("unbalanced_train", "---1_cCGK4M", 0, "/m/05zppz,/m/09x0r", "ok"),
    ("unbalanced_train", "--0PQM4-hqg", 30, "/m/04rlf", "ok"),
    ("eval", "--4gqARaEJE", 0, "/m/0jbk", "ok"),
    ("eval", "--BfvyPmVMo", 20, "/m/09x0r", "ok"),
]
LISTS = {
    "balanced_train": "balanced_train_segments.csv",
    "unbalanced_train": "unbalanced_train_segments.csv",
    "eval": "eval_segments.csv",
}
HF_DIRS = {"balanced_train": "bal_train", "unbalanced_train": "unbal_train"}
HF_DIRS["eval"] = "eval"


def tone(seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wav = 0.3 * np.sin(2 * np.pi * (220 + 40 * seed) * t)
    return (wav + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


def write_audioset_lists(root: Path, meta: str = "") -> None:
    folder = root / meta
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "class_labels_indices.csv", "w", newline="") as fout:
        writer = csv.writer(fout, quoting=csv.QUOTE_MINIMAL)
        writer.writerow(["index", "mid", "display_name"])
        for index, (mid, name) in enumerate(VOCAB):
            fout.write(f'{index},{mid},"{name}"\n')
    for name, listing in LISTS.items():
        rows = [s for s in SEGMENTS if s[0] == name]
        labels = sum(len(s[3].split(",")) for s in rows)
        text = HEADER.format(n=len(rows), labels=labels)
        for _, ytid, start, mids, _ in rows:
            text += f'{ytid}, {start:.3f}, {start + 10:.3f}, "{mids}"\n'
        (folder / listing).write_text(text)


def make_audioset(root: Path, layout: str = "segment", meta: str = "") -> Path:
    """AudioSet as a user downloaded it: the lists and clips in ``layout``."""
    write_audioset_lists(root, meta)
    for number, (name, ytid, start, _, what) in enumerate(SEGMENTS):
        if what == "missing":
            continue
        if layout == "segment":
            path = root / "audio" / name / f"Y{ytid}_{start:.3f}_{start + 10:.3f}.wav"
        elif layout == "ytid":
            path = root / "clips" / f"{ytid}.flac"
        else:
            path = root / "audio" / HF_DIRS[name] / f"{ytid}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        if what == "corrupt":
            path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(100))
        else:
            sf.write(path, tone(2.0, seed=number), RATE)
    return root


def rows_of(path) -> list[dict]:
    with open(path, newline="") as fin:
        return list(csv.DictReader(fin))


def reasons(outputs) -> dict[str, str]:
    return {
        os.path.basename(r["file"]): r["reason"]
        for r in rows_of(outputs["skipped_csv"])
    }


@pytest.mark.parametrize("layout", ["segment", "ytid", "hf"])
def test_audioset_layouts_are_found_and_prepared(layout, tmp_path):
    root = make_audioset(tmp_path / "audioset", layout)
    out = prepare_audioset(str(root), str(tmp_path / "prep"), progress=False, jobs=1)
    bal = rows_of(out["balanced_train_csv"])
    assert [r["ID"] for r in bal] == ["--PJHxphWEs", "--ZhevVpy1s"]
    assert bal[0]["labels"] == "/m/09x0r /t/dd00088"
    assert bal[0]["wav"].startswith("$data_root/") and float(bal[0]["duration"]) == 2
    assert len(rows_of(out["unbalanced_train_csv"])) == 2
    train, valid = rows_of(out["train_csv"]), rows_of(out["valid_csv"])
    assert [r["ID"] for r in train] == [r["ID"] for r in bal] + [
        "---1_cCGK4M",
        "--0PQM4-hqg",
    ]
    assert valid == rows_of(out["eval_csv"]) and len(valid) == 2
    skipped = reasons(out)
    assert len(skipped) == 3 and out["skipped"] == 3
    [missing_reason] = [v for k, v in skipped.items() if "-0BIyqJj9ZU" in k]
    assert missing_reason == "missing (listed in balanced_train_segments.csv)"
    [label] = [v for k, v in skipped.items() if "-2PDE7hUArE" in k]
    assert label == "label '/m/0zzzzz' not in class_labels_indices.csv"
    [corrupt] = [v for k, v in skipped.items() if "-1nGDaaLWHE" in k]
    assert corrupt.startswith(("cannot open", "truncated", "contains no"))
    counts = preparation.reason_counts(rows_of(out["skipped_csv"]))
    assert counts == {"missing": 1, "refused": 1, "unreadable": 1}
    vocab = rows_of(out["vocabulary_file"])
    assert vocab[1]["display_name"] == "Male speech, man speaking"


def test_audioset_prepared_csv_goes_straight_into_shards(tmp_path):
    from bestrq2_lobes.data.shard_writer import write_shards

    root = make_audioset(tmp_path / "audioset", "segment")
    out = prepare_audioset(str(root), str(tmp_path / "prep"), progress=False)
    index = write_shards(
        out["train_csv"],
        tmp_path / "shards",
        data_root=out["data_root"],
        progress=False,
    )
    assert index["clips"] == 4 and index["skipped"] == 0


def test_audioset_metadata_subfolder_and_explicit_layout(tmp_path):
    root = make_audioset(tmp_path / "audioset", "ytid", meta="metadata")
    out = prepare_audioset(
        str(root),
        str(tmp_path / "prep"),
        sets=["eval"],
        audio_folder="clips",
        layout="ytid",
        check="header",
        progress=False,
    )
    assert [r["ID"] for r in rows_of(out["valid_csv"])] == [
        "--4gqARaEJE",
        "--BfvyPmVMo",
    ]
    assert "train_csv" not in out
    with pytest.raises(PrepareError, match="layout hf: no bal_train"):
        prepare_audioset(str(root), str(tmp_path / "p2"), layout="hf")


def one_line_error(call, *expected: str) -> str:
    with pytest.raises(PrepareError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for text in expected:
        assert text in message, message
    return message


def test_audioset_wrong_root_and_missing_metadata(tmp_path):
    root = make_audioset(tmp_path / "audioset")
    save = str(tmp_path / "prep")
    one_line_error(
        lambda: prepare_audioset(str(root / "audio"), save),
        "is not the AudioSet root",
        "expected class_labels_indices.csv",
    )
    (root / "eval_segments.csv").unlink()
    one_line_error(
        lambda: prepare_audioset(str(root), save), "expected eval_segments.csv"
    )
    one_line_error(
        lambda: prepare_audioset(str(root), save, sets=["train"]),
        "unknown AudioSet set 'train'",
    )
    one_line_error(
        lambda: prepare_audioset(
            str(root), str(root / "prep"), sets=["balanced_train"]
        ),
        "is inside the audio folder",
    )


def test_audioset_rerun_is_skipped_and_a_changed_option_prepares_again(
    tmp_path, monkeypatch
):
    root = make_audioset(tmp_path / "audioset")
    save = tmp_path / "prep"
    first = prepare_audioset(str(root), str(save), progress=False)
    stamp = (save / OPTS_FILE).stat().st_mtime_ns

    def no_check(*args, **kwargs):
        raise AssertionError("clips checked again")

    monkeypatch.setattr(preparation, "check_clips", no_check)
    assert prepare_audioset(str(root), str(save), progress=False) == first
    assert (save / OPTS_FILE).stat().st_mtime_ns == stamp
    monkeypatch.undo()
    again = prepare_audioset(
        str(root), str(save), sets=("balanced_train", "eval"), progress=False
    )
    assert "unbalanced_train_csv" not in again
    assert (save / OPTS_FILE).stat().st_mtime_ns != stamp
    assert len(rows_of(again["train_csv"])) == 2
    # a clip that appears is seen: the audio folder is watched
    sf.write(root / "audio" / "Y-0BIyqJj9ZU_30.000_40.000.wav", tone(2.0), RATE)
    third = prepare_audioset(
        str(root), str(save), sets=("balanced_train", "eval"), progress=False
    )
    assert len(rows_of(third["train_csv"])) == 3


def test_audioset_shell_command(tmp_path, capsys):
    root = make_audioset(tmp_path / "audioset", "hf")
    save = tmp_path / "prep"
    argv = ["prepare", "audioset", str(root), str(save), "--check", "header"]
    assert datasets_cli.main([*argv, "--sets", "[eval]"]) == 0
    assert f"valid_csv: {save / 'valid.csv'}" in capsys.readouterr().out
    assert datasets_cli.main(["prepare", "audioset", str(tmp_path), str(save)]) == 2
    assert "expected class_labels_indices.csv" in capsys.readouterr().err


YTIDS = st.from_regex(r"[A-Za-z0-9_-]{11}", fullmatch=True)
MIDS = st.from_regex(r"/[mgt]/[0-9a-z_]{2,9}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(
    ytid=YTIDS,
    start=st.floats(0, 1e5, allow_nan=False),
    mids=st.lists(MIDS, min_size=1, max_size=6),
    spaces=st.sampled_from([", ", ",", ",  "]),
)
def test_segment_lines_parse_back(ytid, start, mids, spaces, no_broken_lazy_modules):
    line = spaces.join(
        [ytid, f"{start:.3f}", f"{start + 10:.3f}", f'"{",".join(mids)}"']
    )
    assert parse_segment_line(line + "\n") == (
        ytid,
        f"{start:.3f}",
        f"{start + 10:.3f}",
        mids,
    )


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=80))
def test_segment_parser_refuses_with_value_errors_only(text, no_broken_lazy_modules):
    try:
        parsed = parse_segment_line(text)
    except ValueError:
        return
    assert parsed is None or len(parsed) == 4


# ---------------------------------------------------------------- PANNs HDF5


def make_panns_h5(path: Path, rows: int = 4, silent=(2,)) -> list[str]:
    """A PANNs packed file: 10 s int16 rows at 32 kHz, bool targets, the attribute."""
    names = [f"Y{s[1]}_{s[2]:.3f}_{s[2] + 10:.3f}.wav" for s in SEGMENTS[:rows]]
    wave = np.zeros((rows, 320000), dtype=np.int16)
    for i in range(rows):
        if i not in silent:
            wave[i] = (tone(10.0, 32000, seed=i) * 32767).astype(np.int16)
    target = np.zeros((rows, 527), dtype=bool)
    target[np.arange(rows), np.arange(rows)] = True
    with h5py.File(path, "w") as h5:
        h5.create_dataset("audio_name", data=[n.encode() for n in names], dtype="S80")
        h5.create_dataset("waveform", data=wave, dtype=np.int16)
        h5.create_dataset("target", data=target, dtype=bool)
        h5.attrs.create("sample_rate", data=32000, dtype=np.int32)
    return [n[:-4] for n in names]


def test_hdf5_dataset_reads_resampled_clips_and_excludes_rows(tmp_path):
    path = tmp_path / "balanced_train.h5"
    names = make_panns_h5(path)
    (tmp_path / "silent.csv").write_text("Index,audio_name\n1,x\n")
    data = audioset_hdf5.AudioSetHDF5(str(path), exclude=str(tmp_path / "silent.csv"))
    assert len(data) == 3
    item = data[0]
    assert item["id"] == names[0] == "Y--PJHxphWEs_30.000_40.000"
    assert item["sig"].shape == (160000,) and item["sig"].dtype.is_floating_point
    assert abs(float(item["sig"].abs().max()) - 0.3) < 0.15
    assert item["target"].shape == (527,) and int(item["target"].argmax()) == 0
    assert data[1]["id"] == names[2]  # row 1 excluded


def test_hdf5_to_shards_then_bad_inputs(tmp_path, capsys):
    path = tmp_path / "eval.h5"
    names = make_panns_h5(path)
    (tmp_path / "silent.csv").write_text("Index\n3\n")
    out = tmp_path / "shards"
    argv = ["to-shards", str(path), str(out), "--exclude", str(tmp_path / "silent.csv")]
    assert audioset_hdf5.main([*argv, "--clips_per_shard", "1"]) == 0
    assert "2 clips" in capsys.readouterr().out
    shards, index = resolve_shards(str(out))
    check_shard_set(str(out), shards, index, 16000, 1.0)
    assert index["clips"] == 2 and index["skipped"] == 1  # row 2 is all zeros
    members = []
    for shard in shards:
        with tarfile.open(shard.path) as tar:
            for member in tar.getmembers():
                samples = decode_clip(tar.extractfile(member).read(), "pcm")
                assert len(samples) == 160000
                members.append(member.name)
    assert sorted(members) == sorted(f"{n}.pcm" for n in names[:2])
    skipped = rows_of(out / "skipped.csv")
    assert skipped[0]["reason"] == "silent (all zeros)" and ":2 " in skipped[0]["file"]
    # the same command again skips the complete shards; other options stop
    stamp = (out / "shard-000000.tar").stat().st_mtime_ns
    assert audioset_hdf5.main([*argv, "--clips_per_shard", "1"]) == 0
    assert (out / "shard-000000.tar").stat().st_mtime_ns == stamp
    assert audioset_hdf5.main([*argv, "--clips_per_shard", "2"]) == 2
    assert "other inputs or options" in capsys.readouterr().err
    # bad inputs: one line each
    (tmp_path / "not.h5").write_text("text")
    for call, text in [
        (lambda: audioset_hdf5.read_header(str(tmp_path / "not.h5")), "cannot open"),
        (lambda: audioset_hdf5.read_header(str(tmp_path / "no.h5")), "not found"),
        (
            lambda: audioset_hdf5.hdf5_to_shards([str(path)] * 2, str(out), ["a"]),
            "1 exclusion CSVs for 2",
        ),
    ]:
        one_line_error(call, text)
    with h5py.File(tmp_path / "partial.h5", "w") as h5:
        h5.create_dataset("waveform", data=np.zeros((1, 10), np.int16))
    one_line_error(
        lambda: audioset_hdf5.read_header(str(tmp_path / "partial.h5")),
        "no dataset 'audio_name'",
    )
    assert audioset_hdf5.main(["info", str(path)]) == 0
    assert "4 clips of 10 s at 32000 Hz, 527 classes" in capsys.readouterr().out


# ---------------------------------------------------------------- Libri-Light

LIBRILIGHT = [  # (subset, speaker, book, file)
    ("small", "100", "sea_fairies_0812_librivox_64kb_mp3", "01_baum_sea_fairies_64kb"),
    ("small", "100", "sea_fairies_0812_librivox_64kb_mp3", "02_baum_sea_fairies_64kb"),
    ("small", "1001", "dead_men_tell_no_tales_1002_librivox", "01_hornung"),
    ("small", "1012", "tom_swift_librivox", "tomswift_01_appleton"),
    ("medium", "2000", "emma_librivox_64kb_mp3", "emma_01_austen_64kb"),
]


def make_librilight(root: Path) -> Path:
    for number, (subset, spk, book, name) in enumerate(LIBRILIGHT):
        folder = root / subset / spk / book
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"{name}.flac", tone(3.0 + number % 2, seed=number), RATE)
        meta = {"speaker": spk, "voice_activity": [[0.1, 2.5]], "snr": 12.3}
        (folder / f"{name}.json").write_text(json.dumps(meta))
    book = root / "small" / "1012" / "tom_swift_librivox"
    (book / "tomswift_02_appleton.json").write_text("{}")  # its flac is missing
    (book / "tomswift_03_appleton.flac").write_bytes(b"fLaC" + bytes(64))  # corrupt
    sf.write(root / "small" / "1012" / "stray.flac", tone(2.0), RATE)  # off layout
    return root


def test_librilight_is_prepared_with_a_speaker_split(tmp_path):
    root = make_librilight(tmp_path / "librilight")
    out = prepare_librilight(
        str(root), str(tmp_path / "prep"), valid_fraction=0.2, progress=False
    )
    train, valid = rows_of(out["train_csv"]), rows_of(out["valid_csv"])
    assert len(train) + len(valid) == 5
    assert not {r["spk_id"] for r in train} & {r["spk_id"] for r in valid}
    ids = {r["ID"] for r in train + valid}
    assert (
        "small__100__sea_fairies_0812_librivox_64kb_mp3__01_baum_sea_fairies_64kb"
        in ids
    )
    assert all(r["wav"].startswith("$data_root/") for r in train)
    skipped = reasons(out)
    assert skipped["tomswift_02_appleton.flac"] == (
        "missing (listed in small/1012/tom_swift_librivox/tomswift_02_appleton.json)"
    )
    assert skipped["stray.flac"].startswith("refused: not at small/<speaker>/<book>")
    assert "tomswift_03_appleton.flac" in skipped
    only_small = prepare_librilight(
        str(root), str(tmp_path / "p2"), subsets=["small", "large"], progress=False
    )
    assert only_small["clips"] == 4


def test_librilight_errors_rerun_and_changed_option(tmp_path, monkeypatch):
    root = make_librilight(tmp_path / "librilight")
    one_line_error(
        lambda: prepare_librilight(str(root / "small"), str(tmp_path / "p")),
        "is not the Libri-Light root",
        "expected small/, medium/, large/",
    )
    one_line_error(
        lambda: prepare_librilight(str(root), str(tmp_path / "p"), subsets=["large"]),
        "expected large/",
    )
    save = tmp_path / "prep"
    first = prepare_librilight(str(root), str(save), progress=False)
    stamp = (save / OPTS_FILE).stat().st_mtime_ns
    monkeypatch.setattr(preparation, "check_clips", None)  # any check would fail
    assert prepare_librilight(str(root), str(save), progress=False) == first
    assert (save / OPTS_FILE).stat().st_mtime_ns == stamp
    monkeypatch.undo()
    again = prepare_librilight(str(root), str(save), seed=3, progress=False)
    assert (save / OPTS_FILE).stat().st_mtime_ns != stamp and again["clips"] == 5


@settings(max_examples=60, deadline=None)
@given(
    speakers=st.lists(st.text("0123456789", min_size=1, max_size=5), max_size=40),
    fraction=st.floats(0, 0.99),
    seed=st.integers(0, 10),
)
def test_speaker_split_is_stable_and_never_empty(
    speakers, fraction, seed, no_broken_lazy_modules
):
    chosen = valid_speakers(speakers, fraction, seed)
    distinct = set(speakers)
    assert chosen <= distinct
    if len(distinct) < 2 or fraction == 0:
        assert not chosen
        return
    assert 1 <= len(chosen) < len(distinct)
    # a speaker's side is its own draw, whoever else is there
    drawn = {s for s in distinct if speaker_draw(seed, s) < fraction}
    if drawn and drawn != distinct:
        assert chosen == drawn


# ---------------------------------------------------------------- the recipe

TINY = [
    "--embed_dim=32",
    "--depth=1",
    "--num_heads=4",
    "--predictor_depth=1",
    "--codebook_size=64",
    "--n_mels=32",
    "--crop_seconds=2.0",
    "--batch_size=2",
    "--num_workers=0",
    "--device=cpu",
    "--precision=fp32",
    "--noprogressbar",
    "--debug",
]


def run_pretrain(hparams: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        str(REPO / "recipes" / "pretrain" / "train.py"),
        str(REPO / "hparams" / hparams),
    ]
    return subprocess.run(
        cmd + [*args, *TINY],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "corpus, hparams, make",
    [
        ("audioset", "bestrq2_vit.yaml", make_audioset),
        ("librilight", "bestrq2_vit_speech.yaml", make_librilight),
    ],
)
def test_pretraining_recipe_prepares_the_corpus(corpus, hparams, make, tmp_path):
    root = make(tmp_path / corpus)
    out = tmp_path / "run"
    args = [f"--corpus={corpus}", f"--data_folder={root}", f"--output_folder={out}"]
    proc = run_pretrain(hparams, *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "Pretraining finished" in proc.stdout and "DEMO" not in proc.stdout
    prepared = out / "prepared"
    assert (prepared / "train.csv").is_file() and (prepared / OPTS_FILE).is_file()
    record = json.loads((out / "run_fingerprint.json").read_text())
    assert record["data"]["kind"] == "manifests"
    assert str(prepared / "train.csv") in json.dumps(record["data"]["where"])
    # decoded by the preparer: the recipe does not decode them again
    assert not (out / "manifests" / "train_checked.csv").exists()


def test_pretraining_recipe_streams_shards_of_panns_hdf5(tmp_path):
    path = tmp_path / "balanced_train.h5"
    make_panns_h5(path, rows=4, silent=())
    audioset_hdf5.hdf5_to_shards(str(path), str(tmp_path / "shards"), progress=False)
    out = tmp_path / "run"
    proc = run_pretrain(
        "bestrq2_vit.yaml",
        f"--train_shards={tmp_path / 'shards'}",
        f"--output_folder={out}",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "Pretraining finished" in proc.stdout
    record = json.loads((out / "run_fingerprint.json").read_text())
    assert record["data"]["kind"] == "shards" and record["data"]["files"] == 4


def test_pretraining_recipe_corpus_errors(tmp_path):
    proc = run_pretrain(
        "bestrq2_vit.yaml",
        "--corpus=audioset",
        f"--data_folder={tmp_path}",
        f"--output_folder={tmp_path / 'run'}",
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "expected class_labels_indices.csv" in last


# ---------------------------------------------------------------- the benchmark


def test_bench_prepare_smoke():
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_prepare.py"),
         "--clips", "8", "--seconds", "1", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record["clips"] == 8 and record["cpu_capability"]
    for key in ("decode_s", "header_s", "rerun_s"):
        assert record[key] > 0, key
    assert record["per_1000_clips_s"]["decode"] > 0
