"""Faults during training: non-finite updates, failing checkpoint writes."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from bestrq2_lobes.training.checkpointing import (
    AtomicCheckpointer,
    CheckpointWriteError,
)

SR = 16000

# Injected into the run under test only (sitecustomize runs before the recipe).
HOOKS = """
import errno, os
import torch
import bestrq2_lobes.model.pretraining as p

_loss = p.masked_prediction_loss
_calls = [0]
def _nan_loss(out):
    loss, stats = _loss(out)
    _calls[0] += 1
    first, last = map(int, os.environ.get("NAN_CALLS", "0:0").split(":"))
    if first <= _calls[0] <= last:
        loss = loss * float("nan")
    return loss, stats
p.masked_prediction_loss = _nan_loss

_save = torch.save
_saves = [0]
def _full_disk(obj, f, *args, **kwargs):
    _saves[0] += 1
    limit = int(os.environ.get("FAIL_SAVE_AFTER", "0"))
    if limit and _saves[0] > limit:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _save(obj, f, *args, **kwargs)
torch.save = _full_disk
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    audio = root / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        t = np.arange(2 * SR) / SR
        wav = np.sin(2 * np.pi * (200 + 80 * i) * t) * (t % 0.3 < 0.15)
        sf.write(
            audio / f"c{i}.wav", 0.3 * wav + 0.02 * rng.standard_normal(t.size), SR
        )
    hook = root / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOKS)
    return audio, hook


def run(pretrain_args, setup, out, *extra, **env_extra):
    audio, hook = setup
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        **env_extra,
    }
    cmd = [
        sys.executable,
        *pretrain_args(
            audio,
            out,
            "--crop_seconds=1.5",
            "--batch_size=2",
            "--log_interval=1",
            "--ckpt_interval_steps=1",
            *extra,
        ),
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def read_train(out):
    import json

    lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["stage"] == "train"]


def test_nonfinite_updates_are_skipped_and_counted(setup, tmp_path, pretrain_args):
    out = tmp_path / "skip"
    proc = run(pretrain_args, setup, out, "--total_steps=5", NAN_CALLS="2:3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Pretraining finished: 5 optimiser steps" in proc.stdout
    records = read_train(out)
    assert sum(r["skipped_updates"] for r in records) == 2
    assert all(np.isfinite(r["loss"]) for r in records if r["skipped_updates"] == 0)
    state = torch.load(sorted((out / "save").glob("CKPT+*"))[-1] / "encoder.ckpt")
    assert all(torch.isfinite(v).all() for v in state.values())


def test_too_many_nonfinite_updates_stop_with_a_clear_error(
    setup, tmp_path, pretrain_args
):
    out = tmp_path / "stop"
    proc = run(
        pretrain_args,
        setup,
        out,
        "--total_steps=50",
        "--nonfinite_patience=3",
        NAN_CALLS="3:999",
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 3 non-finite updates in a row")
    ckpts = sorted((out / "save").glob("CKPT+*"))
    assert ckpts, "the checkpoints of the good steps are kept"
    state = torch.load(ckpts[-1] / "encoder.ckpt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values())


def test_failing_checkpoint_write_stops_and_keeps_the_previous(
    setup, tmp_path, pretrain_args
):
    out = tmp_path / "full"
    proc = run(pretrain_args, setup, out, "--total_steps=50", FAIL_SAVE_AFTER="12")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: could not write checkpoint")
    assert (
        "No space left on device" in last and "previous checkpoints are intact" in last
    )
    save = out / "save"
    assert not list(save.glob(".partial-*"))
    ckpts = sorted(save.glob("CKPT+*"))
    assert ckpts
    for name in ("encoder", "predictor", "quantizer", "optimizer"):
        torch.load(ckpts[-1] / f"{name}.ckpt", weights_only=True)  # complete


def test_atomic_checkpointer_unit(tmp_path, monkeypatch):
    layer = torch.nn.Linear(3, 3)
    ckpt = AtomicCheckpointer(tmp_path, recoverables={"layer": layer})
    first = ckpt.save_checkpoint(meta={"step": 1})
    before = layer.weight.detach().clone()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    with torch.no_grad():
        layer.weight.add_(1.0)
    with pytest.raises(CheckpointWriteError, match="previous checkpoints are intact"):
        ckpt.save_checkpoint(meta={"step": 2})
    monkeypatch.undo()
    assert [c.path for c in ckpt.list_checkpoints()] == [first.path]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".partial-")]
    ckpt.recover_if_possible()
    assert torch.equal(layer.weight, before)
