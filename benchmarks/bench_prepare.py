#!/usr/bin/env python3
"""Corpus preparation: seconds per 1,000 clips (decode, header) and a skipped rerun.

Generates an AudioSet download in a temporary folder (``class_labels_indices.csv``,
``balanced_train_segments.csv`` with its three ``#`` header lines and quoted
labels, and ``--clips`` clips of ``--seconds`` s, 16 kHz mono FLAC, named
``<YTID>.flac``: the ``ytid`` layout), then times ``prepare_audioset`` with
``check="decode"`` (every sample decoded) and ``check="header"``, each into a
fresh save folder with ``--jobs`` worker processes, and the rerun of the first
one, which finds the same options and unchanged files and prepares nothing.
The files are written just before, so they are in the page cache (a second
pass over a corpus finds them there too; a cold disk adds its read time).

    python benchmarks/bench_prepare.py                  # 1,000 clips of 10 s
    python benchmarks/bench_prepare.py --clips 5000 --jobs 8 --json

Prints the machine (CPU model, ``torch.backends.cpu.get_cpu_capability()``,
the CPUs this process may use), the figures, and with ``--json`` one JSON line
last.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from bestrq2_lobes.datasets.audioset import prepare_audioset

ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the platform's word."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fin:
            for line in fin:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ytid(number: int) -> str:
    """An 11-character YouTube-like ID, unique per number."""
    chars = []
    for _ in range(11):
        number, digit = divmod(number, len(ALPHABET))
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


def make_corpus(root: Path, clips: int, seconds: float) -> None:
    """The lists and ``clips`` FLAC clips of an AudioSet download (ytid layout)."""
    (root / "audio").mkdir(parents=True)
    (root / "class_labels_indices.csv").write_text(
        'index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/04rlf,"Music"\n'
    )
    lines = [
        "# Segments csv created Sun Mar  5 10:54:31 2017",
        f"# num_ytids={clips}, num_segs={clips}, num_unique_labels=527, "
        f"num_positive_labels={clips}",
        "# YTID, start_seconds, end_seconds, positive_labels",
    ]
    rng = np.random.default_rng(0)
    base = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
    for number in range(clips):
        uid = ytid(number)
        lines.append(
            f'{uid}, 30.000, 40.000, "/m/{"09x0r" if number % 2 else "04rlf"}"'
        )
        sf.write(root / "audio" / f"{uid}.flac", np.roll(base, number), 16000)
    (root / "balanced_train_segments.csv").write_text("\n".join(lines) + "\n")


def timed(call) -> tuple[float, dict]:
    start = time.perf_counter()
    out = call()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="one JSON line last")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    machine = {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpus": cpus or os.cpu_count(),
    }
    print(
        f"machine: {machine['cpu']}, torch CPU capability "
        f"{machine['cpu_capability']}, {machine['cpus']} CPUs",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "audioset"
        started = time.perf_counter()
        make_corpus(root, args.clips, args.seconds)
        made = time.perf_counter() - started
        print(f"generated {args.clips} clips of {args.seconds:g} s in {made:.1f} s")
        common = {"sets": ["balanced_train"], "jobs": args.jobs, "progress": False}
        decode_s, out = timed(
            lambda: prepare_audioset(str(root), f"{tmp}/decode", **common)
        )
        header_s, _ = timed(
            lambda: prepare_audioset(
                str(root), f"{tmp}/header", check="header", **common
            )
        )
        stamp = os.stat(f"{tmp}/decode/prepare_opts.json").st_mtime_ns
        rerun_s, again = timed(
            lambda: prepare_audioset(str(root), f"{tmp}/decode", **common)
        )
        skipped = (
            again == out
            and os.stat(f"{tmp}/decode/prepare_opts.json").st_mtime_ns == stamp
        )
    per = 1000 / args.clips
    record = {
        "benchmark": "prepare",
        **machine,
        "clips": args.clips,
        "seconds_per_clip": args.seconds,
        "jobs": args.jobs,
        "decode_s": round(decode_s, 3),
        "header_s": round(header_s, 3),
        "rerun_s": round(rerun_s, 4),
        "rerun_skipped": skipped,
        "per_1000_clips_s": {
            "decode": round(decode_s * per, 2),
            "header": round(header_s * per, 2),
            "rerun": round(rerun_s * per, 3),
        },
        "prepared_clips": out["clips"],
    }
    print(
        f"prepare_audioset, {args.clips} clips of {args.seconds:g} s, jobs "
        f"{args.jobs}: check=decode {decode_s:.2f} s ({decode_s * per:.1f} s per "
        f"1,000), check=header {header_s:.2f} s ({header_s * per:.1f} s per 1,000), "
        f"skipped rerun {rerun_s * 1000:.0f} ms" + ("" if skipped else " (NOT skipped)")
    )
    if args.json:
        print(json.dumps(record))


if __name__ == "__main__":
    main()
