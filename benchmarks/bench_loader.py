#!/usr/bin/env python3
"""Data loading: clips/s per loader process and with N workers, and the real step.

On a generated corpus of ten-second clips (page-cached, as a second epoch
finds them), the clips/s of the pretraining recipe's two data paths:

* CSV manifests (a ``DynamicItemDataset`` whose pipeline reads a random 10 s
  crop with ``bestrq2_lobes.data.audio.read_segment``, ``PaddedBatch``), for
  16 kHz WAV, 16 kHz FLAC and 44.1 kHz WAV (resampled on the fly);
* tar shards (``bestrq2_lobes.data.shard_stream.ShardLoader``), PCM and FLAC,
  written once by ``bestrq2_lobes.data.shard_writer`` (its cost per hour of
  audio is reported too);

each with ``num_workers=0`` (one loader process does all the work) and with
``--workers N``. Then the training step of the same model fed by the shard
loader against the step on one synthetic batch (what ``bench_pretrain.py``
times), in interleaved rounds: the loader's own CPU use is inside the real
step.

    python benchmarks/bench_loader.py --json
    python benchmarks/bench_loader.py --clips 2000 --workers 8 --json
    python benchmarks/bench_loader.py --device cuda --step_batch 256 --json
    python benchmarks/bench_loader.py --quick --json   # a smoke run, seconds

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speechbrain as sb  # noqa: E402
from common import (  # noqa: E402
    autocast,
    choose_precision,
    common_arguments,
    device_name,
    machine_fields,
    print_json,
    sync,
)

from bestrq2_lobes.data.audio import random_crop, read_segment  # noqa: E402
from bestrq2_lobes.data.shard_loader import ShardLoader  # noqa: E402
from bestrq2_lobes.data.shard_stream import ShardStream  # noqa: E402
from bestrq2_lobes.data.shard_writer import write_shards  # noqa: E402
from bestrq2_lobes.data.shards import resolve_shards  # noqa: E402
from bestrq2_lobes.model.pretraining import masked_prediction_loss  # noqa: E402
from bestrq2_lobes.training.console import available_cpus  # noqa: E402
from bestrq2_lobes.training.cpu_memory import retain_freed_memory  # noqa: E402
from bestrq2_lobes.training.precision import can_compile  # noqa: E402
from bestrq2_lobes.training.seeding import stable_seed  # noqa: E402

SR = 16000
CLIP = 10.0
# the long timing epochs make slots re-read their shards, on purpose
logging.getLogger("bestrq2_lobes.data.shard_loader").setLevel(logging.ERROR)


def make_corpus(folder: Path, clips: int) -> dict[str, Path]:
    """``clips`` ten-second clips as 16 kHz WAV, 16 kHz FLAC and 44.1 kHz WAV."""
    rng = np.random.default_rng(0)
    csvs = {}
    for name, rate, ext in (
        ("wav16k", SR, "wav"),
        ("flac16k", SR, "flac"),
        ("wav44k", 44100, "wav"),
    ):
        sub = folder / name
        sub.mkdir(parents=True, exist_ok=True)
        t = np.arange(int(CLIP * rate)) / rate
        base = 0.1 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * 440 * t)
        rows = ["ID,duration,wav"]
        for i in range(clips):
            path = sub / f"c{i:05d}.{ext}"
            if not path.exists():
                sf.write(path, np.roll(base, 997 * i).astype(np.float32), rate)
            rows.append(f"c{i:05d},{CLIP},$data_root/{name}/{path.name}")
        csvs[name] = folder / f"{name}.csv"
        csvs[name].write_text("\n".join(rows) + "\n")
    return csvs


def csv_loader(csv: Path, batch: int, workers: int, epoch: list[int]):
    """The recipe's manifest path: a random crop per draw, PaddedBatch."""
    dataset = sb.dataio.dataset.DynamicItemDataset.from_csv(
        str(csv), replacements={"data_root": str(csv.parent)}
    )

    @sb.utils.data_pipeline.takes("id", "wav", "duration")
    @sb.utils.data_pipeline.provides("sig")
    def pipeline(uid, wav, duration):
        generator = torch.Generator().manual_seed(stable_seed(0, "crop", epoch[0], uid))
        return read_segment(wav, random_crop(float(duration), CLIP, generator), CLIP)

    dataset.add_dynamic_item(pipeline)
    dataset.set_output_keys(["id", "sig"])
    # persistent workers: the timing is the steady state, not epoch starts
    return sb.dataio.dataloader.make_dataloader(
        dataset,
        batch_size=batch,
        num_workers=workers,
        shuffle=True,
        persistent_workers=workers > 0,
    )


def shard_loader(spec: str, batch: int, workers: int, steps: int | None = None):
    shards, index = resolve_shards(spec)
    stream = ShardStream(
        shards,
        index["format"],
        batch,
        CLIP,
        SR,
        shuffle_buffer=64,
        epoch_steps=steps,
        num_workers=workers,
    )
    return ShardLoader(stream)


def clips_per_second(loader, target: int) -> float:
    """Clips/s after the first batch (worker start-up and buffer fill left out)."""
    done, start, epoch = 0, None, 0
    while True:
        epoch += 1
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        for batch in loader:
            if start is None:
                start = time.perf_counter()
                continue
            done += len(batch.id)
            if done >= target:
                return done / (time.perf_counter() - start)


def measure_loaders(args, csvs, shard_dirs) -> list[dict]:
    rows = []
    sources = [(f"csv_{name}", csv) for name, csv in csvs.items()]
    sources += [(f"shards_{fmt}", path) for fmt, path in shard_dirs.items()]
    for name, where in sources:
        for workers in args.worker_counts:
            epoch = [0]
            if name.startswith("csv"):
                loader = csv_loader(where, args.batch, workers, epoch)
            else:  # one long epoch (slots re-read their shards): no restarts
                steps = -(-(args.target + 2 * args.batch) // args.batch)
                loader = shard_loader(str(where), args.batch, workers, steps)
            clips_per_second(loader, args.clips)  # a first pass: page cache warm
            rate = clips_per_second(loader, args.target)
            rows.append(
                {
                    "source": name,
                    "workers": workers,
                    "clips_per_s": rate,
                    "audio_sec_per_sec": rate * CLIP,
                    "clips_per_s_per_process": rate / max(1, workers),
                }
            )
            print(
                f"{name:>14} | {workers:2d} workers | {rate:8.1f} clips/s"
                f" | {rate * CLIP:9.0f} audio s/s",
                flush=True,
            )
    return rows


def build_model(args, device):
    from bestrq2_lobes.model.encoder import ViTEncoder
    from bestrq2_lobes.model.frontend import LogMel
    from bestrq2_lobes.model.masking import MaskSampler
    from bestrq2_lobes.model.predictor import Predictor
    from bestrq2_lobes.model.pretraining import BestRQ2
    from bestrq2_lobes.model.quantizer import RandomProjectionQuantizer
    from bestrq2_lobes.model.transformer import compile_blocks

    torch.manual_seed(0)
    if args.quick:  # the plumbing only: a tiny model
        parts = dict(
            frontend=LogMel(n_mels=32),
            encoder=ViTEncoder(n_mels=32, embed_dim=32, depth=1, num_heads=4),
            predictor=Predictor(encoder_dim=32, dim=32, depth=1, num_heads=4,
                                freq_rows=2, codebook_size=64),
            quantizer=RandomProjectionQuantizer(codebook_size=64, seed=42),
        )  # fmt: skip
    else:  # the paper configuration, as bench_pretrain.py builds it
        parts = dict(
            frontend=LogMel(),
            encoder=ViTEncoder(),
            predictor=Predictor(),
            quantizer=RandomProjectionQuantizer(seed=42),
        )
    model = BestRQ2(mask_sampler=MaskSampler((0.4, 0.6)), **parts).to(device).train()
    if args.compile:
        compile_blocks(model)
    return model


def measure_step(args, device, pcm_shards) -> dict:
    """Median step fed by the shard loader against the step on a fixed batch."""
    model = build_model(args, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    batch = args.step_batch
    total = args.warmup + args.repeats
    loader = shard_loader(str(pcm_shards), batch, args.step_workers, steps=total + 1)
    loader.set_epoch(1)
    batches = iter(loader)
    synthetic = (torch.randn(batch, int(CLIP * SR)), torch.ones(batch))

    def step(wav, lens, seed):
        masks = torch.Generator().manual_seed(seed)
        wav, lens = wav.to(device, non_blocking=True), lens.to(device)
        with autocast(device, args.precision):
            loss, _ = masked_prediction_loss(model(wav, lens, generator=masks))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def timed(real: bool, seed: int) -> float:
        sync(device)
        start = time.perf_counter()
        wav, lens = next(batches).sig if real else synthetic
        step(wav, lens, seed)
        sync(device)
        return time.perf_counter() - start

    times = {True: [], False: []}
    for repeat in range(total):
        # the same mask in both of a round; which goes first alternates, so
        # that an order effect (caches, allocator) falls on both equally
        for real in (False, True) if repeat % 2 == 0 else (True, False):
            seconds = timed(real, repeat)
            if repeat >= args.warmup:
                times[real].append(seconds)
    real, fake = statistics.median(times[True]), statistics.median(times[False])
    print(
        f"step, batch {batch}: synthetic {fake:.3f} s, from shards "
        f"({args.step_workers} workers) {real:.3f} s: ratio {real / fake:.3f}",
        flush=True,
    )
    return {
        "step_batch": batch,
        "step_workers": args.step_workers,
        "synthetic_step_s": fake,
        "shard_step_s": real,
        "shard_over_synthetic": real / fake,
        "synthetic_times_s": [round(t, 4) for t in times[False]],
        "shard_times_s": [round(t, 4) for t in times[True]],
    }


def main(argv=None):
    parser = common_arguments(__doc__.split("\n\n")[0], "16 clips, tiny model")
    parser.add_argument("--clips", type=int, default=1000, help="clips per format")
    parser.add_argument("--target", type=int, default=None, help="clips timed")
    parser.add_argument("--workers", type=int, default=None, help="N (default: CPUs)")
    parser.add_argument("--step_batch", type=int, default=None)
    parser.add_argument("--step_workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workdir", default=None, help="keep the corpus here")
    parser.add_argument("--skip_step", action="store_true", help="loaders only")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    choose_precision(args, device)
    args.compile = args.compile and can_compile(device)
    if args.quick:
        args.clips, args.repeats, args.warmup = 16, 2, 1
        args.workers = args.workers or 2
        args.step_batch = args.step_batch or 2
    args.batch = args.batch or (4 if args.quick else 64)
    args.target = args.target or 4 * args.clips
    args.workers = args.workers or available_cpus()
    args.worker_counts = sorted({0, args.workers})
    args.step_batch = args.step_batch or (16 if device.type == "cpu" else 256)
    if device.type == "cpu":
        retain_freed_memory()
    torch.set_num_threads(max(1, available_cpus()))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_loader_"))
    print(
        f"device: {device_name(device)} | {args.clips} clips of {CLIP:g} s per "
        f"format | batch {args.batch} | workers {args.worker_counts} | {workdir}",
        flush=True,
    )
    csvs = make_corpus(workdir / "audio", args.clips)
    shard_dirs, writing = {}, {}
    for fmt in ("pcm", "flac"):
        out = workdir / f"shards_{fmt}"
        started = time.perf_counter()
        index = write_shards(
            csvs["wav44k"], out, fmt=fmt, clips_per_shard=max(4, args.clips // 16),
            jobs=available_cpus(), progress=False,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        writing[fmt] = {
            "seconds": seconds,
            "seconds_per_hour_of_audio": seconds / index["hours"],
            "bytes_per_hour_of_audio": sum(p.stat().st_size for p in out.glob("*.tar"))
            / index["hours"],
            "jobs": available_cpus(),
        }
        shard_dirs[fmt] = out
        print(
            f"shards {fmt}: written from 44.1 kHz WAV in {seconds:.1f} s "
            f"({writing[fmt]['seconds_per_hour_of_audio']:.0f} s per hour of audio, "
            f"{available_cpus()} jobs)",
            flush=True,
        )
    rows = measure_loaders(args, csvs, shard_dirs)
    step = None if args.skip_step else measure_step(args, device, shard_dirs["pcm"])
    if args.json:
        print_json(
            {
                "device": device_name(device),
                "cpus": available_cpus(),
                "clips": args.clips,
                "batch": args.batch,
                **machine_fields(args, device),
                "loaders": rows,
                "writing": writing,
                "step": step,
                "pcm_shards_one_process_clips_per_s": next(
                    r["clips_per_s"]
                    for r in rows
                    if r["source"] == "shards_pcm" and r["workers"] == 0
                ),
            }
        )
    if args.workdir is None:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(available_cpus()))
    main()
