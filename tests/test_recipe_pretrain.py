"""End-to-end smoke tests of recipes/pretrain/train.py on tiny generated data.

Each run scales the paper model down with command-line overrides (the YAML
defaults stay the paper's) and runs in seconds on a CPU.
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
RECIPE = REPO / "recipes" / "pretrain" / "train.py"
SHARED = REPO.parent / "shared" / "data"
TINY = [
    "--embed_dim=32",
    "--depth=1",
    "--num_heads=4",
    "--codebook_size=64",
    "--n_mels=32",
    "--crop_seconds=2.0",
    "--batch_size=2",
    "--num_workers=0",
    "--device=cpu",
    "--noprogressbar",
]
TWO_STEP = ["--predictor_depth=1"]


def run_recipe(hparams, *args, timeout=240, launcher=None):
    """Runs the recipe in a subprocess and returns the completed process."""
    cmd = (launcher or [sys.executable]) + [
        str(RECIPE),
        str(REPO / "hparams" / hparams),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        cmd + list(args),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def read_metrics(folder):
    lines = (Path(folder) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def audio_folder(tmp_path_factory):
    """A few clips of different lengths and rates, plus one broken file."""
    folder = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    for i, seconds in enumerate([0.9, 1.5, 2.5, 3.0, 1.2, 2.0, 4.0, 0.7]):
        rate = 16000 if i % 3 else 22050
        t = np.arange(int(seconds * rate)) / rate
        tone = np.sin(2 * np.pi * (200 + 100 * i) * t) * (0.5 + 0.5 * np.sin(3 * t))
        wav = 0.3 * tone + 0.05 * rng.standard_normal(t.shape)
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        sf.write(sub / f"clip{i}.flac", wav.astype(np.float32), rate)
    (folder / "broken.wav").write_text("not audio")
    return folder


@pytest.mark.parametrize(
    "hparams, extra",
    [
        ("bestrq2_vit.yaml", TWO_STEP),
        ("bestrq_vit_onestage.yaml", []),
        ("bestrq2_vit_speech.yaml", TWO_STEP),
        ("bestrq2_vit_normalized.yaml", TWO_STEP),
    ],
)
def test_debug_run_each_hparams(hparams, extra, audio_folder, tmp_path):
    out = tmp_path / "out"
    proc = run_recipe(
        hparams,
        f"--data_folder={audio_folder}",
        f"--output_folder={out}",
        "--debug",
        *TINY,
        *extra,
    )
    assert "Pretraining finished" in proc.stdout
    assert "DEMO" not in proc.stdout
    skipped = (out / "manifests" / "skipped.csv").read_text()
    assert "broken.wav" in skipped
    train_rows = (out / "manifests" / "train.csv").read_text().splitlines()
    assert len(train_rows) > 2
    metrics = read_metrics(out)
    assert {m["stage"] for m in metrics} == {"train", "valid"}
    assert all(np.isfinite(m["loss"]) for m in metrics)


def test_compile_flag_compiles_the_transformer_stacks(audio_folder, tmp_path):
    out = tmp_path / "out"
    proc = run_recipe(
        "bestrq2_vit.yaml",
        f"--data_folder={audio_folder}",
        f"--output_folder={out}",
        "--debug",
        "--compile",
        *TINY,
        *TWO_STEP,
        timeout=600,
    )
    assert "2 transformer blocks compiled" in proc.stdout + proc.stderr
    assert "Pretraining finished" in proc.stdout
    assert all(np.isfinite(m["loss"]) for m in read_metrics(out))


def test_demo_mode_announces_and_runs(tmp_path):
    out = tmp_path / "demo"
    proc = run_recipe(
        "bestrq2_vit.yaml",
        f"--output_folder={out}",
        "--total_steps=2",
        "--log_interval=1",
        *TINY,
        *TWO_STEP,
    )
    head = proc.stdout.splitlines()[:12]
    text = "\n".join(head)
    assert "running the built-in DEMO" in text
    # batch_size was given on the command line, so the demo leaves it alone
    assert "batch_size: 256 ->" not in text
    assert "num_workers: 8 ->" not in text
    assert "total_steps: 200000 ->" not in text
    assert "shortens nothing" in text
    assert f"Writing to {out}." in text  # given: no separate demo folder
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("Pretraining finished: 2 optimiser steps")
    assert (out / "demo_corpus" / "audio").is_dir()


def test_demo_lists_what_it_shortens(tmp_path):
    proc = run_recipe(
        "bestrq_vit_onestage.yaml",
        f"--output_folder={tmp_path / 'demo'}",
        "--optimizer_step_limit=1",
        *[a for a in TINY if not a.startswith(("--batch_size", "--num_workers"))],
    )
    assert "batch_size: 256 -> 8" in proc.stdout
    assert "total_steps: 200000 -> 40" in proc.stdout
    assert "log_interval: 50 -> 10" in proc.stdout
    assert "Pretraining finished: 1 optimiser steps" in proc.stdout


def test_stop_and_resume_continues_step_counter(audio_folder, tmp_path):
    out = tmp_path / "resume"
    common = [
        f"--data_folder={audio_folder}",
        f"--output_folder={out}",
        "--total_steps=6",
        "--ckpt_interval_steps=1",
        "--log_interval=1",
        *TINY,
        *TWO_STEP,
    ]
    first = run_recipe("bestrq2_vit.yaml", *common, "--optimizer_step_limit=2")
    assert "Pretraining finished: 2 optimiser steps" in first.stdout
    second = run_recipe("bestrq2_vit.yaml", *common)
    assert "Pretraining finished: 6 optimiser steps" in second.stdout
    train_steps = [m["step"] for m in read_metrics(out) if m["stage"] == "train"]
    # the second run starts from step 3, not from 1 again
    assert train_steps.count(1) == 1
    assert max(train_steps) == 6
    ckpts = sorted((out / "save").glob("CKPT+*"))
    assert ckpts and (ckpts[-1] / "encoder.ckpt").is_file()


def test_ddp_two_processes_gloo(audio_folder, tmp_path, torchrun_cmd):
    out = tmp_path / "ddp"
    launcher = torchrun_cmd(2)
    proc = run_recipe(
        "bestrq2_vit.yaml",
        f"--data_folder={audio_folder}",
        f"--output_folder={out}",
        "--distributed_backend=gloo",
        "--total_steps=2",
        "--log_interval=1",
        *TINY,
        *TWO_STEP,
        launcher=launcher,
        timeout=300,
    )
    assert proc.stdout.count("Pretraining finished: 2 optimiser steps") == 1
    metrics = read_metrics(out)
    assert [m["step"] for m in metrics if m["stage"] == "train"][:2] == [1, 2]


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_debug_run_on_shared_manifest(tmp_path):
    data_root = SHARED / "office_sed"
    proc = run_recipe(
        "bestrq2_vit.yaml",
        f"--train_csv={data_root / 'train.csv'}",
        f"--valid_csv={data_root / 'valid.csv'}",
        f"--data_root={data_root}",
        f"--output_folder={tmp_path / 'shared'}",
        "--debug",
        *TINY,
        *TWO_STEP,
    )
    assert "Pretraining finished" in proc.stdout
