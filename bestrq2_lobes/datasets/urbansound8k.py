"""UrbanSound8K: 8,732 urban sound slices (at most 4 s), 10 classes, 10 folds.

Layout of the official archive (``UrbanSound8K/`` as it unpacks)::

    UrbanSound8K/
        audio/fold1/ ... audio/fold10/   <fsID>-<classID>-<occurrence>-<slice>.wav
        metadata/UrbanSound8K.csv
            slice_file_name,fsID,start,end,salience,fold,classID,class

The protocol is 10-fold cross-validation on the official folds (the authors
warn that any other split inflates the scores; X-ARES reports the mean over
folds): one CSV per fold (``fold1.csv`` ... ``fold10.csv``) with the columns
``ID,duration,wav,label,fold,salience``. The slices keep their own sample rates
and channels (the recipes resample and downmix when reading); some are far
shorter than a second, so ``min_seconds`` defaults to 0 (every slice kept).

Example
-------
>>> URBANSOUND8K_CLASSES[:3], len(URBANSOUND8K_CLASSES)
(('air_conditioner', 'car_horn', 'children_playing'), 10)

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

META = "metadata/UrbanSound8K.csv"
AUDIO = "audio"
COLUMNS = ("slice_file_name", "fold", "classID", "class")
#: the official classes in the order of their ``classID``
URBANSOUND8K_CLASSES = (
    "air_conditioner",
    "car_horn",
    "children_playing",
    "dog_bark",
    "drilling",
    "engine_idling",
    "gun_shot",
    "jackhammer",
    "siren",
    "street_music",
)
FOLDS = tuple(range(1, 11))


def read_meta(data_folder: str) -> tuple[list[Clip], list[dict]]:
    """The clips of ``UrbanSound8K.csv`` (one split per fold) and the refused rows.

    Arguments
    ---------
    data_folder : str
        The corpus root.

    Returns
    -------
    (list of Clip, list of dict)
        The clips on disk, and the skipped rows (refused or missing).

    Example
    -------
    >>> root = getfixture("tmpdir")
    >>> _ = (root / "metadata").mkdir()
    >>> _ = (root / "metadata" / "UrbanSound8K.csv").write(
    ...     "slice_file_name,fsID,start,end,salience,fold,classID,class\\n"
    ...     "100032-3-0-0.wav,100032,0.0,0.3,1,5,3,dog_bark\\n"
    ...     "7061-6-0-0.wav,7061,0.0,1.1,1,1,6,gun_shots\\n")
    >>> clips, skipped = read_meta(str(root))
    >>> clips, [s["reason"] for s in skipped]
    ([], ['missing (listed in metadata/UrbanSound8K.csv)', "label 'gun_shots' ..."])
    """
    path = os.path.join(data_folder, META)
    with open(path, newline="", encoding="utf-8") as fin:
        reader = csv.DictReader(fin)
        absent = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise PrepareError(
                f"{path}: missing column {absent[0]!r} (UrbanSound8K metadata)"
            )
        rows = list(reader)
    clips, skipped = [], []
    folds = {str(f) for f in FOLDS}
    for row in rows:
        name, fold, label = row["slice_file_name"], row["fold"], row["class"]
        wav = os.path.join(data_folder, AUDIO, f"fold{fold}", name)
        if label not in URBANSOUND8K_CLASSES:
            skipped.append(
                refused(wav, f"label {label!r} is not an UrbanSound8K class")
            )
            continue
        if row["classID"] != str(URBANSOUND8K_CLASSES.index(label)):
            skipped.append(
                refused(
                    wav, f"label {label!r} does not match classID {row['classID']!r}"
                )
            )
            continue
        if fold not in folds:
            skipped.append(refused(wav, f"refused: fold {fold!r} is not 1-10"))
            continue
        if not os.path.isfile(wav):
            skipped.append(missing(wav, META))
            continue
        fields = {"label": label, "fold": fold, "salience": row.get("salience", "")}
        clips.append(Clip(os.path.splitext(name)[0], wav, f"fold{fold}", fields))
    return clips, skipped


@corpus_preparer
def prepare_urbansound8k(
    data_folder: str,
    save_folder: str,
    min_seconds: float = 0.0,
    check: str = "decode",
    jobs: int | None = None,
    progress: bool = True,
    skip_prep: bool = False,
) -> dict:
    """Prepares UrbanSound8K (official layout) into one CSV per official fold.

    Arguments
    ---------
    data_folder : str
        The root, ``UrbanSound8K/`` (holds ``metadata/`` and ``audio/fold<N>/``).
    save_folder : str
        Where ``fold1.csv`` ... ``fold10.csv`` and ``skipped.csv`` go.
    min_seconds : float
        Shorter slices are skipped (0: all kept, as the official folds are).
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
        ``fold<N>_csv`` for each fold, ``skipped_csv``, ``data_root`` and counts.

    Example
    -------
    >>> prepare_urbansound8k(str(getfixture("tmpdir")), "unused")
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.preparation.PrepareError: ... metadata/UrbanSound8K.csv...
    """
    if not skip_prep:
        require(
            data_folder,
            "UrbanSound8K",
            META,
            AUDIO,
            hint="the folder UrbanSound8K/ of the official archive",
        )
    return prepare(
        "urbansound8k",
        data_folder,
        save_folder,
        {},
        [META, AUDIO],
        lambda: read_meta(data_folder),
        fields=("label", "fold", "salience"),
        skip_prep=skip_prep,
        min_seconds=min_seconds,
        check=check,
        jobs=jobs,
        progress=progress,
    )
