"""Notes on the torchrun (elastic) set-up of a run, read from its environment.

A run started by ``torchrun --max-restarts N`` restarts its workers when one
fails. Since PyTorch 2.4 the agents share their rendezvous store with the
workers across restarts, and the keys of the previous round stay in it: a
restarted worker can read a dead peer's address and fail to connect
(pytorch/pytorch#135712), which uses up a restart. Setting
``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` for torchrun gives each round a fresh
store. ``restart_note`` says so, once, at the start of a run that may restart.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["restart_note"]


def restart_note(environ: Mapping[str, str] | None = None) -> str | None:
    """A warning for a restartable torchrun whose restarts may not reconnect.

    Arguments
    ---------
    environ : Mapping[str, str] | None
        The environment (default ``os.environ``).

    Returns
    -------
    str | None
        The warning, or None (not under torchrun, no restarts, or the store
        is not shared).

    Example
    -------
    >>> env = {"TORCHELASTIC_MAX_RESTARTS": "3", "TORCHELASTIC_USE_AGENT_STORE": "True"}
    >>> restart_note(env).split(":")[0]
    'torchrun --max-restarts 3 with the rendezvous store shared across restarts'
    >>> restart_note({**env, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}) is None
    True
    >>> restart_note({}) is None
    True
    """
    env = os.environ if environ is None else environ
    restarts = int(env.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0)
    if restarts <= 0 or env.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    if env.get("TORCH_DISABLE_SHARE_RDZV_TCP_STORE") == "1":
        return None
    return (
        f"torchrun --max-restarts {restarts} with the rendezvous store shared "
        "across restarts: a restarted group may fail to reconnect "
        "(pytorch/pytorch#135712). Start torchrun with "
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in its environment "
        "(docs/distributed.md)"
    )
