"""Writing a corpus into tar shards, once: decode, downmix, resample, store.

Usage::

    python -m bestrq2_lobes.shards write CSV_OR_FOLDER OUT_DIR [--jobs 16]
        [--data_root DIR] [--format pcm|flac] [--clips_per_shard 1000]
        [--sample_rate 16000] [--min_seconds 0.64] [--no_shuffle] [--seed 0]
    python -m bestrq2_lobes.shards info OUT_DIR_OR_PATTERN

The input is what the pretraining recipe reads: a folder of audio (scanned
recursively, IDs as in a folder scan) or a SpeechBrain CSV manifest
(``ID,duration,wav``, ``$data_root`` replaced by ``--data_root``, default the
CSV's folder). Each clip is checked as a scan checks it (bad files go to
``OUT_DIR/skipped.csv`` with the reason), decoded, averaged to mono, resampled
and stored as 16-bit PCM (``--format flac``: FLAC, about half the size, slower
to read). Clips are shuffled (seeded) before being dealt into shards of
``--clips_per_shard``, so a streaming loader's shuffle buffer mixes sources.

Shards are written in parallel (``--jobs``), each atomically (a temporary name,
then a rename) with its own small ``shard-NNNNNN.json``; an interrupted run
rerun with the same command skips the complete shards. ``OUT_DIR/index.json``
lists the shards with their clip counts and durations, and the total hours.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import random
import sys
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from tqdm import tqdm

from bestrq2_lobes.data.audio import AudioError, check_audio, read_segment
from bestrq2_lobes.data.files import atomic_open, atomic_path
from bestrq2_lobes.data.folder_scan import clip_id, list_audio
from bestrq2_lobes.data.manifest import (
    SKIPPED_FIELDS,
    ManifestError,
    read_manifest,
    write_csv,
)
from bestrq2_lobes.data.shards import (
    INDEX_FILE,
    SHARD_FORMATS,
    ShardError,
    add_member,
    encode_clip,
    resolve_shards,
)

__all__ = ["list_inputs", "to_int16", "write_shards", "main"]

OPTS_FILE = "write_opts.json"


def list_inputs(source: str, data_root: str | None = None) -> list[tuple[str, str]]:
    """``(ID, audio path)`` of every clip of a folder or a CSV manifest.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = tmp.ensure("a/x.wav")
    >>> list_inputs(str(tmp)) == [("a__x", str(tmp / "a" / "x.wav"))]
    True
    """
    source = os.fspath(source)
    if os.path.isdir(source):
        files = list_audio(source)
        if not files:
            raise ManifestError(f"no audio files found under {source!r}")
        seen: set[str] = set()
        return [(clip_id(rel, seen), os.path.join(source, rel)) for rel in files]
    if data_root is None:
        data_root = os.path.dirname(os.path.abspath(source))
    rows = read_manifest(source, data_root=data_root, check_files=False)
    return [(row["ID"], row["wav"]) for row in rows]


def to_int16(wav: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1) to int16, rounded; exact for 16-bit sources.

    Example
    -------
    >>> to_int16(np.array([0.5, -1.0, 1.0, 3 / 32768], dtype="float32")).tolist()
    [16384, -32768, 32767, 3]
    """
    return np.clip(np.rint(wav * 32768.0), -32768, 32767).astype("<i2")


def _shard_name(number: int) -> str:
    return f"shard-{number:06d}"


def _write_one(task: tuple) -> dict:
    """Writes one shard and its ``.json``; returns the shard's record."""
    number, items, out_dir, fmt, sample_rate, min_seconds = task
    name = _shard_name(number)
    clips, seconds, shortest, skipped = 0, 0.0, float("inf"), []
    with atomic_path(os.path.join(out_dir, name + ".tar")) as part:
        with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as tar:
            for uid, path in items:
                try:
                    check_audio(path, min_seconds=min_seconds)
                    wav = read_segment(path, 0.0, None, sample_rate).numpy()
                except AudioError as err:
                    skipped.append({"file": path, "reason": str(err)})
                    continue
                add_member(
                    tar, f"{uid}.{fmt}", encode_clip(to_int16(wav), fmt, sample_rate)
                )
                clips += 1
                seconds += len(wav) / sample_rate
                shortest = min(shortest, len(wav) / sample_rate)
    record = {
        "name": name + ".tar",
        "clips": clips,
        "seconds": round(seconds, 3),
        "min_seconds": round(shortest, 3) if clips else 0.0,
        "skipped": skipped,
    }
    with atomic_open(os.path.join(out_dir, name + ".json")) as fout:
        json.dump(record, fout)
    return record


def _check_format(fmt: str) -> None:
    if fmt not in SHARD_FORMATS:
        raise ShardError(f"--format {fmt}: expected one of {', '.join(SHARD_FORMATS)}")


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one core per job: resampling runs in torch


def write_shards(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    data_root: str | None = None,
    fmt: str = "pcm",
    clips_per_shard: int = 1000,
    sample_rate: int = 16000,
    min_seconds: float = 0.64,
    jobs: int = 1,
    shuffle: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Writes the clips of a folder or manifest into tar shards and an index.

    Arguments
    ---------
    source : str | os.PathLike
        A folder of audio or a SpeechBrain CSV manifest.
    out_dir : str | os.PathLike
        Where ``shard-NNNNNN.tar``, ``index.json`` and ``skipped.csv`` go.
    data_root : str | None
        ``$data_root`` of a manifest (default: the manifest's folder).
    fmt : str
        ``pcm`` (raw int16) or ``flac``.
    clips_per_shard : int
        Clips dealt to each shard (bad ones are left out of it).
    sample_rate : int
        Sampling rate of the stored clips.
    min_seconds : float
        Shorter clips are skipped (a pretraining model needs one patch).
    jobs : int
        Shards written at once, in worker processes.
    shuffle : bool
        Shuffle the clips (seeded by ``seed``) before dealing them out.
    seed : int
        Seed of the shuffle.
    progress : bool
        Show a progress bar (on a terminal).

    Returns
    -------
    dict
        The index: ``format``, ``sample_rate``, ``clips``, ``hours``,
        ``skipped`` and ``shards`` (``name``, ``clips``, ``seconds``,
        ``min_seconds`` each).

    Example
    -------
    >>> import soundfile as sf
    >>> tmp = getfixture("tmpdir")
    >>> for i in range(3):
    ...     sf.write(str(tmp / f"{i}.wav"), np.zeros(16000, "int16"), 16000)
    >>> index = write_shards(tmp, tmp / "shards", clips_per_shard=2, progress=False)
    >>> [(s["name"], s["clips"]) for s in index["shards"]]
    [('shard-000000.tar', 2), ('shard-000001.tar', 1)]
    """
    source, out_dir = os.fspath(source), os.fspath(out_dir)
    _check_format(fmt)
    if clips_per_shard < 1:
        raise ShardError(f"--clips_per_shard {clips_per_shard}: must be >= 1")
    items = list_inputs(source, data_root)
    if shuffle:
        random.Random(seed).shuffle(items)
    digest = hashlib.sha256("\n".join(f"{u}\t{p}" for u, p in items).encode())
    opts = {
        "source": os.path.abspath(source),
        "inputs": digest.hexdigest()[:16],
        "clips_per_shard": clips_per_shard,
        "format": fmt,
        "sample_rate": sample_rate,
        "min_seconds": min_seconds,
        "shuffle": shuffle,
        "seed": seed,
    }
    return write_shard_groups(
        items,
        out_dir,
        opts,
        _write_one,
        (fmt, sample_rate, min_seconds),
        clips_per_shard,
        jobs,
        progress,
    )


def write_shard_groups(
    items: list,
    out_dir: str,
    opts: dict,
    write_one,
    extra: tuple,
    clips_per_shard: int,
    jobs: int,
    progress: bool,
) -> dict:
    """Writes items into numbered shards, keeping the complete ones; the index.

    The part every shard writer shares (clip files here, HDF5 rows in
    ``datasets.audioset_hdf5``): ``opts`` is recorded in ``OUT_DIR/`` on the
    first call and must match on a rerun; a shard whose ``.tar`` and ``.json``
    both exist is kept, the others are written by ``write_one((number, items
    of the shard, out_dir, *extra))`` in ``jobs`` worker processes, with a
    progress bar on a terminal.

    Arguments
    ---------
    items : list
        What goes into the shards, in order.
    out_dir : str
        The shard folder.
    opts : dict
        The options and a digest of the inputs (JSON).
    write_one : callable
        Writes one shard, returns its record (a picklable top-level function).
    extra : tuple
        More arguments of ``write_one`` after the folder.
    clips_per_shard : int
        Items per shard.
    jobs : int
        Worker processes (1: this process).
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        The index (also written as ``index.json``).
    """
    os.makedirs(out_dir, exist_ok=True)
    opts_path = os.path.join(out_dir, OPTS_FILE)
    if os.path.isfile(opts_path):
        with open(opts_path, encoding="utf-8") as fin:
            if json.load(fin) != opts:
                raise ShardError(
                    f"{out_dir} holds shards written from other inputs or options "
                    f"(see {OPTS_FILE}): give another output folder"
                )
    else:
        with atomic_open(opts_path) as fout:
            json.dump(opts, fout, indent=1)
    groups = [
        items[i : i + clips_per_shard] for i in range(0, len(items), clips_per_shard)
    ]
    records = {}
    todo = []
    for number, group in enumerate(groups):
        name = _shard_name(number)
        done = os.path.join(out_dir, name + ".json")
        if os.path.isfile(os.path.join(out_dir, name + ".tar")) and os.path.isfile(
            done
        ):
            with open(done, encoding="utf-8") as fin:
                records[number] = json.load(fin)
        else:
            todo.append((number, group, out_dir, *extra))
    bar = tqdm(
        total=sum(len(t[1]) for t in todo),
        desc=f"writing {len(todo)} shards",
        unit="clip",
        disable=not progress or not sys.stderr.isatty(),
    )
    with bar:
        if jobs <= 1 or len(todo) <= 1:
            results = map(write_one, todo)
            pool = None
        else:
            context = multiprocessing.get_context("fork")
            pool = ProcessPoolExecutor(
                jobs, mp_context=context, initializer=_init_worker
            )
            results = pool.map(write_one, todo)
        try:
            for task, record in zip(todo, results, strict=True):
                records[task[0]] = record
                bar.update(len(task[1]))
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    return _write_index(out_dir, [records[n] for n in range(len(groups))], opts)


def _write_index(out_dir: str, records: list[dict], opts: dict) -> dict:
    """``index.json`` and ``skipped.csv`` from the shards' records."""
    skipped = [row for record in records for row in record["skipped"]]
    write_csv(skipped, os.path.join(out_dir, "skipped.csv"), SKIPPED_FIELDS)
    shards = [{k: v for k, v in r.items() if k != "skipped"} for r in records]
    clips = sum(s["clips"] for s in shards)
    if clips == 0:
        raise ShardError(
            f"no usable audio: all {len(skipped)} clips were skipped "
            f"(see {os.path.join(out_dir, 'skipped.csv')})"
        )
    index = {
        "format": opts["format"],
        "sample_rate": opts["sample_rate"],
        "clips": clips,
        "hours": round(sum(s["seconds"] for s in shards) / 3600, 4),
        "min_seconds": min(s["min_seconds"] for s in shards if s["clips"]),
        "skipped": len(skipped),
        "shards": shards,
    }
    with atomic_open(os.path.join(out_dir, INDEX_FILE)) as fout:
        json.dump(index, fout, indent=1)
    return index


def main(argv: list[str] | None = None) -> None:
    """``write`` shards, or print the ``info`` of a shard set."""
    parser = argparse.ArgumentParser(
        prog="python -m bestrq2_lobes.shards", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("write", help="write a folder or manifest into shards")
    write.add_argument("source", help="a folder of audio or a CSV manifest")
    write.add_argument("out_dir")
    write.add_argument("--data_root", default=None)
    write.add_argument("--format", choices=SHARD_FORMATS, default="pcm")
    write.add_argument("--clips_per_shard", type=int, default=1000)
    write.add_argument("--sample_rate", type=int, default=16000)
    write.add_argument("--min_seconds", type=float, default=0.64)
    write.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    write.add_argument("--no_shuffle", action="store_true")
    write.add_argument("--seed", type=int, default=0)
    info = sub.add_parser("info", help="clips and hours of a shard set")
    info.add_argument("spec", help="a folder, its index.json, or a brace pattern")
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            shards, index = resolve_shards(args.spec)
            hours = sum(s.seconds for s in shards) / 3600
            print(
                f"{len(shards)} shards, {sum(s.clips for s in shards)} clips, "
                f"{hours:.2f} h, format {index.get('format', '?')}, "
                f"{index.get('sample_rate', '?')} Hz"
            )
            return
        started = time.time()
        index = write_shards(
            args.source,
            args.out_dir,
            data_root=args.data_root,
            fmt=args.format,
            clips_per_shard=args.clips_per_shard,
            sample_rate=args.sample_rate,
            min_seconds=args.min_seconds,
            jobs=args.jobs,
            shuffle=not args.no_shuffle,
            seed=args.seed,
        )
    except ManifestError as err:
        sys.exit(f"error: {err}")
    skipped = index["skipped"]
    note = f"; {skipped} skipped -> see skipped.csv" if skipped else ""
    print(
        f"{args.out_dir}: {len(index['shards'])} shards, {index['clips']} clips, "
        f"{index['hours']:.2f} h{note} ({(time.time() - started) / 60:.1f} min)"
    )
