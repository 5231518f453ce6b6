"""Which floating-point precision is fast on this machine, and why.

``auto`` is the default precision of every recipe, the probe, the benchmarks
and the replication scripts. It resolves, once per run, to

* **bf16** on a CUDA device that supports it (``torch.cuda.is_bf16_supported``);
* **fp32** on a CUDA device without bf16 (pre-Ampere). fp16 would use the tensor
  cores there, but needs loss scaling and has a narrow range; ask for it
  explicitly with ``--precision fp16``;
* **bf16** on a CPU with native bf16 matrix instructions: AMX
  (``torch.cpu._is_amx_tile_supported``) or AVX512-BF16
  (``torch.cpu._is_avx512_bf16_supported``);
* **fp32** on any other CPU (AVX2, plain AVX-512), where PyTorch emulates bf16:
  measured on a 2-core AMD EPYC with AVX2, a 1024 x 1024 matmul ran at
  55 GFLOP/s in fp32 and 0.7 GFLOP/s in bf16, and a replication pretraining step
  took 1.5 s in fp32 against 36-42 s in bf16.

An explicit ``bf16`` or ``fp16`` is kept as given; on a CPU that would emulate
it, one warning line (once per process) gives that slowdown and the
``--precision fp32`` alternative. ``cpu_capabilities`` is what the benchmarks
record beside their figures, so every figure names the CPU it was measured on.
``c_compiler`` tells whether ``torch.compile`` can build CPU kernels here.

Standard library and torch only; nothing here imports from ``recipes/``.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys

import torch

__all__ = [
    "PRECISIONS",
    "CHOICES",
    "EMULATED_BF16_SLOWDOWN",
    "c_compiler",
    "can_compile",
    "cpu_capabilities",
    "cpu_model",
    "machine_record",
    "native_low_precision",
    "resolve_precision",
    "resolve_and_report",
    "warn_if_emulated",
]

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
CHOICES = ("auto", *PRECISIONS)
EMULATED_BF16_SLOWDOWN = (
    "measured on a 2-core AMD EPYC with AVX2: 1024x1024 matmul 0.7 GFLOP/s in bf16 "
    "against 55 GFLOP/s in fp32, a replication pretraining step 36-42 s against 1.5 s"
)
_WARNED: set[tuple[str, str]] = set()


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``.

    Example
    -------
    >>> isinstance(cpu_model(), str) and len(cpu_model()) > 0
    True
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fin:
            for line in fin:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    name = line.split(":", 1)[1].strip()
                    if name:
                        return name
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _probe(name: str) -> bool:
    """``torch.cpu.<name>()``, False where this torch build lacks it."""
    check = getattr(torch.cpu, name, None)
    try:
        return bool(check()) if check is not None else False
    except Exception:  # noqa: BLE001 (a capability query must never stop a run)
        return False


#: oneDNN ISA levels (``ONEDNN_MAX_CPU_ISA``) that still allow each native unit
_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512")
_AMX_MARK = "AMX"


def onednn_isa_cap() -> str | None:
    """The ISA cap a user set for oneDNN (``ONEDNN_MAX_CPU_ISA``), or None.

    oneDNN runs torch's bf16 matmuls on a CPU; capped below AVX512_CORE_BF16
    (e.g. ``ONEDNN_MAX_CPU_ISA=AVX2``) it emulates bf16 even where the CPU has
    AMX: a 1024 x 1024 bf16 matmul fell from about 1200 to 0.8 GFLOP/s on this
    project's AMX Xeon, as slow as on an AVX2-only CPU.

    Example
    -------
    >>> import os
    >>> os.environ.get("ONEDNN_MAX_CPU_ISA") == onednn_isa_cap()
    True
    """
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        value = os.environ.get(name, "").strip().upper()
        if value and value not in ("ALL", "DEFAULT"):
            return value
    return None


def cpu_capabilities() -> dict:
    """What this CPU offers torch: model, ISA level and native bf16/fp16.

    Returns
    -------
    dict
        ``cpu_model`` (str), ``cpu_capability`` (``torch.backends.cpu.
        get_cpu_capability()``: ``AVX2``, ``AVX512``, ``DEFAULT``, ...),
        ``amx`` and ``avx512_bf16`` (bool, the hardware), ``onednn_max_isa``
        (:func:`onednn_isa_cap`), ``native_bf16`` (either of them, usable under
        that cap),
        ``native_fp16`` (AMX-FP16) and ``cpus`` (CPUs this process may use).

    Example
    -------
    >>> caps = cpu_capabilities()
    >>> sorted(caps)  # doctest: +NORMALIZE_WHITESPACE
    ['amx', 'avx512_bf16', 'cpu_capability', 'cpu_model', 'cpus', 'native_bf16',
     'native_fp16', 'onednn_max_isa']
    >>> caps["native_bf16"] <= (caps["amx"] or caps["avx512_bf16"])
    True
    """
    from bestrq2_lobes.training.console import available_cpus

    amx = _probe("_is_amx_tile_supported")
    avx512_bf16 = _probe("_is_avx512_bf16_supported")
    try:
        capability = str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001
        capability = "unknown"
    cap = onednn_isa_cap()
    usable_amx = amx and (cap is None or _AMX_MARK in cap)
    usable_bf16 = avx512_bf16 and (
        cap is None or _AMX_MARK in cap or cap.startswith(_BF16_ISAS)
    )
    return {
        "cpu_model": cpu_model(),
        "cpu_capability": capability,
        "amx": amx,
        "avx512_bf16": avx512_bf16,
        "onednn_max_isa": cap,
        "native_bf16": usable_amx or usable_bf16,
        "native_fp16": _probe("_is_amx_fp16_supported"),
        "cpus": available_cpus(),
    }


def _cpu_words(caps: dict) -> str:
    """``CPU AVX512 with AMX``, ``CPU AVX2 without native bf16``, ..."""
    units = (("AMX", caps["amx"]), ("AVX512-BF16", caps["avx512_bf16"]))
    kinds = [name for name, present in units if present]
    if kinds and not caps["native_bf16"]:
        return (
            f"CPU {caps['cpu_capability']} with {' and '.join(kinds)} unused: "
            f"ONEDNN_MAX_CPU_ISA={caps['onednn_max_isa']}, no native bf16"
        )
    if kinds:
        return f"CPU {caps['cpu_capability']} with {' and '.join(kinds)}"
    return f"CPU {caps['cpu_capability']} without native bf16"


def _device_type(device) -> str:
    return torch.device(device if device is not None else "cpu").type


def native_low_precision(precision: str, device="cpu") -> bool:
    """Whether ``precision`` runs on native instructions of ``device``.

    fp32 always does; on CUDA bf16 needs ``torch.cuda.is_bf16_supported()``
    and fp16 always has kernels; on a CPU bf16 needs AMX or AVX512-BF16 and fp16
    needs AMX-FP16. Other device types are trusted.

    Example
    -------
    >>> native_low_precision("fp32", "cpu")
    True
    """
    kind = _device_type(device)
    if precision == "fp32":
        return True
    if kind == "cuda":
        return precision == "fp16" or bool(torch.cuda.is_bf16_supported())
    if kind == "cpu":
        caps = cpu_capabilities()
        return caps["native_bf16"] if precision == "bf16" else caps["native_fp16"]
    return True


def resolve_precision(requested: str | None, device="cpu") -> tuple[str, str]:
    """The precision to run, and why: ``auto`` picks by the hardware.

    Arguments
    ---------
    requested : str or None
        ``auto`` (or None), ``fp32``, ``bf16`` or ``fp16``. An explicit value is
        returned as given.
    device : str or torch.device
        Where the run computes (``cpu``, ``cuda``, ``cuda:1``, ...).

    Returns
    -------
    (str, str)
        ``fp32``, ``bf16`` or ``fp16``, and the reason in words.

    Example
    -------
    >>> resolve_precision("fp32", "cuda")
    ('fp32', 'given explicitly')
    >>> precision, reason = resolve_precision("auto", "cpu")
    >>> precision in ("bf16", "fp32") and reason.startswith("CPU ")
    True
    """
    if requested not in (None, "auto"):
        if requested not in PRECISIONS:
            raise ValueError(f"precision {requested!r}: expected one of {CHOICES}")
        return requested, "given explicitly"
    kind = _device_type(device)
    if kind == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "CUDA device with bf16"
        return "fp32", "CUDA device without bf16 (fp16 is there: --precision fp16)"
    if kind == "cpu":
        caps = cpu_capabilities()
        return ("bf16" if caps["native_bf16"] else "fp32"), _cpu_words(caps)
    return "fp32", f"device type {kind}"


def warn_if_emulated(precision: str, device="cpu") -> str | None:
    """Warns once per process when ``precision`` would be emulated on a CPU.

    Returns
    -------
    str or None
        The one-line warning (also logged the first time), or None when the
        precision is native here.

    Example
    -------
    >>> warn_if_emulated("fp32", "cpu") is None
    True
    """
    if _device_type(device) != "cpu" or precision == "fp32":
        return None
    caps = cpu_capabilities()
    if native_low_precision(precision, device):
        return None
    if precision == "bf16":
        why = f"{_cpu_words(caps)}: PyTorch emulates bf16 ({EMULATED_BF16_SLOWDOWN})"
    else:
        why = f"CPU {caps['cpu_capability']} without AMX-FP16: PyTorch emulates fp16"
    line = (
        f"--precision {precision} on this {why}; --precision fp32 (or auto) "
        "is many times faster here"
    )
    key = (precision, _device_type(device))
    if key not in _WARNED:
        _WARNED.add(key)
        logger.warning(line)
    return line


def _say(line: str, stream=None) -> None:
    """Logs ``line`` at INFO where logging is set up, else prints it to ``stream``."""
    if logger.hasHandlers() and logger.isEnabledFor(logging.INFO):
        logger.info(line)
    else:
        print(line, file=stream or sys.stdout, flush=True)


def resolve_and_report(
    requested: str | None,
    device="cpu",
    option: str = "precision",
    quiet: bool = False,
    stream=None,
) -> tuple[str, str]:
    """:func:`resolve_precision`, then the one line saying what ``auto`` chose.

    An explicit low precision that this CPU would emulate gets the warning of
    :func:`warn_if_emulated` instead. ``quiet`` says nothing (other ranks);
    ``stream`` is where the line is printed while logging is not set up yet
    (default stdout; the recipes use stderr, their stdout starts with the
    encoder line).

    Example
    -------
    >>> resolve_and_report("fp32", "cpu")
    ('fp32', 'given explicitly')
    """
    precision, reason = resolve_precision(requested, device)
    if quiet:
        return precision, reason
    if requested in (None, "auto"):
        _say(f"{option} auto -> {precision} ({reason})", stream)
    else:
        warn_if_emulated(precision, device)
    return precision, reason


def c_compiler() -> str | None:
    """The C++ compiler ``torch.compile`` (inductor) would build CPU kernels with.

    ``$CXX`` if set and found, else the first of ``g++``, ``c++``, ``clang++``
    on the PATH; None when there is none (compiling for the CPU would fail).

    Example
    -------
    >>> c_compiler() is None or os.path.isabs(c_compiler())
    True
    """
    names = [os.environ["CXX"]] if os.environ.get("CXX") else []
    for name in (*names, "g++", "c++", "clang++"):
        found = shutil.which(name)
        if found:
            return found
    return None


def can_compile(device="cpu") -> bool:
    """Whether ``torch.compile`` can build kernels for ``device`` here.

    Inductor builds CPU kernels with a C++ compiler; without one the first
    compiled step fails deep inside torch. This says so once, in one line,
    so that the caller stays eager instead. Other devices are trusted.

    Example
    -------
    >>> can_compile("cpu") == (c_compiler() is not None)
    True
    """
    if _device_type(device) != "cpu" or c_compiler() is not None:
        return True
    key = ("compile", "cpu")
    if key not in _WARNED:
        _WARNED.add(key)
        logger.warning(
            "--compile: no C++ compiler (g++, clang++ or $CXX) for torch.compile "
            "on the CPU; running eager (install g++ to compile)"
        )
    return False


def machine_record(device, requested: str, precision: str, reason: str) -> dict:
    """The fields a benchmark's JSON carries about the machine and precision.

    Example
    -------
    >>> record = machine_record("cpu", "auto", *resolve_precision("auto", "cpu"))
    >>> {"cpu_model", "cpu_capability", "amx", "avx512_bf16"} <= set(record["machine"])
    True
    >>> record["precision_requested"]
    'auto'
    """
    machine = cpu_capabilities()
    machine["torch"] = torch.__version__
    if _device_type(device) == "cuda":
        machine["cuda_device"] = torch.cuda.get_device_name(torch.device(device))
        machine["cuda_bf16"] = bool(torch.cuda.is_bf16_supported())
    return {
        "machine": machine,
        "precision": precision,
        "precision_requested": requested,
        "precision_reason": reason,
    }
