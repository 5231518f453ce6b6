"""DDP on CPU (gloo): same trajectory as one process, and no hang when a rank dies."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

SR = 16000


def args(pretrain_args, data, out, batch_size, total_steps=4):
    return pretrain_args(
        data,
        out,
        f"--batch_size={batch_size}",
        f"--total_steps={total_steps}",
        "--drop_path=0.0",
        "--crop_seconds=1.5",
    )


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Equal-length clips: every crop is full, so ranks hold equal token counts."""
    folder = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    for i in range(18):
        t = np.arange(2 * SR) / SR
        wav = np.sin(2 * np.pi * (150 + 70 * i) * t) * (t % (0.2 + 0.05 * i) < 0.1)
        sf.write(
            folder / f"c{i:02d}.wav", 0.3 * wav + 0.02 * rng.standard_normal(t.size), SR
        )
    return folder


def final_encoder(out):
    ckpts = sorted((Path(out) / "save").glob("CKPT+*"))
    return torch.load(ckpts[-1] / "encoder.ckpt", weights_only=True)


def test_two_processes_follow_the_one_process_trajectory(
    data, tmp_path, torchrun_cmd, pretrain_args
):
    one = tmp_path / "one"
    proc = subprocess.run(
        [sys.executable, *args(pretrain_args, data, one, batch_size=4)],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = tmp_path / "two"
    proc = subprocess.run(
        torchrun_cmd(2)
        + args(pretrain_args, data, two, batch_size=2, total_steps=4)
        + ["--distributed_backend=gloo"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Pretraining finished: 4 optimiser steps" in proc.stdout
    a, b = final_encoder(one), final_encoder(two)
    start = final_encoder_at_init(pretrain_args, data, tmp_path)
    moved = max((a[k] - start[k]).abs().max().item() for k in a)
    assert moved > 1e-4  # training changed the weights...
    for key in a:  # ...and both runs changed them the same way
        torch.testing.assert_close(a[key], b[key], atol=2e-5, rtol=1e-4)


def final_encoder_at_init(pretrain_args, data, tmp_path):
    out = tmp_path / "init"
    proc = subprocess.run(
        [sys.executable, *args(pretrain_args, data, out, batch_size=4, total_steps=1)]
        + ["--lr=0.0"],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return final_encoder(out)


def test_a_dying_rank_does_not_hang_the_others(
    data, tmp_path, torchrun_cmd, pretrain_args
):
    out = tmp_path / "dying"
    cmd = torchrun_cmd(2) + args(
        pretrain_args, data, out, batch_size=2, total_steps=10_000
    )
    cmd += ["--distributed_backend=gloo", "--log_interval=1"]
    launcher = subprocess.Popen(
        cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 180
        metrics = out / "metrics.jsonl"
        while time.time() < deadline and not (
            metrics.is_file() and metrics.read_text().count('"train"') >= 2
        ):
            assert launcher.poll() is None, "training ended early"
            time.sleep(0.2)
        workers = _children(launcher.pid)
        assert len(workers) == 2, workers
        os.kill(workers[-1], signal.SIGKILL)
        killed_at = time.time()
        code = launcher.wait(timeout=120)
        elapsed = time.time() - killed_at
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert code != 0
    assert elapsed < 60, f"the surviving rank took {elapsed:.0f} s to stop"
    for pid in workers:
        assert not _alive(pid)


def _children(pid):
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True
    ).stdout
    return sorted(int(p) for p in out.split())


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"
