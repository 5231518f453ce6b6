"""Tar shards: the writer, shard sets, the streaming loader and its resume.

Tiny synthetic clips written with soundfile; every test runs in seconds except
the recipe runs at the end (a ``--debug`` run from shards, and a run killed
mid-epoch and resumed, compared step by step with an uninterrupted one).
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
import torch

from bestrq2_lobes.data.audio import read_segment
from bestrq2_lobes.data.folder_scan import scan_audio_folder
from bestrq2_lobes.data.shard_loader import ShardLoader
from bestrq2_lobes.data.shard_stream import ShardStream, first_shard_clips
from bestrq2_lobes.data.shard_writer import main as shards_main
from bestrq2_lobes.data.shard_writer import write_shards
from bestrq2_lobes.data.shards import (
    ShardError,
    check_shard_set,
    list_members,
    resolve_shards,
)

REPO = Path(__file__).resolve().parents[1]
SR = 16000


def make_clips(folder, count=12, seed=0):
    """int16 16 kHz clips of 0.8 to 3 s (distinct content), in two subfolders."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        samples = int((0.8 + 0.2 * i) * SR)
        wav = (rng.standard_normal(samples) * 4000).astype(np.int16)
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        sf.write(sub / f"c{i:02d}.wav", wav, SR, subtype="PCM_16")
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Twelve good clips, one 22.05 kHz stereo clip, and three bad files."""
    folder = make_clips(tmp_path_factory.mktemp("corpus"))
    t = np.arange(int(1.5 * 22050)) / 22050
    stereo = np.stack([np.sin(2 * np.pi * 300 * t), np.cos(2 * np.pi * 500 * t)], 1)
    sf.write(folder / "stereo44.flac", 0.3 * stereo, 22050)
    (folder / "broken.wav").write_text("not audio")
    (folder / "empty.flac").write_bytes(b"")
    sf.write(folder / "short.wav", np.zeros(800, np.int16), SR)
    return folder


@pytest.fixture(scope="module")
def pcm_shards(corpus, tmp_path_factory):
    """The corpus in 8 shards of 2 files (13 clips: some shards hold fewer)."""
    out = tmp_path_factory.mktemp("shards") / "pcm"
    write_shards(corpus, out, clips_per_shard=2, progress=False)
    return out


@pytest.fixture(scope="module")
def one_per_shard(tmp_path_factory):
    """Twelve clips, one per shard: the slots' shares are equal."""
    folder = make_clips(tmp_path_factory.mktemp("twelve"))
    write_shards(folder, folder / "shards", clips_per_shard=1, progress=False)
    return folder / "shards"


def read_all(folder, fmt, crop=10.0):
    """Every clip of a set once (validation stream), id -> int16 samples."""
    shards, index = resolve_shards(str(folder))
    stream = ShardStream(shards, index["format"], 3, crop, SR, train=False)
    clips = {}
    for batch in ShardLoader(stream):
        wavs, lens = batch.sig
        for uid, wav, rel in zip(batch.id, wavs, lens, strict=True):
            clips[uid] = wav[: round(float(rel) * wavs.shape[1])]
    return clips


@pytest.mark.parametrize("fmt", ["pcm", "flac"])
def test_round_trip_is_bit_exact(corpus, tmp_path, fmt):
    out = tmp_path / fmt
    index = write_shards(corpus, out, fmt=fmt, clips_per_shard=4, progress=False)
    assert index["format"] == fmt and index["clips"] == 13
    clips = read_all(out, fmt)
    assert len(clips) == 13
    for sub in ("a", "b"):
        for path in sorted((corpus / sub).glob("*.wav")):
            original = read_segment(path)  # float32 = int16 / 32768, exactly
            assert torch.equal(clips[f"{sub}__{path.stem}"], original), path
    # resampled and downmixed once at writing: what read_segment gives, in int16
    stereo = read_segment(corpus / "stereo44.flac", sample_rate=SR)
    assert clips["stereo44"].shape == stereo.shape
    assert (clips["stereo44"] - stereo).abs().max() <= 0.5 / 32768 + 1e-7


def test_bad_files_are_skipped_with_the_reasons_of_a_scan(corpus, pcm_shards):
    index = json.loads((pcm_shards / "index.json").read_text())
    lines = (pcm_shards / "skipped.csv").read_text().splitlines()
    assert lines[0] == "file,reason"
    written = {line.split(",", 1)[0]: line.split(",", 1)[1] for line in lines[1:]}
    _, scanned = scan_audio_folder(corpus, min_seconds=0.64, progress=False)
    assert written == {row["file"]: row["reason"] for row in scanned}
    assert {Path(p).name for p in written} == {"broken.wav", "empty.flac", "short.wav"}
    assert index["skipped"] == 3 and index["clips"] == 13
    assert index["clips"] == sum(s["clips"] for s in index["shards"])
    assert index["hours"] == pytest.approx(
        sum(s["seconds"] for s in index["shards"]) / 3600, abs=1e-4
    )


def test_manifest_input_reports_a_missing_file(corpus, tmp_path):
    rows = [
        "ID,duration,wav",
        "x,1.0,$data_root/b/c00.wav",
        "gone,1.0,$data_root/no.wav",
    ]
    (corpus / "m.csv").write_text("\n".join(rows) + "\n")
    try:
        index = write_shards(corpus / "m.csv", tmp_path / "s", progress=False)
    finally:
        (corpus / "m.csv").unlink()
    assert index["clips"] == 1
    assert "no.wav,file does not exist" in (tmp_path / "s" / "skipped.csv").read_text()
    assert list(read_all(tmp_path / "s", "pcm")) == ["x"]


def test_rerun_skips_complete_shards_and_rewrites_the_rest(corpus, tmp_path):
    out = tmp_path / "s"
    first = write_shards(corpus, out, clips_per_shard=3, progress=False)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    (out / "shard-000001.json").unlink()  # as if killed while writing shard 1
    (out / "shard-000002.tar.tmp999").write_bytes(b"half")  # another's leftover
    time.sleep(0.01)
    again = write_shards(corpus, out, clips_per_shard=3, jobs=2, progress=False)
    assert again == first
    changed = {
        p.name for p in out.glob("*.tar") if p.stat().st_mtime_ns != stamps[p.name]
    }
    assert changed == {"shard-000001.tar"}
    with pytest.raises(ShardError, match="other inputs or options"):
        write_shards(corpus, out, clips_per_shard=5, progress=False)


def test_command_line_write_and_info(corpus, tmp_path, capsys):
    out = tmp_path / "cli"
    shards_main(["write", str(corpus), str(out), "--clips_per_shard=5", "--jobs=1"])
    assert "4 shards, 13 clips" in capsys.readouterr().out
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bestrq2_lobes.shards",
            "info",
            f"{out}/shard-{{000000..000003}}.tar",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("4 shards, 13 clips")
    with pytest.raises(SystemExit, match="error: .*none of the 2 shards exists"):
        shards_main(["info", f"{out}/shard-{{000007..000008}}.tar"])


def test_bad_shard_sets_fail_with_one_line(tmp_path, pcm_shards):
    with pytest.raises(ShardError, match="none of the 3 shards exists"):
        resolve_shards(str(tmp_path / "s-{0..2}.tar"))
    with pytest.raises(ShardError, match="1 of the 2 shards are missing"):
        resolve_shards(f"{pcm_shards}/shard-{{000007..000008}}.tar")
    with pytest.raises(ShardError, match="no index.json"):
        resolve_shards(str(tmp_path))
    (tmp_path / "junk.tar").write_bytes(os.urandom(2000))
    with pytest.raises(ShardError, match="junk.tar: corrupt shard") as err:
        resolve_shards(str(tmp_path / "junk.tar"))
    assert "\n" not in str(err.value)
    cut = tmp_path / "cut.tar"
    cut.write_bytes((pcm_shards / "shard-000000.tar").read_bytes()[:1500])
    with pytest.raises(ShardError, match="cut.tar: truncated shard"):
        resolve_shards(str(cut))


def epoch_ids(shards, rank, world, workers, epoch=1, batch=3):
    stream = ShardStream(
        shards, "pcm", batch, 1.0, SR, seed=3, shuffle_buffer=2,
        num_workers=workers, rank=rank, world_size=world,
    )  # fmt: skip
    loader = ShardLoader(stream)
    loader.set_epoch(epoch)
    batches = [b.id for b in loader]
    assert len(batches) == len(loader)
    return [uid for b in batches for uid in b]


def test_ranks_and_workers_read_disjoint_clips(one_per_shard):
    shards, _ = resolve_shards(str(one_per_shard))
    # 2 ranks x 2 workers: 3 shards of one clip per slot, one batch of 3 each
    ranks = [epoch_ids(shards, rank, 2, workers=2) for rank in (0, 1)]
    assert [len(ids) for ids in ranks] == [6, 6]
    assert len(set(ranks[0]) | set(ranks[1])) == 12  # every clip, once
    assert epoch_ids(shards, 0, 2, 2) == ranks[0]  # seeded
    assert epoch_ids(shards, 0, 2, 2, epoch=2) != ranks[0]  # a new deal


def test_default_epoch_never_rereads_with_uneven_shards(pcm_shards):
    shards, _ = resolve_shards(str(pcm_shards))
    assert len({s.clips for s in shards}) > 1  # shards of 1 and 2 clips
    for epoch in range(1, 6):
        ids = epoch_ids(shards, 0, 1, workers=3, epoch=epoch, batch=1)
        assert ids and len(set(ids)) == len(ids)


def test_crops_are_redrawn_each_epoch_and_padded(pcm_shards):
    shards, _ = resolve_shards(str(pcm_shards))
    stream = ShardStream(shards, "pcm", 13, 1.0, SR, seed=0, shuffle_buffer=0)
    crops = {}
    for epoch in (1, 2):
        stream.set_epoch(epoch)
        (batch,) = list(stream)
        wavs, lens = batch.sig
        assert wavs.shape == (13, SR)
        crops[epoch] = dict(zip(batch.id, wavs, strict=True))
        assert lens.max() == 1.0 and lens.min() > 0.5  # 0.8 s clips: padded
        short = batch.id[int(lens.argmin())]
        assert (crops[epoch][short][round(float(lens.min()) * SR) :] == 0).all()
    longest = "b__c10"  # 2.8 s: the crop window moves between epochs
    assert not torch.equal(crops[1][longest], crops[2][longest])


@pytest.mark.parametrize("workers, stop_after", [(0, 3), (2, 3)])
def test_restored_loader_continues_exactly(
    one_per_shard, tmp_path, workers, stop_after
):
    shards, _ = resolve_shards(str(one_per_shard))

    def loader():
        stream = ShardStream(
            shards, "pcm", 2, 1.0, SR, seed=5, shuffle_buffer=4, epoch_steps=6,
            num_workers=workers,
        )  # fmt: skip
        made = ShardLoader(stream)
        made.set_epoch(4)
        return made

    full = [(b.id, b.sig.data) for b in loader()]
    assert len(full) == 6
    interrupted = loader()
    for _ in zip(range(stop_after), interrupted, strict=False):
        pass
    interrupted._save(tmp_path / "pos.json")
    assert json.loads((tmp_path / "pos.json").read_text())["batches"] == stop_after
    resumed = loader()
    resumed._recover(tmp_path / "pos.json", end_of_epoch=False)
    rest = [(b.id, b.sig.data) for b in resumed]
    assert [ids for ids, _ in rest] == [ids for ids, _ in full[stop_after:]]
    for (_, got), (_, want) in zip(rest, full[stop_after:], strict=True):
        assert torch.equal(got, want)
    after_epoch = loader()
    after_epoch._recover(tmp_path / "pos.json", end_of_epoch=True)
    assert len(list(after_epoch)) == 6  # a finished epoch: the next starts afresh


def test_too_few_shards_for_the_slots(one_per_shard):
    shards, _ = resolve_shards(str(one_per_shard))
    with pytest.raises(ShardError, match="12 shards for 16 reading slots"):
        ShardStream(shards, "pcm", 2, 1.0, SR, num_workers=8, world_size=2)
    with pytest.raises(ShardError, match="holds less than a batch of 4"):
        ShardStream(shards, "pcm", 4, 1.0, SR, num_workers=4, world_size=2)


DDP_SCRIPT = """
import json, sys
import torch.distributed as dist
from bestrq2_lobes.data.shards import resolve_shards
from bestrq2_lobes.data.shard_loader import ShardLoader, distributed_position
from bestrq2_lobes.data.shard_stream import ShardStream
dist.init_process_group("gloo")
rank, world = distributed_position()
shards, index = resolve_shards(sys.argv[1])
loader = ShardLoader(ShardStream(shards, "pcm", 2, 1.0, 16000, seed=1,
                                 num_workers=1, rank=rank, world_size=world))
loader.set_epoch(1)
ids = [uid for batch in loader for uid in batch.id]
with open(f"{sys.argv[2]}/rank{rank}.json", "w") as fout:
    json.dump({"world": world, "steps": len(loader), "ids": ids}, fout)
dist.destroy_process_group()
"""


def test_two_gloo_processes_read_disjoint_clips(one_per_shard, tmp_path, torchrun_cmd):
    script = tmp_path / "read.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = torchrun_cmd(2) + [str(script), str(one_per_shard), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reads = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 and r["steps"] == 3 for r in reads)
    ids = [set(r["ids"]) for r in reads]
    assert [len(r["ids"]) for r in reads] == [6, 6]
    assert len(ids[0] | ids[1]) == 12  # every clip once: disjoint and complete


# ---------------------------------------------------------------- the recipe

TINY = [
    "--embed_dim=32",
    "--depth=1",
    "--num_heads=4",
    "--predictor_depth=1",
    "--codebook_size=64",
    "--n_mels=32",
    "--crop_seconds=1.5",
    "--batch_size=2",
    "--device=cpu",
    "--noprogressbar",
]


def recipe(out, *args):
    return [
        sys.executable,
        str(REPO / "recipes" / "pretrain" / "train.py"),
        str(REPO / "hparams" / "bestrq2_vit.yaml"),
        f"--output_folder={out}",
        *TINY,
        *args,
    ]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def metrics(out):
    rows = []
    for line in (Path(out) / "metrics.jsonl").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    return rows


def test_debug_run_from_shards(pcm_shards, tmp_path):
    out = tmp_path / "debug"
    shards = f"{pcm_shards}/shard-{{000000..000006}}.tar"
    proc = subprocess.run(
        recipe(out, f"--train_shards={shards}", f"--valid_shards={pcm_shards}",
               "--debug", "--num_workers=0"),
        capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Pretraining finished" in proc.stdout and "DEMO" not in proc.stdout
    rows = metrics(out)
    assert {r["stage"] for r in rows} == {"train", "valid"}
    assert all(np.isfinite(r["loss"]) for r in rows)
    record = json.loads((out / "run_fingerprint.json").read_text())
    train, _ = resolve_shards(shards)
    assert record["data"]["kind"] == "shards"
    assert record["data"]["files"] == sum(s.clips for s in train) + 13
    bad = subprocess.run(
        recipe(tmp_path / "bad", f"--train_shards={tmp_path}/none-{{0..3}}.tar"),
        capture_output=True, text=True, env=ENV, timeout=120,
    )  # fmt: skip
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "none of the 4 shards exists" in bad.stderr


PAUSE_HOOK = """
import os, time
import bestrq2_lobes.training.checkpointing as c
_save, _count = c.AtomicCheckpointer.save_checkpoint, [0]
def save_checkpoint(self, *args, **kwargs):
    _count[0] += 1
    if _count[0] == int(os.environ["PAUSE_AT_SAVE"]):
        open(os.environ["PAUSE_MARKER"], "w").write("paused")
        while True:
            time.sleep(1)
    return _save(self, *args, **kwargs)
c.AtomicCheckpointer.save_checkpoint = save_checkpoint
"""


def test_killed_run_resumes_with_the_batches_of_the_uninterrupted_one(
    one_per_shard, tmp_path
):
    args = [
        f"--train_shards={one_per_shard}",
        "--total_steps=4",
        "--shard_epoch_steps=4",
        "--ckpt_interval_steps=1",
        "--log_interval=1",
        "--num_workers=2",
    ]
    reference = tmp_path / "reference"
    subprocess.run(recipe(reference, *args), env=ENV, check=True, capture_output=True)
    expected = {
        r["step"]: r["loss"] for r in metrics(reference) if r["stage"] == "train"
    }
    assert sorted(expected) == [1, 2, 3, 4]

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(PAUSE_HOOK)
    marker, out = tmp_path / "paused", tmp_path / "killed"
    proc = subprocess.Popen(
        recipe(out, *args),
        env={**ENV, "PYTHONPATH": f"{hook}{os.pathsep}{ENV.get('PYTHONPATH', '')}",
             "PAUSE_MARKER": str(marker), "PAUSE_AT_SAVE": "2"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    while proc.poll() is None and not marker.exists():  # saved step 1, paused at 2
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before its pause"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    final = subprocess.run(recipe(out, *args), env=ENV, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "Pretraining finished: 4 optimiser steps" in final.stdout
    logged = [(r["step"], r["loss"]) for r in metrics(out) if r["stage"] == "train"]
    assert [step for step, _ in logged] == [
        1,
        2,
        2,
        3,
        4,
    ]  # step 2 again after the kill
    for step, loss in logged:
        assert loss == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step


def test_a_set_must_suit_the_model(pcm_shards):
    shards, index = resolve_shards(str(pcm_shards))
    check_shard_set("set", shards, index, SR, 0.625)  # 0.64 s and longer: fine
    with pytest.raises(ShardError, match="shards hold 16000 Hz audio, the model reads"):
        check_shard_set("set", shards, index, 22050, 0.625)
    with pytest.raises(ShardError, match="write them with --min_seconds 1.000"):
        check_shard_set("set", shards, index, SR, 1.0)


def test_first_clips_for_the_statistics_are_the_sets_first(one_per_shard):
    shards, index = resolve_shards(str(one_per_shard))
    clips = list(first_shard_clips(shards, "pcm", 3, 0.5, SR))
    assert [len(c) for c in clips] == [SR // 2] * 3
    whole = read_all(one_per_shard, "pcm")
    firsts = [list_members(s.path).__next__()[0].rsplit(".", 1)[0] for s in shards[:3]]
    for clip, uid in zip(clips, firsts, strict=True):
        assert torch.equal(clip, whole[uid][: SR // 2])
