"""AudioSet as packed by PANNs: HDF5 files of 10 s int16 rows, read or sharded.

PANNs (Kong et al., 2020, ``qiuqiangkong/audioset_tagging_cnn``,
``utils/dataset.py pack_waveforms_to_hdf5``) packs each AudioSet set into one
HDF5 file (the unbalanced set into 41 parts), which the BEST-RQ-2 authors read
too. Each file holds:

- ``audio_name``: bytes, e.g. ``b'Y--PJHxphWEs_30.000_40.000.wav'``;
- ``waveform``: int16, one row per clip (``sample_rate`` x 10 s: 320,000
  samples at 32 kHz), zero-padded; a clip that failed to download is a
  row of zeros;
- ``target``: the 527 multi-hot labels (bool or float), in the order of
  ``class_labels_indices.csv``;
- the attribute ``sample_rate``.

A CSV of rows to exclude (the silent ones; column ``Index``, the 0-based row)
may come with a file. :class:`AudioSetHDF5` reads a file as a torch Dataset
(float clips resampled to 16 kHz); :func:`hdf5_to_shards` writes one or more
files into the project's tar shards (``bestrq2_lobes.data.shards``), leaving
out the excluded and the all-zero rows, for ``--train_shards``::

    python -m bestrq2_lobes.datasets.audioset_hdf5 info balanced_train.h5
    python -m bestrq2_lobes.datasets.audioset_hdf5 to-shards \\
        balanced_train.h5 unbalanced_train_part*.h5 shards/audioset --jobs 8 \\
        [--exclude silent_balanced.csv --exclude ...]  (one per file, or none)

Needs ``h5py`` (``pip install bestrq2-speechbrain[audioset]``).

Example
-------
>>> import numpy as np
>>> path = str(getfixture("tmpdir") / "bal.h5")
>>> write_packed_hdf5(path, ["Yabcdefghijk_0.000_10.000.wav"],
...                   np.ones((1, 3200), "int16"), np.eye(1, 527, dtype=bool))
>>> data = AudioSetHDF5(path)
>>> item = data[0]
>>> len(data), item["id"], tuple(item["sig"].shape), int(item["target"].sum())
(1, 'Yabcdefghijk_0.000_10.000', (1600,), 1)

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import sys
import tarfile
import time
from collections.abc import Sequence

import numpy as np
import torch
import torchaudio

from bestrq2_lobes.data.files import atomic_open, atomic_path
from bestrq2_lobes.data.manifest import ManifestError
from bestrq2_lobes.data.shard_writer import to_int16, write_shard_groups
from bestrq2_lobes.data.shards import SHARD_FORMATS, add_member, encode_clip
from bestrq2_lobes.datasets.preparation import PrepareError

__all__ = [
    "AudioSetHDF5",
    "hdf5_to_shards",
    "read_exclude",
    "read_header",
    "write_packed_hdf5",
    "main",
]

DATASETS = ("audio_name", "waveform", "target")
NUM_CLASSES = 527
EXCLUDE_COLUMN = "Index"


def _h5py():
    """The ``h5py`` module, or a one-line error saying how to install it."""
    try:
        import h5py
    except ImportError:
        raise PrepareError(
            "reading PANNs HDF5 files needs h5py: "
            "pip install 'bestrq2-speechbrain[audioset]' (or pip install h5py)"
        ) from None
    return h5py


def _open(path: str):
    """The HDF5 file, checked to be in the PANNs layout (one-line errors)."""
    h5py = _h5py()
    if not os.path.isfile(path):
        raise PrepareError(f"HDF5 file not found: {path!r}")
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise PrepareError(f"{path}: cannot open as HDF5 ({err})") from None
    absent = [name for name in DATASETS if name not in h5]
    if absent:
        h5.close()
        raise PrepareError(
            f"{path}: no dataset {absent[0]!r} (a PANNs packed AudioSet file has "
            f"{', '.join(DATASETS)})"
        )
    if "sample_rate" not in h5.attrs:
        h5.close()
        raise PrepareError(f"{path}: no attribute 'sample_rate' (PANNs layout)")
    return h5


def read_header(path: str) -> dict:
    """Rows, sampling rate, samples per row and the names of a packed file.

    Raises
    ------
    PrepareError
        Not a PANNs packed file (a dataset or the attribute missing, rows of
        unequal counts, a waveform that is not 2-D int16).
    """
    with _open(path) as h5:
        wave, names, target = h5["waveform"], h5["audio_name"], h5["target"]
        if wave.ndim != 2 or wave.dtype != np.int16:
            raise PrepareError(
                f"{path}: waveform is {wave.dtype} of shape {wave.shape}, "
                "expected 2-D int16 (clips x samples)"
            )
        if not len(names) == len(wave) == len(target):
            raise PrepareError(
                f"{path}: {len(names)} audio_name, {len(wave)} waveform and "
                f"{len(target)} target rows: the counts must agree"
            )
        return {
            "rows": len(wave),
            "sample_rate": int(h5.attrs["sample_rate"]),
            "samples": int(wave.shape[1]),
            "classes": int(target.shape[1]) if target.ndim == 2 else 1,
            "names": [_name(n) for n in names[()]],
        }


def _name(raw) -> str:
    """The clip ID of an ``audio_name`` entry: ``Y<YTID>_<start>_<end>``."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    stem, ext = os.path.splitext(text.strip())
    return stem if ext.lower() in (".wav", ".flac", ".mp3") else text.strip()


def read_exclude(path: str | None, rows: int) -> set[int]:
    """The 0-based rows an exclusion CSV lists (column ``Index``).

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "silent.csv").write("Index,audio_name\\n2,Yx\\n0,Yy\\n")
    >>> sorted(read_exclude(str(tmp / "silent.csv"), rows=3))
    [0, 2]
    >>> read_exclude(str(tmp / "silent.csv"), rows=2)
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.preparation.PrepareError: ...: Index 2 is past the last ...
    """
    if path is None:
        return set()
    if not os.path.isfile(path):
        raise PrepareError(f"exclusion CSV not found: {path!r}")
    out = set()
    with open(path, newline="", encoding="utf-8") as fin:
        reader = csv.DictReader(fin)
        if EXCLUDE_COLUMN not in (reader.fieldnames or []):
            raise PrepareError(f"{path}: no column {EXCLUDE_COLUMN!r} (the rows)")
        for line, row in enumerate(reader, 2):
            value = (row[EXCLUDE_COLUMN] or "").strip()
            try:
                index = int(value)
            except ValueError:
                raise PrepareError(
                    f"{path}, line {line}: Index {value!r} is not a row number"
                ) from None
            if not 0 <= index < rows:
                raise PrepareError(
                    f"{path}, line {line}: Index {index} is past the last row "
                    f"({rows} rows): is it this file's list?"
                )
            out.add(index)
    return out


def _resample(row: np.ndarray, native: int, sample_rate: int) -> torch.Tensor:
    """An int16 row as float in [-1, 1), resampled to ``sample_rate``."""
    wav = torch.from_numpy(row.astype(np.float32) / 32768.0)
    if native != sample_rate:
        wav = torchaudio.functional.resample(wav, native, sample_rate)
    return wav


class AudioSetHDF5(torch.utils.data.Dataset):
    """A PANNs packed AudioSet file as a Dataset of float clips and targets.

    The file is opened lazily in each process that reads (loader workers
    included), so the Dataset can go to a ``DataLoader`` with workers.

    Arguments
    ---------
    path : str
        The ``.h5`` file.
    exclude : str | None
        A CSV of rows to leave out (column ``Index``).
    sample_rate : int
        Sampling rate of the clips returned (resampled from the file's).

    Example
    -------
    >>> AudioSetHDF5(str(getfixture("tmpdir") / "none.h5"))
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.preparation.PrepareError: HDF5 file not found: ...
    """

    def __init__(
        self, path: str, exclude: str | None = None, sample_rate: int = 16000
    ) -> None:
        header = read_header(path)
        self.path = path
        self.sample_rate = sample_rate
        self.native_rate = header["sample_rate"]
        self.names = header["names"]
        excluded = read_exclude(exclude, header["rows"])
        self.rows = [i for i in range(header["rows"]) if i not in excluded]
        self._h5 = None
        self._pid = None

    def __len__(self) -> int:
        return len(self.rows)

    def _file(self):
        if self._h5 is None or self._pid != os.getpid():
            self._h5, self._pid = _open(self.path), os.getpid()
        return self._h5

    def __getitem__(self, index: int) -> dict:
        """``{"id", "sig" (float, 1-D), "target" (float, classes)}`` of a clip."""
        row = self.rows[index]
        h5 = self._file()
        wav = _resample(h5["waveform"][row], self.native_rate, self.sample_rate)
        target = torch.from_numpy(np.asarray(h5["target"][row], dtype=np.float32))
        return {"id": self.names[row], "sig": wav, "target": target}


def write_packed_hdf5(
    path: str,
    names: Sequence[str],
    waveforms: np.ndarray,
    targets: np.ndarray,
    sample_rate: int = 32000,
) -> None:
    """Writes a file in the PANNs layout (tests, or a small subset of one).

    Arguments
    ---------
    path : str
        The ``.h5`` file to write.
    names : Sequence[str]
        ``audio_name`` entries (``Y<YTID>_<start>_<end>.wav``).
    waveforms : np.ndarray
        int16, clips x samples.
    targets : np.ndarray
        Multi-hot, clips x classes (bool or float).
    sample_rate : int
        The ``sample_rate`` attribute.
    """
    h5py = _h5py()
    with h5py.File(path, "w") as h5:
        h5.create_dataset(
            "audio_name", data=np.array([n.encode() for n in names], dtype="S80")
        )
        h5.create_dataset("waveform", data=np.asarray(waveforms, dtype=np.int16))
        h5.create_dataset("target", data=np.asarray(targets))
        h5.attrs.create("sample_rate", data=sample_rate, dtype=np.int32)


def _write_shard(task: tuple) -> dict:
    """Writes one shard of (file, row, ID) items and its ``.json`` record."""
    number, items, out_dir, fmt, sample_rate, min_seconds = task
    name = f"shard-{number:06d}"
    files: dict = {}
    clips, seconds, shortest, skipped = 0, 0.0, float("inf"), []
    try:
        with atomic_path(os.path.join(out_dir, name + ".tar")) as part:
            with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as tar:
                for source, row, uid in items:
                    if source not in files:
                        files[source] = _open(source)
                    h5 = files[source]
                    data = h5["waveform"][row]
                    where = f"{source}:{row} ({uid})"
                    if not data.any():
                        skipped.append({"file": where, "reason": "silent (all zeros)"})
                        continue
                    native = int(h5.attrs["sample_rate"])
                    wav = _resample(data, native, sample_rate).numpy()
                    if len(wav) < min_seconds * sample_rate:
                        reason = f"shorter than {min_seconds:g} s"
                        skipped.append({"file": where, "reason": reason})
                        continue
                    add_member(
                        tar,
                        f"{uid}.{fmt}",
                        encode_clip(to_int16(wav), fmt, sample_rate),
                    )
                    clips += 1
                    seconds += len(wav) / sample_rate
                    shortest = min(shortest, len(wav) / sample_rate)
    finally:
        for h5 in files.values():
            h5.close()
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


def _init_worker() -> None:
    torch.set_num_threads(1)  # one core per job: resampling runs in torch


def hdf5_to_shards(
    sources: str | Sequence[str],
    out_dir: str,
    exclude: str | Sequence[str] | None = None,
    fmt: str = "pcm",
    clips_per_shard: int = 1000,
    sample_rate: int = 16000,
    min_seconds: float = 0.64,
    shuffle: bool = True,
    seed: int = 0,
    jobs: int = 1,
    progress: bool = True,
) -> dict:
    """Writes the clips of PANNs packed files into tar shards and ``index.json``.

    The shards are those of ``python -m bestrq2_lobes.shards write``: members
    ``<ID>.pcm`` (or ``.flac``) at ``sample_rate``, one ``.json`` per shard,
    ``index.json``, ``skipped.csv`` (the all-zero rows, each with its file and
    row) and ``write_opts.json``; a rerun with the same inputs and options
    skips the complete shards, other ones stop with one line.

    Arguments
    ---------
    sources : str | Sequence[str]
        One or more ``.h5`` files (e.g. the 41 unbalanced parts).
    out_dir : str
        Where the shards go.
    exclude : str | Sequence[str] | None
        Exclusion CSVs (column ``Index``): one per source, or one with one
        source.
    fmt : str
        ``pcm`` or ``flac``.
    clips_per_shard : int
        Rows dealt to each shard.
    sample_rate : int
        Sampling rate of the stored clips (resampled from the files').
    min_seconds : float
        Shorter rows are skipped.
    shuffle : bool
        Shuffle the rows (seeded) before dealing them out.
    seed : int
        Seed of the shuffle.
    jobs : int
        Shards written at once, in worker processes.
    progress : bool
        Show a progress bar (on a terminal).

    Returns
    -------
    dict
        The index (``clips``, ``hours``, ``skipped``, ``shards``, ...).

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> path = str(tmp / "eval.h5")
    >>> wave = np.ones((3, 32000), "int16")
    >>> wave[1] = 0
    >>> names = [f"Y{i}bcdefghijk_0.000_10.000.wav" for i in range(3)]
    >>> write_packed_hdf5(path, names, wave, np.zeros((3, 527), bool))
    >>> index = hdf5_to_shards(path, str(tmp / "shards"), progress=False)
    >>> index["clips"], index["skipped"], index["sample_rate"]
    (2, 1, 16000)
    """
    sources = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
    sources = [os.path.abspath(os.fspath(s)) for s in sources]
    excludes = (
        []
        if exclude is None
        else [exclude]
        if isinstance(exclude, str)
        else (list(exclude))
    )
    if not sources:
        raise PrepareError("to-shards: give at least one HDF5 file")
    if excludes and len(excludes) != len(sources):
        raise PrepareError(
            f"{len(excludes)} exclusion CSVs for {len(sources)} HDF5 files: "
            "give one per file, in the same order"
        )
    if fmt not in SHARD_FORMATS:
        raise PrepareError(
            f"format {fmt!r}: expected one of {', '.join(SHARD_FORMATS)}"
        )
    if clips_per_shard < 1:
        raise PrepareError(f"clips_per_shard {clips_per_shard}: must be >= 1")
    items, owner = [], {}
    for number, source in enumerate(sources):
        header = read_header(source)
        excluded = read_exclude(excludes[number], header["rows"]) if excludes else ()
        for row, uid in enumerate(header["names"]):
            if row in excluded or uid in owner:  # a name twice: its first row
                continue
            owner[uid] = source
            items.append((source, row, uid))
    if shuffle:
        random.Random(seed).shuffle(items)
    digest = hashlib.sha256("\n".join(f"{s}\t{r}" for s, r, _ in items).encode())
    opts = {
        "source": sources,
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
        os.fspath(out_dir),
        opts,
        _write_shard,
        (fmt, sample_rate, min_seconds),
        clips_per_shard,
        jobs,
        progress,
    )


def main(argv: list[str] | None = None) -> int:
    """``info`` of a packed file, or ``to-shards``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m bestrq2_lobes.datasets.audioset_hdf5",
        description="PANNs packed AudioSet HDF5 files: show one, or write shards.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="rows, rate and excluded rows of a file")
    info.add_argument("h5")
    info.add_argument("--exclude", default=None, help="CSV of rows (column Index)")
    write = sub.add_parser("to-shards", help="write files into tar shards")
    write.add_argument("paths", nargs="+", help="H5 [H5 ...] OUT_DIR")
    write.add_argument(
        "--exclude", action="append", default=None, help="one CSV per H5, in order"
    )
    write.add_argument("--format", choices=SHARD_FORMATS, default="pcm")
    write.add_argument("--clips_per_shard", type=int, default=1000)
    write.add_argument("--sample_rate", type=int, default=16000)
    write.add_argument("--min_seconds", type=float, default=0.64)
    write.add_argument("--jobs", type=int, default=1)
    write.add_argument("--no_shuffle", action="store_true")
    write.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            header = read_header(args.h5)
            excluded = read_exclude(args.exclude, header["rows"])
            print(
                f"{args.h5}: {header['rows']} clips of "
                f"{header['samples'] / header['sample_rate']:g} s at "
                f"{header['sample_rate']} Hz, {header['classes']} classes"
                f"; {len(excluded)} excluded"
            )
            return 0
        if len(args.paths) < 2:
            parser.error("to-shards needs H5 [H5 ...] OUT_DIR")
        started = time.time()
        index = hdf5_to_shards(
            args.paths[:-1],
            args.paths[-1],
            exclude=args.exclude,
            fmt=args.format,
            clips_per_shard=args.clips_per_shard,
            sample_rate=args.sample_rate,
            min_seconds=args.min_seconds,
            shuffle=not args.no_shuffle,
            seed=args.seed,
            jobs=args.jobs,
        )
    except ManifestError as err:  # PrepareError, and ShardError of an empty set
        print(f"error: {err}", file=sys.stderr)
        return 2
    note = f"; {index['skipped']} skipped -> skipped.csv" if index["skipped"] else ""
    print(
        f"{args.paths[-1]}: {len(index['shards'])} shards, {index['clips']} clips, "
        f"{index['hours']:.2f} h{note} ({(time.time() - started) / 60:.1f} min)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
