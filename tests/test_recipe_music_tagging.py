"""Tests of the music tagging recipe: helpers, and end-to-end runs on tiny data.

The end-to-end runs use a tiny random (or exported) encoder, generated clips of
a couple of seconds, ``--debug`` and the CPU; each takes a few seconds.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

REPO = Path(__file__).resolve().parents[1]
RECIPE_DIR = REPO / "recipes" / "music_tagging"
SHARED = REPO.parent / "shared" / "data" / "gm_mixtures"
sys.path.insert(0, str(RECIPE_DIR))

import music_tags  # noqa: E402

TINY = [
    "--embed_dim=32",
    "--depth=1",
    "--num_heads=4",
    "--n_mels=32",
    "--batch_size=4",
    "--num_workers=0",
    "--device=cpu",
    "--noprogressbar",
]
TAGS = ["click", "noise", "tone"]


def run_recipe(*args, check=True, launcher=None, timeout=180):
    """Runs the recipe in a subprocess and returns the completed process."""
    cmd = (launcher or [sys.executable]) + [
        str(RECIPE_DIR / "train.py"),
        str(REPO / "hparams" / "music_tagging.yaml"),
        *args,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def make_clip(path, tags, seconds, rng):
    """A clip mixing a tone, noise and/or clicks according to its tags."""
    t = np.arange(int(seconds * 16000)) / 16000
    wav = 0.01 * rng.standard_normal(t.shape)
    if "tone" in tags:
        wav += 0.3 * np.sin(2 * np.pi * 440 * t)
    if "noise" in tags:
        wav += 0.2 * rng.standard_normal(t.shape)
    if "click" in tags:
        wav[:: 16000 // 8] += 0.9
    sf.write(path, wav.astype(np.float32), 16000)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """train/valid/test manifests; valid has a tag unseen in train."""
    root = tmp_path_factory.mktemp("tagging")
    (root / "audio").mkdir()
    rng = np.random.default_rng(0)
    combos = ["tone", "noise", "click", "tone noise", "noise click", "tone click"]
    splits = {"train": 8, "valid": 4, "test": 4}
    for split, count in splits.items():
        lines = ["ID,duration,wav,tags,genre"]
        for i in range(count):
            uid = f"{split}{i}"
            tags = combos[i % len(combos)]
            seconds = 1.5 + 0.25 * (i % 3)
            make_clip(root / "audio" / f"{uid}.wav", tags.split(), seconds, rng)
            if split == "valid" and i == 0:
                tags += " kazoo"
            genre = "rock" if i % 2 else "jazz"
            lines.append(f"{uid},{seconds},$data_root/audio/{uid}.wav,{tags},{genre}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def csv_args(root):
    return [f"--{s}_csv={root / f'{s}.csv'}" for s in ("train", "valid", "test")]


def check_outputs(out, num_tags):
    results = json.loads((out / "results.json").read_text())
    assert {"map", "roc_auc", "num_tags"} <= set(results)
    assert results["num_tags"] == num_tags
    assert all(math.isfinite(v) for v in results.values())
    assert 0.0 <= results["map"] <= 1.0 and 0.0 <= results["roc_auc"] <= 1.0
    table = (out / "per_tag_ap.md").read_text().splitlines()
    assert table[0] == "| tag | positives | AP | ROC-AUC |"
    assert len(table) == 2 + num_tags + 1
    csv_rows = (out / "per_tag_ap.csv").read_text().splitlines()
    assert csv_rows[0] == "tag,positives,ap,roc_auc" and len(csv_rows) == 1 + num_tags
    assert "valid map" in (out / "train_log.txt").read_text()
    return results


def test_debug_run_multilabel(data, tmp_path):
    out = tmp_path / "out"
    proc = run_recipe(
        *csv_args(data), f"--output_folder={out}", "--max_seconds=1.0", "--debug", *TINY
    )
    assert proc.stdout.startswith("No --encoder_dir given: using a RANDOMLY")
    assert "tags not in the training label set are ignored: kazoo (1 clips)" in (
        proc.stderr + proc.stdout
    )
    check_outputs(out, len(TAGS))
    assert music_tags.load_labels(out / "save" / "labels.json") == TAGS
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("Music tagging finished: test mAP ")


def test_encoder_dir_and_single_label_column(data, tmp_path):
    from bestrq2_lobes.lobe.encoder_dir import write_encoder_dir
    from bestrq2_lobes.model.encoder import ViTEncoder
    from bestrq2_lobes.model.frontend import LogMel

    torch.manual_seed(0)
    encoder = ViTEncoder(n_mels=32, embed_dim=32, depth=2, num_heads=4)
    enc_dir = write_encoder_dir(tmp_path / "enc", LogMel(n_mels=32), encoder, 10.0)
    out = tmp_path / "out"
    proc = run_recipe(
        *csv_args(data),
        f"--encoder_dir={enc_dir}",
        "--label_column=genre",
        "--head_hidden=16",
        f"--output_folder={out}",
        "--debug",
        *[a for a in TINY if not a.startswith(("--embed_dim", "--depth"))],
    )
    assert proc.stdout.startswith(f"Encoder: {enc_dir} (width 32, depth 2")
    results = check_outputs(out, 2)
    assert results["num_scored_tags"] == 2
    saved = json.loads((out / "save" / "labels.json").read_text())
    assert saved == {"label_column": "genre", "labels": ["jazz", "rock"]}


def test_missing_label_column_is_a_one_line_error(data, tmp_path):
    proc = run_recipe(
        *csv_args(data),
        "--label_column=instrument",
        f"--output_folder={tmp_path / 'out'}",
        *TINY,
        check=False,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "no label column 'instrument'" in last
    assert "train.csv" in last


def test_ddp_two_processes_gloo(data, tmp_path, torchrun_cmd):
    out = tmp_path / "ddp"
    launcher = torchrun_cmd(2)
    proc = run_recipe(
        *csv_args(data),
        f"--output_folder={out}",
        "--distributed_backend=gloo",
        "--number_of_epochs=1",
        *TINY,
        launcher=launcher,
    )
    assert proc.stdout.count("Music tagging finished") == 1
    check_outputs(out, len(TAGS))


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/gm_mixtures absent")
def test_debug_run_on_shared_data(tmp_path):
    out = tmp_path / "shared"
    run_recipe(*csv_args(SHARED), f"--output_folder={out}", "--debug", *TINY)
    results = json.loads((out / "results.json").read_text())
    assert results["num_tags"] == 17
    assert math.isfinite(results["map"]) and math.isfinite(results["roc_auc"])


# ---------------------------------------------------------------- helpers


def test_labels_split_union_encode_and_unseen():
    rows = [{"t": "b a"}, {"t": " c  a "}, {"t": ""}]
    labels = music_tags.label_set(rows, "t")
    assert labels == ["a", "b", "c"]
    index = {tag: i for i, tag in enumerate(labels)}
    target = music_tags.encode_tags(music_tags.split_tags("c x a"), index)
    assert target.tolist() == [1.0, 0.0, 1.0]
    assert music_tags.encode_tags([], index).tolist() == [0.0, 0.0, 0.0]
    counts = music_tags.unseen_tags([{"t": "a x"}, {"t": "x"}], "t", labels)
    assert counts == {"x": 2}
    assert music_tags.split_tags("hip hop;jazz", ";") == ["hip hop", "jazz"]


def test_prepare_labels_saves_reuses_and_refuses_others(tmp_path):
    rows = [{"tags": "rock"}, {"tags": "jazz"}]
    assert music_tags.prepare_labels(rows, "tags", tmp_path) == ["jazz", "rock"]
    assert music_tags.prepare_labels(rows[::-1], "tags", tmp_path) == ["jazz", "rock"]
    with pytest.raises(music_tags.LabelError, match="use a new --output_folder"):
        music_tags.prepare_labels([{"tags": "pop"}], "tags", tmp_path)
    with pytest.raises(music_tags.LabelError, match="no tags"):
        music_tags.prepare_labels([{"tags": ""}], "tags", tmp_path / "new")


def _ap_reference(y, s):
    """AP as the mean precision at the rank of each positive (no ties)."""
    order = np.argsort(-s)
    hits = y[order]
    precision = np.cumsum(hits) / np.arange(1, len(y) + 1)
    return precision[hits == 1].mean()


def test_metrics_match_references():
    rng = np.random.default_rng(0)
    targets = (rng.random((40, 5)) < 0.3).astype(int)
    targets[0] = 1  # every tag has a positive
    targets[1] = 0  # and a negative
    scores = rng.random((40, 5))
    m = music_tags.tagging_metrics(scores, targets)
    assert m["map"] == pytest.approx(
        average_precision_score(targets, scores, average="macro")
    )
    assert m["roc_auc"] == pytest.approx(
        roc_auc_score(targets, scores, average="macro")
    )
    refs = [_ap_reference(targets[:, k], scores[:, k]) for k in range(5)]
    assert m["ap"] == pytest.approx(refs)
    assert m["positives"] == targets.sum(0).tolist() and m["num_scored"] == 5


def test_metrics_skip_tags_that_cannot_be_scored():
    targets = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1]])
    scores = np.array([[0.9, 0.5, 0.2], [0.1, 0.5, 0.3], [0.8, 0.5, 0.9]])
    m = music_tags.tagging_metrics(scores, targets)
    # tag 1 has no positive: out of both means; tag 2 has no negative: AP only
    assert m["map"] == pytest.approx((1.0 + 1.0) / 2)
    assert m["roc_auc"] == pytest.approx(1.0)
    assert math.isnan(m["ap"][1]) and math.isnan(m["auc"][2])
    assert m["num_scored"] == 2
    empty = music_tags.tagging_metrics(scores, np.zeros_like(targets))
    assert math.isnan(empty["map"]) and math.isnan(empty["roc_auc"])


@pytest.mark.parametrize("hidden", [0, 8])
def test_head_shapes(hidden):
    head = music_tags.TaggingHead(6, 3, hidden_dim=hidden, dropout=0.1)
    assert head(torch.randn(4, 6)).shape == (4, 3)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == (2 if hidden else 1)
