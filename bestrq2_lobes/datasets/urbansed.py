"""URBAN-SED: 10,000 synthetic urban soundscapes of 10 s with strong labels.

Layout of the official archive (Salamon et al., "Scaper: A library for
soundscape synthesis and augmentation", WASPAA 2017;
<https://zenodo.org/records/1324404>; ``URBAN-SED_v2.0.0/`` as it unpacks)::

    URBAN-SED_v2.0.0/                        <- data_folder
        audio/{train,validate,test}/soundscape_<split>_<distribution><n>.wav
        annotations/{train,validate,test}/<the same stem>.txt
                                             headerless, tab-separated:
                                             onset offset label (one event a line)
        annotations/.../<the same stem>.jams (the Scaper record, not read)

The official split: ``train`` (6,000), ``validate`` (2,000) and ``test``
(2,000) become ``train.csv``, ``valid.csv`` and ``test.csv``
(``ID,duration,wav,labels``), each with its ``<split>_events.tsv`` of strong
labels, which the SED recipe reads.

Example
-------
>>> parse_annotation_line("0.5\\t3.25\\tdog_bark")
('0.5', '3.25', 'dog_bark')
>>> len(URBANSED_CLASSES)
10

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from bestrq2_lobes.datasets.preparation import (
    Clip,
    PrepareError,
    corpus_preparer,
    missing,
    prepare,
    refused,
    require,
)
from bestrq2_lobes.datasets.sed_events import EventError, events_writer, parse_event

URBANSED_CLASSES = (
    "air_conditioner car_horn children_playing dog_bark drilling engine_idling "
    "gun_shot jackhammer siren street_music"
).split()
#: the archive's split folders -> the recipes' split names
SPLITS = {"train": "train", "validate": "valid", "test": "test"}


def parse_annotation_line(line: str) -> tuple[str, str, str]:
    """``(onset, offset, label)`` of an annotation line (tabs or spaces).

    Raises
    ------
    EventError
        Not three fields.
    """
    fields = line.split()
    if len(fields) != 3:
        raise EventError(
            f"refused: not 'onset offset label' ({len(fields)} fields): "
            f"{line.strip()!r}"
        )
    return fields[0], fields[1], fields[2]


def read_annotation(path: str) -> list[tuple]:
    """The checked events of one annotation ``.txt`` file.

    Raises
    ------
    EventError
        A bad line (the message names it).
    """
    events = []
    with open(path, encoding="utf-8") as fin:
        for number, line in enumerate(fin, start=1):
            if not line.strip():
                continue
            try:
                events.append(
                    parse_event(*parse_annotation_line(line), URBANSED_CLASSES)
                )
            except EventError as err:
                raise EventError(f"{err} ({os.path.basename(path)}:{number})") from None
    return events


def read_splits(
    data_folder: str, splits: Sequence[str], events: dict
) -> tuple[list[Clip], list[dict]]:
    """The clips of the chosen split folders; fills ``events`` (ID -> events)."""
    clips, skipped = [], []
    for split in splits:
        notes = os.path.join(data_folder, "annotations", split)
        audio = os.path.join(data_folder, "audio", split)
        stems = sorted(n[:-4] for n in os.listdir(notes) if n.endswith(".txt"))
        wavs = (
            {n[:-4] for n in os.listdir(audio) if n.endswith(".wav")}
            if os.path.isdir(audio)
            else set()
        )
        for stem in sorted(wavs - set(stems)):
            skipped.append(
                refused(
                    os.path.join(audio, stem + ".wav"),
                    f"refused: no annotations/{split}/{stem}.txt",
                )
            )
        for stem in stems:
            path = os.path.join(audio, stem + ".wav")
            try:
                clip_events = read_annotation(os.path.join(notes, stem + ".txt"))
            except EventError as err:
                skipped.append(refused(path, str(err)))
                continue
            if stem not in wavs:
                skipped.append(missing(path, f"annotations/{split}/{stem}.txt"))
                continue
            events[stem] = clip_events
            labels = " ".join(sorted({e[2] for e in clip_events}))
            clips.append(Clip(stem, path, SPLITS[split], {"labels": labels}))
    return clips, skipped


@corpus_preparer
def prepare_urbansed(
    data_folder: str,
    save_folder: str,
    splits: Sequence[str] = ("train", "validate", "test"),
    min_seconds: float = 1.0,
    check: str = "decode",
    jobs: int | None = None,
    progress: bool = True,
    skip_prep: bool = False,
) -> dict:
    """Prepares URBAN-SED (official layout): CSVs and strong-label TSVs per split.

    Arguments
    ---------
    data_folder : str
        The root, ``URBAN-SED_v2.0.0/`` (holds ``audio/`` and ``annotations/``).
    save_folder : str
        Where ``train.csv``, ``train_events.tsv``, ... and ``skipped.csv`` go.
    splits : Sequence[str]
        The archive's split folders to read (``train``, ``validate``, ``test``).
    min_seconds : float
        Shorter clips are skipped.
    check : str
        ``decode`` (every clip decoded), ``header`` or ``none``.
    jobs : int | None
        Worker processes for the checks (None: the CPUs available).
    progress : bool
        Show a progress bar.
    skip_prep : bool
        Prepare nothing; return the earlier outputs.

    Returns
    -------
    dict
        ``<split>_csv`` and ``<split>_events_tsv`` per split, ``skipped_csv``,
        ``data_root`` and counts.

    Example
    -------
    >>> prepare_urbansed(str(getfixture("tmpdir")), "unused")
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.preparation.PrepareError: ... expected annotations/train ...
    """
    chosen = list(splits)
    if not skip_prep:
        for split in chosen:
            if split not in SPLITS:
                raise PrepareError(
                    f"URBAN-SED: unknown split {split!r} (train, validate, test)"
                )
        if not chosen:
            raise PrepareError("URBAN-SED: no split chosen")
        require(
            data_folder,
            "URBAN-SED",
            *[f"annotations/{s}" for s in chosen],
            hint="the folder URBAN-SED_v2.0.0/ of the official archive",
        )
    events: dict = {}
    watched = [f"{kind}/{s}" for s in chosen for kind in ("annotations", "audio")]
    return prepare(
        "urbansed",
        data_folder,
        save_folder,
        {"splits": chosen},
        watched,
        lambda: read_splits(data_folder, chosen, events),
        fields=("labels",),
        skip_prep=skip_prep,
        min_seconds=min_seconds,
        check=check,
        jobs=jobs,
        progress=progress,
        extra_outputs=events_writer(save_folder, events),
    )
