"""Start and end of a recipe run, with SpeechBrain 1.1.2's quirks handled.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import dataclasses
import gc
import io
import os
import sys

import ruamel.yaml
import speechbrain as sb
import torch
from hyperpyyaml.core import recursive_update
from speechbrain.utils.distributed import ddp_barrier, if_main_process

from bestrq2_lobes.training.console import cap_torch_threads
from bestrq2_lobes.training.precision import resolve_and_report


def parse_arguments(argv: list[str]):
    """``speechbrain.parse_arguments``, with ``--precision auto`` and an int step limit.

    SpeechBrain 1.1.2 gives options whose default is None no type, so
    ``--optimizer_step_limit 5`` arrives as the string ``"5"`` and the step-limit
    comparison fails. ``--precision`` defaults to ``auto`` (as does
    ``--eval_precision``), resolved here by
    :func:`bestrq2_lobes.training.precision.resolve_precision` before the Brain
    sees it (SpeechBrain takes only fp32, fp16 and bf16); see
    :func:`resolve_run_precision`. Torch's threads are capped at the CPUs this
    process may use (:func:`bestrq2_lobes.training.console.cap_torch_threads`).

    Returns
    -------
    (str, RunOptions, str)
        The hparams file, the run options and the overrides, as SpeechBrain's.

    Example
    -------
    >>> _, run_opts, overrides = parse_arguments(
    ...     ["h.yaml", "--optimizer_step_limit", "5", "--seed", "3", "--device", "cpu",
    ...      "--precision", "fp32"])
    >>> run_opts.optimizer_step_limit, overrides, run_opts.precision
    (5, 'seed: 3', 'fp32')
    >>> _, run_opts, _ = parse_arguments(["h.yaml", "--device", "cpu"])  # auto
    >>> run_opts.precision in ("bf16", "fp32")  # by the CPU, said on stderr
    True
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(drop_auto_precision(argv))
    if isinstance(run_opts.optimizer_step_limit, str):
        run_opts = dataclasses.replace(
            run_opts, optimizer_step_limit=int(run_opts.optimizer_step_limit)
        )
    run_opts = resolve_run_precision(run_opts)
    note = cap_torch_threads()
    if note and if_main_process():
        print(note, file=sys.stderr, flush=True)
    hparams_file, overrides = resolve_base(hparams_file, overrides)
    return hparams_file, run_opts, overrides


PRECISION_OPTIONS = ("precision", "eval_precision")


def drop_auto_precision(argv: list[str]) -> list[str]:
    """``argv`` without ``--precision auto`` / ``--eval_precision=auto``.

    SpeechBrain's parser only accepts fp32, fp16 and bf16; an option left out
    is ``auto`` for :func:`resolve_run_precision`.

    Example
    -------
    >>> drop_auto_precision(["h.yaml", "--precision", "auto", "--eval_precision=auto",
    ...                      "--precision_note", "auto", "--seed", "1"])
    ['h.yaml', '--precision_note', 'auto', '--seed', '1']
    """
    flags = {f"--{name}" for name in PRECISION_OPTIONS}
    kept, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in flags and i + 1 < len(argv) and argv[i + 1] == "auto":
            i += 2
            continue
        if "=" in arg and arg.split("=", 1)[0] in flags and arg.endswith("=auto"):
            i += 1
            continue
        kept.append(arg)
        i += 1
    return kept


def resolve_run_precision(run_opts, device=None):
    """Run options whose ``precision`` and ``eval_precision`` are concrete.

    ``--precision`` not given (or ``auto``) becomes the precision this device
    is fast at (bf16 on CUDA with bf16 and on CPUs with AMX or AVX512-BF16, fp32
    elsewhere), with one line on stderr saying what and why (stdout is the
    recipe's: it starts with the encoder line); an explicit value is kept
    (an explicit bf16 on a CPU that emulates it warns once). ``--eval_precision``
    not given follows the training precision. Both are marked as given on the
    command line, so the Brain takes them over any hparams default.

    Arguments
    ---------
    run_opts : RunOptions
        As ``speechbrain.parse_arguments`` returned them (after
        :func:`drop_auto_precision`).
    device : str, optional
        Where the run computes (default: ``run_opts.device``, else SpeechBrain's
        ``infer_device()``).

    Returns
    -------
    RunOptions
        A copy with both precisions resolved.

    Example
    -------
    >>> _, opts, _ = sb.parse_arguments(["h.yaml", "--precision", "fp32"])
    >>> opts = resolve_run_precision(opts, "cpu")
    >>> opts.precision, opts.eval_precision
    ('fp32', 'fp32')
    """
    from speechbrain.utils.distributed import infer_device

    given = run_opts.overridden_args
    device = device or run_opts.device or infer_device()
    quiet = not if_main_process()
    requested = run_opts.precision if "precision" in given else "auto"
    say = {"quiet": quiet, "stream": sys.stderr}  # stdout: the recipe's own lines
    precision, _ = resolve_and_report(requested, device, **say)
    eval_precision = precision
    if "eval_precision" in given:
        eval_precision, _ = resolve_and_report(
            run_opts.eval_precision, device, "eval_precision", **say
        )
    return dataclasses.replace(
        run_opts,
        precision=precision,
        eval_precision=eval_precision,
        overridden_args=set(given) | set(PRECISION_OPTIONS),
    )


BASE_KEY = "__base__"


def resolve_base(hparams_file: str, overrides: str) -> tuple[str, str]:
    r"""An hparams file with a ``__base__`` key is that file with its keys changed.

    A variant file (``hparams/bestrq2_vit_speech.yaml``) names its base file
    (relative to its own folder) and lists only the keys it changes. This gives
    the base file and one overrides string: the variant's keys, then the
    command line's on top. Bases may chain; other files pass through unchanged.

    Arguments
    ---------
    hparams_file : str
        The hparams file named on the command line.
    overrides : str
        The command-line overrides (YAML).

    Returns
    -------
    (str, str)
        The file to load and the overrides to load it with.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "base.yaml").write("a: 1\nb: !ref <a>\n")
    >>> _ = (tmp / "v.yaml").write("__base__: base.yaml\na: 2  # changed\n")
    >>> path, overrides = resolve_base(str(tmp / "v.yaml"), "c: 3")
    >>> os.path.basename(path), overrides.split()
    ('base.yaml', ['a:', '2', '#', 'changed', 'c:', '3'])
    """
    if not os.path.isfile(hparams_file):
        return hparams_file, overrides  # the recipe reports the missing file
    yaml = ruamel.yaml.YAML()  # round trip: keeps !ref and other tags
    with open(hparams_file, encoding="utf-8") as fin:
        variant = yaml.load(fin)
    if not isinstance(variant, dict) or BASE_KEY not in variant:
        return hparams_file, overrides
    base = os.path.join(os.path.dirname(hparams_file), variant.pop(BASE_KEY))
    recursive_update(variant, yaml.load(overrides or "{}") or {})
    stream = io.StringIO()
    yaml.dump(variant, stream)
    return resolve_base(base, stream.getvalue())


def shutdown_distributed(brain) -> None:
    """Ends a DDP run cleanly; does nothing without a process group.

    With gloo, a rank sometimes aborted at exit ("terminate called without an
    active exception", seen in about one run of five) while its DDP wrappers
    were torn down after the process group. Dropping the wrappers first, then a
    barrier and ``destroy_process_group``, ends every rank in order.

    Example
    -------
    >>> shutdown_distributed(None)  # not distributed: nothing to do
    """
    if not torch.distributed.is_initialized():
        return
    brain.modules = None  # the DDP wrappers and their pending gloo work
    gc.collect()
    ddp_barrier()
    torch.distributed.destroy_process_group()
