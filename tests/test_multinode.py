"""Two torchrun launchers on this machine as two nodes, on the loopback address only.

Each launcher is a "node": ``--nnodes 2 --nproc_per_node 1``, the c10d
rendezvous on 127.0.0.1, gloo on ``lo``, a tiny model reading tar shards (one
clip per shard). The first test runs them to the end and checks that both
ranks train, that every shard is read exactly once per epoch across the two
nodes, that each save writes one checkpoint (the global main process's), and
that the final weights equal those of one launcher with ``--nproc_per_node 2``.
The second kills one node's worker mid-epoch (SIGKILL, after a checkpoint
exists) under ``--max-restarts 1``: both nodes restart, resume from the last
checkpoint, and end with the weights of the uninterrupted run.

What the workers read and save is recorded by a ``sitecustomize`` hook given
to the workers only (``RECORD_DIR``): one JSON line per batch made by the shard
stream, per checkpoint save call and per checkpoint folder written. Every
subprocess has a timeout; on failure the launchers and all their workers
(which torchrun starts in their own sessions) are killed.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from bestrq2_lobes.data.shard_writer import write_shards
from bestrq2_lobes.data.shards import list_members, resolve_shards

SR = 16000
CLIPS = 12  # one per shard; batch 2 on 2 ranks: 3 steps per epoch
TOTAL = 6  # two epochs
LOOPBACK = "127.0.0.1"
TIMEOUT = 150  # seconds, for any one run

ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
    "GLOO_SOCKET_IFNAME": "lo",
    "MASTER_ADDR": LOOPBACK,
    # a fresh store for the workers of each rendezvous round: the shared one
    # keeps the keys of the round before, and a restarted worker may connect to
    # a dead peer's address (pytorch/pytorch#135712)
    "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
}

# The recipe's workers only (they have RANK): records what they read and save;
# with PAUSE_AT_SAVE=n a worker stops before its n-th checkpoint save and waits
# until it is killed (once: the marker file, naming its pid, is not there yet).
# The launchers' own start-up stays free of the recipe's imports; faulthandler
# shows where a worker is if it is still running after 40 s.
HOOK = """
import json, os, time
from pathlib import Path
import sys
if (
    "RANK" in os.environ
    and os.environ.get("RECORD_DIR")
    and sys.argv[0].endswith("train.py")  # not a subprocess of a worker
):
    import faulthandler; faulthandler.dump_traceback_later(40)
    import bestrq2_lobes.data.shard_stream as ss
    import bestrq2_lobes.training.checkpointing as c
    RANK = int(os.environ["RANK"])
    ATTEMPT = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    OUT = Path(os.environ["RECORD_DIR"]) / f"rank{RANK}-attempt{ATTEMPT}.jsonl"
    def record(**row):
        with open(OUT, "a") as fout:
            fout.write(json.dumps({"rank": RANK, "attempt": ATTEMPT, **row}) + "\\n")
    record(kind="start", local_rank=int(os.environ["LOCAL_RANK"]),
           node=int(os.environ["GROUP_RANK"]), world=int(os.environ["WORLD_SIZE"]),
           launcher=os.getppid(), pid=os.getpid())
    _collate = ss.ShardStream._collate
    def collate(self, items):
        batch = _collate(self, items)
        if self.train:
            record(kind="batch", epoch=self.epoch, ids=list(batch.id))
        return batch
    ss.ShardStream._collate = collate
    _save, _meta, _count = (c.AtomicCheckpointer.save_checkpoint,
                            c.AtomicCheckpointer._save_checkpoint_metafile, [0])
    def save_checkpoint(self, *args, **kwargs):
        _count[0] += 1
        pause = os.environ.get("PAUSE_AT_SAVE")
        marker = Path(os.environ.get("PAUSE_MARKER", "-"))
        if pause and not marker.exists() and _count[0] == int(pause):
            marker.write_text(str(os.getpid()))
            while True:
                time.sleep(1)
        ckpt = _save(self, *args, **kwargs)
        record(kind="save", n=_count[0], got=None if ckpt is None else ckpt.path.name)
        return ckpt
    def metafile(self, fpath, *args, **kwargs):
        record(kind="write", folder=Path(fpath).parent.name)
        return _meta(self, fpath, *args, **kwargs)
    c.AtomicCheckpointer.save_checkpoint = save_checkpoint
    c.AtomicCheckpointer._save_checkpoint_metafile = metafile
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Twelve 2 s clips of distinct content, one per shard."""
    folder = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    t = np.arange(2 * SR) / SR
    for i in range(CLIPS):
        wav = np.sin(2 * np.pi * (150 + 70 * i) * t) * (t % (0.2 + 0.05 * i) < 0.1)
        wav = 0.3 * wav + 0.02 * rng.standard_normal(t.size)
        sf.write(folder / f"c{i:02d}.wav", wav, SR, subtype="PCM_16")
    out = folder / "shards"
    write_shards(folder, out, clips_per_shard=1, progress=False)
    return out


@pytest.fixture(scope="module")
def hook(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hook")
    (folder / "sitecustomize.py").write_text(HOOK)
    return folder


def recipe_args(pretrain_args, shards, out):
    args = pretrain_args(
        shards,
        out,
        f"--train_shards={shards}",
        "--batch_size=2",
        "--crop_seconds=1.5",
        f"--total_steps={TOTAL}",
        "--ckpt_interval_steps=1",
        "--log_interval=1",
        "--precision=fp32",
        "--distributed_backend=gloo",
    )
    return [a for a in args if not a.startswith("--data_folder=")]  # shards only


def launcher(nnodes, nproc, port, run_id, restarts=0):
    """``torchrun`` for one node of ``nnodes``, c10d rendezvous on the loopback."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={nnodes}",
        f"--nproc_per_node={nproc}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={LOOPBACK}:{port}",
        f"--rdzv-id={run_id}",
        f"--local-addr={LOOPBACK}",
        f"--max-restarts={restarts}",
        "--monitor-interval=0.2",
    ]


def descendants(pid):
    """Every live descendant of ``pid`` (torchrun's workers have own sessions)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_all(procs):
    for proc in procs:
        for pid in [*descendants(proc.pid), proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()


def run_nodes(commands, env, timeout=TIMEOUT, while_running=None):
    """Starts the launchers together; waits for all (killing all on failure).

    ``while_running(procs)`` is called once they are started. Returns the
    ``(returncode, output)`` of each.
    """
    logs, procs = [], []
    try:
        for cmd, environ in zip(commands, env, strict=True):
            logs.append(open(environ["LOG"], "w"))
            procs.append(
                subprocess.Popen(
                    cmd, env=environ, stdout=logs[-1], stderr=subprocess.STDOUT
                )
            )
        if while_running is not None:
            while_running(procs)
        deadline = time.time() + timeout
        for proc in procs:
            proc.wait(timeout=max(1, deadline - time.time()))
    finally:
        if any(p.poll() is None for p in procs):
            kill_all(procs)
        for log in logs:
            log.close()
    outputs = [Path(e["LOG"]).read_text() for e in env]
    return [(p.returncode, out) for p, out in zip(procs, outputs, strict=True)]


def node_env(tmp, name, hook, records, **extra):
    return {
        **ENV,
        "PYTHONPATH": f"{hook}{os.pathsep}{ENV.get('PYTHONPATH', '')}",
        "RECORD_DIR": str(records),
        "LOG": str(tmp / f"{name}.log"),
        **extra,
    }


def read_records(folder):
    rows = []
    for path in sorted(Path(folder).glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines()]
    return rows


def final_weights(out):
    """Encoder and predictor tensors of the last end-of-epoch checkpoint."""
    ckpts = []
    for folder in (Path(out) / "save").glob("CKPT+*"):
        meta = yaml.safe_load((folder / "CKPT.yaml").read_text())
        if meta.get("end-of-epoch"):
            ckpts.append((meta["step"], meta["unixtime"], folder))
    step, _, folder = max(ckpts)
    assert step == TOTAL
    weights = {}
    for part in ("encoder", "predictor"):
        state = torch.load(folder / f"{part}.ckpt", weights_only=True)
        weights.update({f"{part}.{k}": v for k, v in state.items()})
    return weights


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0, msg=key)


def train_steps(out):
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").open()]
    return [r["step"] for r in rows if r["stage"] == "train"]


@pytest.fixture(scope="module")
def reference(shards, hook, pretrain_args, tmp_path_factory):
    """One launcher, ``--nproc_per_node 2``: the weights every run must end with."""
    tmp = tmp_path_factory.mktemp("reference")
    out = tmp / "out"
    cmd = launcher(1, 2, free_port(), "ref") + recipe_args(pretrain_args, shards, out)
    env = node_env(tmp, "launcher", hook, tmp)
    [(code, log)] = run_nodes([cmd], [env])
    assert code == 0, log[-4000:]
    assert f"Pretraining finished: {TOTAL} optimiser steps" in log
    return final_weights(out)


def two_nodes(pretrain_args, shards, out, restarts=0):
    port = free_port()
    args = recipe_args(pretrain_args, shards, out)
    return [launcher(2, 1, port, "mn", restarts) + args for _ in range(2)]


def test_two_nodes_train_like_one_node_of_two(
    shards, hook, reference, pretrain_args, tmp_path
):
    out, records = tmp_path / "out", tmp_path / "records"
    records.mkdir()
    envs = [node_env(tmp_path, f"node{i}", hook, records) for i in range(2)]
    results = run_nodes(two_nodes(pretrain_args, shards, out), envs)
    for code, log in results:
        assert code == 0, log[-4000:]
    logs = "".join(log for _, log in results)
    # the summary and the ETA lines come from the global main process only
    assert logs.count(f"Pretraining finished: {TOTAL} optimiser steps") == 1
    assert logs.count(f"step {TOTAL} of {TOTAL} (100%)") == 1

    rows = read_records(records)
    starts = {r["rank"]: r for r in rows if r["kind"] == "start"}
    assert sorted(starts) == [0, 1]  # two ranks, one per node, each its own launcher
    assert {(s["node"], s["local_rank"], s["world"]) for s in starts.values()} == {
        (0, 0, 2),
        (1, 0, 2),
    }
    assert starts[0]["launcher"] != starts[1]["launcher"]

    # both ranks train: 3 batches per epoch each; every shard once per epoch
    shard_of = {}
    for shard in resolve_shards(str(shards))[0]:
        for name, _, _ in list_members(shard.path):
            shard_of[name.rsplit(".", 1)[0]] = os.path.basename(shard.path)
    assert len(shard_of) == CLIPS
    batches = [r for r in rows if r["kind"] == "batch"]
    per_rank = Counter((r["rank"], r["epoch"]) for r in batches)
    assert per_rank == {(rank, e): 3 for rank in (0, 1) for e in (1, 2)}
    for epoch in (1, 2):
        read = Counter(
            shard_of[uid] for r in batches if r["epoch"] == epoch for uid in r["ids"]
        )
        assert read == dict.fromkeys(shard_of.values(), 1), epoch

    # one checkpoint per save, written by the global main process only
    saves = [r for r in rows if r["kind"] == "save"]
    writes = [r for r in rows if r["kind"] == "write"]
    calls = Counter(r["rank"] for r in saves)
    assert calls[0] == calls[1] > 0
    assert [r["rank"] for r in writes] == [0] * calls[0]
    written = [r["folder"].removeprefix(".partial-") for r in writes]
    assert [r["got"] for r in saves if r["rank"] == 0] == written
    assert all(r["got"] is None for r in saves if r["rank"] == 1)
    assert not list((out / "save").glob(".partial-*"))

    assert_same_weights(final_weights(out), reference)


def test_a_node_losing_its_worker_restarts_the_group_and_resumes(
    shards, hook, reference, pretrain_args, tmp_path
):
    out, records = tmp_path / "out", tmp_path / "records"
    records.mkdir()
    marker = tmp_path / "paused"
    # the second node's worker stops before its 6th save: after step 5, with the
    # checkpoint of step 4 (mid-epoch 2) the last one; then it is SIGKILLed
    envs = [
        node_env(tmp_path, "node0", hook, records),
        node_env(
            tmp_path,
            "node1",
            hook,
            records,
            PAUSE_AT_SAVE="6",
            PAUSE_MARKER=str(marker),
        ),
    ]
    killed = {}

    def kill_when_paused(procs):
        deadline = time.time() + TIMEOUT
        while not marker.exists():
            assert all(p.poll() is None for p in procs), "a node ended before the kill"
            assert time.time() < deadline, "no pause"
            time.sleep(0.1)
        time.sleep(0.2)  # the marker is written before the wait starts
        killed["pid"] = int(marker.read_text())
        assert killed["pid"] in descendants(procs[1].pid)
        os.kill(killed["pid"], signal.SIGKILL)
        killed["at"] = time.time()

    results = run_nodes(
        two_nodes(pretrain_args, shards, out, restarts=1),
        envs,
        while_running=kill_when_paused,
    )
    for code, log in results:
        assert code == 0, log[-4000:]
    logs = "".join(log for _, log in results)
    assert logs.count(f"Pretraining finished: {TOTAL} optimiser steps") == 1

    rows = read_records(records)
    # both nodes restarted their worker; the killed node's agent counts a
    # restart, the other's may count one (its worker failed) or none (it saw the
    # rendezvous re-open first: a membership change)
    starts = Counter(r["rank"] for r in rows if r["kind"] == "start")
    assert starts == {0: 2, 1: 2}
    # resumed from the checkpoint of step 4: step 5 again, then 6
    assert train_steps(out) == [1, 2, 3, 4, 5, 5, 6]
    batches = Counter(r["rank"] for r in rows if r["kind"] == "batch")
    assert batches == {0: 5 + 2, 1: 5 + 2}  # steps 1-5, killed; then 5 and 6
    assert not list((out / "save").glob(".partial-*"))

    assert_same_weights(final_weights(out), reference)
