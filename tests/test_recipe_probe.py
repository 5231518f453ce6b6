"""Tests of the probe suite (recipes/probe): helpers, then end-to-end runs.

The helpers are compared with simple references; the end-to-end runs use tiny
generated data and a tiny random encoder, and take seconds on a CPU.
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

REPO = Path(__file__).resolve().parents[1]
RECIPE_DIR = REPO / "recipes" / "probe"
RECIPE = RECIPE_DIR / "train.py"
HPARAMS = REPO / "hparams" / "probe.yaml"
SHARED = REPO.parent / "shared" / "data"
TINY = ["--embed_dim=32", "--depth=1", "--num_heads=4", "--n_mels=32"]
RUN = ["--device=cpu", "--noprogressbar"]

if str(RECIPE_DIR) not in sys.path:
    sys.path.insert(0, str(RECIPE_DIR))

import probe_embed  # noqa: E402
import probe_eval  # noqa: E402
import probe_prepare  # noqa: E402
import probe_report  # noqa: E402
import probe_tasks  # noqa: E402

from bestrq2_lobes.plots import probe_chart as probe_plots  # noqa: E402


def run_recipe(*args, timeout=240, launcher=None, check=True):
    """Runs the recipe in a subprocess and returns the completed process."""
    cmd = (launcher or [sys.executable]) + [str(RECIPE), str(HPARAMS), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def own_lines(proc):
    """Lines the recipe printed itself (not SpeechBrain's log lines)."""
    return [line for line in proc.stdout.splitlines() if " - " not in line]


# ---------------------------------------------------------------- helpers


def reference_average_precision(y_true, y_score):
    """AP as the mean precision at the rank of each positive (no ties)."""
    order = np.argsort(-y_score)
    hits = y_true[order]
    ranks = np.flatnonzero(hits) + 1
    return float(np.mean(np.cumsum(hits)[ranks - 1] / ranks))


def test_map_matches_reference():
    rng = np.random.default_rng(0)
    targets = (rng.random((40, 6)) < 0.3).astype(np.float32)
    targets[:, 2] = 0.0  # a label without positives is left out
    scores = rng.random((40, 6)).astype(np.float32)
    expected = np.mean(
        [
            reference_average_precision(targets[:, c], scores[:, c])
            for c in (0, 1, 3, 4, 5)
        ]
    )
    got = probe_eval.mean_average_precision(
        torch.from_numpy(scores), torch.from_numpy(targets)
    )
    assert got == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="no label has a positive"):
        probe_eval.mean_average_precision(torch.rand(3, 2), torch.zeros(3, 2))


def test_knn_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    train_x = torch.randn(30, 5, generator=gen)
    test_x = torch.randn(7, 5, generator=gen)
    train_y = torch.randint(0, 3, (30,), generator=gen)
    tags = (torch.rand(30, 4, generator=gen) < 0.4).float()
    scores = probe_eval.knn_scores(train_x, train_y, test_x, 10, 3, False)
    multi = probe_eval.knn_scores(train_x, tags, test_x, 10, 4, True)
    for i, x in enumerate(test_x):
        sims = [
            float(x @ t / (x.norm() * t.norm())) for t in train_x
        ]  # plain cosine similarity
        nearest = sorted(range(30), key=lambda j: -sims[j])[:10]
        votes = {c: 0 for c in range(3)}
        for j in nearest:
            votes[int(train_y[j])] += 1
        best = max(votes.values())
        tied = [c for c in votes if votes[c] == best]
        total = {c: sum(sims[j] for j in nearest if int(train_y[j]) == c) for c in tied}
        assert int(scores[i].argmax()) == max(tied, key=lambda c: total[c])
        assert torch.allclose(multi[i], tags[nearest].mean(0))


def test_labels_and_accuracy():
    classes = probe_eval.label_classes(["b", "a", "b"], multilabel=False)
    targets, unknown = probe_eval.encode_labels(["a", "c"], classes, False)
    assert classes == ["a", "b"] and targets.tolist() == [0, -1] and unknown == {"c"}
    scores = torch.tensor([[0.9, 0.1], [0.9, 0.1]])
    assert probe_eval.accuracy(scores, targets) == 0.5  # an unknown class is a miss


def test_aggregate_weighted_means():
    records = [
        dict(name="s1", domain="speech", weight=1.0, linear=0.2, knn=0.1),
        dict(name="s2", domain="speech", weight=3.0, linear=0.6, knn=0.5),
        dict(name="m", domain="music", weight=1.0, linear=1.0, knn=0.0),
    ]
    res = probe_report.aggregate(records)
    assert res["domain_speech_linear"] == pytest.approx(0.5)
    assert res["mean_of_domains_linear"] == pytest.approx(0.75)
    assert res["overall_linear"] == pytest.approx((0.2 + 1.8 + 1.0) / 5)
    assert res["overall_knn"] == pytest.approx((0.1 + 1.5) / 5)


def test_task_file_checks(tmp_path):
    def write(text):
        path = tmp_path / "tasks.yaml"
        path.write_text(text)
        return path

    base = "- {name: a, domain: d, train_csv: x/tr.csv, test_csv: te.csv, "
    tasks = probe_tasks.load_tasks(write(base + "label_column: l, type: multilabel}"))
    assert tasks[0].csvs["train"] == str(tmp_path / "x" / "tr.csv")
    assert tasks[0].metric == "map" and tasks[0].weight == 1.0
    bad = {
        "label_column: l, type: multilabel, metric: accuracy}": "does not fit",
        "label_column: l, type: regression}": "type must be one of",
        "label_column: l, type: multiclass, colour: red}": "unknown key 'colour'",
        "label_column: l, type: multiclass, weight: 0}": "weight must be",
        "type: multiclass}": "missing key 'label_column'",
    }
    for tail, message in bad.items():
        with pytest.raises(probe_tasks.TaskError, match=message):
            probe_tasks.load_tasks(write(base + tail))
    with pytest.raises(probe_tasks.TaskError, match="duplicate task name"):
        probe_tasks.load_tasks(
            write((base + "label_column: l, type: multiclass}\n") * 2)
        )
    with pytest.raises(probe_tasks.TaskError, match="not plain YAML"):
        probe_tasks.load_tasks(write("- !!python/object/apply:os.system ['echo']\n"))


def test_event_tag_preparation(tmp_path):
    src = tmp_path / "src"
    (src / "audio").mkdir(parents=True)
    rows = ["ID,duration,wav"]
    for split in ("train", "test"):
        for i in range(2):
            name = f"{split}{i}.wav"
            sf.write(src / "audio" / name, np.zeros(1600, np.float32), 16000)
            rows.append(f"{split}{i},0.1,$data_root/audio/{name}")
        (src / f"{split}.csv").write_text(
            "\n".join([rows[0]] + [r for r in rows[1:] if r.startswith(split)]) + "\n"
        )
        (src / f"{split}.tsv").write_text(
            f"filename\tonset\toffset\tevent_label\n{split}0.wav\t0\t1\tdog\n"
            f"{split}0.wav\t1\t2\tcat\n"
        )
    task = probe_tasks.make_task(
        {
            "name": "ev",
            "domain": "env",
            "train_csv": "src/train.csv",
            "test_csv": "src/test.csv",
            "label_column": "events",
            "type": "multilabel",
            "prepare": {
                "kind": "event_tags",
                "events": {"train": "src/train.tsv", "test": "src/test.tsv"},
            },
        },
        str(tmp_path),
        "test",
    )
    out = probe_prepare.prepare_task(task, str(tmp_path / "out"))
    assert out.csvs["train"] == str(tmp_path / "out" / "ev" / "train.csv")
    lines = Path(out.csvs["test"]).read_text().splitlines()
    assert lines[0] == "ID,duration,wav,events"
    assert lines[1].endswith(",cat dog") and lines[2].endswith(",")
    assert str(src / "audio" / "test0.wav") in lines[1]  # $data_root filled in
    assert sorted(p.name for p in src.iterdir()) == [
        "audio",
        "test.csv",
        "test.tsv",
        "train.csv",
        "train.tsv",
    ]  # nothing written next to the source data


def test_logmel_embedding_is_per_clip_mean_and_std():
    from bestrq2_lobes.model.frontend import LogMel

    frontend = LogMel(n_mels=16)
    embedder = probe_embed.LogMelEmbedder(frontend)
    wavs = torch.randn(2, 8000)
    out = embedder(wavs, torch.tensor([8000, 5000]))
    alone = frontend(wavs[1:, :5000])[0]  # (mels, frames) of the short clip alone
    expected = torch.cat([alone.mean(-1), alone.std(-1, unbiased=False)])
    assert torch.allclose(out[1], expected, atol=1e-3)


def test_plot_reads_tasks_and_flat_results(tmp_path):
    res = {
        "tasks": {"music": {"linear": 0.5, "knn": 0.4}},
        "domain_music_linear": 0.5,
        "domain_music_knn": 0.4,
        "b_linear": 0.1,
        "b_knn": 0.2,
    }
    bars = probe_plots.result_bars(res)
    assert bars == [
        ("music", 0.5, 0.4, False),
        ("b", 0.1, 0.2, False),
        ("music", 0.5, 0.4, True),
    ]
    path = probe_plots.plot_results(res, tmp_path / "p.png")
    assert Path(path).read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory):
    """Tones (low/high, with or without noise) in train/valid/test manifests.

    Two tasks on the same clips: ``pitch`` (multiclass) and ``tags``
    (multilabel: ``noisy``, ``loud``). One clip is shorter than one frame.
    """
    folder = tmp_path_factory.mktemp("probe_data")
    rng = np.random.default_rng(0)
    sizes = {"train": 12, "valid": 4, "test": 6}
    for split, count in sizes.items():
        rows = ["ID,duration,wav,pitch,tags"]
        for i in range(count):
            seconds = 0.3 if (split, i) == ("train", 0) else 0.8 + 0.2 * (i % 4)
            pitch = "high" if i % 2 else "low"
            noisy, loud = i % 3 == 0, (i // 2) % 2 == 0
            t = np.arange(int(seconds * 16000)) / 16000
            wav = np.sin(2 * np.pi * (1500 if pitch == "high" else 200) * t)
            wav *= 0.5 if loud else 0.1
            if noisy:
                wav = wav + 0.2 * rng.standard_normal(t.shape)
            sf.write(folder / f"{split}{i}.flac", wav.astype(np.float32), 16000)
            tags = " ".join(t for t, on in (("noisy", noisy), ("loud", loud)) if on)
            rows.append(
                f"{split}{i},{seconds},$data_root/{split}{i}.flac,{pitch},{tags}"
            )
        (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")
    (folder / "tasks.yaml").write_text(
        "- name: pitch\n  domain: speech\n  train_csv: train.csv\n"
        "  valid_csv: valid.csv\n  test_csv: test.csv\n  label_column: pitch\n"
        "  type: multiclass\n"
        "- name: tags\n  domain: music\n  weight: 2\n  train_csv: train.csv\n"
        "  test_csv: test.csv\n  label_column: tags\n  type: multilabel\n"
        "  metric: map\n"
    )
    return folder


def check_outputs(out, tasks=("pitch", "tags")):
    results = json.loads((out / "results.json").read_text())
    for probe in ("linear", "knn"):
        for task in tasks:
            assert 0.0 <= results[f"{task}_{probe}"] <= 1.0
        assert math.isfinite(results[f"overall_{probe}"])
        assert math.isfinite(results[f"mean_of_domains_{probe}"])
    flat = {k: v for k, v in results.items() if k != "tasks"}
    assert all(math.isfinite(v) for v in flat.values())
    for task in tasks:
        assert results["tasks"][task]["linear"] == results[f"{task}_linear"]
    assert "overall (weighted)" in (out / "results.md").read_text()
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    return results


def test_random_baseline_end_to_end_and_cache(tiny_suite, tmp_path):
    out = tmp_path / "random"
    args = [f"--tasks={tiny_suite / 'tasks.yaml'}", f"--output_folder={out}"]
    proc = run_recipe(*args, "--debug", *TINY, *RUN)
    assert own_lines(proc)[0].startswith("No --encoder_dir given")
    assert proc.stdout.strip().splitlines()[-1].startswith("Probe suite finished: 2")
    first = check_outputs(out)
    weighted = (first["pitch_linear"] + 2 * first["tags_linear"]) / 3
    assert first["overall_linear"] == pytest.approx(weighted)
    assert sorted(p.name for p in (out / "embeddings" / "pitch").iterdir()) == [
        "test.pt",
        "train.pt",
        "valid.pt",
    ]
    assert (out / "save" / "tags_linear_probe.ckpt").is_file()
    assert first["tasks"]["tags"]["weight"] == 2.0
    # the bar chart comes from the library's probe_chart (also `plots probe`)
    assert (out / "results.png").stat().st_size > 0
    again = run_recipe(*args, "--debug", *TINY, *RUN)
    assert "pitch/train: embeddings loaded" in again.stdout + again.stderr
    assert check_outputs(out) == first


def test_logmel_baseline_single_task_mode(tiny_suite, tmp_path):
    out = tmp_path / "logmel"
    proc = run_recipe(
        f"--train_csv={tiny_suite / 'train.csv'}",
        f"--valid_csv={tiny_suite / 'valid.csv'}",
        f"--test_csv={tiny_suite / 'test.csv'}",
        "--label_column=pitch",
        "--task_name=pitch",
        "--baseline=logmel",
        f"--output_folder={out}",
        *TINY,
        *RUN,
    )
    assert own_lines(proc)[0].startswith("Baseline logmel")
    results = check_outputs(out, tasks=("pitch",))
    assert results["pitch_linear"] == 1.0  # low and high tones are trivially apart


def test_exported_encoder_dir(tiny_suite, tmp_path):
    from bestrq2_lobes.lobe.encoder_dir import write_encoder_dir
    from bestrq2_lobes.model.encoder import ViTEncoder
    from bestrq2_lobes.model.frontend import LogMel

    torch.manual_seed(0)
    enc_dir = write_encoder_dir(
        tmp_path / "enc",
        LogMel(n_mels=32),
        ViTEncoder(n_mels=32, embed_dim=32, depth=1, num_heads=4),
        10.0,
    )
    out = tmp_path / "exported"
    proc = run_recipe(
        f"--tasks={tiny_suite / 'tasks.yaml'}",
        f"--encoder_dir={enc_dir}",
        f"--output_folder={out}",
        "--frame_readout=concat",
        "--debug",
        *RUN,
    )
    assert own_lines(proc)[0].startswith(f"Encoder: {enc_dir} (width 32, depth 1")
    assert "64 features per frame (concat read-out)" in own_lines(proc)[0]
    check_outputs(out)


def test_every_layer_probed_and_the_last_layer_headline_unchanged(tiny_suite, tmp_path):
    """``--probe_layers all``: a probe per hidden state; the headline is as before.

    ``pitch`` has a valid split, so its best layer is chosen by it; ``tags`` has
    none, so it has no best layer and the suite reports no overall best.
    """
    tiny = [*TINY[:1], "--depth=2", *TINY[2:]]
    common = [f"--tasks={tiny_suite / 'tasks.yaml'}", "--debug", *tiny, *RUN]
    run_recipe(*common, f"--output_folder={tmp_path / 'last'}")
    run_recipe(*common, f"--output_folder={tmp_path / 'all'}", "--probe_layers=all")
    last = check_outputs(tmp_path / "last")
    every = json.loads((tmp_path / "all" / "results.json").read_text())
    for key in ("overall_linear", "overall_knn", "pitch_linear", "tags_linear"):
        assert every[key] == last[key]
    pitch, tags = every["tasks"]["pitch"], every["tasks"]["tags"]
    assert len(pitch["layers_linear"]) == len(pitch["layers_valid"]) == 3
    assert pitch["layers_linear"][-1] == pitch["linear"]
    best = pitch["best_layer"]
    assert pitch["layers_valid"][best] == max(pitch["layers_valid"])
    assert pitch["best_layer_linear"] == pitch["layers_linear"][best]
    assert tags["best_layer"] is None and "overall_best_layer_linear" not in every
    curve = every["overall_linear_layers"]
    weighted = (pitch["layers_linear"][0] + 2 * tags["layers_linear"][0]) / 3
    assert len(curve) == 3 and curve[0] == pytest.approx(weighted)
    assert (
        "Linear probe on each hidden state"
        in (tmp_path / "all" / "results.md").read_text()
    )
    bad = run_recipe(
        *common,
        f"--output_folder={tmp_path / 'bad'}",
        "--probe_layers=some",
        check=False,
    )
    assert bad.returncode != 0
    assert "--probe_layers must be last or all" in bad.stderr


def load_train_module():
    """recipes/probe/train.py as a module (other recipes have a train.py too)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("probe_train", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_random_baseline_takes_encoder_dir_architecture(tmp_path):
    probe_train = load_train_module()
    from bestrq2_lobes import BestRQ2Encoder
    from bestrq2_lobes.lobe.encoder_dir import encoder_config, write_encoder_dir
    from bestrq2_lobes.model.encoder import ViTEncoder
    from bestrq2_lobes.model.frontend import LogMel

    encoder = ViTEncoder(n_mels=32, embed_dim=16, depth=2, num_heads=2)
    enc_dir = write_encoder_dir(tmp_path / "enc", LogMel(n_mels=32), encoder, 10.0)
    cfg = encoder_config(embed_dim=32, depth=1, num_heads=4, n_mels=32)
    hparams = {
        "baseline": "random",
        "encoder_dir": enc_dir,
        "seed": 3,
        "ssl": BestRQ2Encoder(None, config=cfg),
    }
    embedder, description, _ = probe_train.build_embedder(hparams)
    assert description.startswith("Baseline random: the architecture of")
    assert embedder.dim == 16 and embedder.ssl.depth == 2
    weights = embedder.ssl.encoder.patch_embed.proj.weight
    assert not torch.equal(weights, encoder.patch_embed.proj.weight)
    wide, description, _ = probe_train.build_embedder(
        {**hparams, "frame_readout": "concat"}
    )
    assert wide.dim == 2 * 16 and "concat read-out" in description
    with pytest.raises(probe_tasks.TaskError, match="--baseline must be"):
        probe_train.build_embedder({**hparams, "baseline": "mfcc"})


def test_missing_label_column_is_a_one_line_error(tiny_suite, tmp_path):
    proc = run_recipe(
        f"--train_csv={tiny_suite / 'train.csv'}",
        f"--test_csv={tiny_suite / 'test.csv'}",
        "--label_column=genre",
        "--baseline=logmel",
        f"--output_folder={tmp_path / 'err'}",
        *TINY,
        *RUN,
        check=False,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "'genre'" in last and "train.csv" in last


def test_ddp_two_processes_gloo(tiny_suite, tmp_path, torchrun_cmd):
    out = tmp_path / "ddp"
    launcher = torchrun_cmd(2)
    args = [f"--tasks={tiny_suite / 'tasks.yaml'}", *TINY, *RUN]
    proc = run_recipe(
        *args,
        f"--output_folder={out}",
        "--distributed_backend=gloo",
        "--debug",
        launcher=launcher,
        timeout=300,
    )
    assert proc.stdout.count("Probe suite finished") == 1
    ddp = check_outputs(out)
    assert not list((out / "embeddings").rglob("*.part*"))
    # the shards, merged, equal a single-process run
    single = tmp_path / "single"
    run_recipe(*args, f"--output_folder={single}", "--debug")
    for split in ("train", "valid", "test"):
        a = torch.load(out / "embeddings" / "pitch" / f"{split}.pt")
        b = torch.load(single / "embeddings" / "pitch" / f"{split}.pt")
        assert a["ids"] == b["ids"]
        assert torch.allclose(a["embeddings"], b["embeddings"], atol=1e-5)
    assert check_outputs(single)["overall_knn"] == pytest.approx(ddp["overall_knn"])


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_shared_data_suite_debug(tmp_path):
    out = tmp_path / "shared"
    proc = run_recipe(
        f"--tasks={RECIPE_DIR / 'tasks_shared.yaml'}",
        f"--output_folder={out}",
        "--debug",
        *TINY,
        *RUN,
    )
    tasks = ("asterisk_words", "gm_instruments", "office_events")
    results = check_outputs(out, tasks=tasks)
    for domain in ("speech", "music", "environment"):
        assert f"domain_{domain}_linear" in results
    vocabulary = (out / "task_data" / "asterisk_words" / "vocabulary.txt").read_text()
    assert vocabulary.split()[:3] == ["THE", "TO", "YOUR"]
    assert "Probe suite finished: 3 tasks" in proc.stdout
