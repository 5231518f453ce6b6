"""FSD50K: 51,197 Freesound clips, 200 AudioSet classes, multilabel, scored with mAP.

Layout of the official Zenodo release (record 4060432; each ``.zip``, the
split audio archives joined first, unpacks to its folder)::

    FSD50K/
        FSD50K.ground_truth/dev.csv          fname,labels,mids,split  (split: train|val)
        FSD50K.ground_truth/eval.csv         fname,labels,mids
        FSD50K.ground_truth/vocabulary.csv   index,label,mid  (no header, 200 rows)
        FSD50K.dev_audio/<fname>.wav         (44.1 kHz mono, 0.3-30 s)
        FSD50K.eval_audio/<fname>.wav

The split is the official one (Fonseca et al., IEEE/ACM TASLP 2022, "FSD50K:
an Open Dataset of Human-Labeled Sound Events"): ``dev.csv`` rows of split
``train`` are ``train``, those of ``val`` are ``valid``, ``eval.csv`` is
``test``. ``labels`` is the comma-separated list of the clip's classes (leaf
labels and their ancestors); the CSV column ``labels`` holds them
space-separated (the names have no spaces). A clip with a label outside
``vocabulary.csv`` is refused. CSV columns: ``ID,duration,wav,labels``.

Example
-------
>>> GROUND_TRUTH, DEV_AUDIO
('FSD50K.ground_truth', 'FSD50K.dev_audio')

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

GROUND_TRUTH = "FSD50K.ground_truth"
DEV_CSV = f"{GROUND_TRUTH}/dev.csv"
EVAL_CSV = f"{GROUND_TRUTH}/eval.csv"
VOCABULARY_CSV = f"{GROUND_TRUTH}/vocabulary.csv"
DEV_AUDIO = "FSD50K.dev_audio"
EVAL_AUDIO = "FSD50K.eval_audio"
DEV_SPLITS = {"train": "train", "val": "valid"}


def read_vocabulary(path: str) -> dict[str, str]:
    """label -> mid of the headerless ``vocabulary.csv`` (``index,label,mid``).

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "v.csv").write("0,Accelerating_and_revving_and_vroom,/m/07q2z82"
    ...                           "\\n1,Accordion,/m/0mkg\\n")
    >>> read_vocabulary(str(tmp / "v.csv"))
    {'Accelerating_and_revving_and_vroom': '/m/07q2z82', 'Accordion': '/m/0mkg'}
    """
    vocabulary = {}
    with open(path, newline="", encoding="utf-8") as fin:
        for num, row in enumerate(csv.reader(fin), start=1):
            if not row:
                continue
            if len(row) != 3 or not row[0].strip().isdigit():
                raise PrepareError(
                    f"{path}:{num}: expected 'index,label,mid' (FSD50K vocabulary)"
                )
            vocabulary[row[1].strip()] = row[2].strip()
    return vocabulary


def split_labels(value: str) -> list[str]:
    """The labels of a ``labels`` field (comma-separated).

    Example
    -------
    >>> split_labels("Electric_guitar,Guitar, Music,")
    ['Electric_guitar', 'Guitar', 'Music']
    """
    return [label.strip() for label in value.split(",") if label.strip()]


def read_ground_truth(data_folder: str) -> tuple[list[Clip], list[dict]]:
    """The clips of ``dev.csv`` and ``eval.csv`` and the skipped entries.

    Arguments
    ---------
    data_folder : str
        The corpus root.

    Returns
    -------
    (list of Clip, list of dict)
    """
    vocabulary = read_vocabulary(os.path.join(data_folder, VOCABULARY_CSV))
    clips, skipped = [], []
    for meta, audio in ((DEV_CSV, DEV_AUDIO), (EVAL_CSV, EVAL_AUDIO)):
        path = os.path.join(data_folder, meta)
        with open(path, newline="", encoding="utf-8") as fin:
            reader = csv.DictReader(fin)
            needed = ("fname", "labels") + (("split",) if meta == DEV_CSV else ())
            absent = [c for c in needed if c not in (reader.fieldnames or [])]
            if absent:
                raise PrepareError(
                    f"{path}: missing column {absent[0]!r} (FSD50K ground truth)"
                )
            rows = list(reader)
        for row in rows:
            fname = row["fname"].strip()
            wav = os.path.join(data_folder, audio, f"{fname}.wav")
            split = "test" if meta == EVAL_CSV else DEV_SPLITS.get(row["split"])
            if split is None:
                skipped.append(
                    refused(wav, f"refused: split {row['split']!r} is not train/val")
                )
                continue
            labels = split_labels(row["labels"])
            unknown = [label for label in labels if label not in vocabulary]
            if unknown or not labels:
                what = repr(unknown[0]) if unknown else "(none)"
                skipped.append(refused(wav, f"label {what} is not in {VOCABULARY_CSV}"))
                continue
            if not os.path.isfile(wav):
                skipped.append(missing(wav, meta))
                continue
            ID = f"{'eval' if split == 'test' else 'dev'}_{fname}"
            clips.append(Clip(ID, wav, split, {"labels": " ".join(labels)}))
    return clips, skipped


@corpus_preparer
def prepare_fsd50k(
    data_folder: str,
    save_folder: str,
    min_seconds: float = 0.0,
    check: str = "decode",
    jobs: int | None = None,
    progress: bool = True,
    skip_prep: bool = False,
) -> dict:
    """Prepares FSD50K (official layout and split) for multilabel tagging.

    Arguments
    ---------
    data_folder : str
        The root holding ``FSD50K.ground_truth/``, ``FSD50K.dev_audio/`` and
        ``FSD50K.eval_audio/``.
    save_folder : str
        Where ``train.csv``, ``valid.csv``, ``test.csv`` and ``skipped.csv`` go.
    min_seconds : float
        Shorter clips are skipped (0: all kept, as the official split is).
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
        ``train_csv``, ``valid_csv``, ``test_csv``, ``skipped_csv``,
        ``data_root`` and counts.

    Example
    -------
    >>> prepare_fsd50k(str(getfixture("tmpdir")), "unused")
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.preparation.PrepareError: ... FSD50K.ground_truth/dev.csv...
    """
    expected = [DEV_CSV, EVAL_CSV, VOCABULARY_CSV, DEV_AUDIO, EVAL_AUDIO]
    if not skip_prep:
        require(
            data_folder,
            "FSD50K",
            *expected,
            hint="the folder holding the unpacked FSD50K.* folders of the release",
        )
    return prepare(
        "fsd50k",
        data_folder,
        save_folder,
        {},
        expected,
        lambda: read_ground_truth(data_folder),
        fields=("labels",),
        skip_prep=skip_prep,
        min_seconds=min_seconds,
        check=check,
        jobs=jobs,
        progress=progress,
    )
