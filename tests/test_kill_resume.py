"""SIGKILL at several moments (one inside a checkpoint write), then resume.

The resumed run must end at the same step as an uninterrupted run, and every
logged per-step loss must equal the uninterrupted run's (draws are seeded by the
run's position, checkpoints appear atomically).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 16000
TOTAL = 8

# Injected into the killed runs only: each parameter-file write pauses and
# leaves a marker, so the test can kill the process inside a checkpoint write.
SLOW_SAVE = """
import os, time
import bestrq2_lobes.checkpointing as c
_orig = c.AtomicCheckpointer._save_one
def _slow(self, key, obj, path):
    marker = os.environ.get("SLOW_SAVE_MARKER")
    if marker:
        open(marker, "a").write(f"{path}\\n")
        time.sleep(0.3)
    return _orig(self, key, obj, path)
c.AtomicCheckpointer._save_one = _slow
"""


def command(pretrain_args, data, out):
    return [
        sys.executable,
        *pretrain_args(
            data,
            out,
            f"--total_steps={TOTAL}",
            "--ckpt_interval_steps=1",
            "--log_interval=1",
            "--crop_seconds=1.5",
            "--batch_size=2",
        ),
    ]


def train_losses(out):
    path = Path(out) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by the kill
    return [(r["step"], r["loss"]) for r in rows if r["stage"] == "train"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    for i in range(10):
        t = np.arange(int((1.0 + 0.3 * i) * SR)) / SR
        wav = np.sin(2 * np.pi * (200 + 90 * i) * t) * (t % 0.4 < 0.2)
        sf.write(
            folder / f"c{i}.wav", 0.3 * wav + 0.02 * rng.standard_normal(t.size), SR
        )
    return folder


def test_sigkill_anywhere_then_resume_matches_uninterrupted(
    data, tmp_path, pretrain_args
):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    reference = tmp_path / "reference"
    subprocess.run(
        command(pretrain_args, data, reference),
        env=env,
        check=True,
        capture_output=True,
    )
    expected = dict(train_losses(reference))
    assert sorted(expected) == list(range(1, TOTAL + 1))

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_SAVE)
    marker = tmp_path / "saving.txt"
    killed_env = {
        **env,
        "PYTHONPATH": f"{hook}{os.pathsep}{env.get('PYTHONPATH', '')}",
        "SLOW_SAVE_MARKER": str(marker),
    }
    out = tmp_path / "killed"
    # kill after the first logged step k (k = 1, 3, 5, 6), and once mid-write
    kill_points = [("step", 1), ("write", None), ("step", 3), ("step", 5), ("step", 6)]
    for kind, step in kill_points:
        marker.unlink(missing_ok=True)
        before = len(train_losses(out))
        proc = subprocess.Popen(
            command(pretrain_args, data, out),
            env=killed_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline:
            logged = train_losses(out)
            if kind == "step" and logged and logged[-1][0] >= step:
                break
            if kind == "write" and len(logged) > before and marker.exists():
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    partial = list((out / "save").glob(".partial-*"))
    assert partial, "no kill landed inside a checkpoint write"

    final = subprocess.run(
        command(pretrain_args, data, out), env=env, capture_output=True, text=True
    )
    assert final.returncode == 0, final.stderr[-3000:]
    assert f"Pretraining finished: {TOTAL} optimiser steps" in final.stdout
    assert not list((out / "save").glob(".partial-*"))
    logged = train_losses(out)
    assert {step for step, _ in logged} == set(expected)
    for step, loss in logged:
        assert loss == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step
