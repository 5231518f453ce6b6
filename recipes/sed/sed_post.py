"""Post-processing for sound event detection: median filter, thresholds, events.

Frame probabilities (frames, classes) are median-filtered along time (per class,
odd length in frames, edges repeated), compared with per-class thresholds
(``>=``), and each run of active frames becomes one event whose onset and
offset are the run's frame boundaries (``k * hop``), the offset cut at the clip's
duration. Detections are written as a DCASE TSV (``filename onset offset
event_label``).

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence

import numpy as np
from sed_labels import TSV_COLUMNS, Event

from bestrq2_lobes.data.files import atomic_open


def median_filter(probs: np.ndarray, length: int) -> np.ndarray:
    """Median over ``length`` frames centred on each frame, edges repeated.

    Arguments
    ---------
    probs : np.ndarray
        (frames, classes) scores.
    length : int
        Odd window length in frames; 1 leaves the scores unchanged.

    Returns
    -------
    np.ndarray
        Filtered scores of the same shape.

    Example
    -------
    >>> median_filter(np.array([[0.0], [1.0], [0.0], [1.0], [1.0]]), 3)[:, 0]
    array([0., 0., 1., 1., 1.])
    """
    if length < 1 or length % 2 == 0:
        raise ValueError(f"median filter length must be odd and >= 1, not {length}")
    if length == 1 or len(probs) == 0:
        return probs
    half = length // 2
    padded = np.pad(probs, ((half, half), (0, 0)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, length, axis=0)
    return np.median(windows, axis=-1).astype(probs.dtype)


def class_thresholds(
    labels: Sequence[str], threshold: float, overrides: Mapping[str, float] | None
) -> np.ndarray:
    """Threshold of each class: ``threshold`` unless ``overrides`` names it.

    Example
    -------
    >>> class_thresholds(["cat", "dog"], 0.5, {"dog": 0.3}).tolist()
    [0.5, 0.3]
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(labels))
    if unknown:
        raise ValueError(
            f"class_thresholds: unknown labels {unknown} (known: {labels})"
        )
    return np.array([float(overrides.get(x, threshold)) for x in labels])


def frames_to_events(
    active: np.ndarray, labels: Sequence[str], hop_s: float, duration: float
) -> list[Event]:
    """Turns binary frame decisions into events (one per run of active frames).

    Arguments
    ---------
    active : np.ndarray
        (frames, classes) booleans.
    labels : sequence of str
        Label of each column.
    hop_s : float
        Frame hop in seconds.
    duration : float
        Clip duration in seconds (offsets are cut there).

    Returns
    -------
    list of Event
        Sorted by onset, then label.

    Example
    -------
    >>> active = np.array([[1, 0], [1, 0], [0, 1], [1, 1]], dtype=bool)
    >>> frames_to_events(active, ["a", "b"], 0.5, 1.8)
    [Event(onset=0.0, offset=1.0, label='a'), Event(onset=1.0, offset=1.8, label='b'), Event(onset=1.5, offset=1.8, label='a')]
    """  # noqa: E501
    events = []
    padded = np.pad(active.astype(np.int8), ((1, 1), (0, 0)))
    change = np.diff(padded, axis=0)
    for col, label in enumerate(labels):
        starts = np.flatnonzero(change[:, col] == 1)
        ends = np.flatnonzero(change[:, col] == -1)
        for start, end in zip(starts, ends, strict=True):
            onset = round(float(start * hop_s), 6)
            offset = round(min(float(end * hop_s), duration), 6)
            if offset > onset:
                events.append(Event(onset, offset, label))
    return sorted(events, key=lambda e: (e.onset, e.label, e.offset))


def decode(
    probs: np.ndarray,
    labels: Sequence[str],
    thresholds: np.ndarray,
    hop_s: float,
    duration: float,
) -> list[Event]:
    """Events of (already median-filtered) frame probabilities of one clip."""
    return frames_to_events(probs >= thresholds[None, :], labels, hop_s, duration)


def write_events_tsv(
    path: str | os.PathLike, events: Mapping[str, Sequence[Event]]
) -> None:
    """Writes ``filename -> events`` as a DCASE TSV file, atomically.

    Example
    -------
    >>> path = getfixture("tmpdir") / "d.tsv"
    >>> write_events_tsv(path, {"a.wav": [Event(0.0, 1.25, "dog")], "b.wav": []})
    >>> print(path.read().strip())
    filename	onset	offset	event_label
    a.wav	0.000	1.250	dog
    """
    with atomic_open(path, newline="") as fout:
        writer = csv.writer(fout, delimiter="\t", lineterminator="\n")
        writer.writerow(TSV_COLUMNS)
        for filename in sorted(events):
            for e in events[filename]:
                writer.writerow(
                    [filename, f"{e.onset:.3f}", f"{e.offset:.3f}", e.label]
                )
