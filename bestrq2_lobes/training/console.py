"""A quiet, informative console for recipe runs.

``silence_torchvision_notice`` drops SpeechBrain's ``torchvision is not
available - cannot save figures`` warning (no recipe here saves figures through
SpeechBrain); ``bestrq2_lobes`` installs it on import, so every recipe has it.
``cap_workers`` keeps data-loader workers within the CPUs this process may use
(its affinity and its cgroup CPU quota), ``cap_torch_threads`` does the same for
torch's intra-op threads, and ``progress_line`` tells where a run is in its
whole length, with an ETA.

Standard library only (``cap_torch_threads`` imports torch when called):
importing this module costs nothing.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import logging
import math
import os

__all__ = [
    "silence_torchvision_notice",
    "available_cpus",
    "cap_torch_threads",
    "cpu_quota",
    "cap_workers",
    "limit_loader_workers",
]

TORCHVISION_LOGGER = "speechbrain.utils.train_logger"
TORCHVISION_NOTICE = "torchvision is not available"


class _DropMessage(logging.Filter):
    """Drops the records whose message starts with ``prefix``."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def silence_torchvision_notice() -> None:
    """Drops SpeechBrain's "torchvision is not available" warning (only that one).

    SpeechBrain 1.1.2 logs it when ``speechbrain.utils.train_logger`` is
    imported without torchvision installed; its other messages are kept.
    Installing the filter twice is harmless.

    Example
    -------
    >>> silence_torchvision_notice(); silence_torchvision_notice()
    >>> log = logging.getLogger(TORCHVISION_LOGGER)
    >>> sum(isinstance(f, _DropMessage) for f in log.filters)
    1
    >>> log.filter(logging.makeLogRecord({"msg": TORCHVISION_NOTICE + " - x"}))
    False
    >>> bool(log.filter(logging.makeLogRecord({"msg": "other"})))
    True
    """
    log = logging.getLogger(TORCHVISION_LOGGER)
    if not any(isinstance(f, _DropMessage) for f in log.filters):
        log.addFilter(_DropMessage(TORCHVISION_NOTICE))


def cpu_quota(root: str = "/sys/fs/cgroup") -> float | None:
    r"""The CPU quota of this process's cgroup in CPUs (``docker --cpus``), or None.

    Reads cgroup v2 ``cpu.max`` (``"200000 100000"`` is 2 CPUs; ``max`` is no
    quota), else cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``. A
    container limited this way still sees every CPU of the host in its
    affinity, so thread pools sized by the affinity oversubscribe it.

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> _ = (tmp / "cpu.max").write_text("150000 100000\n")
    >>> cpu_quota(str(tmp)), cpu_quota(str(tmp / "none"))
    (1.5, None)
    """
    candidates = (
        (os.path.join(root, "cpu.max"), None),
        (
            os.path.join(root, "cpu", "cpu.cfs_quota_us"),
            os.path.join(root, "cpu", "cpu.cfs_period_us"),
        ),
    )
    for quota_file, period_file in candidates:
        try:
            with open(quota_file, encoding="ascii") as fin:
                fields = fin.read().split()
            if period_file is not None:
                with open(period_file, encoding="ascii") as fin:
                    fields = [fields[0], fin.read().strip()]
        except (OSError, IndexError):
            continue
        if len(fields) < 2 or fields[0] in ("max", "-1"):
            return None
        try:
            quota, period = float(fields[0]), float(fields[1])
        except ValueError:
            return None
        return quota / period if quota > 0 and period > 0 else None
    return None


def available_cpus() -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup quota.

    At least 1. A quota of 1.5 CPUs counts as 2 (``math.ceil``).

    Example
    -------
    >>> available_cpus() >= 1
    True
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cpu_quota()
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def cap_torch_threads() -> str | None:
    """Lowers torch's intra-op threads to :func:`available_cpus` when above it.

    PyTorch sizes its thread pool by the CPUs it sees, not by a container's
    CPU quota; 32 threads sharing a 2-CPU quota spend their time waiting for
    each other. An explicit ``OMP_NUM_THREADS`` is left as it is.

    Returns
    -------
    str or None
        A one-line note when the threads were lowered.

    Example
    -------
    >>> note = cap_torch_threads()
    >>> note is None or note.startswith("torch threads")
    True
    """
    import torch

    cpus, threads = available_cpus(), torch.get_num_threads()
    if "OMP_NUM_THREADS" in os.environ or threads <= cpus:
        return None
    torch.set_num_threads(cpus)
    return f"torch threads {threads} lowered to {cpus}, the CPUs this process may use"


def cap_workers(
    requested: int, cpus: int | None = None, processes: int = 1
) -> tuple[int, str | None]:
    """Data-loader workers within the CPUs: ``min(requested, cpus // processes)``.

    Arguments
    ---------
    requested : int
        Workers asked for (``num_workers``); 0 (load in the main process) stays 0.
    cpus : int | None
        CPUs available (default: ``available_cpus()``).
    processes : int
        Training processes sharing these CPUs (DDP processes on this machine).

    Returns
    -------
    (int, str | None)
        The workers to use, and a one-line note when they were capped.

    Example
    -------
    >>> cap_workers(8, cpus=2)
    (2, 'num_workers 8 capped at 2, the CPUs available to this process')
    >>> cap_workers(0, cpus=2), cap_workers(4, cpus=16)
    ((0, None), (4, None))
    >>> cap_workers(8, cpus=16, processes=4)[0]
    4
    """
    cpus = available_cpus() if cpus is None else cpus
    limit = max(1, cpus // max(1, processes))
    if requested <= limit:
        return requested, None
    share = "" if processes <= 1 else f" shared by {processes} processes"
    note = (
        f"num_workers {requested} capped at {limit}, the CPUs available "
        f"to this process{share}"
    )
    return limit, note


def limit_loader_workers(
    hparams: dict,
    keys=("train_dataloader_opts", "valid_dataloader_opts", "test_dataloader_opts"),
) -> str | None:
    """Caps, in place, the workers of a recipe's loaders at its share of the CPUs.

    The share is the CPUs of this process divided by the training processes
    on this machine (``LOCAL_WORLD_SIZE``, set by torchrun).

    Returns
    -------
    str or None
        The one-line note to log once, or None when nothing was capped.

    Example
    -------
    >>> hp = {"train_dataloader_opts": {"num_workers": 10**6}}
    >>> limit_loader_workers(hp).startswith("num_workers 1000000 capped")
    True
    """
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    note = None
    for key in keys:
        opts = hparams.get(key)
        if opts is None:
            continue
        workers, capped = cap_workers(opts.get("num_workers", 0), processes=processes)
        opts["num_workers"] = workers
        note = note or capped
    return note


def progress_line(step: int, total: int, first_step: int, elapsed: float) -> str:
    """``step N of TOTAL`` with the share done, and an ETA at this run's pace.

    Arguments
    ---------
    step : int
        Optimiser steps done.
    total : int
        Optimiser steps the run will make.
    first_step : int
        The step this process started from (after a resume).
    elapsed : float
        Seconds since this process started training.

    Example
    -------
    >>> progress_line(30, 40, 0, 90.0)
    'step 30 of 40 (75%), 1.5 min so far, about 30 s left'
    >>> progress_line(150_000, 200_000, 100_000, 36_000.0)
    'step 150000 of 200000 (75%), 10.0 h so far, about 10.0 h left'
    """
    done = step - first_step
    parts = [f"step {step} of {total} ({100 * step / max(total, 1):.0f}%)"]
    parts.append(f"{_duration(elapsed)} so far")
    if done > 0 and step < total:
        parts.append(f"about {_duration(elapsed / done * (total - step))} left")
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
