"""Shared helpers of the benchmarks: timing, matmul peak, FLOPs, memory.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from bestrq2_lobes.training.console import cap_torch_threads
from bestrq2_lobes.training.precision import (
    CHOICES,
    cpu_model,
    machine_record,
    resolve_and_report,
)


def sync(device: torch.device) -> None:
    """Waits for queued device work (CUDA) so timings are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn, device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def autocast(device: torch.device, precision: str):
    """Autocast context for ``fp32`` (off) or ``bf16``/``fp16``."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def matmul_flops_per_second(device, precision: str, size: int = 4096) -> float:
    """FLOP/s of a large square matmul at the given precision (the MFU reference)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
        precision, torch.float32
    )
    if device.type == "cpu":
        size = min(size, 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = median_time(lambda: a @ b, device, repeats=5, warmup=2)
    return 2 * size**3 / seconds


def transformer_flops(
    tokens: int, dim: int, depth: int, mlp_ratio: float = 4.0
) -> float:
    """Forward FLOPs of ``depth`` pre-norm blocks on one sequence of ``tokens``."""
    linear = 2 * tokens * dim * dim * (4 + 2 * mlp_ratio)
    attention = 4 * tokens * tokens * dim
    return depth * (linear + attention)


def reset_peak_memory(device) -> None:
    """Restarts peak-memory tracking (CUDA allocator, or the process RSS on Linux)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as fout:
            fout.write("5")
    except OSError:
        pass


def peak_memory_mb(device) -> float:
    """Peak memory since the last reset: CUDA allocated, or resident set (MB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _proc_status_mb("VmHWM")


def current_memory_mb(device) -> float:
    """Memory in use now: CUDA allocated tensors, or the process resident set."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    return _proc_status_mb("VmRSS")


def _proc_status_mb(field: str) -> float:
    with open("/proc/self/status") as fin:
        for line in fin:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def device_name(device) -> str:
    """A short description of the device."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model() or platform.machine()}, {os.cpu_count()} cores"


def choose_precision(args, device) -> str:
    """Resolves ``args.precision`` in place (``auto``: by the hardware).

    Prints the one line saying what ``auto`` chose and why (an explicit bf16
    on a CPU that emulates it warns instead), keeps the request and the reason
    in ``args.precision_requested`` / ``args.precision_reason`` for
    :func:`machine_fields`, and caps torch's threads at the CPUs this process
    may use (a container's CPU quota included).
    """
    requested = args.precision
    args.precision, args.precision_reason = resolve_and_report(requested, device)
    args.precision_requested = requested
    note = cap_torch_threads()
    if note:
        print(note, flush=True)
    return args.precision


def machine_fields(args, device) -> dict:
    """The JSON fields naming the machine and the precision chosen.

    CPU model, torch's CPU capability, AMX / AVX512-BF16, CPUs, torch version
    (and the CUDA device), then ``precision``, ``precision_requested`` and
    ``precision_reason``; call :func:`choose_precision` first.
    """
    return machine_record(
        device, args.precision_requested, args.precision, args.precision_reason
    )


def print_json(record: dict) -> None:
    """The last line of a ``--json`` run: one JSON object."""
    print(json.dumps(record, sort_keys=True))


def common_arguments(description: str, quick_help: str) -> argparse.ArgumentParser:
    """A parser with the options every benchmark takes.

    ``--device``, ``--precision``, ``--batch``, ``--quick``, ``--json`` and
    ``--compile``.
    """
    parser = argparse.ArgumentParser(description=description)
    default = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default)
    parser.add_argument(
        "--precision",
        choices=CHOICES,
        default="auto",
        help="auto (default): bf16 on CUDA with bf16 and on CPUs with AMX or "
        "AVX512-BF16, fp32 elsewhere",
    )
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="one torch.compile graph per transformer stack "
        "(bestrq2_lobes.model.transformer.compile_blocks)",
    )
    return parser
