"""CREMA-D: 7,442 acted clips of 91 actors, 6 emotions, a seeded 70/15/15 split.

Layout of the official repository (``CheyneyComputerScience/CREMA-D``, its
audio through Git LFS)::

    CREMA-D/
        AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav   e.g. 1001_DFA_ANG_XX.wav
        VideoDemographics.csv    ActorID,Age,Sex,Race,Ethnicity (the 91 actors)
        finishedResponses.csv, processedResults/, ...     (not read)

The label is the emotion the actor was asked to express (the third part of the
file name): ``ANG DIS FEA HAP NEU SAD``. The corpus has no official split:
``split_by="actor"`` (default) shuffles the actors (sorted, then
``random.Random(seed)``) and gives 70 % of them to ``train``, 15 % to ``valid``
and the rest to ``test``, so no voice is in two splits; ``split_by="clip"``
shuffles the clips instead, as X-ARES does (speakers then overlap). CSV columns:
``ID,duration,wav,label,speaker,level``. Copies with ``AudioWAV/`` only (no
demographics file) work with ``actors_file=None``.

Example
-------
>>> parse_name("1001_DFA_ANG_XX.wav")
('1001', 'DFA', 'ANG', 'XX')
>>> split_sizes(91)
(64, 14, 13)

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import csv
import os
import random
import re

from bestrq2_lobes.datasets.preparation import (
    Clip,
    PrepareError,
    corpus_preparer,
    prepare,
    refused,
    require,
)

AUDIO = "AudioWAV"
ACTORS_FILE = "VideoDemographics.csv"
EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
SPLIT_BY = ("actor", "clip")
FRACTIONS = (0.70, 0.15)  # train, valid; test is the rest
NAME_RE = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})\.wav$")


def parse_name(name: str) -> tuple[str, str, str, str] | None:
    """``(actor, sentence, emotion, level)`` of a CREMA-D file name, or None.

    Example
    -------
    >>> parse_name("1091_WSI_SAD_LO.wav"), parse_name("1001_DFA.wav")
    (('1091', 'WSI', 'SAD', 'LO'), None)
    """
    match = NAME_RE.match(name)
    return None if match is None else match.groups()


def split_sizes(count: int) -> tuple[int, int, int]:
    """``(train, valid, test)`` sizes of a 70/15/15 split of ``count`` items."""
    train = round(count * FRACTIONS[0])
    valid = round(count * FRACTIONS[1])
    return train, valid, count - train - valid


def assign_splits(keys: list[str], seed: int) -> dict[str, str]:
    """Each key's split: the sorted keys shuffled with ``seed``, cut 70/15/15.

    Example
    -------
    >>> splits = assign_splits([str(i) for i in range(20)], seed=0)
    >>> [list(splits.values()).count(s) for s in ("train", "valid", "test")]
    [14, 3, 3]
    >>> splits == assign_splits([str(i) for i in reversed(range(20))], seed=0)
    True
    """
    order = sorted(set(keys))
    random.Random(seed).shuffle(order)
    train, valid, _ = split_sizes(len(order))
    return {
        key: "train" if i < train else "valid" if i < train + valid else "test"
        for i, key in enumerate(order)
    }


def read_actors(path: str) -> set[str]:
    """The ``ActorID`` values of ``VideoDemographics.csv``."""
    with open(path, newline="", encoding="utf-8-sig") as fin:
        reader = csv.DictReader(fin)
        if "ActorID" not in (reader.fieldnames or []):
            raise PrepareError(f"{path}: missing column 'ActorID' (CREMA-D metadata)")
        return {row["ActorID"].strip() for row in reader}


def read_corpus(
    data_folder: str, split_by: str, seed: int, actors_file: str | None
) -> tuple[list[Clip], list[dict]]:
    """The clips of ``AudioWAV/`` with their split, and the refused files.

    Arguments
    ---------
    data_folder : str
        The corpus root.
    split_by : str
        ``actor`` or ``clip``.
    seed : int
        Seed of the shuffle.
    actors_file : str or None
        The demographics file whose actors are the speakers; None: any.

    Returns
    -------
    (list of Clip, list of dict)
    """
    actors = None
    if actors_file is not None:
        actors = read_actors(os.path.join(data_folder, actors_file))
    folder = os.path.join(data_folder, AUDIO)
    parsed, skipped = [], []
    for name in sorted(os.listdir(folder)):
        wav = os.path.join(folder, name)
        if not name.lower().endswith(".wav"):
            continue
        parts = parse_name(name)
        if parts is None:
            skipped.append(
                refused(wav, "refused: not <actor>_<sentence>_<emotion>_<level>.wav")
            )
            continue
        actor, _, emotion, level = parts
        if emotion not in EMOTIONS:
            skipped.append(refused(wav, f"label {emotion!r} is not a CREMA-D emotion"))
            continue
        if actors is not None and actor not in actors:
            skipped.append(refused(wav, f"refused: actor {actor} not in {actors_file}"))
            continue
        parsed.append((name[:-4], wav, actor, emotion, level))
    keys = [p[2] if split_by == "actor" else p[0] for p in parsed]
    splits = assign_splits(keys, seed)
    clips = [
        Clip(
            ID,
            wav,
            splits[actor if split_by == "actor" else ID],
            {"label": emotion, "speaker": actor, "level": level},
        )
        for ID, wav, actor, emotion, level in parsed
    ]
    return clips, skipped


@corpus_preparer
def prepare_cremad(
    data_folder: str,
    save_folder: str,
    split_by: str = "actor",
    seed: int = 1986,
    actors_file: str | None = ACTORS_FILE,
    min_seconds: float = 0.5,
    check: str = "decode",
    jobs: int | None = None,
    progress: bool = True,
    skip_prep: bool = False,
) -> dict:
    """Prepares CREMA-D (official layout) into a seeded 70/15/15 split.

    Arguments
    ---------
    data_folder : str
        The root, ``CREMA-D/`` (holds ``AudioWAV/`` and ``VideoDemographics.csv``).
    save_folder : str
        Where ``train.csv``, ``valid.csv``, ``test.csv`` and ``skipped.csv`` go.
    split_by : str
        ``actor`` (no actor in two splits) or ``clip`` (X-ARES's way).
    seed : int
        Seed of the shuffle.
    actors_file : str or None
        ``VideoDemographics.csv`` (relative to the root): clips of actors it
        does not list are refused; None: no demographics file is read.
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
        ``train_csv``, ``valid_csv``, ``test_csv``, ``skipped_csv``,
        ``data_root`` and counts.

    Example
    -------
    >>> prepare_cremad(str(getfixture("tmpdir")), "unused")
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.preparation.PrepareError: ... expected AudioWAV in it...
    """
    if split_by not in SPLIT_BY:
        raise PrepareError(f"cremad: split_by must be actor or clip, not {split_by!r}")
    expected = [AUDIO] + ([actors_file] if actors_file else [])
    if not skip_prep:
        require(
            data_folder,
            "CREMA-D",
            *expected,
            hint="the CREMA-D repository folder; actors_file=None without "
            "VideoDemographics.csv",
        )
    return prepare(
        "cremad",
        data_folder,
        save_folder,
        {"split_by": split_by, "seed": seed, "actors_file": actors_file},
        expected,
        lambda: read_corpus(data_folder, split_by, seed, actors_file),
        fields=("label", "speaker", "level"),
        skip_prep=skip_prep,
        min_seconds=min_seconds,
        check=check,
        jobs=jobs,
        progress=progress,
    )
