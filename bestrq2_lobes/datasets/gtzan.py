"""GTZAN: 1,000 music clips of 30 s, 10 genres, 100 clips each.

Layout of the archive (Tzanetakis & Cook, IEEE TSAP 2002; ``genres.tar.gz``
unpacks into ``genres/``; the Kaggle copy has ``genres_original/`` with
``.wav`` files instead of ``.au``)::

    gtzan/                                  <- data_folder
        genres/<genre>/<genre>.000NN.au     (or .wav; 22,050 Hz mono)
        genres_original/<genre>/<genre>.000NN.wav   (the Kaggle copy)

The split: with ``split_folder`` (a folder holding ``train_filtered.txt``,
``valid_filtered.txt`` and ``test_filtered.txt``, lines like
``blues/blues.00029.wav``) the fault-filtered split of Kereliuk, Sturm &
Larsen (IEEE TMM 2015): 443/197/290 clips, no artist in two splits, the
repeated and distorted clips left out. Without it a seeded split, stratified
by genre, of 70/15/15 (stated in the log line). Columns ``ID,duration,wav,tags``
(``tags``: the genre, one tag).

Example
-------
>>> parse_list_line("blues/blues.00029.wav")
('blues', 'blues.00029')
>>> len(GENRES), stratified_split(["a"] * 20, seed=0).count("test")
(10, 3)

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import logging
import os
import random

from bestrq2_lobes.datasets.preparation import (
    Clip,
    PrepareError,
    corpus_preparer,
    missing,
    prepare,
    refused,
    require,
)

logger = logging.getLogger(__name__)

GENRES = (
    "blues classical country disco hiphop jazz metal pop reggae rock"
).split()
AUDIO_FOLDERS = ("genres", "genres_original")
LISTS = {
    "train": "train_filtered.txt",
    "valid": "valid_filtered.txt",
    "test": "test_filtered.txt",
}
EXTENSIONS = (".wav", ".au")
FRACTIONS = (0.70, 0.15, 0.15)


def parse_list_line(line: str) -> tuple[str, str]:
    """``(genre, clip stem)`` of a split-list line ``<genre>/<genre>.000NN.<ext>``.

    Raises
    ------
    ValueError
        Another form.
    """
    text = line.strip().replace("\\", "/")
    folder, _, name = text.rpartition("/")
    stem = name
    for ext in EXTENSIONS:
        if name.endswith(ext):
            stem = name[: -len(ext)]
    genre = folder.split("/")[-1]
    if not genre or stem.split(".")[0] != genre:
        raise ValueError(f"not '<genre>/<genre>.000NN.wav': {line.strip()!r}")
    return genre, stem


def stratified_split(labels: list[str], seed: int) -> list[str]:
    """A seeded 70/15/15 split of each label's clips (in the order given).

    Example
    -------
    >>> split = stratified_split(["a"] * 10 + ["b"] * 10, seed=1)
    >>> [split[:10].count(s) for s in ("train", "valid", "test")]
    [6, 2, 2]
    """
    split = [""] * len(labels)
    for label in sorted(set(labels)):
        index = [i for i, lab in enumerate(labels) if lab == label]
        random.Random(f"{seed}-{label}").shuffle(index)
        n_valid = int(FRACTIONS[1] * len(index) + 0.5)
        n_test = int(FRACTIONS[2] * len(index) + 0.5)
        if len(index) >= 3:
            n_valid, n_test = max(n_valid, 1), max(n_test, 1)
        for k, i in enumerate(index):
            split[i] = (
                "test" if k < n_test else "valid" if k < n_test + n_valid else "train"
            )
    return split


def find_audio_folder(data_folder: str, audio_folder: str | None) -> str:
    """The genre folder: ``audio_folder``, or ``genres/`` or ``genres_original/``."""
    names = [audio_folder] if audio_folder else AUDIO_FOLDERS
    for name in names:
        if os.path.isdir(os.path.join(data_folder, name)):
            return name
    require(
        data_folder,
        "GTZAN",
        names[0],
        hint=f"the folder holding {' or '.join(n + '/' for n in names)}",
    )
    return names[0]


def clip_file(folder: str, genre: str, stem: str) -> str:
    """The clip's file (``.wav`` or ``.au``, whichever is there; else ``.wav``)."""
    base = os.path.join(folder, genre, stem)
    for ext in EXTENSIONS:
        if os.path.isfile(base + ext):
            return base + ext
    return base + EXTENSIONS[0]


def read_lists(
    data_folder: str, audio: str, split_folder: str
) -> tuple[list[Clip], list[dict]]:
    """The clips of the three split lists, and the refused lines."""
    clips, skipped = [], []
    for split, name in LISTS.items():
        path = os.path.join(split_folder, name)
        with open(path, encoding="utf-8") as fin:
            for number, line in enumerate(fin, start=1):
                if not line.strip():
                    continue
                try:
                    genre, stem = parse_list_line(line)
                except ValueError as err:
                    skipped.append(refused(f"{path}:{number}", f"refused: {err}"))
                    continue
                wav = clip_file(os.path.join(data_folder, audio), genre, stem)
                if genre not in GENRES:
                    reason = f"label {genre!r} is not a GTZAN genre"
                    skipped.append(refused(wav, reason))
                    continue
                if not os.path.isfile(wav):
                    skipped.append(missing(wav, name))
                    continue
                clips.append(Clip(stem, wav, split, {"tags": genre}))
    return clips, skipped


def read_folders(
    data_folder: str, audio: str, seed: int
) -> tuple[list[Clip], list[dict]]:
    """Every clip of the genre folders with a seeded stratified split."""
    base = os.path.join(data_folder, audio)
    found, skipped = [], []
    for genre in sorted(os.listdir(base)):
        if not os.path.isdir(os.path.join(base, genre)):
            continue
        for name in sorted(os.listdir(os.path.join(base, genre))):
            path = os.path.join(base, genre, name)
            stem, ext = os.path.splitext(name)
            if ext not in EXTENSIONS:
                continue
            if genre not in GENRES:
                skipped.append(refused(path, f"label {genre!r} is not a GTZAN genre"))
                continue
            found.append((stem, path, genre))
    splits = stratified_split([g for _, _, g in found], seed)
    logger.info(
        "gtzan: no split_folder given: seeded (seed %d) 70/15/15 split by genre, "
        "not the fault-filtered split",
        seed,
    )
    clips = [
        Clip(stem, path, split, {"tags": genre})
        for (stem, path, genre), split in zip(found, splits, strict=True)
    ]
    return clips, skipped


@corpus_preparer
def prepare_gtzan(
    data_folder: str,
    save_folder: str,
    split_folder: str | None = None,
    seed: int = 1986,
    audio_folder: str | None = None,
    min_seconds: float = 1.0,
    check: str = "decode",
    jobs: int | None = None,
    progress: bool = True,
    skip_prep: bool = False,
) -> dict:
    """Prepares GTZAN: the fault-filtered split, or a seeded stratified one.

    Arguments
    ---------
    data_folder : str
        The root: holds ``genres/`` (or ``genres_original/``).
    save_folder : str
        Where ``train.csv``, ``valid.csv``, ``test.csv`` and ``skipped.csv`` go.
    split_folder : str, optional
        A folder with ``train_filtered.txt``, ``valid_filtered.txt`` and
        ``test_filtered.txt`` (the fault-filtered split); None: a seeded
        70/15/15 split, stratified by genre.
    seed : int
        The seed of that split.
    audio_folder : str, optional
        The genre folder under the root (None: ``genres``, else
        ``genres_original``).
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
    >>> prepare_gtzan(str(getfixture("tmpdir")), "unused")
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.preparation.PrepareError: ... expected genres in it ...
    """
    audio = audio_folder or AUDIO_FOLDERS[0]
    lists = None
    if not skip_prep:
        require(data_folder, "GTZAN")
        audio = find_audio_folder(data_folder, audio_folder)
        if split_folder is not None:
            lists = os.path.abspath(os.path.join(data_folder, split_folder))
            if not os.path.isdir(lists):
                raise PrepareError(f"GTZAN: split_folder not found: {lists!r}")
            for name in LISTS.values():
                if not os.path.isfile(os.path.join(lists, name)):
                    raise PrepareError(
                        f"GTZAN: split_folder {lists!r}: expected {name} in it "
                        "(the fault-filtered split lists)"
                    )
    watched = [audio] + (
        [os.path.join(lists, n) for n in LISTS.values()] if lists else []
    )

    def collect():
        if lists is not None:
            return read_lists(data_folder, audio, lists)
        return read_folders(data_folder, audio, seed)

    return prepare(
        "gtzan",
        data_folder,
        save_folder,
        {
            "split_folder": lists,
            "seed": None if lists else seed,
            "audio_folder": audio,
        },
        watched,
        collect,
        fields=("tags",),
        skip_prep=skip_prep,
        min_seconds=min_seconds,
        check=check,
        jobs=jobs,
        progress=progress,
    )
