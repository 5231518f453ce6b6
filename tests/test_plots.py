"""Smoke tests of the plotting tools: images written, non-empty, expected size."""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bestrq2_lobes.plots.probe_chart import plot_results

REPO = Path(__file__).resolve().parents[1]
SR = 16000


def png_size(path):
    with open(path, "rb") as fin:
        header = fin.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def run(args, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, pretrain_args):
    root = tmp_path_factory.mktemp("plots")
    audio = root / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        t = np.arange(3 * SR) / SR
        wav = np.sin(2 * np.pi * (300 + 150 * i) * t) * (t % 0.5 < 0.25)
        sf.write(
            audio / f"c{i}.wav", 0.3 * wav + 0.01 * rng.standard_normal(t.size), SR
        )
    out = root / "run"
    run(
        pretrain_args(
            audio,
            out,
            "--batch_size=2",
            "--total_steps=4",
            "--log_interval=1",
        )
    )
    return out, audio


def test_curves(run_dir, tmp_path):
    out, _ = run_dir
    run(["-m", "bestrq2_lobes.plots", "curves", str(out), str(tmp_path / "c.png")])
    assert png_size(tmp_path / "c.png") == (2000, 320)


def test_clip(run_dir, tmp_path):
    out, audio = run_dir
    proc = run(
        [
            "-m",
            "bestrq2_lobes.plots",
            "clip",
            str(out),
            str(audio / "c1.wav"),
            str(tmp_path / "clip.png"),
        ]
    )
    assert png_size(tmp_path / "clip.png") == (1200, 400)
    accuracy = float(proc.stdout.split("accuracy=")[1].split()[0])
    assert 0.0 <= accuracy <= 1.0


def test_codebook(run_dir, tmp_path):
    out, audio = run_dir
    proc = run(
        [
            "-m",
            "bestrq2_lobes.plots",
            "codebook",
            str(out),
            str(out / "manifests" / "train.csv"),
            str(tmp_path / "code.png"),
            f"--data_root={audio}",
        ]
    )
    assert png_size(tmp_path / "code.png") == (1200, 360)
    fields = dict(kv.split("=") for kv in proc.stdout.split())
    assert 1.0 <= float(fields["perplexity"]) <= 64.0
    assert 0 <= int(fields["dead_codes"]) < 64


def test_probe_bar_chart(tmp_path):
    results = {
        "tasks": {
            "speech": {"linear": 0.5, "knn": 0.3},
            "music": {"linear": 0.7, "knn": 0.6},
        },
        "overall_linear": 0.6,
        "overall_knn": 0.45,
    }
    path = plot_results(results, tmp_path / "probe.png")
    assert png_size(path) == (720, 480)
    (tmp_path / "r.json").write_text(json.dumps(results))
    run(
        [
            "-m",
            "bestrq2_lobes.plots",
            "probe",
            str(tmp_path / "r.json"),
            str(tmp_path / "p2.png"),
        ]
    )
    assert png_size(tmp_path / "p2.png") == (720, 480)


def test_missing_run_is_a_one_line_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bestrq2_lobes.plots", "curves", str(tmp_path), "x.png"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 1 and proc.stderr.startswith("error:")
    assert "no metrics log" in proc.stderr
