"""Start and end of a recipe run, with SpeechBrain 1.1.2's quirks handled.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import dataclasses
import gc

import speechbrain as sb
import torch
from speechbrain.utils.distributed import ddp_barrier


def parse_arguments(argv: list[str]):
    """``speechbrain.parse_arguments`` with ``--optimizer_step_limit`` as an int.

    SpeechBrain 1.1.2 gives options whose default is None no type, so
    ``--optimizer_step_limit 5`` arrives as the string ``"5"`` and the step-limit
    comparison fails.

    Returns
    -------
    (str, RunOptions, str)
        The hparams file, the run options and the overrides, as SpeechBrain's.

    Example
    -------
    >>> _, run_opts, overrides = parse_arguments(
    ...     ["h.yaml", "--optimizer_step_limit", "5", "--seed", "3"])
    >>> run_opts.optimizer_step_limit, overrides
    (5, 'seed: 3')
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    if isinstance(run_opts.optimizer_step_limit, str):
        run_opts = dataclasses.replace(
            run_opts, optimizer_step_limit=int(run_opts.optimizer_step_limit)
        )
    return hparams_file, run_opts, overrides


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
