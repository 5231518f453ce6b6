"""Start and end of a recipe run, with SpeechBrain 1.1.2's quirks handled.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import dataclasses
import gc
import io
import os

import ruamel.yaml
import speechbrain as sb
import torch
from hyperpyyaml.core import recursive_update
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
    hparams_file, overrides = resolve_base(hparams_file, overrides)
    return hparams_file, run_opts, overrides


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
