"""Tests of the downstream corpus preparers and of their recipes.

LibriSpeech (ASR, and unlabelled pretraining), MagnaTagATune and GTZAN (music
tagging), DESED and URBAN-SED (SED): each gets a fixture in its exact official
layout (real file names and metadata formats, generated audio of 1-2 s), is
prepared, and shows its one-line error or its ``skipped.csv`` entry for a
wrong root, a missing metadata file, a missing clip, a corrupt clip and a label
outside the vocabulary; a second run is skipped and a changed option prepares
again. Then each recipe reads its corpus through ``hparams/<recipe>_<corpus>
.yaml`` and ``--data_folder`` in a ``--debug`` run with a tiny random encoder,
and the real DESED metadata of ``../shared/data/layouts/desed`` (no audio) is
prepared (skipped when absent).
"""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from bestrq2_lobes.datasets import (
    desed,
    get_preparer,
    gtzan,
    librispeech,
    magnatagatune,
    preparation,
    urbansed,
)
from bestrq2_lobes.datasets.preparation import PrepareError

REPO = Path(__file__).resolve().parents[1]
LAYOUTS = REPO.parent / "shared" / "data" / "layouts"
TINY = ["--embed_dim=32", "--depth=1", "--num_heads=4", "--n_mels=32"]
RUN = ["--device=cpu", "--noprogressbar", "--precision=fp32", "--num_workers=0"]
SR = 16000

pytestmark = pytest.mark.usefixtures("no_broken_lazy_modules")


def tone(path: Path, freq: float, seconds: float = 1.0, rate: int = SR, **kw) -> str:
    """Writes a sine tone with a little noise; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(int(freq))
    wav = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.shape)
    sf.write(path, wav.astype(np.float32), rate, **kw)
    return str(path)


def read_rows(path, delimiter=",") -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fin:
        return list(csv.DictReader(fin, delimiter=delimiter))


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


# ---------------------------------------------------------------- layouts
# Each builder writes the corpus in its official layout and returns what the
# tests break: the metadata path (and the name the error gives), a listed clip,
# a clip to corrupt, a function that puts a label outside the vocabulary
# (returns the clip's file name), the splits and an option that changes.

LS_WORDS = "A MAN SAID TO THE UNIVERSE SIR I EXIST".split()
LS_CHAPTERS = {
    "train-clean-100": [("19", "198", 4), ("26", "495", 4)],
    "dev-clean": [("84", "121123", 3)],
    "test-clean": [("1089", "134686", 3)],
}


def build_librispeech(root: Path) -> dict:
    for split, chapters in LS_CHAPTERS.items():
        for speaker, chapter, count in chapters:
            folder = root / split / speaker / chapter
            lines = []
            for n in range(count):
                uid = f"{speaker}-{chapter}-{n:04d}"
                words = [LS_WORDS[(n + k + int(speaker)) % 9] for k in range(2 + n % 3)]
                seconds = 1.0 + 0.25 * (n % 3)
                tone(folder / f"{uid}.flac", 200 + 37 * n + int(speaker), seconds)
                lines.append(f"{uid} {' '.join(words)}\n")
            (folder / f"{speaker}-{chapter}.trans.txt").write_text("".join(lines))
    (root / "SPEAKERS.TXT").write_text(";ID  |SEX| SUBSET |MINUTES| NAME\n")

    def bad_label():
        replace_in(
            root / "train-clean-100/26/495/26-495.trans.txt",
            "26-495-0001 ",
            "26-495-0001 NO. 7 ",
        )
        return "26-495-0001.flac"

    return {
        "meta": root / "dev-clean",
        "meta_name": "dev-clean",
        "clip": root / "test-clean/1089/134686/1089-134686-0001.flac",
        "corrupt": root / "train-clean-100/19/198/19-198-0002.flac",
        "bad_label": bad_label,
        "splits": [*LS_CHAPTERS, "train", "valid", "test"],
        "option": {"transcripts": False},
    }


MTT_FOLDERS = "0 3 7 a b c c d e f f 5 9 2 d e".split()
MTT_FILLERS = [f"tag {i}" for i in range(188 - 50)]
MTT_TAGS = [t.replace("_", " ") for t in magnatagatune.TOP50] + MTT_FILLERS


def mtt_name(i: int) -> str:
    folder = MTT_FOLDERS[i]
    return f"{folder}/artist_{i}-album_{i}-{i + 1:02d}-track_{i}-30-59.mp3"


def build_magnatagatune(root: Path) -> dict:
    header = ["clip_id", *MTT_TAGS, "mp3_path"]
    rows = []
    for i in range(len(MTT_FOLDERS)):
        chosen = {(10 * i + k) % 50 for k in range(10)}
        values = ["1" if j in chosen else "0" for j in range(len(MTT_TAGS))]
        rows.append([str(2 + 7 * i), *values, mtt_name(i)])
        tone(root / mtt_name(i), 300 + 40 * i, format="MP3")
    with open(root / "annotations_final.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_ALL)
        writer.writerow(header)
        writer.writerows(rows)

    def bad_label():
        meta = root / "annotations_final.csv"
        lines = meta.read_text().splitlines(keepends=True)
        cells = lines[2].rstrip("\n").split("\t")  # the second clip
        cells[1:-1] = ['"0"'] * 50 + ['"1"'] + ['"0"'] * (len(MTT_FILLERS) - 1)
        lines[2] = "\t".join(cells) + "\n"
        meta.write_text("".join(lines))
        return os.path.basename(mtt_name(1))

    return {
        "meta": root / "annotations_final.csv",
        "meta_name": "annotations_final.csv",
        "clip": root / mtt_name(3),
        "corrupt": root / mtt_name(4),
        "bad_label": bad_label,
        "splits": ["train", "valid", "test"],
        "option": {"top": 10},
    }


def gtzan_stems(genre: str) -> list[str]:
    numbers = [0, 1, 2, 54 if genre == "jazz" else 3]
    return [f"{genre}.{n:05d}" for n in numbers]


def build_gtzan(root: Path) -> dict:
    lists = {"train": [], "valid": [], "test": []}
    for g, genre in enumerate(gtzan.GENRES):
        for k, stem in enumerate(gtzan_stems(genre)):
            tone(
                root / "genres" / genre / f"{stem}.wav",
                150 + 90 * g + 7 * k,
                rate=22050,
            )
            split = "train" if k < 2 else "valid" if k == 2 else "test"
            lists[split].append(f"{genre}/{stem}.wav\n")
    splits = root.parent / "gtzan_splits"
    splits.mkdir(exist_ok=True)
    for split, lines in lists.items():
        (splits / f"{split}_filtered.txt").write_text("".join(lines))

    def bad_label():
        with open(splits / "train_filtered.txt", "a", encoding="utf-8") as fout:
            fout.write("polka/polka.00000.wav\n")
        return "polka.00000.wav"

    return {
        "meta": splits / "test_filtered.txt",
        "meta_name": "test_filtered.txt",
        "clip": root / "genres/rock/rock.00001.wav",
        "corrupt": root / "genres/jazz/jazz.00054.wav",  # the archive's broken one
        "bad_label": bad_label,
        "splits": ["train", "valid", "test"],
        "options": {"split_folder": str(splits)},
        "option": {"split_folder": None, "seed": 3},
    }


DESED_HEADER = "filename\tonset\toffset\tevent_label\n"
DESED_TRAIN = {
    f"{n}.wav": [(0.1 * n, 0.8 + 0.1 * n, c), (1.0, 1.9, "Speech")]
    for n, c in enumerate(["Dog", "Cat", "Dishes", "Dog", "Cat", "Dishes"])
}
DESED_VALID = {
    "Y00pbt6aJV8Y_350.000_360.000.wav": [(0.0, 1.5, "Dog")],
    "Y02sD1KJeoGA_50.000_60.000.wav": [],  # a file with no event
    "Y0bjUq9XMMmQ_30.000_40.000.wav": [(0.5, 1.2, "Speech"), (1.0, 2.0, "Cat")],
}
DESED_TEST = {
    "1Ro0FgMWTUE_120_130.wav": [(0.0, 1.0, "Speech"), (1.2, 2.0, "Dishes")],
    "3ZDhgn1yLs8_30_40.wav": [(0.2, 1.8, "Dog")],
    "5K0Q0PvH2Zo_0_10.wav": [(0.0, 2.0, "Cat")],
}


def write_strong(path: Path, clips: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [DESED_HEADER]
    for name, events in clips.items():
        if not events:
            lines.append(f"{name}\t\t\t\n")
        for onset, offset, label in events:
            lines.append(f"{name}\t{onset:.3f}\t{offset:.3f}\t{label}\n")
    path.write_text("".join(lines))


def build_desed(root: Path) -> dict:
    sets = [
        (
            "audio/train/synthetic21_train/soundscapes",
            "metadata/train/synthetic21_train/soundscapes.tsv",
            DESED_TRAIN,
        ),
        (
            "audio/validation/validation",
            "metadata/validation/validation.tsv",
            DESED_VALID,
        ),
        ("audio/eval/public", "metadata/eval/public.tsv", DESED_TEST),
    ]
    for i, (audio, tsv, clips) in enumerate(sets):
        for k, name in enumerate(clips):
            tone(root / audio / name, 200 + 300 * i + 50 * k, seconds=2.0)
        write_strong(root / tsv, clips)

    def bad_label():
        replace_in(
            root / "metadata/validation/validation.tsv",
            "1.000\t2.000\tCat",
            "1.000\t2.000\tHorse",
        )
        return "Y0bjUq9XMMmQ_30.000_40.000.wav"

    return {
        "meta": root / "metadata/eval/public.tsv",
        "meta_name": "metadata/eval/public.tsv",
        "clip": root / "audio/eval/public/3ZDhgn1yLs8_30_40.wav",
        "corrupt": root / "audio/train/synthetic21_train/soundscapes/4.wav",
        "bad_label": bad_label,
        "splits": ["train", "valid", "test"],
        "option": {"valid_set": None},
    }


URBANSED = {
    "train": [
        ("bimodal", ["dog_bark", "siren"]),
        ("uniform", ["siren", "car_horn"]),
        ("bimodal", ["car_horn"]),
        ("uniform", ["dog_bark", "car_horn"]),
    ],
    "validate": [("bimodal", ["siren"]), ("uniform", ["dog_bark"])],
    "test": [("bimodal", ["car_horn", "siren"]), ("uniform", ["dog_bark"])],
}


def build_urbansed(root: Path) -> dict:
    for s, (split, clips) in enumerate(URBANSED.items()):
        for n, (dist, labels) in enumerate(clips):
            stem = f"soundscape_{split}_{dist}{n}"
            tone(
                root / "audio" / split / f"{stem}.wav",
                250 + 200 * s + 60 * n,
                2.0,
                44100,
            )
            notes = root / "annotations" / split
            notes.mkdir(parents=True, exist_ok=True)
            lines = [
                f"{0.3 * k:.6f}\t{0.3 * k + 1.2:.6f}\t{label}\n"
                for k, label in enumerate(labels)
            ]
            (notes / f"{stem}.txt").write_text("".join(lines))
            (notes / f"{stem}.jams").write_text(
                '{"annotations": [], "file_metadata": {}}'
            )

    def bad_label():
        replace_in(
            root / "annotations/train/soundscape_train_uniform1.txt",
            "car_horn",
            "cat_meow",
        )
        return "soundscape_train_uniform1.wav"

    return {
        "meta": root / "annotations/validate",
        "meta_name": "annotations/validate",
        "clip": root / "audio/test/soundscape_test_uniform1.wav",
        "corrupt": root / "audio/train/soundscape_train_bimodal2.wav",
        "bad_label": bad_label,
        "splits": ["train", "valid", "test"],
        "option": {"splits": ["train", "test"]},
    }


BUILDERS = {
    "librispeech": build_librispeech,
    "magnatagatune": build_magnatagatune,
    "gtzan": build_gtzan,
    "desed": build_desed,
    "urbansed": build_urbansed,
}
CORPORA = list(BUILDERS)


def prepare(corpus, root, save, spec=None, **options):
    options = {**((spec or {}).get("options") or {}), **options}
    return get_preparer(corpus)(str(root), str(save), jobs=1, progress=False, **options)


def skipped_reasons(outputs) -> dict:
    return {
        os.path.basename(r["file"]): r["reason"]
        for r in read_rows(outputs["skipped_csv"])
    }


def split_keys(outputs) -> list[str]:
    return sorted(
        k[: -len("_csv")] for k in outputs if k.endswith("_csv") and k != "skipped_csv"
    )


# ---------------------------------------------------------------- preparers


@pytest.mark.parametrize("corpus", CORPORA)
def test_official_layout_prepares(corpus, tmp_path):
    root = tmp_path / "root"
    spec = BUILDERS[corpus](root)
    out = prepare(corpus, root, tmp_path / "save", spec)
    assert split_keys(out) == sorted(spec["splits"])
    assert out["skipped"] == 0 and out["data_root"] == str(root)
    for split in split_keys(out):
        rows = read_rows(out[f"{split}_csv"])
        assert rows and len({r["ID"] for r in rows}) == len(rows)
        for row in rows:
            assert row["wav"].startswith("$data_root/")
            assert (root / row["wav"][len("$data_root/") :]).is_file()
            assert 0.9 < float(row["duration"]) < 2.2
    if corpus in ("desed", "urbansed"):
        for split in ("train", "valid", "test"):
            assert out[f"{split}_events_tsv"] == str(
                tmp_path / "save" / f"{split}_events.tsv"
            )


def test_librispeech_columns_and_recipe_splits(tmp_path):
    root = tmp_path / "LibriSpeech"
    build_librispeech(root)
    out = prepare("librispeech", root, tmp_path / "save")
    train = read_rows(out["train_csv"])
    assert list(train[0]) == ["ID", "duration", "wav", "spk_id", "wrd"]
    assert train == read_rows(out["train-clean-100_csv"])
    assert read_rows(out["valid_csv"]) == read_rows(out["dev-clean_csv"])
    first = train[0]
    assert first["ID"] == "19-198-0000" and first["spk_id"] == "19"
    assert first["wrd"] and set(first["wrd"]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ")
    assert first["wav"] == "$data_root/train-clean-100/19/198/19-198-0000.flac"
    unlabelled = prepare(
        "librispeech", root, tmp_path / "all", splits="all", transcripts=False
    )
    assert {r["wrd"] for r in read_rows(unlabelled["train_csv"])} == {""}
    with pytest.raises(PrepareError, match="expected train-other-500 in it"):
        prepare("librispeech", root, tmp_path / "x", splits=["train-other-500"])
    with pytest.raises(PrepareError, match="unknown split 'dev'"):
        prepare("librispeech", root, tmp_path / "x", splits=["dev"])


def test_librispeech_transcript_and_flac_mismatches(tmp_path):
    root = tmp_path / "LibriSpeech"
    build_librispeech(root)
    chapter = root / "dev-clean/84/121123"
    with open(chapter / "84-121123.trans.txt", "a", encoding="utf-8") as fout:
        fout.write("84-121123-0009 A LINE WITHOUT ITS FLAC\n")
    tone(chapter / "84-121123-0007.flac", 500)  # a flac without its line
    os.remove(root / "test-clean/1089/134686/1089-134686.trans.txt")
    out = prepare("librispeech", root, tmp_path / "save")
    reasons = skipped_reasons(out)
    assert reasons["84-121123-0009.flac"].startswith("missing (listed in dev-clean/")
    assert reasons["84-121123-0007.flac"] == (
        "refused: no line in dev-clean/84/121123/84-121123.trans.txt"
    )
    assert reasons["1089-134686-0000.flac"] == (
        "refused: no line in test-clean/1089/134686/1089-134686.trans.txt"
    )
    assert "test_csv" not in out and "test-clean_csv" not in out


def test_magnatagatune_top_tags_and_split(tmp_path):
    root = tmp_path / "mtt"
    build_magnatagatune(root)
    out = prepare("magnatagatune", root, tmp_path / "save")
    rows = {s: read_rows(out[f"{s}_csv"]) for s in ("train", "valid", "test")}
    folders = {s: {r["wav"].split("/")[1] for r in rows[s]} for s in rows}
    assert folders == {
        "train": set("0357ab92"),
        "valid": {"c"},
        "test": set("def"),
    }
    tags = {t for s in rows.values() for r in s for t in r["tags"].split()}
    assert tags == set(magnatagatune.TOP50)  # "no vocals" -> no_vocals
    assert rows["train"][0]["ID"] == "2" and list(rows["train"][0]) == [
        "ID",
        "duration",
        "wav",
        "tags",
    ]
    top = prepare("magnatagatune", root, tmp_path / "top5", top=5)
    kept = {t for r in read_rows(top["train_csv"]) for t in r["tags"].split()}
    assert len(kept) <= 5 and top["skipped"] > 0
    reasons = set(skipped_reasons(top).values())
    assert reasons == {"label: none of the top-5 tags"}


def test_gtzan_split_lists_or_seeded_split(tmp_path, caplog):
    root = tmp_path / "gtzan"
    spec = build_gtzan(root)
    out = prepare("gtzan", root, tmp_path / "save", spec)
    counts = [len(read_rows(out[f"{s}_csv"])) for s in ("train", "valid", "test")]
    assert counts == [20, 10, 10]
    assert read_rows(out["test_csv"])[5]["tags"] == "jazz"
    assert read_rows(out["test_csv"])[5]["ID"] == "jazz.00054"
    with caplog.at_level("INFO"):
        seeded = prepare("gtzan", root, tmp_path / "seeded")
    assert "seeded (seed 1986) 70/15/15 split" in caplog.text
    per_split = [read_rows(seeded[f"{s}_csv"]) for s in ("train", "valid", "test")]
    assert [len(rows) for rows in per_split] == [20, 10, 10]
    for rows in per_split[1:]:
        assert sorted(r["tags"] for r in rows) == sorted(gtzan.GENRES)
    again = prepare("gtzan", root, tmp_path / "seeded2")
    assert read_rows(again["test_csv"]) == per_split[2]
    # the Kaggle copy: genres_original/
    kaggle = tmp_path / "kaggle"
    shutil.copytree(root / "genres", kaggle / "genres_original")
    assert prepare("gtzan", kaggle, tmp_path / "k", spec)["clips"] == 40


def test_desed_events_tsv_and_empty_rows(tmp_path):
    root = tmp_path / "dataset"
    build_desed(root)
    out = prepare("desed", root, tmp_path / "save")
    valid = read_rows(out["valid_csv"])
    assert [r["labels"] for r in valid] == ["Dog", "", "Cat Speech"]
    assert valid[0]["ID"] == "valid_Y00pbt6aJV8Y_350.000_360.000"
    events = read_rows(out["valid_events_tsv"], "\t")
    assert [e["filename"] for e in events] == [
        "Y00pbt6aJV8Y_350.000_360.000.wav",
        "Y0bjUq9XMMmQ_30.000_40.000.wav",
        "Y0bjUq9XMMmQ_30.000_40.000.wav",
    ]
    assert events[1] == {
        "filename": "Y0bjUq9XMMmQ_30.000_40.000.wav",
        "onset": "0.500",
        "offset": "1.200",
        "event_label": "Speech",
    }
    with pytest.raises(PrepareError, match="unknown valid_set 'real'"):
        prepare("desed", root, tmp_path / "x", valid_set="real")


def test_urbansed_wav_without_annotation_is_refused(tmp_path):
    root = tmp_path / "URBAN-SED_v2.0.0"
    build_urbansed(root)
    tone(root / "audio/test/soundscape_test_bimodal9.wav", 700, 2.0)
    out = prepare("urbansed", root, tmp_path / "save")
    assert skipped_reasons(out) == {
        "soundscape_test_bimodal9.wav": (
            "refused: no annotations/test/soundscape_test_bimodal9.txt"
        )
    }
    events = read_rows(out["train_events_tsv"], "\t")
    assert events[0] == {
        "filename": "soundscape_train_bimodal0.wav",
        "onset": "0.000",
        "offset": "1.200",
        "event_label": "dog_bark",
    }


@pytest.mark.parametrize("corpus", CORPORA)
def test_wrong_root_and_missing_metadata_are_one_line(corpus, tmp_path):
    root = tmp_path / "root"
    spec = BUILDERS[corpus](root)
    with pytest.raises(PrepareError) as err:
        prepare(corpus, tmp_path, tmp_path / "save", spec)  # one level too high
    assert "root: expected" in str(err.value) and "\n" not in str(err.value)
    if spec["meta"].is_dir():
        shutil.rmtree(spec["meta"])
    else:
        os.remove(spec["meta"])
    with pytest.raises(PrepareError) as err:
        prepare(corpus, root, tmp_path / "save", spec)
    assert f"expected {spec['meta_name']} in it" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("corpus", CORPORA)
def test_missing_corrupt_and_unknown_label_are_skipped(corpus, tmp_path):
    root = tmp_path / "root"
    spec = BUILDERS[corpus](root)
    os.remove(spec["clip"])
    spec["corrupt"].write_bytes(b"RIFF\x00\x00not really an audio file")
    bad = spec["bad_label"]()
    out = prepare(corpus, root, tmp_path / "save", spec)
    reasons = skipped_reasons(out)
    assert reasons[spec["clip"].name].startswith("missing (listed in"), reasons
    corrupt = reasons[spec["corrupt"].name]
    assert "cannot open as audio" in corrupt or "truncated" in corrupt, corrupt
    assert reasons[bad].startswith("label"), reasons[bad]
    counts = preparation.reason_counts(read_rows(out["skipped_csv"]))
    assert counts == {"missing": 1, "unreadable": 1, "refused": 1}
    kept = {
        r["wav"].replace("$data_root", str(root))
        for k in split_keys(out)
        for r in read_rows(out[f"{k}_csv"])
    }
    assert kept and not {str(spec["clip"]), str(spec["corrupt"])} & kept
    assert not any(p.endswith(bad) for p in kept)


@pytest.mark.parametrize("corpus", CORPORA)
def test_rerun_is_skipped_and_a_changed_option_prepares_again(
    corpus, tmp_path, monkeypatch
):
    root = tmp_path / "root"
    spec = BUILDERS[corpus](root)
    save = tmp_path / "save"
    first = prepare(corpus, root, save, spec)
    opts = save / preparation.OPTS_FILE
    stamp = opts.stat().st_mtime_ns

    def no_check(*args, **kwargs):
        raise AssertionError("a skipped rerun checks no clip")

    monkeypatch.setattr(preparation, "check_clips", no_check)
    assert prepare(corpus, root, save, spec) == first
    assert opts.stat().st_mtime_ns == stamp
    monkeypatch.undo()
    again = prepare(corpus, root, save, spec, **spec["option"])
    assert opts.stat().st_mtime_ns != stamp
    record = json.loads(opts.read_text())["record"]["options"]
    for key, value in spec["option"].items():
        assert record[key] == value
    assert prepare(corpus, root, save, skip_prep=True) == again


@pytest.mark.skipif(not (LAYOUTS / "desed").is_dir(), reason="no shared DESED sample")
def test_real_desed_metadata_without_audio(tmp_path):
    """The real TSVs, no audio: every clip is missing, one line says so."""
    save = tmp_path / "save"
    with pytest.raises(PrepareError) as err:
        prepare("desed", LAYOUTS / "desed", save, train_set=None)
    message = str(err.value)
    assert "no usable clip" in message and "\n" not in message
    rows = read_rows(save / "skipped.csv")
    names = {
        r["filename"]
        for tsv in ("validation/validation.tsv", "eval/public.tsv")
        for r in read_rows(LAYOUTS / "desed" / "metadata" / tsv, "\t")
    }
    assert len(rows) == len(names) > 1000
    assert f"missing {len(names)}" in message
    assert all(r["reason"].startswith("missing (listed in metadata/") for r in rows)
    with pytest.raises(PrepareError, match="expected metadata/train/synthetic21"):
        prepare("desed", LAYOUTS / "desed", save)


# ---------------------------------------------------------------- parsers

TOKEN = st.text(alphabet="abcdefghij klm", min_size=1, max_size=12).filter(
    lambda s: s.strip() == s and s
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(TOKEN, min_size=2, max_size=8, unique=True),
    st.lists(st.lists(st.booleans(), min_size=8, max_size=8), min_size=1, max_size=6),
    st.booleans(),
)
def test_magnatagatune_annotation_round_trip(tags, matrix, quoted):
    import tempfile

    header = ["clip_id", *tags, "mp3_path"]
    rows = [
        [
            str(i),
            *("1" if v else "0" for v in bits[: len(tags)]),
            f"{i % 16:x}/c{i}.mp3",
        ]
        for i, bits in enumerate(matrix)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "annotations_final.csv")
        with open(path, "w", newline="", encoding="utf-8") as fout:
            quoting = csv.QUOTE_ALL if quoted else csv.QUOTE_MINIMAL
            writer = csv.writer(fout, delimiter="\t", quoting=quoting)
            writer.writerow(header)
            writer.writerows(rows)
        found, parsed = magnatagatune.read_annotations(path)
    assert found == tags
    assert [[r["clip_id"], *r["values"], r["mp3_path"]] for r in parsed] == rows
    top = magnatagatune.top_tags(found, parsed, 1)
    counts = [sum(r["values"][i] == "1" for r in parsed) for i in range(len(tags))]
    assert counts[tags.index(top[0])] == max(counts)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(0, 99999),
    st.integers(0, 999999),
    st.integers(0, 9999),
    st.lists(st.text(alphabet="ABCXYZ'", min_size=1, max_size=6), max_size=6),
)
def test_librispeech_transcript_lines(speaker, chapter, utt, words):
    uid = f"{speaker}-{chapter}-{utt:04d}"
    line = f"{uid} {' '.join(words)}\n"
    assert librispeech.parse_transcript_line(line) == (uid, " ".join(words))
    assert librispeech.bad_characters(" ".join(words)) == ""
    with pytest.raises(ValueError):
        librispeech.parse_transcript_line(f"{speaker}_{chapter} {' '.join(words)}")


@settings(max_examples=80, deadline=None)
@given(
    st.floats(0, 100, allow_nan=False),
    st.floats(0.001, 10, allow_nan=False),
    st.sampled_from(urbansed.URBANSED_CLASSES + ["Dog", "cat"]),
    st.sampled_from(["\t", " ", "  \t"]),
)
def test_event_lines(onset, length, label, sep):
    line = f"{onset!r}{sep}{onset + length!r}{sep}{label}\n"
    fields = urbansed.parse_annotation_line(line)
    if label in urbansed.URBANSED_CLASSES:
        start, end, name = urbansed.parse_event(*fields, urbansed.URBANSED_CLASSES)
        assert (start, name) == (onset, label) and end > start
    else:
        with pytest.raises(ValueError, match="^label"):
            urbansed.parse_event(*fields, urbansed.URBANSED_CLASSES)
    assert desed.parse_event  # the same checks serve DESED


def test_shell_command(tmp_path):
    root = tmp_path / "URBAN-SED_v2.0.0"
    build_urbansed(root)
    cmd = [sys.executable, "-m", "bestrq2_lobes.datasets", "prepare", "urbansed"]
    proc = subprocess.run(
        [*cmd, str(root), str(tmp_path / "save"), "--splits", "[train]", "--jobs", "1"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "save" / "train_events.tsv").is_file()
    proc = subprocess.run(
        [*cmd, str(tmp_path), str(tmp_path / "save")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2 and "expected annotations/train in it" in proc.stderr


# ---------------------------------------------------------------- recipes


def run_recipe(recipe, hparams, *args, timeout=300):
    cmd = [
        sys.executable,
        str(REPO / "recipes" / recipe / "train.py"),
        str(REPO / "hparams" / hparams),
        *args,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def test_asr_recipe_on_librispeech(tmp_path):
    root = tmp_path / "LibriSpeech"
    build_librispeech(root)
    out = tmp_path / "out"
    run_recipe(
        "asr",
        "asr_librispeech.yaml",
        f"--data_folder={root}",
        f"--output_folder={out}",
        "--debug",
        *TINY,
        "--head_dim=32",
        "--batch_size=4",
        "--beam_size=4",
        *RUN,
    )
    results = json.loads((out / "results.json").read_text())
    assert results["num_test"] == 3
    assert (out / "prepared" / "train-clean-100.csv").is_file()


def test_pretrain_recipe_on_librispeech(tmp_path, pretrain_args):
    root = tmp_path / "LibriSpeech"
    build_librispeech(root)
    out = tmp_path / "out"
    args = pretrain_args(
        root, out, "--corpus=librispeech", "--debug", "--precision=fp32"
    )
    args[1] = str(REPO / "hparams" / "bestrq2_vit_speech.yaml")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert (out / "prepared" / "train.csv").is_file()


@pytest.mark.parametrize(
    "corpus,hparams",
    [
        ("magnatagatune", "music_tagging_mtt.yaml"),
        ("gtzan", "music_tagging_gtzan.yaml"),
    ],
)
def test_music_tagging_recipe(corpus, hparams, tmp_path):
    root = tmp_path / corpus
    spec = BUILDERS[corpus](root)
    out = tmp_path / "out"
    extra = []
    if spec.get("options"):
        extra = [f"--corpus_options={json.dumps(spec['options'])}"]
    run_recipe(
        "music_tagging",
        hparams,
        f"--data_folder={root}",
        f"--output_folder={out}",
        "--debug",
        *TINY,
        "--batch_size=4",
        "--max_seconds=1.0",
        *extra,
        *RUN,
    )
    results = json.loads((out / "results.json").read_text())
    assert results["num_tags"] == (50 if corpus == "magnatagatune" else 10)


@pytest.mark.parametrize(
    "corpus,hparams", [("desed", "sed_desed.yaml"), ("urbansed", "sed_urbansed.yaml")]
)
def test_sed_recipe(corpus, hparams, tmp_path):
    root = tmp_path / corpus
    BUILDERS[corpus](root)
    out = tmp_path / "out"
    run_recipe(
        "sed",
        hparams,
        f"--data_folder={root}",
        f"--output_folder={out}",
        "--debug",
        *TINY,
        "--rnn_hidden=16",
        "--batch_size=2",
        *RUN,
    )
    results = json.loads((out / "results.json").read_text())
    assert (out / "prepared" / "test_events.tsv").is_file() and results


def test_probe_suite_scores_gtzan_and_magnatagatune(tmp_path):
    """The one probe command on the two music corpora of ``tasks_public.yaml``."""
    words = []
    for corpus in ("gtzan", "magnatagatune"):
        BUILDERS[corpus](tmp_path / corpus)
        words.append(f"{corpus}={tmp_path / corpus}")
    out = tmp_path / "out"
    proc = run_recipe(
        "probe",
        "probe.yaml",
        f"--tasks={REPO / 'recipes' / 'probe' / 'tasks_public.yaml'}",
        "--data_folders",
        *words,
        f"--output_folder={out}",
        "--debug",
        *TINY,
        *RUN[:3],
    )
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["gtzan_linear"] <= 1.0
    assert 0.0 <= results["magnatagatune_linear"] <= 1.0
    assert "domain_music_linear" in results and "Probe suite finished" in proc.stdout
