"""Tar shards of decoded audio: the format, the index, and naming a shard set.

A shard is a plain tar file with one member per clip, named ``<ID>.pcm`` (raw
little-endian int16 mono samples at the index's sampling rate) or
``<ID>.flac`` (the same samples, FLAC-compressed). The clips were decoded,
downmixed and resampled once, when the shards were written
(:mod:`bestrq2_lobes.data.shard_writer`, ``python -m bestrq2_lobes.shards
write``), so a loader only reads, crops and converts to float. Beside the
shards, ``index.json`` lists each shard with its clip count and duration.

A shard set is named by a brace pattern (``dir/shard-{000000..000099}.tar``),
a folder of shards, or its ``index.json``; :func:`resolve_shards` turns any of
them into the list of shards with their clip counts.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from bestrq2_lobes.data.manifest import ManifestError

__all__ = [
    "INDEX_FILE",
    "SHARD_FORMATS",
    "ShardError",
    "ShardInfo",
    "expand_braces",
    "resolve_shards",
    "check_shard_set",
    "list_members",
    "decode_clip",
    "encode_clip",
]

INDEX_FILE = "index.json"
SHARD_FORMATS = ("pcm", "flac")
_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_LIST = re.compile(r"\{([^{}]*,[^{}]*)\}")


class ShardError(ManifestError):
    """A shard set is unusable (missing, empty, corrupt); the message is one line.

    Example
    -------
    >>> str(ShardError("shard-000001.tar: not a tar file"))
    'shard-000001.tar: not a tar file'
    """


@dataclass
class ShardInfo:
    """One shard of a set.

    Arguments
    ---------
    path : str
        The tar file.
    clips : int
        Clips it holds.
    seconds : float
        Their total duration.
    min_seconds : float
        The duration of its shortest clip.

    Example
    -------
    >>> ShardInfo("s.tar", 2, 20.0, 10.0).clips
    2
    """

    path: str
    clips: int
    seconds: float = 0.0
    min_seconds: float = 0.0


def expand_braces(pattern: str) -> list[str]:
    """Expands ``{a..b}`` numeric ranges (zero padding kept) and ``{x,y}`` lists.

    Example
    -------
    >>> expand_braces("s-{000..002}.tar")
    ['s-000.tar', 's-001.tar', 's-002.tar']
    >>> expand_braces("{train,valid}/s-{0..1}.tar")
    ['train/s-0.tar', 'train/s-1.tar', 'valid/s-0.tar', 'valid/s-1.tar']
    """
    found = [m for m in (_RANGE.search(pattern), _LIST.search(pattern)) if m]
    if not found:
        return [pattern]
    match = min(found, key=lambda m: m.start())  # the leftmost, as a shell does
    head, tail = pattern[: match.start()], pattern[match.end() :]
    if match.re is _RANGE:
        first, last = match.group(1), match.group(2)
        width = len(first) if first.startswith("0") else 0
        choices = [f"{n:0{width}d}" for n in range(int(first), int(last) + 1)]
    else:
        choices = match.group(1).split(",")
    return [name for c in choices for name in expand_braces(head + c + tail)]


def _read_index(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fin:
            index = json.load(fin)
        index["shards"]  # noqa: B018 (a KeyError is a bad index)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ShardError(f"{path}: not a shard index ({err})") from None
    return index


def resolve_shards(spec: str) -> tuple[list[ShardInfo], dict]:
    """The shards a spec names, with their clip counts, and the set's index.

    Arguments
    ---------
    spec : str
        A brace pattern of tar files, a folder holding ``index.json``, or an
        ``index.json`` file. A pattern's clip counts come from the
        ``index.json`` beside the shards, or else from their tar headers.

    Returns
    -------
    shards : list[ShardInfo]
        In the spec's order.
    index : dict
        ``sample_rate`` and ``format`` of the set (from its index, else
        ``format`` from the member names and no ``sample_rate``).

    Raises
    ------
    ShardError
        Nothing matches, a listed shard is missing, or the index is unreadable.

    Example
    -------
    >>> resolve_shards("/nowhere/s-{0..3}.tar")
    Traceback (most recent call last):
    ...
    bestrq2_lobes.data.shards.ShardError: /nowhere/s-{0..3}.tar: none of the 4 shards exists (first: /nowhere/s-0.tar)
    """  # noqa: E501
    spec = os.fspath(spec)
    if os.path.isdir(spec):
        spec = os.path.join(spec, INDEX_FILE)
        if not os.path.isfile(spec):
            raise ShardError(f"{os.path.dirname(spec)}: no {INDEX_FILE} in the folder")
    if spec.endswith(".json"):
        if not os.path.isfile(spec):
            raise ShardError(f"shard index not found: {spec}")
        index = _read_index(spec)
        folder = os.path.dirname(os.path.abspath(spec))
        shards = [
            ShardInfo(
                os.path.join(folder, s["name"]),
                int(s["clips"]),
                float(s["seconds"]),
                float(s.get("min_seconds", 0.0)),
            )
            for s in index["shards"]
            if int(s["clips"]) > 0
        ]
        missing = [s.path for s in shards if not os.path.isfile(s.path)]
        if missing:
            raise ShardError(
                f"{spec}: {len(missing)} of its {len(shards)} shards are missing "
                f"(first: {missing[0]})"
            )
        if not shards:
            raise ShardError(f"{spec}: the index lists no clip")
        return shards, index
    paths = expand_braces(spec)
    found = [p for p in paths if os.path.isfile(p)]
    if not found:
        raise ShardError(
            f"{spec}: none of the {len(paths)} shards exists (first: {paths[0]})"
        )
    if len(found) < len(paths):
        missing = next(p for p in paths if not os.path.isfile(p))
        raise ShardError(
            f"{spec}: {len(paths) - len(found)} of the {len(paths)} shards are "
            f"missing (first: {missing})"
        )
    known = {}
    index = {}
    beside = os.path.join(os.path.dirname(os.path.abspath(found[0])), INDEX_FILE)
    if os.path.isfile(beside):
        index = _read_index(beside)
        known = {s["name"]: s for s in index["shards"]}
    shards = []
    for path in found:
        entry = known.get(os.path.basename(path))
        if entry is None:
            members = list(list_members(path))
            shards.append(ShardInfo(path, len(members)))
            index.setdefault("format", _member_format(path, members))
        else:
            shards.append(
                ShardInfo(
                    path,
                    int(entry["clips"]),
                    float(entry["seconds"]),
                    float(entry.get("min_seconds", 0.0)),
                )
            )
    return shards, index


def check_shard_set(
    spec: str,
    shards: list[ShardInfo],
    index: dict,
    sample_rate: int,
    min_seconds: float,
) -> None:
    """Checks that a set suits a model: its sampling rate, no clip under a patch.

    Raises
    ------
    ShardError
        The index's sampling rate is not ``sample_rate``, or a shard holds a
        clip shorter than ``min_seconds`` (the model's one patch).

    Example
    -------
    >>> shards = [ShardInfo("s.tar", 2, 1.5, 0.5)]
    >>> check_shard_set("s.tar", shards, {"sample_rate": 16000}, 16000, 0.625)
    Traceback (most recent call last):
    ...
    bestrq2_lobes.data.shards.ShardError: s.tar: 1 shards hold clips shorter than 0.625 s (one patch), e.g. s.tar: write them with --min_seconds 0.625
    """  # noqa: E501
    rate = index.get("sample_rate")
    if rate is not None and int(rate) != sample_rate:
        raise ShardError(
            f"{spec}: shards hold {rate} Hz audio, the model reads {sample_rate} Hz "
            "(write them again with --sample_rate)"
        )
    short = [s for s in shards if s.seconds and s.min_seconds < min_seconds]
    if short:
        raise ShardError(
            f"{spec}: {len(short)} shards hold clips shorter than {min_seconds:.3f} s "
            f"(one patch), e.g. {short[0].path}: write them with --min_seconds "
            f"{min_seconds:.3f}"
        )


def _member_format(path: str, members: list) -> str:
    if not members:
        raise ShardError(f"{path}: the shard holds no clip")
    return members[0][0].rsplit(".", 1)[-1]


def list_members(path: str) -> Iterator[tuple[str, int, int]]:
    """``(name, data offset, size)`` of each clip in a shard, from its headers.

    The audio itself is not read: the tar headers give where each clip's bytes
    lie, and a reader seeks to them.

    Raises
    ------
    ShardError
        The file is not a tar file or is cut short.

    Example
    -------
    >>> import numpy as np
    >>> tmp = getfixture("tmpdir")
    >>> with tarfile.open(tmp / "s.tar", "w") as tar:
    ...     add_member(tar, "a.pcm", np.zeros(4, "<i2").tobytes())
    >>> list(list_members(str(tmp / "s.tar")))
    [('a.pcm', 512, 8)]
    """
    try:
        size = os.path.getsize(path)
        with tarfile.open(path, "r:") as tar:
            while True:
                member = tar.next()
                if member is None:
                    return
                if member.isfile():
                    if member.offset_data + member.size > size:
                        raise ShardError(f"{path}: truncated shard ({member.name})")
                    yield member.name, member.offset_data, member.size
    except (tarfile.TarError, OSError) as err:
        raise ShardError(f"{path}: corrupt shard: {err}") from None


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Appends one member with fixed metadata (byte-identical reruns)."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def encode_clip(samples: np.ndarray, fmt: str, sample_rate: int) -> bytes:
    """The bytes of one member: int16 samples as raw PCM or FLAC.

    Example
    -------
    >>> x = np.array([0, 1, -32768, 32767], dtype="<i2")
    >>> bool((decode_clip(encode_clip(x, "flac", 16000), "flac") == x).all())
    True
    """
    samples = np.ascontiguousarray(samples, dtype="<i2")
    if fmt == "pcm":
        return samples.tobytes()
    if fmt == "flac":
        out = io.BytesIO()
        sf.write(out, samples, sample_rate, format="FLAC", subtype="PCM_16")
        return out.getvalue()
    raise ValueError(f"shard format {fmt!r}: expected one of {SHARD_FORMATS}")


def decode_clip(data: bytes, fmt: str) -> np.ndarray:
    """The int16 samples of one member (a view of ``data`` for PCM).

    Example
    -------
    >>> decode_clip(b"\\x01\\x00\\xff\\xff", "pcm").tolist()
    [1, -1]
    """
    if fmt == "pcm":
        return np.frombuffer(data, dtype="<i2")
    if fmt == "flac":
        samples, _ = sf.read(io.BytesIO(data), dtype="int16")
        return samples if samples.ndim == 1 else samples[:, 0]
    raise ValueError(f"shard format {fmt!r}: expected one of {SHARD_FORMATS}")
