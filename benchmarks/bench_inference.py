"""The frozen BEST-RQ-2 lobe at inference: 10 s clips, and one 1-hour file.

Batches of 10 s clips: audio seconds per second and MFU (model FLOPs counted
analytically over a large matmul's FLOP/s measured in the same process). One
1-hour audio file encoded through ``BestRQ2EncoderInterface.encode_file``: wall
time and peak resident memory of a fresh process doing only that.

    python benchmarks/bench_inference.py --device cpu --json
    python benchmarks/bench_inference.py --device cuda --precision bf16 --json

The long file is encoded on the same device as the clips, in the same precision.
``--precision auto`` (the default) is bf16 on CUDA with bf16 and on CPUs with AMX
or AVX512-BF16, fp32 elsewhere; the JSON names the CPU and the precision chosen.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    autocast,
    choose_precision,
    common_arguments,
    device_name,
    machine_fields,
    matmul_flops_per_second,
    median_time,
    print_json,
    transformer_flops,
)

from bestrq2_lobes import BestRQ2Encoder  # noqa: E402
from bestrq2_lobes.lobe.encoder_dir import write_encoder_dir  # noqa: E402
from bestrq2_lobes.lobe.export import HPARAMS_TEMPLATE  # noqa: E402
from bestrq2_lobes.model.encoder import ViTEncoder  # noqa: E402
from bestrq2_lobes.model.frontend import LogMel  # noqa: E402
from bestrq2_lobes.model.transformer import compile_blocks  # noqa: E402
from bestrq2_lobes.training.precision import can_compile  # noqa: E402

SR = 16000

ONE_HOUR = """
import resource, sys, time, torch
torch.set_num_threads({threads})
from bestrq2_lobes.lobe.interface import BestRQ2EncoderInterface
model = BestRQ2EncoderInterface.from_hparams(
    source=sys.argv[1], run_opts={{"device": "{device}"}}
)
start = time.perf_counter()
with torch.autocast("{device_type}", dtype=torch.{dtype}, enabled={enabled}):
    frames = model.encode_file(sys.argv[2])
if frames.is_cuda:
    torch.cuda.synchronize()
elapsed = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
gpu = torch.cuda.max_memory_allocated() / 2**20 if frames.is_cuda else 0.0
print(f"{{elapsed}} {{peak}} {{frames.shape[0]}} {{frames.shape[1]}} {{gpu}}")
"""


def paper_encoder_dir(folder: Path) -> Path:
    """An encoder directory of the paper configuration (random weights)."""
    torch.manual_seed(0)
    path = write_encoder_dir(folder / "encoder", LogMel(), ViTEncoder(), 10.0)
    (Path(path) / "hyperparams.yaml").write_text(
        HPARAMS_TEMPLATE.format(sample_rate=SR)
    )
    return Path(path)


def clip_flops(batch: int) -> float:
    """Forward FLOPs of the encoder on ``batch`` 10 s clips (128 tokens each)."""
    return batch * (2 * 128 * 256 * 768 + transformer_flops(128, 768, 12))


def one_hour(encoder_dir: Path, folder: Path, precision: str, minutes: float, device):
    """Encodes a long file in a fresh process on ``device``.

    Returns (seconds, peak RSS MB, frames, peak CUDA memory MB or 0).
    """
    path = folder / "long.flac"
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", SR, 1, subtype="PCM_16") as fout:
        for _ in range(int(minutes)):
            fout.write((0.1 * rng.standard_normal(60 * SR)).astype(np.float32))
    script = ONE_HOUR.format(
        threads=torch.get_num_threads(),
        dtype={"fp16": "float16"}.get(precision, "bfloat16"),
        enabled=precision in ("bf16", "fp16"),
        device=device,
        device_type=device.type,
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(encoder_dir), str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    ).stdout.split()
    return float(out[0]), float(out[1]), int(out[2]), float(out[4])


def main(argv=None):
    parser = common_arguments(__doc__.split("\n\n")[0], "small batch, 5 min file")
    parser.add_argument("--minutes", type=float, default=60.0, help="long-file length")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    choose_precision(args, device)
    args.compile = args.compile and can_compile(device)
    if args.batch is None:
        args.batch = 4 if args.quick else (16 if device.type == "cpu" else 256)
    if args.quick:
        args.minutes = 5.0

    peak = matmul_flops_per_second(device, args.precision)
    print(
        f"device: {device_name(device)} | precision {args.precision} | batch "
        f"{args.batch} x 10 s",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        encoder_dir = paper_encoder_dir(folder)
        lobe = BestRQ2Encoder(encoder_dir, freeze=True).to(device)
        if args.compile:
            compile_blocks(lobe)
        wav = torch.randn(args.batch, 10 * SR, device=device)

        def encode():
            with autocast(device, args.precision):
                lobe(wav)

        seconds = median_time(encode, device, repeats=5, warmup=2)
        # the best of two matmul measurements, so a slow moment does not flatter MFU
        peak = max(peak, matmul_flops_per_second(device, args.precision))
        mfu = clip_flops(args.batch) / seconds / peak
        speed = args.batch * 10 / seconds
        print(
            f"MFU reference: best of two matmuls, {peak / 1e12:.2f} TFLOP/s\n"
            f"10 s clips: {seconds:.3f} s per batch | {speed:.1f} audio s/s "
            f"| {clip_flops(args.batch) / seconds / 1e12:.2f} TFLOP/s | MFU {mfu:.2f}",
            flush=True,
        )
        start = time.perf_counter()
        wall, rss, frames, gpu_mb = one_hour(
            encoder_dir, folder, args.precision, args.minutes, device
        )
        gpu = f", peak CUDA memory {gpu_mb:,.0f} MB" if device.type == "cuda" else ""
        print(
            f"{args.minutes:g}-minute file on {device.type}: encoded in {wall:.1f} s "
            f"({args.minutes * 60 / wall:.0f}x real time), {frames} frames, peak "
            f"RSS {rss:,.0f} MB{gpu} (whole process, including writing the file: "
            f"{time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    if args.json:
        print_json(
            {
                "device": device_name(device),
                **machine_fields(args, device),
                "batch": args.batch,
                "audio_sec_per_sec": speed,
                "mfu_inference": mfu,
                "matmul_tflops": peak / 1e12,
                "long_file_minutes": args.minutes,
                "wall_s_1h": wall,
                "peak_rss_mb_1h": rss,
                "peak_cuda_mb_1h": gpu_mb,
                "compile": args.compile,
            }
        )


if __name__ == "__main__":
    main()
