"""Audio folders turned into checked train/valid manifests.

``prepare_folder`` scans a folder (recursively) into train/valid manifests,
leaving out, with the reason in ``skipped.csv``, the files that cannot be used;
the scan is cached while the folder is unchanged.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import sys
from collections.abc import Sequence

from tqdm import tqdm

from bestrq2_lobes.data.audio import AudioError, check_audio
from bestrq2_lobes.data.manifest import (
    AUDIO_EXTENSIONS,
    DATA_ROOT,
    SKIPPED_FIELDS,
    ManifestError,
    write_csv,
)

logger = logging.getLogger(__name__)


def list_audio(
    folder: str | os.PathLike, extensions: Sequence[str] = AUDIO_EXTENSIONS
) -> list[str]:
    """Returns the audio files under ``folder`` as sorted relative posix paths.

    Hidden files are left out; ``extensions`` match case-insensitively.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> for name in ("b.WAV", "a/c.flac", ".hidden.wav", "notes.txt"):
    ...     _ = tmp.ensure(name)
    >>> list_audio(tmp)
    ['a/c.flac', 'b.WAV']
    """
    folder = os.fspath(folder)
    exts = tuple(e.lower() for e in extensions)
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        rel_root = os.path.relpath(root, folder)
        for name in files:
            if name.lower().endswith(exts) and not name.startswith("."):
                rel = name if rel_root == "." else os.path.join(rel_root, name)
                found.append(rel.replace(os.sep, "/"))
    return sorted(found)


def clip_id(rel: str, seen: set[str]) -> str:
    """The ID of a file in a folder scan: its relative path, ``/`` as ``__``.

    ``seen`` holds the IDs given so far (this one is added); a second file of
    the same stem gets its extension appended.

    Example
    -------
    >>> seen = set()
    >>> clip_id("a/x.wav", seen), clip_id("a/x.flac", seen)
    ('a__x', 'a__x_flac')
    """
    stem, ext = os.path.splitext(rel)
    uid = stem.replace("/", "__")
    if uid in seen:  # e.g. x.wav next to x.flac
        uid = f"{uid}_{ext.lstrip('.').lower()}"
    seen.add(uid)
    return uid


def scan_audio_folder(
    folder: str | os.PathLike,
    min_seconds: float,
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
    progress: bool = True,
    skipped_csv: str | os.PathLike | None = None,
) -> tuple[list[dict], list[dict]]:
    """Recursively checks the audio files of a folder.

    Arguments
    ---------
    folder : str | os.PathLike
        Folder to scan (it becomes ``$data_root``).
    min_seconds : float
        Files shorter than this are skipped.
    extensions : Sequence[str]
        File name endings counted as audio (case-insensitive).
    progress : bool
        Show a progress bar (only on a terminal).
    skipped_csv : str | os.PathLike | None
        If given, the skipped files are written there (also before raising).

    Returns
    -------
    rows : list[dict]
        One ``{"ID", "duration", "wav"}`` row per usable file, sorted by path.
        ``ID`` is the relative path without extension, ``/`` becoming ``__``.
    skipped : list[dict]
        One ``{"file", "reason"}`` row per unusable file.

    Raises
    ------
    ManifestError
        The folder does not exist, holds no audio, or no usable audio.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> root = getfixture("tmpdir")
    >>> sf.write(str(root.mkdir("a") / "x.flac"), np.zeros(16000), 16000)
    >>> sf.write(str(root / "short.wav"), np.zeros(100), 16000)
    >>> rows, skipped = scan_audio_folder(root, min_seconds=0.5, progress=False)
    >>> rows
    [{'ID': 'a__x', 'duration': 1.0, 'wav': '$data_root/a/x.flac'}]
    >>> skipped[0]["reason"]
    'shorter than 0.5 s (0.006 s)'
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ManifestError(f"audio folder not found: {folder!r}")
    files = list_audio(folder, extensions)
    if not files:
        raise ManifestError(
            f"no audio files ({', '.join(extensions)}) found under {folder!r}"
        )
    rows, skipped, seen = [], [], set()
    show = progress and sys.stderr.isatty()
    for rel in tqdm(files, desc="Checking audio", unit="file", disable=not show):
        path = os.path.join(folder, rel)
        try:
            info = check_audio(path, min_seconds=min_seconds)
        except AudioError as err:
            skipped.append({"file": path, "reason": str(err)})
            continue
        uid = clip_id(rel, seen)
        duration = round(info.duration, 3)
        rows.append({"ID": uid, "duration": duration, "wav": f"{DATA_ROOT}/{rel}"})
    if skipped_csv is not None:
        write_csv(skipped, skipped_csv, SKIPPED_FIELDS)
    if not rows:
        where = os.fspath(skipped_csv) if skipped_csv is not None else "skipped.csv"
        raise ManifestError(
            f"no usable audio in {folder!r}: all {len(files)} audio files were "
            f"skipped (see {where}; first: {skipped[0]['reason']})"
        )
    return rows, skipped


def split_rows(
    rows: Sequence[dict], valid_fraction: float, seed: int
) -> tuple[list[dict], list[dict]]:
    """Splits rows into train and valid by a seeded shuffle.

    Both parts keep the input order. When ``valid_fraction > 0`` and there are
    at least two rows, valid gets at least one row; train is never emptied.

    Arguments
    ---------
    rows : Sequence[dict]
        Rows to split.
    valid_fraction : float
        Fraction of rows for validation, in ``[0, 1)``.
    seed : int
        Seed of the shuffle.

    Returns
    -------
    train : list[dict]
    valid : list[dict]

    Example
    -------
    >>> train, valid = split_rows([{"ID": str(i)} for i in range(10)], 0.2, seed=1)
    >>> len(train), len(valid)
    (8, 2)
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise ManifestError(f"valid_fraction must be in [0, 1), not {valid_fraction}")
    n_valid = round(len(rows) * valid_fraction)
    if valid_fraction > 0 and len(rows) >= 2:
        n_valid = max(1, n_valid)
    n_valid = min(n_valid, max(0, len(rows) - 1))
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    chosen = set(order[:n_valid])
    train = [r for i, r in enumerate(rows) if i not in chosen]
    valid = [r for i, r in enumerate(rows) if i in chosen]
    return train, valid


def _fingerprint(folder: str, extensions: Sequence[str]) -> list:
    """Cheap summary (count, bytes, newest mtime) of the audio in a folder."""
    files = list_audio(folder, extensions)
    stats = [os.stat(os.path.join(folder, rel)) for rel in files]
    return [
        len(files),
        sum(s.st_size for s in stats),
        max((s.st_mtime_ns for s in stats), default=0),
    ]


def prepare_folder(
    data_folder: str | os.PathLike,
    save_folder: str | os.PathLike,
    min_seconds: float,
    valid_fraction: float = 0.05,
    valid_csv: str | os.PathLike | None = None,
    seed: int = 1234,
    progress: bool = True,
    verbose: bool = True,
) -> dict:
    """Scans a folder of audio into train/valid manifests for pretraining.

    Writes ``train.csv``, ``valid.csv`` (unless ``valid_csv`` is given) and
    ``skipped.csv`` (``file,reason``; always written) into ``save_folder``, plus
    ``prepare_opts.json``: a later call with the same options on unchanged
    audio (same count, size and newest mtime) skips the work.

    Arguments
    ---------
    data_folder : str | os.PathLike
        Folder of audio, scanned recursively; used as ``$data_root``.
    save_folder : str | os.PathLike
        Where the CSV files are written.
    min_seconds : float
        Files shorter than this are skipped.
    valid_fraction : float
        Fraction of the files held out for validation.
    valid_csv : str | os.PathLike | None
        An existing validation manifest; if given, all scanned files go to
        train and this path is returned as-is.
    seed : int
        Seed of the train/valid split.
    progress : bool
        Show a progress bar (only on a terminal).
    verbose : bool
        Log what was done (a scan, or reuse of up-to-date manifests). False
        for a second call that only needs the paths.

    Returns
    -------
    dict
        ``train_csv``, ``valid_csv``, ``skipped_csv`` and ``data_root``.
        ``valid_csv`` is None when the split leaves no validation clip
        (``valid_fraction=0`` or a single usable file): ``valid.csv`` is then
        written with its header only.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> root = getfixture("tmpdir")
    >>> for i in range(4):
    ...     sf.write(str(root / f"{i}.wav"), np.zeros(16000), 16000)
    >>> out = prepare_folder(root, root / "save", 0.5, 0.25, progress=False)
    >>> from bestrq2_lobes.data.manifest import read_manifest
    >>> len(read_manifest(out["valid_csv"], out["data_root"]))
    1
    """
    data_folder, save_folder = os.fspath(data_folder), os.fspath(save_folder)
    if not os.path.isdir(data_folder):
        raise ManifestError(f"audio folder not found: {data_folder!r}")
    if valid_csv is not None and not os.path.isfile(valid_csv):
        raise ManifestError(f"valid_csv not found: {os.fspath(valid_csv)!r}")
    out = {
        "train_csv": os.path.join(save_folder, "train.csv"),
        "valid_csv": os.path.join(save_folder, "valid.csv"),
        "skipped_csv": os.path.join(save_folder, "skipped.csv"),
        "data_root": data_folder,
    }
    if valid_csv is not None:
        out["valid_csv"] = valid_csv
    opts = {
        "data_folder": os.path.abspath(data_folder),
        "min_seconds": min_seconds,
        "valid_fraction": valid_fraction,
        "valid_csv": None if valid_csv is None else os.path.abspath(valid_csv),
        "seed": seed,
        "extensions": list(AUDIO_EXTENSIONS),
        "audio": _fingerprint(data_folder, AUDIO_EXTENSIONS),
    }
    opts_file = os.path.join(save_folder, "prepare_opts.json")
    written = [out["train_csv"], out["skipped_csv"]]
    if valid_csv is None:
        written.append(out["valid_csv"])
    if all(os.path.isfile(p) for p in written + [opts_file]):
        with open(opts_file, encoding="utf-8") as f:
            if json.load(f) == json.loads(json.dumps(opts)):
                if verbose:
                    logger.info(
                        "Manifests in %s are up to date (%s is unchanged "
                        "since its scan): reusing them.",
                        save_folder,
                        data_folder,
                    )
                return _drop_empty_valid(out, valid_csv)
    os.makedirs(save_folder, exist_ok=True)
    if os.path.exists(opts_file):
        os.remove(opts_file)
    rows, skipped = scan_audio_folder(
        data_folder, min_seconds, progress=progress, skipped_csv=out["skipped_csv"]
    )
    fields = ("ID", "duration", "wav")
    if valid_csv is None:
        train, valid = split_rows(rows, valid_fraction, seed)
        write_csv(valid, out["valid_csv"], fields)
    else:
        train = rows
    write_csv(train, out["train_csv"], fields)
    with open(opts_file, "w", encoding="utf-8") as f:
        json.dump(opts, f, indent=1)
    if verbose:
        logger.info(_scan_summary(rows, skipped, out["skipped_csv"]))
    return _drop_empty_valid(out, valid_csv)


def _scan_summary(rows: list[dict], skipped: list[dict], skipped_csv: str) -> str:
    """One line on a scan: files, usable hours, and the skipped ones (if any).

    Example
    -------
    >>> rows = [{"duration": 1800.0}, {"duration": 1800.0}]
    >>> _scan_summary(rows, [], "s.csv")
    'scanned 2 files: all usable (1.00 h)'
    >>> _scan_summary(rows, [{}], "s.csv")
    'scanned 3 files: 2 usable (1.00 h), 1 skipped -> see s.csv'
    """
    hours = sum(r["duration"] for r in rows) / 3600
    total = len(rows) + len(skipped)
    if not skipped:
        return f"scanned {total} files: all usable ({hours:.2f} h)"
    return (
        f"scanned {total} files: {len(rows)} usable ({hours:.2f} h), "
        f"{len(skipped)} skipped -> see {skipped_csv}"
    )


def _drop_empty_valid(out: dict, valid_csv: str | os.PathLike | None) -> dict:
    """Sets ``valid_csv`` to None when the split wrote no validation row."""
    if valid_csv is None:
        with open(out["valid_csv"], newline="", encoding="utf-8") as f:
            if next(csv.DictReader(f), None) is None:
                return {**out, "valid_csv": None}
    return out
