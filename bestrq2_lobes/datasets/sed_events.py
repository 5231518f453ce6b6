"""Strong labels of the SED corpora (DESED, URBAN-SED): parsing and TSV output.

The SED recipe reads each split's CSV with a DCASE strong-label TSV beside it,
``<csv stem>_events.tsv`` (tab-separated ``filename onset offset event_label``,
``filename`` the clip's file name). :func:`events_writer` gives the
``extra_outputs`` hook of :func:`bestrq2_lobes.datasets.preparation.prepare`
that writes those files for the clips kept.

Example
-------
>>> parse_event("0.5", "2.0", "Dog", ("Dog", "Cat"))
(0.5, 2.0, 'Dog')

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Sequence

EVENT_COLUMNS = ("filename", "onset", "offset", "event_label")


class EventError(ValueError):
    """A strong-label row that cannot be read; the message starts ``label``
    (a class outside the vocabulary) or ``refused:`` (bad times)."""


def parse_event(
    onset: str, offset: str, label: str, classes: Sequence[str]
) -> tuple[float, float, str]:
    """One checked event ``(onset, offset, label)`` from its text fields.

    Raises
    ------
    EventError
        Times that are not numbers, a negative onset, an offset not after the
        onset, or a label outside ``classes``.

    Example
    -------
    >>> parse_event("2", "1", "Dog", ["Dog"])
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.sed_events.EventError: refused: offset 1.0 is not ...
    """
    label = label.strip()
    if label not in classes:
        raise EventError(f"label {label!r} is not one of the {len(classes)} classes")
    try:
        start, end = float(onset), float(offset)
    except ValueError:
        raise EventError(
            f"refused: onset/offset not numbers: {onset!r}, {offset!r}"
        ) from None
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0:
        raise EventError(f"refused: bad times {onset!r}, {offset!r}")
    if end <= start:
        raise EventError(f"refused: offset {end} is not after onset {start}")
    return start, end, label


def write_events(path: str, rows: Sequence[dict], events: dict) -> None:
    """Writes a DCASE strong-label TSV of ``rows`` (kept clips) and their events."""
    with open(path, "w", newline="", encoding="utf-8") as fout:
        writer = csv.writer(fout, delimiter="\t", lineterminator="\n")
        writer.writerow(EVENT_COLUMNS)
        for row in rows:
            name = os.path.basename(row["wav"])
            for onset, offset, label in sorted(events.get(row["ID"], [])):
                writer.writerow([name, f"{onset:.3f}", f"{offset:.3f}", label])


def events_writer(
    save_folder: str, events: dict
) -> Callable[[dict[str, list[dict]]], dict]:
    """The ``extra_outputs`` hook: ``<split>_events.tsv`` beside each CSV.

    Arguments
    ---------
    save_folder : str
        The preparation's output folder.
    events : dict
        ``clip ID -> [(onset, offset, label), ...]`` (filled by the reader).

    Returns
    -------
    callable
        ``{split: kept rows} -> {"<split>_events_tsv": path, ...}``.

    Example
    -------
    >>> tmp = str(getfixture("tmpdir"))
    >>> hook = events_writer(tmp, {"a": [(0.0, 1.5, "Dog")]})
    >>> out = hook({"train": [{"ID": "a", "wav": "/d/a.wav"}]})
    >>> print(open(out["train_events_tsv"]).read().strip())
    filename	onset	offset	event_label
    a.wav	0.000	1.500	Dog
    """

    def hook(kept: dict[str, list[dict]]) -> dict:
        outputs = {}
        for split, rows in kept.items():
            path = os.path.join(save_folder, f"{split}_events.tsv")
            write_events(path, rows, events)
            outputs[f"{split}_events_tsv"] = path
        return outputs

    return hook
