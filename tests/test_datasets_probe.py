"""Tests of the probe-suite corpus preparers and of ``tasks_public.yaml``.

Each corpus gets a fixture in its exact official layout (real file names and
metadata formats, generated audio of 1 s), is prepared, and shows its one-line
error or its ``skipped.csv`` entry for a wrong root, a missing metadata file, a
missing clip, a corrupt clip and a label outside the vocabulary; a second run is
skipped and a changed option prepares again. Then the probe recipe reads them
all through ``tasks_public.yaml`` and ``--data_folders`` in one ``--debug`` run,
and the real ESC-50 sample of ``../shared/data/layouts/esc50`` is prepared and
probed (skipped when absent).
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from bestrq2_lobes.datasets import cremad, fsd50k, get_preparer, preparation, voxceleb1
from bestrq2_lobes.datasets.preparation import PrepareError

REPO = Path(__file__).resolve().parents[1]
RECIPE_DIR = REPO / "recipes" / "probe"
LAYOUTS = REPO.parent / "shared" / "data" / "layouts"
TINY = ["--embed_dim=32", "--depth=1", "--num_heads=4", "--n_mels=32"]
RUN = ["--device=cpu", "--noprogressbar", "--precision=fp32"]

if str(RECIPE_DIR) not in sys.path:
    sys.path.insert(0, str(RECIPE_DIR))

import probe_corpora  # noqa: E402
import probe_tasks  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_broken_lazy_modules")


def tone(path: Path, freq: float, seconds: float = 1.0, rate: int = 16000) -> str:
    """Writes a sine tone; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)
    return str(path)


def write_csv(path: Path, header: list[str] | None, rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fout:
        writer = csv.writer(fout)
        if header:
            writer.writerow(header)
        writer.writerows(rows)


def read_rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fin:
        return list(csv.DictReader(fin))


# ---------------------------------------------------------------- layouts
# Each builder writes the corpus in its official layout and returns the paths
# (relative to the root) the tests break: a metadata file, a listed clip, and a
# function that puts a label outside the vocabulary (returns the clip's name).


def build_esc50(root: Path) -> dict:
    rows = []
    for fold in range(1, 6):
        for take, (target, category, freq) in enumerate(
            [(0, "dog", 300), (1, "rooster", 2000)]
        ):
            name = f"{fold}-{100032 + 10 * fold + take}-A-{target}.wav"
            tone(root / "audio" / name, freq + fold, rate=44100)
            rows.append([name, fold, target, category, "True", 100032, "A"])
    header = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
    write_csv(root / "meta" / "esc50.csv", header, rows)

    def bad_label():
        meta = root / "meta" / "esc50.csv"
        text = meta.read_text().replace(
            "1-100042-A-0.wav,1,0,dog", "1-100042-A-0.wav,1,0,unicorn"
        )
        meta.write_text(text)
        return "1-100042-A-0.wav"

    return {
        "meta": "meta/esc50.csv",
        "clip": "audio/2-100052-A-0.wav",
        "bad_label": bad_label,
        "splits": [f"fold{f}" for f in range(1, 6)],
        "option": {"esc10": True},
    }


US8K_HEADER = "slice_file_name,fsID,start,end,salience,fold,classID,class".split(",")


def build_urbansound8k(root: Path) -> dict:
    rows = []
    for fold in range(1, 11):
        for class_id, label, freq in [(3, "dog_bark", 400), (8, "siren", 1500)]:
            fs_id = 100000 + 10 * fold + class_id
            name = f"{fs_id}-{class_id}-0-{fold % 3}.wav"
            tone(root / "audio" / f"fold{fold}" / name, freq, rate=22050)
            rows.append([name, fs_id, 0.0, 1.0, 1 + fold % 2, fold, class_id, label])
    write_csv(root / "metadata" / "UrbanSound8K.csv", US8K_HEADER, rows)

    def bad_label():
        meta = root / "metadata" / "UrbanSound8K.csv"
        text = meta.read_text().replace(",1,3,dog_bark", ",1,3,gun_shots", 1)
        meta.write_text(text)
        return "100013-3-0-1.wav"

    return {
        "meta": "metadata/UrbanSound8K.csv",
        "clip": "audio/fold2/100028-8-0-2.wav",
        "bad_label": bad_label,
        "splits": [f"fold{f}" for f in range(1, 11)],
        "option": {"min_seconds": 0.2},
    }


def build_speech_commands(root: Path) -> dict:
    lists = {"validation_list.txt": [], "testing_list.txt": []}
    for w, (word, freq) in enumerate([("yes", 300), ("no", 900), ("bed", 2500)]):
        for i in range(4):
            name = f"{0x0A1B2C3D + 97 * i + w:08x}_nohash_{i % 2}.wav"
            tone(root / word / name, freq + 20 * i)
            if i == 2:
                lists["validation_list.txt"].append(f"{word}/{name}")
            if i == 3:
                lists["testing_list.txt"].append(f"{word}/{name}")
    for name, entries in lists.items():
        (root / name).write_text("\n".join(entries) + "\n")
    tone(root / "_background_noise_" / "white_noise.wav", 50, seconds=3.0)
    (root / "LICENSE").write_text("CC BY 4.0\n")
    (root / "README.md").write_text("Speech Commands\n")

    def bad_label():
        tone(root / "hello" / "0a1b2c3d_nohash_0.wav", 700)
        return "0a1b2c3d_nohash_0.wav"

    return {
        "meta": "testing_list.txt",
        "clip": lists["testing_list.txt"][0],
        "bad_label": bad_label,
        "splits": ["train", "valid", "test"],
        "option": {"task": "commands11"},
    }


def build_voxceleb1(root: Path) -> dict:
    lines = []
    speakers = [("id10001", "1zcIwhmdeo4", "vox1_dev_wav", 250)]
    speakers += [("id10002", "0_laIeN-Q44", "vox1_dev_wav", 800)]
    speakers += [("id10270", "5r0dWxy17C8", "vox1_test_wav", 2000)]
    for speaker, video, archive, freq in speakers:
        for n, code in enumerate([1, 1, 2, 3], start=1):
            rel = f"{speaker}/{video}/{n:05d}.wav"
            tone(root / archive / "wav" / rel, freq + 10 * n)
            lines.append(f"{code} {rel}")
    (root / "iden_split.txt").write_text("\n".join(lines) + "\n")

    def bad_label():
        rel = "spk_01/abcdefghijk/00001.wav"
        tone(root / "vox1_dev_wav" / "wav" / rel, 500)
        with open(root / "iden_split.txt", "a") as fout:
            fout.write(f"1 {rel}\n")
        return "00001.wav"

    return {
        "meta": "iden_split.txt",
        "clip": "vox1_test_wav/wav/id10270/5r0dWxy17C8/00004.wav",
        "bad_label": bad_label,
        "splits": ["train", "valid", "test"],
        "option": {"min_seconds": 0.2},
    }


def build_cremad(root: Path) -> dict:
    actors = [str(a) for a in range(1001, 1007)]
    for a, actor in enumerate(actors):
        for emotion, freq in [("ANG", 350), ("HAP", 1800)]:
            for sentence in ("DFA", "IEO"):
                level = "XX" if sentence == "DFA" else "HI"
                tone(
                    root / "AudioWAV" / f"{actor}_{sentence}_{emotion}_{level}.wav",
                    freq + 15 * a,
                )
    rows = [
        [actor, 30 + i, "Male" if i % 2 else "Female", "Caucasian", "Not Hispanic"]
        for i, actor in enumerate(actors)
    ]
    write_csv(
        root / "VideoDemographics.csv",
        ["ActorID", "Age", "Sex", "Race", "Ethnicity"],
        rows,
    )

    def bad_label():
        tone(root / "AudioWAV" / "1001_DFA_XYZ_XX.wav", 600)
        return "1001_DFA_XYZ_XX.wav"

    return {
        "meta": "VideoDemographics.csv",
        "clip": "AudioWAV/1002_DFA_ANG_XX.wav",
        "bad_label": bad_label,
        "splits": ["train", "valid", "test"],
        "option": {"seed": 7},
        "missing_is_link": True,  # clips are found by scanning, not listed
    }


NSYNTH_NOTES = [
    ("bass_synthetic_033", "bass", 0, "synthetic", 2, 22),
    ("guitar_acoustic_010", "guitar", 3, "acoustic", 0, 60),
]


def build_nsynth(root: Path) -> dict:
    for s, split in enumerate(("train", "valid", "test")):
        examples = {}
        for k, (instrument, family, fam_id, source, src_id, pitch) in enumerate(
            NSYNTH_NOTES
        ):
            for velocity in (50, 100) if split == "train" else (75,):
                note = f"{instrument}-{pitch + s:03d}-{velocity:03d}"
                tone(
                    root / f"nsynth-{split}" / "audio" / f"{note}.wav",
                    110 * 2 ** ((pitch + s - 45) / 12),
                )
                examples[note] = {
                    "note": 100 * k + velocity,
                    "note_str": note,
                    "instrument": 10 * k,
                    "instrument_str": instrument,
                    "pitch": pitch + s,
                    "velocity": velocity,
                    "sample_rate": 16000,
                    "qualities": [0] * 10,
                    "qualities_str": [],
                    "instrument_family": fam_id,
                    "instrument_family_str": family,
                    "instrument_source": src_id,
                    "instrument_source_str": source,
                }
        (root / f"nsynth-{split}" / "examples.json").write_text(
            json.dumps(examples, indent=4)
        )

    def bad_label():
        meta = root / "nsynth-test" / "examples.json"
        examples = json.loads(meta.read_text())
        note = sorted(examples)[0]
        examples[note]["instrument_family_str"] = "theremin"
        meta.write_text(json.dumps(examples))
        return f"{note}.wav"

    return {
        "meta": "nsynth-valid/examples.json",
        "clip": "nsynth-train/audio/guitar_acoustic_010-060-050.wav",
        "bad_label": bad_label,
        "splits": ["train", "valid", "test"],
        "option": {"label": "instrument_source"},
    }


FSD_VOCAB = [
    (0, "Animal", "/m/0jbk"),
    (1, "Bark", "/m/05tny_"),
    (2, "Dog", "/m/0bt9lr"),
    (3, "Guitar", "/m/0342h"),
    (4, "Music", "/m/04rlf"),
]
FSD_CLIPS = [
    ("Bark,Dog,Animal", "/m/05tny_,/m/0bt9lr,/m/0jbk", 500),
    ("Guitar,Music", "/m/0342h,/m/04rlf", 1500),
]


def build_fsd50k(root: Path) -> dict:
    gt = root / "FSD50K.ground_truth"
    write_csv(gt / "vocabulary.csv", None, [list(v) for v in FSD_VOCAB])
    dev, evl = [], []
    for i in range(6):
        labels, mids, freq = FSD_CLIPS[i % 2]
        fname = 64760 + i
        tone(root / "FSD50K.dev_audio" / f"{fname}.wav", freq + i, rate=44100)
        dev.append([fname, labels, mids, "val" if i >= 4 else "train"])
        tone(root / "FSD50K.eval_audio" / f"{37199 + i}.wav", freq - i, rate=44100)
        evl.append([37199 + i, labels, mids])
    write_csv(gt / "dev.csv", ["fname", "labels", "mids", "split"], dev)
    write_csv(gt / "eval.csv", ["fname", "labels", "mids"], evl)

    def bad_label():
        meta = gt / "eval.csv"
        rows = meta.read_text().splitlines()
        rows[1] = '37199,"Unicorn,Animal","/m/0xxx,/m/0jbk"'
        meta.write_text("\n".join(rows) + "\n")
        return "37199.wav"

    return {
        "meta": "FSD50K.ground_truth/vocabulary.csv",
        "clip": "FSD50K.dev_audio/64761.wav",
        "bad_label": bad_label,
        "splits": ["train", "valid", "test"],
        "option": {"min_seconds": 0.2},
    }


BUILDERS = {
    "esc50": build_esc50,
    "urbansound8k": build_urbansound8k,
    "speech_commands": build_speech_commands,
    "voxceleb1": build_voxceleb1,
    "cremad": build_cremad,
    "nsynth": build_nsynth,
    "fsd50k": build_fsd50k,
}
CORPORA = list(BUILDERS)


def prepare(corpus, root, save, **options):
    return get_preparer(corpus)(str(root), str(save), jobs=1, progress=False, **options)


def skipped_reasons(outputs) -> dict:
    return {
        os.path.basename(r["file"]): r["reason"]
        for r in read_rows(outputs["skipped_csv"])
    }


# ---------------------------------------------------------------- preparers


@pytest.mark.parametrize("corpus", CORPORA)
def test_official_layout_prepares(corpus, tmp_path):
    root = tmp_path / "root"
    spec = BUILDERS[corpus](root)
    out = prepare(corpus, root, tmp_path / "save")
    splits = sorted(k[:-4] for k in out if k.endswith("_csv") and k != "skipped_csv")
    assert splits == sorted(spec["splits"])
    assert out["skipped"] == 0 and out["data_root"] == str(root)
    rows = [r for s in splits for r in read_rows(out[f"{s}_csv"])]
    assert out["clips"] == len(rows) and len({r["ID"] for r in rows}) == len(rows)
    for row in rows:
        assert row["wav"].startswith("$data_root/")
        assert (root / row["wav"][len("$data_root/") :]).is_file()
        assert float(row["duration"]) == pytest.approx(1.0, abs=1e-3)
        label = row.get("label", row.get("labels"))
        assert label


@pytest.mark.parametrize("corpus", CORPORA)
def test_wrong_root_and_missing_metadata_are_one_line(corpus, tmp_path):
    root = tmp_path / "root"
    spec = BUILDERS[corpus](root)
    with pytest.raises(PrepareError) as err:
        prepare(corpus, root.parent, tmp_path / "save")  # one level too high
    assert "is not the" in str(err.value) and "root: expected" in str(err.value)
    assert "\n" not in str(err.value)
    os.remove(root / spec["meta"])
    with pytest.raises(PrepareError) as err:
        prepare(corpus, root, tmp_path / "save")
    assert f"expected {spec['meta']} in it" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("corpus", CORPORA)
def test_missing_corrupt_and_unknown_label_are_skipped(corpus, tmp_path):
    root = tmp_path / "root"
    spec = BUILDERS[corpus](root)
    clip = root / spec["clip"]
    os.remove(clip)
    if spec.get("missing_is_link"):
        os.symlink(tmp_path / "gone.wav", clip)  # a dangling link (git-annex)
    corrupt = sorted(
        p
        for p in root.rglob("*.wav")
        if p != clip and "_background_noise_" not in str(p)
    )[-1]
    corrupt.write_bytes(b"RIFF\x00\x00not really a wave file")
    bad = spec["bad_label"]()
    out = prepare(corpus, root, tmp_path / "save")
    reasons = skipped_reasons(out)
    assert reasons[clip.name].startswith(("missing (listed in", "broken symbolic"))
    assert (
        "cannot open as audio" in reasons[corrupt.name]
        or "truncated" in (reasons[corrupt.name])
    )
    assert reasons[bad].startswith("label "), reasons[bad]
    counts = preparation.reason_counts(read_rows(out["skipped_csv"]))
    assert counts == {"missing": 1, "unreadable": 1, "refused": 1}
    kept = {
        r["wav"].replace("$data_root", str(root))
        for k, v in out.items()
        if k.endswith("_csv") and k != "skipped_csv"
        for r in read_rows(v)
    }
    assert str(clip) not in kept and str(corrupt) not in kept and kept


@pytest.mark.parametrize("corpus", CORPORA)
def test_rerun_is_skipped_and_a_changed_option_prepares_again(
    corpus, tmp_path, monkeypatch
):
    root = tmp_path / "root"
    spec = BUILDERS[corpus](root)
    save = tmp_path / "save"
    first = prepare(corpus, root, save)
    opts = save / preparation.OPTS_FILE
    stamp = opts.stat().st_mtime_ns

    def no_check(*args, **kwargs):
        raise AssertionError("a skipped rerun checks no clip")

    monkeypatch.setattr(preparation, "check_clips", no_check)
    assert prepare(corpus, root, save) == first
    assert opts.stat().st_mtime_ns == stamp
    monkeypatch.undo()
    again = prepare(corpus, root, save, **spec["option"])
    assert opts.stat().st_mtime_ns != stamp
    record = json.loads(opts.read_text())["record"]["options"]
    for key, value in spec["option"].items():
        assert record[key] == value
    assert prepare(corpus, root, save, skip_prep=True) == again


def test_option_effects(tmp_path):
    """What the corpus options do, on the fixtures."""
    esc = tmp_path / "esc"
    build_esc50(esc)
    meta = esc / "meta" / "esc50.csv"
    meta.write_text(meta.read_text().replace(",rooster,True,", ",rooster,False,"))
    out = prepare("esc50", esc, tmp_path / "s1", esc10=True)
    labels = {r["label"] for f in range(1, 6) for r in read_rows(out[f"fold{f}_csv"])}
    assert labels == {"dog"}

    sc = tmp_path / "sc"
    build_speech_commands(sc)
    out = prepare("speech_commands", sc, tmp_path / "s2", task="commands11")
    labels = {r["label"] for r in read_rows(out["train_csv"])}
    assert labels == {"yes", "no", "_unknown_"}
    test = read_rows(out["test_csv"])
    assert {r["wav"].split("/", 1)[1] for r in test} == set(
        (sc / "testing_list.txt").read_text().split()
    )
    with pytest.raises(PrepareError, match="task must be one of"):
        prepare("speech_commands", sc, tmp_path / "s3", task="words12")

    crema = tmp_path / "crema"
    build_cremad(crema)
    out = prepare("cremad", crema, tmp_path / "s4")
    speakers = {
        s: {r["speaker"] for r in read_rows(out[f"{s}_csv"])}
        for s in ("train", "valid", "test")
    }
    assert [len(speakers[s]) for s in ("train", "valid", "test")] == [4, 1, 1]
    assert not speakers["train"] & (speakers["valid"] | speakers["test"])
    by_clip = prepare(
        "cremad", crema, tmp_path / "s5", split_by="clip", actors_file=None
    )
    assert [
        len(read_rows(by_clip[f"{s}_csv"])) for s in ("train", "valid", "test")
    ] == list(cremad.split_sizes(24))

    nsynth = tmp_path / "nsynth"
    build_nsynth(nsynth)
    out = prepare("nsynth", nsynth, tmp_path / "s6", splits=["valid", "test"])
    assert "train_csv" not in out and "test_csv" in out
    labels = {r["label"] for r in read_rows(out["test_csv"])}
    assert labels == {"bass", "guitar"}

    fsd = tmp_path / "fsd"
    build_fsd50k(fsd)
    out = prepare("fsd50k", fsd, tmp_path / "s7")
    first = read_rows(out["train_csv"])[0]
    assert first["ID"] == "dev_64760" and first["labels"] == "Bark Dog Animal"


def test_voxceleb1_merged_wav_folder_and_split_file_elsewhere(tmp_path):
    root = tmp_path / "vox"
    build_voxceleb1(root)
    merged = tmp_path / "merged"
    (merged / "wav").mkdir(parents=True)
    for archive in ("vox1_dev_wav", "vox1_test_wav"):
        for speaker in (root / archive / "wav").iterdir():
            os.rename(speaker, merged / "wav" / speaker.name)
    os.rename(root / "iden_split.txt", tmp_path / "iden_split.txt")
    out = prepare(
        "voxceleb1",
        merged,
        tmp_path / "save",
        split_file=str(tmp_path / "iden_split.txt"),
    )
    assert out["clips"] == 12 and out["skipped"] == 0
    assert {r["label"] for r in read_rows(out["test_csv"])} == {
        "id10001",
        "id10002",
        "id10270",
    }
    with pytest.raises(PrepareError, match="expected vox1_dev_wav/wav/"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "iden_split.txt").write_text("1 id10001/a/00001.wav\n")
        prepare("voxceleb1", tmp_path / "empty", tmp_path / "save2")


def test_shell_command(tmp_path):
    root = tmp_path / "us8k"
    build_urbansound8k(root)
    cmd = [
        sys.executable,
        "-m",
        "bestrq2_lobes.datasets",
        "prepare",
        "urbansound8k",
        str(root),
        str(tmp_path / "save"),
        "--check",
        "header",
        "--jobs",
        "1",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "fold10_csv: " in proc.stdout
    bad = subprocess.run(
        cmd[:5] + [str(tmp_path), str(tmp_path / "s")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().endswith(
        "expected metadata/UrbanSound8K.csv in it "
        "(the folder UrbanSound8K/ of the official "
        "archive)"
    )


# ---------------------------------------------------------------- parsers

WORD = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-",
    min_size=1,
    max_size=12,
)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1000, 9999),
    st.sampled_from(["DFA", "IEO", "WSI"]),
    st.sampled_from(cremad.EMOTIONS + ("XYZ",)),
    st.sampled_from(["LO", "XX"]),
    st.text(max_size=3),
)
def test_cremad_names(actor, sentence, emotion, level, junk):
    name = f"{actor}_{sentence}_{emotion}_{level}.wav"
    assert cremad.parse_name(name) == (str(actor), sentence, emotion, level)
    assert (
        cremad.parse_name(junk + name if junk.strip("0123456789") else "x" + name)
        is None
    )


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from("123"),
    st.integers(10000, 99999),
    WORD,
    st.integers(1, 999),
    st.sampled_from([" ", "\t", "  "]),
)
def test_voxceleb1_split_lines(code, speaker, video, n, sep):
    rel = f"id{speaker}/{video}/{n:05d}.wav"
    assert voxceleb1.parse_split_line(f"{code}{sep}{rel}\n") == (code, rel)
    assert voxceleb1.is_speaker(f"id{speaker}")
    assert voxceleb1.parse_split_line(f"{code} {rel} extra") is None


@settings(max_examples=80, deadline=None)
@given(st.lists(WORD, min_size=1, max_size=6), st.sampled_from([",", ", ", " ,"]))
def test_fsd50k_label_lists(labels, sep):
    assert fsd50k.split_labels(sep.join(labels) + ",") == labels


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(
        WORD,
        st.lists(WORD, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts)),
        min_size=1,
        max_size=4,
    )
)
def test_data_folders_forms(folders):
    as_words = " ".join(f"{k} {v}" for k, v in folders.items())  # SpeechBrain's
    assert probe_corpora.parse_data_folders(as_words) == folders
    assert (
        probe_corpora.parse_data_folders([f"{k}={v}" for k, v in folders.items()])
        == folders
    )
    assert probe_corpora.parse_data_folders(folders) == folders


# ---------------------------------------------------------------- probe suite


def test_task_file_corpus_entries(tmp_path):
    tasks = probe_tasks.load_tasks(RECIPE_DIR / "tasks_public.yaml")
    by_name = {t.name: t for t in tasks}
    assert {t.domain for t in tasks} == {"speech", "music", "environment"}
    assert set(CORPORA) <= {t.corpus for t in tasks}
    assert by_name["esc50"].folds == [f"fold{i}" for i in range(1, 6)]
    assert len(by_name["urbansound8k"].folds) == 10
    assert by_name["fsd50k"].metric == "map" and by_name["nsynth"].folds is None
    assert probe_tasks.load_tasks(RECIPE_DIR / "tasks_shared.yaml")[0].corpus is None
    base = "- {name: a, domain: d, label_column: l, type: multiclass, "
    bad = {
        "corpus: esc50, train_csv: x.csv}": "either corpus or train_csv",
        "corpus: esc50, folds: 3, splits: {train: a}}": "either folds or splits",
        "corpus: esc50, folds: 1}": "at least 2 distinct folds",
        "corpus: esc50, splits: {dev: a}}": "splits must map",
        "folds: 3, train_csv: a.csv, test_csv: b.csv}": "need a 'corpus'",
        "corpus: esc50, corpus_options: [1]}": "corpus_options must be a mapping",
    }
    for tail, message in bad.items():
        path = tmp_path / "t.yaml"
        path.write_text(base + tail + "\n")
        with pytest.raises(probe_tasks.TaskError, match=message):
            probe_tasks.load_tasks(path)
    hparams = {"data_folders": "gtzn /d", "task_data_folder": str(tmp_path / "td")}
    with pytest.raises(probe_tasks.TaskError, match="no task or corpus 'gtzn'"):
        probe_corpora.resolve_corpora(tasks, hparams)
    with pytest.raises(probe_tasks.TaskError, match="no task to score"):
        probe_corpora.resolve_corpora(tasks, {**hparams, "data_folders": None})


def run_probe(*args, timeout=300):
    cmd = [
        sys.executable,
        str(RECIPE_DIR / "train.py"),
        str(REPO / "hparams" / "probe.yaml"),
        *args,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def test_public_tasks_on_every_fixture_one_command(tmp_path):
    """The one command: each fixture corpus prepared and probed, per domain."""
    words = []
    for corpus, build in BUILDERS.items():
        build(tmp_path / corpus)
        words.append(f"{corpus}={tmp_path / corpus}")
    out = tmp_path / "out"
    proc = run_probe(
        f"--tasks={RECIPE_DIR / 'tasks_public.yaml'}",
        "--data_folders",
        *words,
        f"--output_folder={out}",
        "--debug",
        *TINY,
        *RUN,
    )
    results = json.loads((out / "results.json").read_text())
    for corpus in CORPORA:
        assert 0.0 <= results[f"{corpus}_linear"] <= 1.0
        assert (out / "task_data" / corpus / "prepared" / "prepare_opts.json").is_file()
    for domain in ("speech", "music", "environment"):
        assert f"domain_{domain}_linear" in results
    esc = results["tasks"]["esc50"]
    assert esc["protocol"] == "5-fold" and sorted(esc["folds"]) == [
        f"fold{i}" for i in range(1, 6)
    ]
    assert esc["linear"] == pytest.approx(
        np.mean([f["linear"] for f in esc["folds"].values()])
    )
    assert len(results["tasks"]["urbansound8k"]["folds"]) == 10
    assert sorted(
        p.name for p in (out / "embeddings" / "urbansound8k").iterdir()
    ) == sorted(f"fold{i}.pt" for i in range(1, 11))  # once per clip, not per fold
    skipped = [line for line in proc.stdout.splitlines() if ": skipped," in line]
    assert [line.split(":")[0] for line in skipped] == ["gtzan", "magnatagatune"]
    assert "Probe suite finished: 7 tasks" in proc.stdout
    table = (out / "results.md").read_text()
    assert "| esc50 (5-fold) |" in table and "Not scored: gtzan" in table


@pytest.mark.skipif(not (LAYOUTS / "esc50").is_dir(), reason="no shared ESC-50 sample")
def test_real_esc50_sample_prepares(tmp_path):
    out = prepare("esc50", LAYOUTS / "esc50", tmp_path / "save")
    assert out["clips"] == 4 and out["skipped"] == 0
    assert sorted(k for k in out if k.startswith("fold")) == [
        "fold1_csv",
        "fold2_csv",
        "fold3_csv",
        "fold5_csv",
    ]
    row = read_rows(out["fold1_csv"])[0]
    assert row == {
        "ID": "1-100032-A-0",
        "duration": "5.0",
        "wav": "$data_root/audio/1-100032-A-0.wav",
        "label": "dog",
        "fold": "1",
    }


@pytest.mark.skipif(not (LAYOUTS / "esc50").is_dir(), reason="no shared ESC-50 sample")
def test_real_esc50_sample_public_probe_table(tmp_path):
    """4 clips in folds 1, 2, 3, 5: fold 4 is skipped, the others still score."""
    out = tmp_path / "real"
    proc = run_probe(
        f"--tasks={RECIPE_DIR / 'tasks_public.yaml'}",
        f"--data_folders=esc50={LAYOUTS / 'esc50'}",
        f"--output_folder={out}",
        "--debug",
        *TINY,
        *RUN,
    )
    assert "esc50/fold4: skipped, the prepared corpus has no clip" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    esc = results["tasks"]["esc50"]
    assert esc["protocol"] == "4-fold" and len(esc["folds"]) == 4
    assert results["overall_linear"] == esc["linear"]
    assert "count as misses" in proc.stdout + proc.stderr  # a class never trained
    assert proc.stdout.count(": skipped, no data") == 8
