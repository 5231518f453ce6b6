"""DESED: domestic sound events with strong labels, 10 classes (DCASE task 4).

Layout of the DESED download (Turpault et al., DCASE 2019 workshop;
<https://github.com/turpaultn/DESED>; the DCASE task 4 baseline,
<https://github.com/DCASE-REPO/DESED_task>, reads the same tree)::

    DESED/dataset/                                    <- data_folder
        audio/train/synthetic21_train/soundscapes/*.wav      synthetic, strong labels
        audio/validation/validation/Y<YTID>_<start>_<end>.wav   real validation
        audio/eval/public/<YTID>_<start>_<end>.wav         public evaluation
        metadata/train/synthetic21_train/soundscapes.tsv
        metadata/validation/validation.tsv
        metadata/eval/public.tsv

Every TSV is tab-separated with a header ``filename onset offset
event_label``, one row per event; in ``validation.tsv`` a file with no event
has one row with empty onset, offset and label. The preparer writes
``train.csv``, ``valid.csv`` and ``test.csv`` (``ID,duration,wav,labels``:
``labels`` the space-separated classes of the clip) and beside each the
strong labels of its kept clips, ``<split>_events.tsv``, which the SED recipe
reads.

Example
-------
>>> len(DESED_CLASSES), DESED_CLASSES[0]
(10, 'Alarm_bell_ringing')
>>> sorted(TRAIN_SETS)
['synthetic20_train', 'synthetic21_train']

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import csv
import os

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

DESED_CLASSES = (
    "Alarm_bell_ringing Blender Cat Dishes Dog Electric_shaver_toothbrush Frying "
    "Running_water Speech Vacuum_cleaner"
).split()
#: set name -> (audio folder, strong-label TSV), relative to the root
TRAIN_SETS = {
    "synthetic21_train": (
        "audio/train/synthetic21_train/soundscapes",
        "metadata/train/synthetic21_train/soundscapes.tsv",
    ),
    "synthetic20_train": (
        "audio/train/synthetic20/soundscapes",
        "metadata/train/synthetic20/soundscapes.tsv",
    ),
}
VALID_SETS = {
    "validation": ("audio/validation/validation", "metadata/validation/validation.tsv"),
    "synthetic21_validation": (
        "audio/validation/synthetic21_validation/soundscapes",
        "metadata/validation/synthetic21_validation/soundscapes.tsv",
    ),
}
TEST_SETS = {"public": ("audio/eval/public", "metadata/eval/public.tsv")}
COLUMNS = ("filename", "onset", "offset", "event_label")


def read_strong_tsv(
    path: str, classes: list[str]
) -> tuple[dict[str, list[tuple]], dict[str, str]]:
    """Events per file of a strong-label TSV, and the files refused with why.

    Arguments
    ---------
    path : str
        A DESED TSV (``filename onset offset event_label``, tab-separated).
    classes : list of str
        The vocabulary.

    Returns
    -------
    (dict, dict)
        ``filename -> [(onset, offset, label), ...]`` (empty: no event) in
        file order, and ``filename -> reason`` of the files with a bad row.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "v.tsv").write("filename\\tonset\\toffset\\tevent_label\\n"
    ...     "a.wav\\t0.5\\t2\\tDog\\nb.wav\\t\\t\\t\\nc.wav\\t0\\t1\\tHorse\\n")
    >>> events, bad = read_strong_tsv(str(tmp / "v.tsv"), DESED_CLASSES)
    >>> events, bad
    ({'a.wav': [(0.5, 2.0, 'Dog')], 'b.wav': []}, {'c.wav': "label 'Horse' ..."})
    """
    events: dict[str, list[tuple]] = {}
    bad: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as fin:
        reader = csv.DictReader(fin, delimiter="\t")
        header = [h.strip() for h in reader.fieldnames or []]
        absent = [c for c in COLUMNS if c not in header]
        if absent:
            raise PrepareError(
                f"{path}: missing column {absent[0]!r} (expected the tab-separated "
                f"header {' '.join(COLUMNS)})"
            )
        reader.fieldnames = header
        for line, row in enumerate(reader, start=2):
            name = (row["filename"] or "").strip()
            if not name:
                raise PrepareError(f"{path}:{line}: empty filename")
            if name in bad:
                continue
            clip_events = events.setdefault(name, [])
            fields = [(row[c] or "").strip() for c in COLUMNS[1:]]
            if not any(fields):
                continue  # a file with no event
            try:
                clip_events.append(parse_event(*fields, classes))
            except EventError as err:
                bad[name] = f"{err} ({os.path.basename(path)}:{line})"
                del events[name]
    return events, bad


def read_sets(
    data_folder: str, chosen: dict[str, tuple[str, str]], events: dict
) -> tuple[list[Clip], list[dict]]:
    """The clips of the chosen sets (split -> (audio, tsv)); fills ``events``."""
    clips, skipped = [], []
    for split, (audio, tsv) in chosen.items():
        file_events, bad = read_strong_tsv(
            os.path.join(data_folder, tsv), DESED_CLASSES
        )
        for name, reason in bad.items():
            skipped.append(refused(os.path.join(data_folder, audio, name), reason))
        for name, clip_events in file_events.items():
            path = os.path.join(data_folder, audio, name)
            if not os.path.isfile(path):
                skipped.append(missing(path, tsv))
                continue
            uid = f"{split}_{os.path.splitext(name)[0]}"
            events[uid] = clip_events
            labels = " ".join(sorted({e[2] for e in clip_events}))
            clips.append(Clip(uid, path, split, {"labels": labels}))
    return clips, skipped


def choose_sets(
    train_set: str | None, valid_set: str | None, test_set: str | None, suffix: str
) -> dict[str, tuple[str, str]]:
    """``split -> (audio folder, TSV)`` of the chosen sets (None: left out).

    Example
    -------
    >>> choose_sets(None, "validation", None, "_16k")
    {'valid': ('audio/validation/validation_16k', 'metadata/validation/validation.tsv')}
    """
    chosen = {}
    for split, name, table in (
        ("train", train_set, TRAIN_SETS),
        ("valid", valid_set, VALID_SETS),
        ("test", test_set, TEST_SETS),
    ):
        if name is None:
            continue
        if name not in table:
            raise PrepareError(
                f"DESED: unknown {split}_set {name!r} (one of {', '.join(table)}, "
                "or null)"
            )
        audio, tsv = table[name]
        chosen[split] = (audio + suffix, tsv)
    if not chosen:
        raise PrepareError("DESED: train_set, valid_set and test_set are all null")
    return chosen


@corpus_preparer
def prepare_desed(
    data_folder: str,
    save_folder: str,
    train_set: str | None = "synthetic21_train",
    valid_set: str | None = "validation",
    test_set: str | None = "public",
    audio_suffix: str = "",
    min_seconds: float = 1.0,
    check: str = "decode",
    jobs: int | None = None,
    progress: bool = True,
    skip_prep: bool = False,
) -> dict:
    """Prepares DESED (official layout): CSVs and strong-label TSVs per split.

    Arguments
    ---------
    data_folder : str
        The root, ``DESED/dataset/`` (holds ``audio/`` and ``metadata/``).
    save_folder : str
        Where ``train.csv``, ``train_events.tsv``, ... and ``skipped.csv`` go.
    train_set : str, optional
        ``synthetic21_train`` or ``synthetic20_train`` (None: no train split).
    valid_set : str, optional
        ``validation`` (real) or ``synthetic21_validation`` (None: none).
    test_set : str, optional
        ``public`` (the public evaluation set; None: none).
    audio_suffix : str
        Appended to each audio folder: ``_16k`` reads the copies the DCASE
        baseline resamples (``soundscapes_16k``, ``validation_16k``, ...).
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
    >>> prepare_desed(str(getfixture("tmpdir")), "unused")
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.preparation.PrepareError: ... expected metadata/train/...
    """
    chosen: dict[str, tuple[str, str]] = {}
    if not skip_prep:
        chosen = choose_sets(train_set, valid_set, test_set, audio_suffix)
        require(
            data_folder,
            "DESED",
            *[tsv for _, tsv in chosen.values()],
            hint="the folder dataset/ of DESED, with audio/ and metadata/",
        )
    events: dict = {}
    return prepare(
        "desed",
        data_folder,
        save_folder,
        {
            "train_set": train_set,
            "valid_set": valid_set,
            "test_set": test_set,
            "audio_suffix": audio_suffix,
        },
        [p for pair in chosen.values() for p in pair],
        lambda: read_sets(data_folder, chosen, events),
        fields=("labels",),
        skip_prep=skip_prep,
        min_seconds=min_seconds,
        check=check,
        jobs=jobs,
        progress=progress,
        extra_outputs=events_writer(save_folder, events),
    )
