"""The DataLoader of a shard stream, which checkpoints its place in the epoch.

``ShardLoader`` gives a :class:`~bestrq2_lobes.data.shard_stream.ShardStream`'s
batches (made in its ``num_workers`` worker processes) and is a SpeechBrain
recoverable: an intra-epoch checkpoint records the batches consumed, and a
loader restored from it tells the stream to skip them, so the resumed run
yields the very batches of the uninterrupted one (same DDP world size and
``num_workers``; otherwise it warns: the rest of the epoch is another deal).
An end-of-epoch checkpoint starts the next epoch afresh.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator

import torch
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from torch.utils.data import DataLoader

from bestrq2_lobes.data.shard_stream import ClipBatch, ShardStream

__all__ = ["ShardLoader", "distributed_position"]

logger = logging.getLogger(__name__)


def distributed_position() -> tuple[int, int]:
    """``(rank, world_size)`` of this process (0, 1 without DDP).

    Example
    -------
    >>> distributed_position()
    (0, 1)
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _as_is(batch):
    return batch


@register_checkpoint_hooks
class ShardLoader(DataLoader):
    """A DataLoader of a :class:`ShardStream` that saves its place in the epoch.

    Register it with the checkpointer (the recipe does, as ``shard_loader``):
    an intra-epoch checkpoint records the batches consumed, and a loader
    restored from it skips them (see the module docstring).

    Arguments
    ---------
    stream : ShardStream
        The batches; its ``num_workers`` is the loader's.
    **kwargs
        More ``DataLoader`` options (``pin_memory``, ``prefetch_factor``, ...;
        not ``num_workers``, ``batch_size`` or ``collate_fn``).

    Example
    -------
    >>> from bestrq2_lobes.data.shards import ShardInfo
    >>> stream = ShardStream([ShardInfo("s.tar", 4)], "pcm", 2, 1.0, 16000)
    >>> len(ShardLoader(stream))
    2
    """

    def __init__(self, stream: ShardStream, **kwargs):
        super().__init__(
            stream,
            batch_size=None,
            collate_fn=_as_is,
            num_workers=stream.num_workers,
            **kwargs,
        )
        self._resume_at = 0
        self._yielded = None

    def set_epoch(self, epoch: int) -> None:
        """Called by SpeechBrain at the start of each epoch."""
        self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[ClipBatch]:
        stream = self.dataset
        stream.skip, self._resume_at = self._resume_at, 0
        if stream.train and stream.rank == 0 and stream.rereading_slots():
            logger.warning(
                "epoch %d: %d loader slots hold fewer clips than their share of "
                "the epoch and re-read some (shorter epochs or more shards avoid it)",
                stream.epoch,
                stream.rereading_slots(),
            )
        self._yielded = stream.skip
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    @mark_as_saver
    def _save(self, path) -> None:
        stream = self.dataset
        state = {
            "epoch": stream.epoch,
            "batches": self._yielded,
            "workers": stream.workers,
            "world_size": stream.world_size,
        }
        with open(path, "w", encoding="utf-8") as fout:
            json.dump(state, fout)

    @mark_as_loader
    def _recover(self, path, end_of_epoch) -> None:
        if end_of_epoch:
            return  # the next epoch starts afresh
        with open(path, encoding="utf-8") as fin:
            state = json.load(fin)
        if not state["batches"]:
            return
        stream = self.dataset
        if (state["workers"], state["world_size"]) != (
            stream.workers,
            stream.world_size,
        ):
            logger.warning(
                "resuming a shard stream saved with %d workers x %d processes on "
                "%d x %d: the rest of the epoch is another deal (approximate resume)",
                state["workers"],
                state["world_size"],
                stream.workers,
                stream.world_size,
            )
        self._resume_at = int(state["batches"])
