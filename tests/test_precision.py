"""``--precision auto``: what it resolves to on each kind of machine, faked.

Every capability torch reports is monkeypatched (CUDA bf16, AMX, AVX512-BF16,
the ISA level), so these run in milliseconds on any machine and never compute
in bf16. Both paths are checked: the recipes' (``parse_arguments`` and the
Brain it feeds) and the benchmarks' (``benchmarks/common.py`` and the
replication scripts' options).
"""

import logging
import sys
from pathlib import Path

import pytest
import speechbrain as sb
import torch

from bestrq2_lobes.training import console, precision
from bestrq2_lobes.training.run import drop_auto_precision, parse_arguments

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import common  # noqa: E402  (benchmarks/common.py)
import replicate_small  # noqa: E402

MACHINES = {
    # name: (device, cuda bf16, AMX, AVX512-BF16, capability) -> auto's choice
    "cuda_bf16": ("cuda", True, False, False, "AVX2", "bf16"),
    "cuda_without_bf16": ("cuda", False, False, False, "AVX2", "fp32"),
    "cpu_amx": ("cpu", False, True, True, "AVX512", "bf16"),
    "cpu_avx512_bf16": ("cpu", False, False, True, "AVX512", "bf16"),
    "cpu_avx512_only": ("cpu", False, False, False, "AVX512", "fp32"),
    "cpu_avx2": ("cpu", False, False, False, "AVX2", "fp32"),
}


def fake(monkeypatch, cuda_bf16, amx, avx512_bf16, capability) -> None:
    """Makes torch report these capabilities (and forgets earlier warnings)."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(precision, "_WARNED", set())
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)


@pytest.fixture
def said(capsys, caplog):
    """``said()``: everything printed or logged since the test began."""
    caplog.set_level(logging.INFO, logger=precision.__name__)

    def text() -> str:
        out = capsys.readouterr()
        return out.out + out.err + caplog.text

    return text


@pytest.mark.parametrize("machine", list(MACHINES))
def test_auto_on_the_recipes_path(monkeypatch, said, machine):
    device, *caps, expected = MACHINES[machine]
    fake(monkeypatch, *caps)
    for argv in (
        ["h.yaml", "--device", device],
        ["h.yaml", "--device", device, "--precision", "auto"],
        ["h.yaml", f"--device={device}", "--precision=auto"],
    ):
        _, run_opts, overrides = parse_arguments(argv)
        assert (run_opts.precision, run_opts.eval_precision) == (expected, expected)
        assert {"precision", "eval_precision"} <= run_opts.overridden_args
        assert overrides == ""
    assert f"precision auto -> {expected} (" in said()


@pytest.mark.parametrize("machine", ["cpu_amx", "cpu_avx2"])
def test_the_brain_runs_what_auto_chose(monkeypatch, machine):
    device, *caps, expected = MACHINES[machine]
    fake(monkeypatch, *caps)
    _, run_opts, _ = parse_arguments(["h.yaml", "--device", device])
    brain = sb.Brain(modules={"layer": torch.nn.Linear(2, 2)}, run_opts=run_opts)
    assert (brain.precision, brain.eval_precision) == (expected, expected)


@pytest.mark.parametrize("machine", list(MACHINES))
def test_auto_on_the_benchmarks_path(monkeypatch, said, machine):
    device, *caps, expected = MACHINES[machine]
    fake(monkeypatch, *caps)
    args = common.common_arguments("bench", "quick").parse_args(["--device", device])
    assert args.precision == "auto"  # the default
    assert common.choose_precision(args, torch.device(device)) == expected
    assert (args.precision, args.precision_requested) == (expected, "auto")
    assert f"precision auto -> {expected} (" in said()
    replication = replicate_small.parse_args(["--device", device])
    assert replication.precision == expected
    assert replication.precision_requested == "auto"


def test_the_reason_names_the_cpu_kind(monkeypatch):
    fake(monkeypatch, *MACHINES["cpu_avx2"][1:5])
    assert precision.resolve_precision("auto", "cpu") == (
        "fp32",
        "CPU AVX2 without native bf16",
    )
    fake(monkeypatch, *MACHINES["cpu_amx"][1:5])
    assert precision.resolve_precision(None, "cpu") == (
        "bf16",
        "CPU AVX512 with AMX and AVX512-BF16",
    )
    fake(monkeypatch, *MACHINES["cuda_without_bf16"][1:5])
    assert precision.resolve_precision("auto", "cuda:1")[0] == "fp32"
    with pytest.raises(ValueError, match="expected one of"):
        precision.resolve_precision("fp8", "cpu")


@pytest.mark.parametrize("value", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("machine", ["cuda_bf16", "cuda_without_bf16"])
def test_explicit_values_are_kept(monkeypatch, machine, value):
    device, *caps, _ = MACHINES[machine]
    fake(monkeypatch, *caps)
    _, run_opts, _ = parse_arguments(
        ["h.yaml", "--device", device, "--precision", value]
    )
    assert (run_opts.precision, run_opts.eval_precision) == (value, value)
    args = common.common_arguments("b", "q").parse_args(["--precision", value])
    assert common.choose_precision(args, torch.device(device)) == value
    assert args.precision_reason == "given explicitly"


def test_eval_precision_given_is_kept_and_otherwise_follows(monkeypatch):
    fake(monkeypatch, *MACHINES["cpu_amx"][1:5])
    argv = ["h.yaml", "--device", "cpu", "--precision", "fp32"]
    _, run_opts, _ = parse_arguments(argv)
    assert run_opts.eval_precision == "fp32"  # follows --precision
    _, run_opts, _ = parse_arguments([*argv, "--eval_precision", "bf16"])
    assert (run_opts.precision, run_opts.eval_precision) == ("fp32", "bf16")
    _, run_opts, _ = parse_arguments(
        ["h.yaml", "--device", "cpu", "--eval_precision=fp32"]
    )
    assert (run_opts.precision, run_opts.eval_precision) == ("bf16", "fp32")


def test_drop_auto_precision_leaves_everything_else():
    argv = ["h.yaml", "--precision", "bf16", "--lr", "auto", "--eval_precision", "auto"]
    assert drop_auto_precision(argv) == [
        "h.yaml",
        "--precision",
        "bf16",
        "--lr",
        "auto",
    ]


def test_explicit_bf16_on_an_avx2_cpu_warns_once_in_one_line(monkeypatch, caplog):
    fake(monkeypatch, *MACHINES["cpu_avx2"][1:5])
    caplog.set_level(logging.WARNING, logger=precision.__name__)
    for _ in range(2):
        _, run_opts, _ = parse_arguments(
            ["h.yaml", "--device", "cpu", "--precision", "bf16"]
        )
        assert run_opts.precision == "bf16"  # it runs as asked
    args = common.common_arguments("b", "q").parse_args(["--precision", "bf16"])
    assert common.choose_precision(args, torch.device("cpu")) == "bf16"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    line = warnings[0].getMessage()
    assert "\n" not in line
    assert "--precision fp32" in line and "AVX2" in line
    assert "0.7 GFLOP/s" in line and "55 GFLOP/s" in line  # the measured slowdown


def test_no_warning_where_bf16_is_native_or_on_cuda(monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger=precision.__name__)
    fake(monkeypatch, *MACHINES["cpu_amx"][1:5])
    assert precision.warn_if_emulated("bf16", "cpu") is None
    fake(monkeypatch, *MACHINES["cuda_without_bf16"][1:5])
    assert precision.warn_if_emulated("bf16", "cuda") is None
    fake(monkeypatch, *MACHINES["cpu_avx2"][1:5])
    assert precision.warn_if_emulated("fp32", "cpu") is None
    assert "emulates fp16" in precision.warn_if_emulated("fp16", "cpu")
    assert len(caplog.records) == 1


def test_benchmark_json_names_the_machine(monkeypatch):
    fake(monkeypatch, *MACHINES["cpu_avx2"][1:5])
    args = common.common_arguments("b", "q").parse_args([])
    common.choose_precision(args, torch.device("cpu"))
    record = common.machine_fields(args, torch.device("cpu"))
    assert record["precision"] == "fp32" and record["precision_requested"] == "auto"
    assert record["precision_reason"] == "CPU AVX2 without native bf16"
    machine = record["machine"]
    assert machine["cpu_capability"] == "AVX2"
    assert machine["amx"] is False and machine["avx512_bf16"] is False
    assert machine["cpu_model"] == precision.cpu_model()
    assert machine["cpus"] >= 1 and machine["torch"] == torch.__version__


def test_compile_without_a_cpu_compiler_stays_eager(monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger=precision.__name__)
    monkeypatch.setattr(precision, "_WARNED", set())
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(precision.shutil, "which", lambda name: None)
    assert precision.c_compiler() is None
    assert not precision.can_compile("cpu") and not precision.can_compile("cpu")
    assert precision.can_compile("cuda")
    assert len(caplog.records) == 1 and "C++ compiler" in caplog.text
    monkeypatch.setattr(precision.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert precision.can_compile("cpu")


def test_cpu_quota_caps_cpus_and_torch_threads(monkeypatch, tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert console.cpu_quota(str(tmp_path)) is None
    (tmp_path / "cpu.max").write_text("200000 100000\n")
    assert console.cpu_quota(str(tmp_path)) == 2.0
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert console.cpu_quota(str(v1)) == 0.5

    monkeypatch.setattr(console, "cpu_quota", lambda: 1.5)
    assert console.available_cpus() <= 2
    monkeypatch.setattr(console, "available_cpus", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 32)
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert console.cap_torch_threads() == (
        "torch threads 32 lowered to 2, the CPUs this process may use"
    )
    assert calls == [2]
    monkeypatch.setenv("OMP_NUM_THREADS", "32")  # the user's choice stands
    assert console.cap_torch_threads() is None and calls == [2]


@pytest.mark.parametrize(
    "cap, expected",
    [("AVX2", "fp32"), ("AVX512_CORE", "fp32"), ("avx512_core_amx", "bf16"),
     ("AVX512_CORE_BF16", "bf16"), ("ALL", "bf16")],
)
def test_a_onednn_isa_cap_below_bf16_makes_auto_choose_fp32(monkeypatch, cap, expected):
    """ONEDNN_MAX_CPU_ISA=AVX2 on an AMX CPU: oneDNN emulates bf16 there."""
    fake(monkeypatch, *MACHINES["cpu_amx"][1:5])
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    chosen, reason = precision.resolve_precision("auto", "cpu")
    assert chosen == expected
    if expected == "fp32":
        assert f"ONEDNN_MAX_CPU_ISA={cap}" in reason and "no native bf16" in reason
