"""Audio manifests in the SpeechBrain CSV convention.

A manifest has an ``ID,duration,wav`` header (more columns are allowed) and
``wav`` entries may start with ``$data_root/``, filled in when loading. This
module reads and writes manifests and validates them with one-line errors that
name the file, row, ID and column; ``folder_scan`` makes them from a folder of
audio and checks their clips.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Iterable, Sequence

from bestrq2_lobes.data.files import atomic_open

__all__ = [
    "AUDIO_EXTENSIONS",
    "ManifestError",
    "write_csv",
    "read_manifest",
]

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
DATA_ROOT = "$data_root"
SKIPPED_FIELDS = ("file", "reason")


class ManifestError(ValueError):
    """A manifest or data folder is unusable; the message is one line.

    Example
    -------
    >>> str(ManifestError("train.csv: row 3 (ID 'a'), column 'wav': empty"))
    "train.csv: row 3 (ID 'a'), column 'wav': empty"
    """


def write_csv(
    rows: Iterable[dict], path: str | os.PathLike, fieldnames: Sequence[str]
) -> None:
    """Writes rows to a CSV file atomically (temporary file, then rename).

    Arguments
    ---------
    rows : Iterable[dict]
        Rows; every key must be in ``fieldnames``.
    path : str | os.PathLike
        Output CSV file; parent folders are created.
    fieldnames : Sequence[str]
        Column order of the header.

    Example
    -------
    >>> path = str(getfixture("tmpdir") / "m.csv")
    >>> write_csv([{"ID": "a", "duration": 1.5, "wav": "a.wav"}], path,
    ...           ["ID", "duration", "wav"])
    >>> print(open(path).read().strip())
    ID,duration,wav
    a,1.5,a.wav
    """
    with atomic_open(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fieldnames))
        writer.writeheader()
        writer.writerows(rows)


def read_manifest(
    path: str | os.PathLike,
    data_root: str | None = None,
    required: Sequence[str] = ("ID", "duration", "wav"),
    check_files: bool = True,
) -> list[dict]:
    """Reads and validates a manifest, substituting ``$data_root``.

    Arguments
    ---------
    path : str | os.PathLike
        CSV manifest.
    data_root : str | None
        Replacement for ``$data_root`` in every column.
    required : Sequence[str]
        Columns that must be present and non-empty.
    check_files : bool
        Check that every ``wav`` file exists.

    Returns
    -------
    list[dict]
        The rows, ``duration`` converted to float.

    Raises
    ------
    ManifestError
        Missing file or column, duplicate or empty ID, bad duration (not a
        number, negative, not finite), empty field, ``$data_root`` without a
        ``data_root``, or a missing audio file; the message names the CSV file,
        the 1-based data row, the ID and the column.

    Example
    -------
    >>> path = str(getfixture("tmpdir") / "m.csv")
    >>> write_csv([{"ID": "a", "duration": "x", "wav": "$data_root/a.wav"}], path,
    ...           ["ID", "duration", "wav"])
    >>> read_manifest(path, data_root="/data", check_files=False)
    Traceback (most recent call last):
    ...
    bestrq2_lobes.data.manifest.ManifestError: ...m.csv: row 1 (ID 'a'), column 'duration': not a number: 'x'
    """  # noqa: E501
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ManifestError(f"manifest not found: {path!r}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        header = reader.fieldnames or []
        for col in required:
            if col not in header:
                found = ",".join(header) or "nothing"
                raise ManifestError(
                    f"{path}: header row: missing required column {col!r} "
                    f"(found: {found})"
                )
        rows, first_row = [], {}
        for num, row in enumerate(reader, start=1):
            raw_wav = row.get("wav") or ""
            row = _check_row(path, num, row, header, required, data_root)
            uid = row.get("ID")
            if uid is not None and uid in first_row:
                reason = f"duplicate ID (first in row {first_row[uid]})"
                raise _row_error(path, num, row, "ID", reason)
            first_row[uid] = num
            if check_files and row.get("wav") and not os.path.isfile(row["wav"]):
                hint = " (is --data_root right?)" if DATA_ROOT in raw_wav else ""
                reason = f"audio file not found: {row['wav']}{hint}"
                raise _row_error(path, num, row, "wav", reason)
            rows.append(row)
    if not rows:
        raise ManifestError(f"{path}: no data rows")
    return rows


def _row_error(path: str, num: int, row: dict, col: str, reason: str) -> ManifestError:
    """Builds the one-line error for a data row."""
    uid = row.get("ID")
    who = f" (ID {uid!r})" if uid else ""
    return ManifestError(f"{path}: row {num}{who}, column {col!r}: {reason}")


def _check_row(
    path: str,
    num: int,
    row: dict,
    header: Sequence[str],
    required: Sequence[str],
    data_root: str | None,
) -> dict:
    """Validates one data row; converts duration and substitutes $data_root."""
    if None in row:
        raise _row_error(path, num, row, header[-1], "more fields than the header")
    for col in required:
        if not row[col]:
            raise _row_error(path, num, row, col, "empty value")
    if row.get("duration"):
        try:
            duration = float(row["duration"])
        except ValueError:
            reason = f"not a number: {row['duration']!r}"
            raise _row_error(path, num, row, "duration", reason) from None
        if not math.isfinite(duration) or duration < 0:
            reason = f"must be finite and >= 0, not {row['duration']!r}"
            raise _row_error(path, num, row, "duration", reason)
        row["duration"] = duration
    for col, value in row.items():
        if isinstance(value, str) and DATA_ROOT in value:
            if data_root is None:
                reason = f"uses {DATA_ROOT} but no data_root was given"
                raise _row_error(path, num, row, col, reason)
            row[col] = value.replace(DATA_ROOT, os.fspath(data_root).rstrip("/"))
    return row
