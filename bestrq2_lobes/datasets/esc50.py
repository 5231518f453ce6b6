"""ESC-50: 2,000 environmental clips of 5 s, 50 classes, 5 official folds.

Layout of the official archive (``ESC-50-master/`` as it unpacks)::

    ESC-50-master/
        audio/{fold}-{freesound id}-{take}-{target}.wav   (44.1 kHz mono, 5 s)
        meta/esc50.csv    filename,fold,target,category,esc10,src_file,take

The protocol is 5-fold cross-validation on the official folds (X-ARES reports
the mean over folds): one CSV per fold (``fold1.csv`` ... ``fold5.csv``) with
the columns ``ID,duration,wav,label,fold``. ``esc10=True`` keeps the ESC-10
subset (10 classes) only.

Example
-------
>>> sorted(ESC50_CLASSES)[:3], len(ESC50_CLASSES)
(['airplane', 'breathing', 'brushing_teeth'], 50)

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

META = "meta/esc50.csv"
AUDIO = "audio"
COLUMNS = ("filename", "fold", "target", "category")
#: the official classes in the order of their ``target`` index
ESC50_CLASSES = (
    "dog rooster pig cow frog cat hen insects sheep crow "
    "rain sea_waves crackling_fire crickets chirping_birds water_drops wind "
    "pouring_water toilet_flush thunderstorm "
    "crying_baby sneezing clapping breathing coughing footsteps laughing "
    "brushing_teeth snoring drinking_sipping "
    "door_wood_knock mouse_click keyboard_typing door_wood_creaks can_opening "
    "washing_machine vacuum_cleaner clock_alarm clock_tick glass_breaking "
    "helicopter chainsaw siren car_horn engine train church_bells airplane "
    "fireworks hand_saw"
).split()
FOLDS = (1, 2, 3, 4, 5)


def read_meta(data_folder: str, esc10: bool) -> tuple[list[Clip], list[dict]]:
    """The clips of ``meta/esc50.csv`` (one split per fold) and the refused rows."""
    path = os.path.join(data_folder, META)
    with open(path, newline="", encoding="utf-8") as fin:
        reader = csv.DictReader(fin)
        absent = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise PrepareError(
                f"{path}: missing column {absent[0]!r} (ESC-50 metadata)"
            )
        rows = list(reader)
    clips, skipped = [], []
    for row in rows:
        name = row["filename"]
        wav = os.path.join(data_folder, AUDIO, name)
        category, target, fold = row["category"], row["target"], row["fold"]
        if esc10 and row.get("esc10") != "True":
            continue
        if category not in ESC50_CLASSES:
            skipped.append(refused(wav, f"label {category!r} is not an ESC-50 class"))
            continue
        if target != str(ESC50_CLASSES.index(category)):
            skipped.append(
                refused(wav, f"label {category!r} does not match target {target!r}")
            )
            continue
        if fold not in {str(f) for f in FOLDS}:
            skipped.append(refused(wav, f"refused: fold {fold!r} is not 1-5"))
            continue
        if not os.path.isfile(wav):
            skipped.append(missing(wav, META))
            continue
        clips.append(
            Clip(
                os.path.splitext(name)[0],
                wav,
                f"fold{fold}",
                {"label": category, "fold": fold},
            )
        )
    return clips, skipped


@corpus_preparer
def prepare_esc50(
    data_folder: str,
    save_folder: str,
    esc10: bool = False,
    min_seconds: float = 0.5,
    check: str = "decode",
    jobs: int | None = None,
    progress: bool = True,
    skip_prep: bool = False,
) -> dict:
    """Prepares ESC-50 (official layout) into one CSV per official fold.

    Arguments
    ---------
    data_folder : str
        The root, ``ESC-50-master/`` (holds ``meta/esc50.csv`` and ``audio/``).
    save_folder : str
        Where ``fold1.csv`` ... ``fold5.csv`` and ``skipped.csv`` go.
    esc10 : bool
        Keep the ESC-10 subset only.
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
        ``fold<N>_csv`` for each fold, ``skipped_csv``, ``data_root`` and counts.

    Example
    -------
    >>> prepare_esc50(str(getfixture("tmpdir")), "unused")
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.preparation.PrepareError: ... expected meta/esc50.csv...
    """
    if not skip_prep:
        require(
            data_folder,
            "ESC-50",
            META,
            AUDIO,
            hint="the folder ESC-50-master/ of the official archive",
        )
    return prepare(
        "esc50",
        data_folder,
        save_folder,
        {"esc10": esc10},
        [META, AUDIO],
        lambda: read_meta(data_folder, esc10),
        fields=("label", "fold"),
        skip_prep=skip_prep,
        min_seconds=min_seconds,
        check=check,
        jobs=jobs,
        progress=progress,
    )
