"""Command-line parsing for the recipes, with SpeechBrain 1.1.2's quirks fixed.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import dataclasses

import speechbrain as sb


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
