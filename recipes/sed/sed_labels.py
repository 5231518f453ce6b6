"""Strong labels for sound event detection: DCASE TSV files, label set, frame targets.

A label file follows the DCASE / DESED convention: tab-separated, a header line
``filename onset offset event_label`` (more columns are allowed), times in
seconds. A row belongs to the manifest clip whose ``wav`` file has the same base
name without extension (``train_0000.flac``, ``audio/train_0000.wav`` and
``train_0000`` all match ``$data_root/audio/train_0000.flac``); when no ``wav``
matches, the manifest ``ID`` is tried. Clips without rows have no events.

Frame ``k`` of an encoder with hop ``h`` seconds covers ``[k h, (k + 1) h)``. It
is active for an event when they overlap by at least ``min_overlap`` times the
shorter of the two (the frame or the event): with the default 0.5 a frame needs
half of itself covered, and an event shorter than a frame still marks the frame
holding most of it, so no event is lost; ``min_overlap = 0`` marks every frame
with any overlap (> 0).

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from bestrq2_lobes.downstream.labels import (  # noqa: F401 (the recipe's names)
    LabelError,
    keep_label_set,
    load_labels,
)

logger = logging.getLogger(__name__)

TSV_COLUMNS = ("filename", "onset", "offset", "event_label")
OVERLAP_EPS = 1e-9  # seconds; absorbs float error in frame boundaries


@dataclass(frozen=True)
class Event:
    """One sound event: onset and offset in seconds and its class label."""

    onset: float
    offset: float
    label: str


def clip_key(name: str) -> str:
    """Base name without extension of a file name or path.

    Example
    -------
    >>> clip_key("audio/train_0000.flac"), clip_key("train_0000")
    ('train_0000', 'train_0000')
    """
    base = os.path.basename(name.replace("\\", "/"))
    stem, ext = os.path.splitext(base)
    return stem if ext else base


def read_events_tsv(path: str | os.PathLike) -> dict[str, list[Event]]:
    """Reads a DCASE strong-label TSV file.

    Arguments
    ---------
    path : str or PathLike
        Tab-separated file with a ``filename onset offset event_label`` header.

    Returns
    -------
    dict
        Events of each file, keyed by ``clip_key(filename)``, sorted by onset.

    Raises
    ------
    LabelError
        Missing file or column, or a row with a bad time or an empty label; the
        message names the file and line.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "e.tsv").write("filename\\tonset\\toffset\\tevent_label\\n"
    ...                           "a.wav\\t1.0\\t2.5\\tdog\\n")
    >>> read_events_tsv(tmp / "e.tsv")
    {'a': [Event(onset=1.0, offset=2.5, label='dog')]}
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise LabelError(f"label file not found: {path!r}")
    events: dict[str, list[Event]] = {}
    with open(path, newline="", encoding="utf-8") as fin:
        reader = csv.DictReader(fin, delimiter="\t")
        header = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = header
        for col in TSV_COLUMNS:
            if col not in header:
                found = " ".join(header) or "nothing"
                raise LabelError(
                    f"{path}: header line: missing column {col!r} (found: {found}; "
                    f"expected tab-separated {' '.join(TSV_COLUMNS)})"
                )
        for line, row in enumerate(reader, start=2):
            event = _parse_row(path, line, row)
            key = clip_key(row["filename"].strip())
            events.setdefault(key, []).append(event)
    for clip_events in events.values():
        clip_events.sort(key=lambda e: (e.onset, e.offset, e.label))
    return events


def _parse_row(path: str, line: int, row: dict) -> Event:
    """One checked event of a TSV row."""
    if None in row:
        raise LabelError(f"{path}: line {line}: more fields than the header")
    if not (row["filename"] or "").strip():
        raise LabelError(f"{path}: line {line}, column 'filename': empty value")
    times = []
    for col in ("onset", "offset"):
        value = (row[col] or "").strip()
        try:
            times.append(float(value))
        except ValueError:
            raise LabelError(
                f"{path}: line {line}, column {col!r}: not a number: {value!r} "
                "(strong labels need onset and offset)"
            ) from None
    onset, offset = times
    if not (math.isfinite(onset) and math.isfinite(offset)) or onset < 0:
        raise LabelError(f"{path}: line {line}: bad times {onset}, {offset}")
    if offset <= onset:
        raise LabelError(
            f"{path}: line {line}: offset {offset} is not after onset {onset}"
        )
    label = (row["event_label"] or "").strip()
    if not label:
        raise LabelError(f"{path}: line {line}, column 'event_label': empty value")
    return Event(onset, offset, label)


def match_events(
    rows: Sequence[dict], events: dict[str, list[Event]], tsv_path: str
) -> dict[str, list[Event]]:
    """Events of each manifest clip, keyed by manifest ``ID``.

    Arguments
    ---------
    rows : sequence of dict
        Manifest rows with ``ID`` and ``wav``.
    events : dict
        Output of ``read_events_tsv``.
    tsv_path : str
        The label file (for messages).

    Returns
    -------
    dict
        ``ID -> list of Event`` for every row (empty when it has no events).

    Example
    -------
    >>> rows = [{"ID": "x", "wav": "/d/a.flac"}, {"ID": "b", "wav": "/d/c.flac"}]
    >>> ev = {"a": [Event(0.0, 1.0, "dog")], "b": [Event(2.0, 3.0, "cat")]}
    >>> match_events(rows, ev, "e.tsv")["b"]
    [Event(onset=2.0, offset=3.0, label='cat')]
    """
    by_wav: dict[str, str] = {}
    for row in rows:
        key = clip_key(row["wav"])
        if key in by_wav:
            raise LabelError(
                f"{tsv_path}: manifest clips {by_wav[key]!r} and {row['ID']!r} share "
                f"the file name {key!r}; labels are matched on it, rename one"
            )
        by_wav[key] = row["ID"]
    matched: dict[str, list[Event]] = {row["ID"]: [] for row in rows}
    used = set()
    for row in rows:
        for key in (clip_key(row["wav"]), row["ID"]):
            if key in events:
                matched[row["ID"]] = list(events[key])
                used.add(key)
                break
    unused = sorted(set(events) - used)
    if events and not used:
        raise LabelError(
            f"{tsv_path}: no file name matches a clip of the manifest (e.g. "
            f"{unused[0]!r}); rows are matched on the wav base name or the ID"
        )
    if unused:
        logger.warning(
            "%s: %d labelled files are not in the manifest and are ignored (e.g. %s)",
            tsv_path,
            len(unused),
            unused[0],
        )
    return matched


def label_set(events: Iterable[Iterable[Event]]) -> list[str]:
    """Sorted labels of some event lists.

    Example
    -------
    >>> label_set([[Event(0, 1, "b"), Event(1, 2, "a")], [Event(0, 1, "b")]])
    ['a', 'b']
    """
    return sorted({e.label for clip in events for e in clip})


def prepare_labels(path: str | os.PathLike, train_tsv: str) -> list[str]:
    """The label set: read from ``path`` if saved, else from the train TSV.

    Arguments
    ---------
    path : str or PathLike
        Where the label set is saved (kept across reruns).
    train_tsv : str
        The training label file.

    Returns
    -------
    list of str
        The sorted labels (the order of the model's outputs).

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "e.tsv").write("filename\\tonset\\toffset\\tevent_label\\n"
    ...                           "a.wav\\t1\\t2\\tdog\\na.wav\\t0\\t1\\tcat\\n")
    >>> prepare_labels(tmp / "labels.json", str(tmp / "e.tsv"))
    ['cat', 'dog']
    """
    found = label_set(read_events_tsv(train_tsv).values())
    if not found:
        raise LabelError(f"{train_tsv}: no events, so no label set")
    return keep_label_set(path, found, train_tsv)


def check_labels(events: dict[str, list[Event]], labels: Sequence[str], tsv: str):
    """Fails, naming it, on a label outside the training label set."""
    known = set(labels)
    for clip, clip_events in events.items():
        for event in clip_events:
            if event.label not in known:
                raise LabelError(
                    f"{tsv}: clip {clip!r}: label {event.label!r} is not in the "
                    f"training label set {list(labels)}"
                )


def frame_targets(
    events: Sequence[Event],
    labels: Sequence[str],
    num_frames: int,
    hop_s: float,
    min_overlap: float = 0.5,
) -> np.ndarray:
    """Per-frame binary targets of a clip.

    Arguments
    ---------
    events : sequence of Event
        The clip's events.
    labels : sequence of str
        The label set (column order).
    num_frames : int
        Frames of the clip; frame ``k`` covers ``[k hop, (k + 1) hop)``.
    hop_s : float
        Frame hop in seconds.
    min_overlap : float
        A frame is active for an event when their overlap is at least this
        fraction of the shorter of the two; 0 means any overlap (> 0).

    Returns
    -------
    np.ndarray
        (num_frames, len(labels)) float32 of 0 and 1.

    Example
    -------
    >>> ev = [Event(0.4, 1.0, "dog"), Event(2.0, 2.2, "cat")]
    >>> frame_targets(ev, ["cat", "dog"], 4, 0.625).T.tolist()
    [[0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]]
    >>> frame_targets(ev, ["cat", "dog"], 4, 0.625, min_overlap=0).T.tolist()
    [[0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]]
    """
    if not 0.0 <= min_overlap <= 1.0:
        raise ValueError(f"min_overlap must be in [0, 1], not {min_overlap}")
    index = {label: i for i, label in enumerate(labels)}
    targets = np.zeros((num_frames, len(labels)), dtype=np.float32)
    starts = np.arange(num_frames) * hop_s
    ends = starts + hop_s
    for event in events:
        overlap = np.minimum(ends, event.offset) - np.maximum(starts, event.onset)
        need = min_overlap * min(hop_s, event.offset - event.onset)
        active = (overlap > OVERLAP_EPS) & (overlap >= need - OVERLAP_EPS)
        targets[active, index[event.label]] = 1.0
    return targets
