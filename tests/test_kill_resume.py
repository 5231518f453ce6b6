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

# Injected into the killed runs only (as ``sitecustomize``): the process stops
# at a known point and waits there until the test kills it, so every kill lands
# where it is meant to, however loaded the machine is. ``PAUSE_AT_SAVE=n`` picks
# the n-th checkpoint save of the process; ``PAUSE_WHERE=before`` pauses before
# that save starts (between two steps), ``inside`` while its first parameter
# file is being written (the checkpoint's temporary folder exists, half full).
PAUSE_HOOK = """
import os, time
import bestrq2_lobes.training.checkpointing as c
_save, _save_one = c.AtomicCheckpointer.save_checkpoint, c.AtomicCheckpointer._save_one
_count = [0]
def _pause(where):
    nth = int(os.environ["PAUSE_AT_SAVE"])
    if os.environ.get("PAUSE_WHERE") == where and _count[0] == nth:
        open(os.environ["PAUSE_MARKER"], "w").write(where)
        while True:
            time.sleep(1)
def save_checkpoint(self, *args, **kwargs):
    _count[0] += 1
    _pause("before")
    return _save(self, *args, **kwargs)
def _save_one_paused(self, key, obj, path):
    _pause("inside")
    return _save_one(self, key, obj, path)
c.AtomicCheckpointer.save_checkpoint = save_checkpoint
c.AtomicCheckpointer._save_one = _save_one_paused
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
    (hook / "sitecustomize.py").write_text(PAUSE_HOOK)
    marker = tmp_path / "paused.txt"
    out = tmp_path / "killed"
    # Each run resumes from the last complete checkpoint and is killed where it
    # pauses: before its 2nd save, inside its 2nd save (a half-written
    # checkpoint), before its 3rd save, and inside its 1st save, which leaves a
    # temporary folder for the final run to clean up.
    kill_points = [("before", 2), ("inside", 2), ("before", 3), ("inside", 1)]
    for where, nth_save in kill_points:
        marker.unlink(missing_ok=True)
        proc = subprocess.Popen(
            command(pretrain_args, data, out),
            env={
                **env,
                "PYTHONPATH": f"{hook}{os.pathsep}{env.get('PYTHONPATH', '')}",
                "PAUSE_MARKER": str(marker),
                "PAUSE_WHERE": where,
                "PAUSE_AT_SAVE": str(nth_save),
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # no race: the process waits at the pause point until it is killed
        while proc.poll() is None and not marker.exists():
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before its pause ({where})"
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
