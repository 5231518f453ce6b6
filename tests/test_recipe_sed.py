"""Tests of the sound event detection recipe (recipes/sed) and its helpers.

The helpers (frame targets, median filter, frames -> events, metrics) are
compared with simple reference implementations; the recipe runs end to end with
``--debug`` on a few generated scenes with a tiny random encoder, with an
exported encoder directory, and on the shared office_sed data when present.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "sed" / "train.py"
HPARAMS = REPO / "hparams" / "sed.yaml"
SHARED = REPO.parent / "shared" / "data" / "office_sed"
sys.path.insert(0, str(RECIPE.parent))

import sed_data  # noqa: E402
from sed_labels import (  # noqa: E402
    Event,
    LabelError,
    frame_targets,
    load_labels,
    match_events,
    prepare_labels,
    read_events_tsv,
)
from sed_post import frames_to_events, median_filter, write_events_tsv  # noqa: E402

TINY = [
    "--embed_dim=32",
    "--depth=1",
    "--num_heads=4",
    "--n_mels=32",
    "--rnn_hidden=16",
    "--batch_size=2",
    "--num_workers=0",
    "--device=cpu",
    "--noprogressbar",
]
CLASSES = {"beep": 1000.0, "hum": 150.0, "chirp": 3000.0}
HEADER = "filename\tonset\toffset\tevent_label\n"


def needs_metrics():
    """Skips when the metric packages are absent (they are recipe-only extras)."""
    from sed_metrics import import_sed_eval

    try:
        import_sed_eval()
        import sed_scores_eval  # noqa: F401
    except ImportError as err:
        pytest.skip(f"sed_eval / sed_scores_eval not usable: {err}")


# ---------------------------------------------------------------- references


def reference_targets(events, labels, num_frames, hop, min_overlap, step=1e-4):
    """Frame activity by numerically measuring overlaps on a fine time grid."""
    out = np.zeros((num_frames, len(labels)), dtype=np.float32)
    for k in range(num_frames):
        grid = np.arange(k * hop, (k + 1) * hop, step) + step / 2
        for e in events:
            overlap = np.count_nonzero((grid >= e.onset) & (grid < e.offset)) * step
            need = min_overlap * min(hop, e.offset - e.onset)
            if overlap > 0 and overlap >= need - step:
                out[k, labels.index(e.label)] = 1.0
    return out


def test_frame_targets_match_reference():
    rng = np.random.default_rng(0)
    labels = ["a", "b", "c"]
    for _ in range(60):
        hop = float(rng.choice([0.625, 0.04, 0.5]))
        num_frames = int(rng.integers(4, 20))
        events = []
        for _ in range(int(rng.integers(1, 5))):
            onset = float(rng.uniform(0, num_frames * hop))
            length = float(rng.uniform(0.2, 3.0)) * hop
            events.append(Event(onset, onset + length, str(rng.choice(labels))))
        for min_overlap in (0.0, 0.5, 0.9):
            got = frame_targets(events, labels, num_frames, hop, min_overlap)
            ref = reference_targets(events, labels, num_frames, hop, min_overlap)
            # the grid reference is exact up to one grid step at the threshold
            assert (got != ref).sum() <= 1, (events, min_overlap, hop)


def test_frame_targets_rules_at_625_ms():
    hop = 0.625
    # covers 40% of frame 0 and all of frame 1: frame 0 only with "any overlap"
    ev = [Event(0.375, 1.25, "a")]
    assert frame_targets(ev, ["a"], 3, hop, 0.5)[:, 0].tolist() == [0, 1, 0]
    assert frame_targets(ev, ["a"], 3, hop, 0.0)[:, 0].tolist() == [1, 1, 0]
    # exactly half a frame counts (>=); a short event marks the frame with most of it
    assert frame_targets([Event(0.3125, 0.9, "a")], ["a"], 2, hop, 0.5)[0, 0] == 1
    short = [Event(0.55, 0.75, "a")]  # 0.075 s in frame 0, 0.125 s in frame 1
    assert frame_targets(short, ["a"], 2, hop, 0.5)[:, 0].tolist() == [0, 1]
    # touching a frame boundary is no overlap
    assert frame_targets([Event(0.625, 1.0, "a")], ["a"], 2, hop, 0.0)[0, 0] == 0


def test_median_filter_matches_reference():
    rng = np.random.default_rng(1)
    probs = rng.random((23, 4)).astype(np.float32)
    for length in (1, 3, 5, 7):
        half = length // 2
        ref = np.empty_like(probs)
        for t in range(len(probs)):
            idx = np.clip(np.arange(t - half, t + half + 1), 0, len(probs) - 1)
            ref[t] = np.median(probs[idx], axis=0)
        np.testing.assert_allclose(median_filter(probs, length), ref)
    with pytest.raises(ValueError, match="odd"):
        median_filter(probs, 4)


def test_frames_to_events_matches_reference():
    rng = np.random.default_rng(2)
    labels = ["x", "y"]
    hop, duration = 0.625, 9.9
    active = rng.random((16, 2)) > 0.5
    got = frames_to_events(active, labels, hop, duration)
    ref = []
    for c, label in enumerate(labels):
        k = 0
        while k < len(active):
            if active[k, c]:
                end = k
                while end < len(active) and active[end, c]:
                    end += 1
                ref.append(Event(k * hop, min(end * hop, duration), label))
                k = end
            else:
                k += 1
    key = lambda e: (e.label, e.onset)  # noqa: E731
    assert sorted(got, key=key) == pytest.approx(sorted(ref, key=key))
    assert all(e.offset <= duration for e in got)


def test_tsv_reading_matching_and_errors(tmp_path):
    tsv = tmp_path / "e.tsv"
    tsv.write_text(
        HEADER + "sub/a.flac\t0.5\t1.5\tdog\nb\t2\t3\tcat\nzz.wav\t1\t2\tcat\n"
    )
    events = read_events_tsv(tsv)
    rows = [
        {"ID": "one", "wav": "/data/a.wav"},  # matched on the wav base name
        {"ID": "b", "wav": "/data/other.wav"},  # matched on the ID
        {"ID": "c", "wav": "/data/c.wav"},  # no events
    ]
    matched = match_events(rows, events, str(tsv))
    assert matched["one"] == [Event(0.5, 1.5, "dog")]
    assert matched["b"] == [Event(2.0, 3.0, "cat")]
    assert matched["c"] == []
    assert prepare_labels(tmp_path / "labels.json", str(tsv)) == ["cat", "dog"]
    # reused: a different train TSV with the same output folder is refused
    other = tmp_path / "o.tsv"
    other.write_text(HEADER + "a.wav\t0\t1\tbird\n")
    with pytest.raises(LabelError, match="made from other labels"):
        prepare_labels(tmp_path / "labels.json", str(other))
    bad = tmp_path / "weak.tsv"
    bad.write_text("filename\tevent_labels\na.wav\tdog\n")
    with pytest.raises(LabelError, match="missing column 'onset'"):
        read_events_tsv(bad)
    bad.write_text(HEADER + "a.wav\t2.0\t1.0\tdog\n")
    with pytest.raises(LabelError, match="line 2: offset 1.0 is not after"):
        read_events_tsv(bad)


def test_write_events_tsv_round_trip(tmp_path):
    dets = {"a.flac": [Event(0.0, 1.25, "dog"), Event(5.0, 10.0, "cat")]}
    write_events_tsv(tmp_path / "d.tsv", dets)
    assert read_events_tsv(tmp_path / "d.tsv") == {"a": dets["a.flac"]}


def test_metrics_on_simple_cases():
    needs_metrics()
    from sed_metrics import psds1, sed_eval_metrics

    ref = {"a": [Event(1.0, 3.0, "dog"), Event(5.0, 6.0, "cat")], "b": []}
    durations = {"a": 10.0, "b": 10.0}
    perfect = sed_eval_metrics(ref, ref, durations, ["cat", "dog"])
    assert perfect["event_f1"] == perfect["segment_f1"] == 1.0
    # one onset 0.4 s late: a match with a 0.5 s collar, a miss with 0.2 s
    late = {"a": [Event(1.4, 3.0, "dog"), Event(5.0, 6.0, "cat")]}
    assert sed_eval_metrics(ref, late, durations, ["cat", "dog"])["event_f1"] == 1.0
    tight = sed_eval_metrics(ref, late, durations, ["cat", "dog"], collar=0.2)
    assert tight["event_f1_micro"] == pytest.approx(0.5)  # 1 TP, 1 FP, 1 FN
    empty = sed_eval_metrics(ref, {}, durations, ["cat", "dog"])
    assert empty["event_f1"] == 0.0 and empty["segment_f1"] == 0.0
    # PSDS1: exact frame scores of events on the frame grid give 1
    probs = np.zeros((16, 2))
    probs[2:5, 1] = 0.9
    exact = {"x": [Event(1.25, 3.125, "dog")]}
    value, left_out = psds1({"x": probs}, 0.625, exact, {"x": 10.0}, ["cat", "dog"])
    assert value == pytest.approx(1.0) and left_out == ["cat"]


# ---------------------------------------------------------------- recipe runs


def run_recipe(*args, timeout=240, ok=True):
    """Runs the recipe in a subprocess and returns the completed process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(RECIPE), str(HPARAMS), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def make_split(folder, split, num_clips, seconds, rng):
    """Scenes of tones (one frequency per class) in noise, manifest and TSV."""
    rate = 16000
    rows, tsv = ["ID,duration,wav"], [HEADER.strip()]
    for i in range(num_clips):
        name = f"{split}_{i}"
        wav = 0.01 * rng.standard_normal(int(seconds * rate))
        for label, freq in CLASSES.items():
            if rng.random() < 0.3:
                continue
            onset = float(rng.uniform(0, seconds - 1.0))
            offset = min(seconds, onset + float(rng.uniform(0.5, 1.5)))
            t = np.arange(int(onset * rate), int(offset * rate))
            wav[t] += 0.3 * np.sin(2 * np.pi * freq * t / rate)
            tsv.append(f"{name}.wav\t{onset:.3f}\t{offset:.3f}\t{label}")
        sf.write(folder / "audio" / f"{name}.wav", wav.astype(np.float32), rate)
        rows.append(f"{name},{seconds},$data_root/audio/{name}.wav")
    (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")
    (folder / f"{split}_events.tsv").write_text("\n".join(tsv) + "\n")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Train/valid/test manifests of a few 2.5 s scenes with strong labels."""
    folder = tmp_path_factory.mktemp("sed_data")
    (folder / "audio").mkdir()
    rng = np.random.default_rng(0)
    for split, num in (("train", 4), ("valid", 2), ("test", 2)):
        make_split(folder, split, num, 2.5, rng)
    return folder


def data_args(folder):
    return [f"--{s}_csv={folder / f'{s}.csv'}" for s in ("train", "valid", "test")]


def check_outputs(out, proc, labels):
    results = json.loads((out / "results.json").read_text())
    for key in ("event_f1", "segment_f1", "psds1", "oracle_event_f1", "test_loss"):
        assert key in results and np.isfinite(results[key]), key
    assert results["frame_hop_ms"] == 625.0
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("SED finished: test event F1")
    assert "frame hop 625 ms" in last
    header = (out / "detections_test.tsv").read_text().splitlines()[0]
    assert header == "filename\tonset\toffset\tevent_label"
    assert load_labels(out / "save" / "labels.json") == labels
    assert results["num_classes"] == len(labels)
    return results


def test_debug_run_random_encoder(scenes, tmp_path):
    needs_metrics()
    out = tmp_path / "out"
    proc = run_recipe(
        *data_args(scenes),
        f"--output_folder={out}",
        "--median_filter=3",
        "--class_thresholds={hum: 0.4}",
        "--debug",
        *TINY,
    )
    assert proc.stdout.startswith("No --encoder_dir given: using a RANDOMLY")
    results = check_outputs(out, proc, sorted(CLASSES))
    assert results["median_filter"] == 3
    # tones on the frame grid: the frame encoding loses little
    assert results["oracle_event_f1"] > 0.5


def test_debug_run_exported_encoder_linear_head(scenes, tmp_path):
    needs_metrics()
    import torch

    from bestrq2_lobes.lobe.encoder_dir import write_encoder_dir
    from bestrq2_lobes.model.encoder import ViTEncoder
    from bestrq2_lobes.model.frontend import LogMel

    torch.manual_seed(0)
    enc_dir = write_encoder_dir(
        tmp_path / "enc",
        LogMel(n_mels=32),
        ViTEncoder(n_mels=32, embed_dim=24, depth=2, num_heads=4),
        10.0,
    )
    out = tmp_path / "out"
    proc = run_recipe(
        *data_args(scenes),
        f"--encoder_dir={enc_dir}",
        f"--output_folder={out}",
        "--rnn_layers=0",
        "--debug",
        *TINY,
    )
    assert proc.stdout.startswith(f"Encoder: {enc_dir} (width 24, depth 2")
    check_outputs(out, proc, sorted(CLASSES))


def test_clear_errors(scenes, tmp_path):
    needs_metrics()
    given = {f"{s}_csv": str(scenes / f"{s}.csv") for s in ("train", "test")}
    given["valid_csv"] = None
    given.update({f"{s}_tsv": None for s in ("train", "valid", "test")})
    paths = sed_data.label_paths(given)
    assert paths["test"][1] == str(scenes / "test_events.tsv")  # found beside
    with pytest.raises(SystemExit, match="--test_csv .*nope.csv: no such file"):
        sed_data.label_paths({**given, "test_csv": str(tmp_path / "nope.csv")})
    with pytest.raises(SystemExit, match="no --test_tsv given and no"):
        (tmp_path / "t.csv").write_text("ID,duration,wav\n")
        sed_data.label_paths({**given, "test_csv": str(tmp_path / "t.csv")})
    unknown = tmp_path / "u.tsv"
    unknown.write_text(HEADER + "test_0.wav\t0\t1\tsiren\n")
    with pytest.raises(LabelError, match="label 'siren' is not in the training"):
        sed_data.load_clips(given["test_csv"], str(unknown), str(scenes), ["beep"])
    weak = tmp_path / "weak.tsv"
    weak.write_text("filename\tevent_labels\ntrain_0.wav\tbeep\n")
    bad = run_recipe(
        *data_args(scenes),
        f"--train_tsv={weak}",
        f"--output_folder={tmp_path / 'o2'}",
        *TINY,
        ok=False,
    )
    assert bad.returncode != 0
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "missing column 'onset'" in last


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_debug_run_on_shared_office_sed(tmp_path):
    needs_metrics()
    out = tmp_path / "shared"
    proc = run_recipe(
        *data_args(SHARED),
        f"--output_folder={out}",
        "--debug",
        *TINY,
    )
    labels = "clearthroat cough doorslam drawer keyboard keysDrop knock laughter"
    results = check_outputs(out, proc, labels.split() + ["pageturn", "phone", "speech"])
    assert results["num_clips"] == 4  # --debug: 2 test batches of 2
