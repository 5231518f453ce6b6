"""Streaming padded batches from tar shards, split over DDP ranks and workers.

Training (``train=True``): each epoch the shards are shuffled (seeded by the
seed and the epoch) and dealt out to the *slots*, one slot per (DDP rank,
loader worker); a slot reads only its own shards, so no clip is read by two
slots. An epoch is ``epoch_steps`` batches per process; by default the most for
which no slot ever re-reads a clip within an epoch, whatever the deal (about
one pass over the clips: a slot's share is ``shards // slots`` shards, and the
few left over by an uneven deal are read in other epochs). A longer epoch makes
a slot re-read its shards, in another order (the loader warns). Clips go
through a shuffle buffer of ``shuffle_buffer`` clips per slot; each draw takes
a random ``crop_seconds`` crop (shorter clips whole; of a PCM clip only the
crop's bytes are read, so the buffer holds crops) and a batch is zero-padded to
its longest clip with relative lengths, as SpeechBrain's ``PaddedBatch`` pads
the manifest path's batches. A loader worker does nothing else per clip: no
decoding (PCM), no resampling, one int16-to-float32 pass into the batch.

Validation (``train=False``): every clip of the set once, in shard order, crops
from the start, not split over ranks (as the manifest path's valid loader).

Resume is exact: a slot's stream is a function of (seed, epoch, slot), so a
restored :class:`~bestrq2_lobes.data.shard_loader.ShardLoader` sets ``skip``
to the batches already consumed, and the stream yields the very batches the
uninterrupted run would have yielded (its workers rotated so the next batch
comes first). Skipping reads only tar headers: a clip still in the shuffle
buffer at the resume point is read when it leaves the buffer.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import count

import numpy as np
import torch
from speechbrain.dataio.batch import PaddedData
from torch.utils.data import IterableDataset, get_worker_info

from bestrq2_lobes.data.shards import ShardError, ShardInfo, decode_clip, list_members

__all__ = ["ClipBatch", "ShardStream", "first_shard_clips"]


class ClipBatch:
    """A padded batch: ``id`` (list of str) and ``sig`` = ``(wavs, rel. lengths)``.

    The interface the recipe uses of SpeechBrain's ``PaddedBatch``.

    Example
    -------
    >>> batch = ClipBatch.pad(["a", "b"], [np.ones(3, "int16"), np.ones(1, "int16")])
    >>> batch.sig.data.shape, batch.sig.lengths.tolist()
    (torch.Size([2, 3]), [1.0, 0.3333333432674408])
    """

    def __init__(self, ids: list[str], wavs: torch.Tensor, lengths: torch.Tensor):
        self.id = ids
        self.sig = PaddedData(wavs, lengths)

    @classmethod
    def pad(cls, ids: list[str], clips: Sequence[np.ndarray]) -> ClipBatch:
        """int16 clips to one float batch (samples / 32768), zero-padded."""
        sizes = [len(c) for c in clips]
        longest = max(sizes)
        wavs = np.empty((len(clips), longest), dtype=np.float32)
        for row, clip in zip(wavs, clips, strict=True):  # one pass per clip
            np.multiply(clip, np.float32(1.0 / 32768.0), out=row[: len(clip)])
            row[len(clip) :] = 0.0
        lengths = torch.tensor(sizes, dtype=torch.float32) / longest
        return cls(ids, torch.from_numpy(wavs), lengths)

    @property
    def batchsize(self) -> int:
        """Clips in the batch."""
        return len(self.id)

    def to(self, *args, **kwargs) -> ClipBatch:
        """The batch with its tensors moved (``Tensor.to`` arguments)."""
        data, lengths = self.sig
        return ClipBatch(self.id, data.to(*args, **kwargs), lengths.to(*args, **kwargs))

    def pin_memory(self) -> ClipBatch:
        """The batch in pinned memory (for ``pin_memory=True`` loaders)."""
        return ClipBatch(self.id, self.sig.data.pin_memory(), self.sig.lengths)


def _read(handle, offset: int, size: int) -> bytearray:
    """``size`` bytes at ``offset``, writable (tensors view them without a copy)."""
    data = bytearray(size)
    handle.seek(offset)
    if handle.readinto(data) != size:
        raise ShardError(f"{handle.name}: truncated shard")
    return data


def _read_at(path: str, offset: int, size: int) -> bytearray:
    with open(path, "rb") as fin:
        return _read(fin, offset, size)


class ShardStream(IterableDataset):
    """Batches of cropped clips from shards (see the module docstring).

    Arguments
    ---------
    shards : Sequence[ShardInfo]
        The set (``bestrq2_lobes.data.shards.resolve_shards``).
    fmt : str
        Member format, ``pcm`` or ``flac``.
    batch_size : int
        Clips per batch (per process).
    crop_seconds : float
        Length of each crop.
    sample_rate : int
        Sampling rate of the stored clips.
    seed : int
        Seed of the deals, shuffles and crops.
    train : bool
        Training stream (epochs of ``epoch_steps``) or one validation pass.
    shuffle_buffer : int
        Clips in each slot's shuffle buffer (0: shard order).
    epoch_steps : int | None
        Batches per epoch and process; None: about one pass over the clips,
        with no clip read twice (see the module docstring).
    num_workers : int
        Loader workers (0: the main process reads).
    rank, world_size : int
        DDP position.

    Example
    -------
    >>> from bestrq2_lobes.data.shard_writer import write_shards
    >>> import soundfile as sf
    >>> tmp = getfixture("tmpdir")
    >>> for i in range(6):
    ...     sf.write(str(tmp / f"{i}.wav"), np.ones(16000 + i, "int16"), 16000)
    >>> _ = write_shards(tmp, tmp / "s", clips_per_shard=2, progress=False)
    >>> from bestrq2_lobes.data.shards import resolve_shards
    >>> shards, index = resolve_shards(str(tmp / "s"))
    >>> stream = ShardStream(shards, "pcm", 2, 0.5, 16000, shuffle_buffer=3)
    >>> stream.set_epoch(1)
    >>> [tuple(b.sig.data.shape) for b in stream]
    [(2, 8000), (2, 8000), (2, 8000)]
    """

    def __init__(
        self,
        shards: Sequence[ShardInfo],
        fmt: str,
        batch_size: int,
        crop_seconds: float,
        sample_rate: int,
        seed: int = 0,
        train: bool = True,
        shuffle_buffer: int = 500,
        epoch_steps: int | None = None,
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.shards = [s for s in shards if s.clips > 0]
        self.fmt, self.batch_size, self.seed, self.train = fmt, batch_size, seed, train
        self.crop = max(1, round(crop_seconds * sample_rate))
        self.shuffle_buffer = shuffle_buffer
        self.num_workers = num_workers
        self.workers = max(1, num_workers)
        self.rank, self.world_size = rank, world_size
        self.epoch, self.skip = 0, 0
        clips = sum(s.clips for s in self.shards)
        if not train:
            self.steps = sum(
                math.ceil(
                    sum(s.clips for s in self.shards[w :: self.workers]) / batch_size
                )
                for w in range(self.workers)
            )
            return
        slots = world_size * self.workers
        if len(self.shards) < slots:
            raise ShardError(
                f"{len(self.shards)} shards for {slots} reading slots (DDP processes "
                "x loader workers): write smaller shards (--clips_per_shard) or "
                "use fewer workers"
            )
        # the clips any slot holds, whatever the deal: its share of the smallest
        per_slot = sorted(s.clips for s in self.shards)[: len(self.shards) // slots]
        self.steps = epoch_steps or self.workers * (sum(per_slot) // batch_size)
        if self.steps < 1:
            raise ShardError(
                f"{clips} clips in {len(self.shards)} shards: a reading slot (DDP "
                f"process x loader worker) holds less than a batch of {batch_size}"
            )

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose deal, shuffles and crops are drawn."""
        self.epoch = epoch

    def deal(self, epoch: int) -> list[list[ShardInfo]]:
        """The shards of each slot (``rank * workers + worker``) in an epoch."""
        slots = self.world_size * self.workers
        order = np.random.default_rng([self.seed, epoch, 0]).permutation(
            len(self.shards)
        )
        return [[self.shards[i] for i in order[s::slots]] for s in range(slots)]

    def rereading_slots(self) -> int:
        """This rank's slots whose shards hold fewer clips than their epoch share."""
        deal = self.deal(self.epoch)
        short = 0
        for worker in range(self.workers):
            batches = len(range(worker, self.steps, self.workers))
            supply = sum(s.clips for s in deal[self.rank * self.workers + worker])
            short += batches * self.batch_size > supply
        return short

    def _position(self) -> tuple[int, int]:
        info = get_worker_info()
        worker = 0 if info is None else info.id
        return (worker + self.skip) % self.workers, worker

    def __iter__(self) -> Iterator[ClipBatch]:
        if not self.train:
            yield from self._valid_batches(self._position()[1])
            return
        worker, _ = self._position()  # logical worker: rotated on resume
        slot = self.rank * self.workers + worker
        batches = len(range(worker, self.steps, self.workers))
        done = len(range(worker, self.skip, self.workers))
        rng = np.random.default_rng([self.seed, self.epoch, 1, slot])
        refs = self._references(self.deal(self.epoch)[slot], slot)
        items = self._shuffled(refs, rng, done * self.batch_size)
        for _ in range(batches - done):
            chosen = [next(items) for _ in range(self.batch_size)]
            yield self._collate(chosen)

    def _references(self, mine: list[ShardInfo], slot: int) -> Iterator:
        """``(name, path, offset, size)`` of the slot's clips, passes without end.

        ``None`` ends each pass over the slot's shards.
        """
        for number in count():
            order = mine
            if number:  # a slot short of clips re-reads, in another order
                rng = np.random.default_rng([self.seed, self.epoch, 2, slot, number])
                order = [mine[i] for i in rng.permutation(len(mine))]
            for shard in order:
                for name, offset, size in list_members(shard.path):
                    yield name, shard.path, offset, size
            yield None

    def _shuffled(self, refs: Iterator, rng, skip: int) -> Iterator[list]:
        """``[name, data, u]`` through the buffer; the first ``skip`` not read.

        The buffer is emptied at the end of each pass, so a pass's clips all
        come out before any clip of the next. ``u`` (the crop position) and
        the buffer's picks are drawn the same way whether a clip is read or
        skipped, so a skipping stream continues exactly where the full one
        was. A clip pushed while skipping is kept as a reference and read if
        it leaves the buffer after the skip.
        """
        buffer: list[list] = []
        out = 0
        handle, handle_path = None, None
        try:
            for ref in refs:
                if ref is None:  # the end of a pass: empty the buffer
                    drained = []
                    while buffer:
                        pick = int(rng.integers(len(buffer)))
                        buffer[pick], buffer[-1] = buffer[-1], buffer[pick]
                        drained.append(buffer.pop())
                else:
                    name, path, offset, size = ref
                    u = rng.random()
                    offset, size = self._window(offset, size, u)
                    if out < skip:  # skipping: read it only if it outlives the skip
                        data = (path, offset, size)
                    else:
                        if path != handle_path:
                            if handle is not None:
                                handle.close()
                            handle, handle_path = open(path, "rb"), path
                        data = _read(handle, offset, size)
                    item = [name, data, u]
                    if len(buffer) < self.shuffle_buffer:
                        buffer.append(item)
                        continue
                    if self.shuffle_buffer:
                        pick = int(rng.integers(len(buffer)))
                        item, buffer[pick] = buffer[pick], item
                    drained = [item]
                for item in drained:
                    out += 1
                    if out > skip:
                        if isinstance(item[1], tuple):
                            item[1] = _read_at(*item[1])
                        yield item
        finally:
            if handle is not None:
                handle.close()

    def _window(self, offset: int, size: int, u: float) -> tuple[int, int]:
        """The bytes of a PCM clip's crop at position ``u`` (FLAC: all of it)."""
        if self.fmt != "pcm":
            return offset, size
        room = size // 2 - self.crop
        if room <= 0:
            return offset, size
        return offset + 2 * int(u * (room + 1)), 2 * self.crop

    def _collate(self, items: list[list]) -> ClipBatch:
        ids, clips = [], []
        for name, data, u in items:
            samples = decode_clip(data, self.fmt)
            room = len(samples) - self.crop
            if room > 0:
                start = int(u * (room + 1))
                samples = samples[start : start + self.crop]
            ids.append(name.rsplit(".", 1)[0])
            clips.append(samples)
        return ClipBatch.pad(ids, clips)

    def _valid_batches(self, worker: int) -> Iterator[ClipBatch]:
        batch = []
        for shard in self.shards[worker :: self.workers]:
            with open(shard.path, "rb") as fin:
                for name, offset, size in list_members(shard.path):
                    offset, size = self._window(offset, size, 0.0)
                    batch.append([name, _read(fin, offset, size), 0.0])
                    if len(batch) == self.batch_size:
                        yield self._collate(batch)
                        batch = []
        if batch:
            yield self._collate(batch)


def first_shard_clips(
    shards: Sequence[ShardInfo],
    fmt: str,
    max_clips: int,
    seconds: float | None,
    sample_rate: int,
) -> Iterator[torch.Tensor]:
    """The first ``max_clips`` clips of a set, in shard order, from their start.

    Each is at most ``seconds`` long, as float32 (the statistics estimated
    before step 1 read these, as they read a manifest's first clips).

    Example
    -------
    >>> list(first_shard_clips([], "pcm", 3, 1.0, 16000))
    []
    """
    left = max_clips
    for shard in shards:
        with open(shard.path, "rb") as fin:
            for _, offset, size in list_members(shard.path):
                if left <= 0:
                    return
                samples = decode_clip(_read(fin, offset, size), fmt)
                if seconds is not None:
                    samples = samples[: round(seconds * sample_rate)]
                left -= 1
                yield torch.from_numpy(samples.astype(np.float32) / 32768.0)
