"""Smoke runs of the benchmarks (``--quick``): they run and end with their JSON.

The numbers of a quick run on a busy test machine mean nothing; the tests
check that every reported quantity is there and is a real measurement.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bestrq2_lobes.model.targets import TARGET_NORMS

REPO = Path(__file__).resolve().parents[1]


def run_json(script: str, *args: str, precision: str | None = "fp32") -> dict:
    """Runs a benchmark with ``--quick --json`` and returns its last line.

    In fp32: these check the benchmark's plumbing, and on CPUs without bf16
    matrix units (AMX, AVX-512 BF16) PyTorch's bf16 matmul falls back to a
    reference kernel many times slower.
    """
    command = [str(REPO / "benchmarks" / script), "--quick", "--json"]
    if precision is not None:
        command += ["--precision", precision]
    proc = subprocess.run(
        [sys.executable, *command, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_bench_pretrain_quick_reports_every_quantity():
    record = run_json("bench_pretrain.py")
    for key in (
        "two_step_over_one_stage",
        "mfu_two_step",
        "mfu_one_stage",
        "overhead_share",
        "speechbrain_bestrq_over_two_step",
        "matmul_tflops",
    ):
        assert positive(record[key]), key
    assert record["device"] and record["batch"] == 2
    # the machine and the precision are named beside the figures
    assert record["precision"] == record["precision_requested"] == "fp32"
    for key in ("cpu_model", "cpu_capability", "amx", "avx512_bf16", "native_bf16"):
        assert key in record["machine"], key
    names = [v["variant"] for v in record["variants"]]
    assert names == ["BEST-RQ-2 (two-step)", "one-stage ViT", "SpeechBrain BEST-RQ"]
    for variant in record["variants"]:
        assert len(variant["step_times_s"]) == 3  # one per round
        median = sorted(variant["step_times_s"])[1]
        assert abs(variant["step_s"] - median) <= 1e-4  # times are rounded to 0.1 ms
        assert 0 < variant["overhead_share"] < 1


def test_bench_pretrain_without_speechbrain_times_our_two_models():
    record = run_json("bench_pretrain.py", "--without_speechbrain")
    assert positive(record["two_step_over_one_stage"])
    assert "speechbrain_bestrq_over_two_step" not in record
    assert [v["variant"] for v in record["variants"]] == [
        "BEST-RQ-2 (two-step)",
        "one-stage ViT",
    ]


def test_bench_inference_quick_reports_every_quantity():
    record = run_json("bench_inference.py")
    for key in ("audio_sec_per_sec", "mfu_inference", "wall_s_1h", "peak_rss_mb_1h"):
        assert positive(record[key]), key
    assert record["long_file_minutes"] == 5.0
    assert record["precision"] == "fp32" and "cpu_capability" in record["machine"]


SHARED = REPO.parent / "shared" / "data"


def test_target_perplexity_quick_reports_every_mode():
    if not (SHARED / "office_sed" / "valid.csv").is_file():
        pytest.skip("../shared/data not present")
    record = run_json("target_perplexity.py", precision=None)
    assert record["codebook_size"] == 8192 and record["quantizer_seed"] == 42
    assert [m["target_norm"] for m in record["modes"]] == list(TARGET_NORMS)
    assert record["input_norm"] == "none"
    for mode in record["modes"]:
        for key in ("asterisk_prompts", "gm_mixtures", "office_sed", "all"):
            assert positive(mode[key]["perplexity"]), (mode["target_norm"], key)
            assert 1 <= mode[key]["codes_used"] <= mode[key]["patches"]


def test_target_perplexity_without_shared_data_skips_cleanly(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "target_perplexity.py"),
            "--quick",
            f"--data={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    assert "shared data not found" in proc.stdout


def test_bench_loader_quick_reports_every_source_and_the_step():
    record = run_json("bench_loader.py")
    sources = {(r["source"], r["workers"]) for r in record["loaders"]}
    names = {"csv_wav16k", "csv_flac16k", "csv_wav44k", "shards_pcm", "shards_flac"}
    assert sources == {(name, w) for name in names for w in (0, 2)}
    assert all(positive(r["clips_per_s"]) for r in record["loaders"])
    assert positive(record["pcm_shards_one_process_clips_per_s"])
    assert record["precision"] == "fp32" and "amx" in record["machine"]
    for fmt in ("pcm", "flac"):
        assert positive(record["writing"][fmt]["seconds_per_hour_of_audio"])
    step = record["step"]
    assert positive(step["synthetic_step_s"]) and positive(step["shard_step_s"])
    assert step["shard_over_synthetic"] == pytest.approx(
        step["shard_step_s"] / step["synthetic_step_s"]
    )
