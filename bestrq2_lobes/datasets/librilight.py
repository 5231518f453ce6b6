"""Libri-Light: 60 k hours of unlabelled LibriVox speech, for pretraining.

Layout of the official archives (``small.tar``, ``medium.tar``, ``large.tar``,
unpacked side by side; the root is the folder holding them)::

    librilight/
        small/<speaker>/<book>/<file>.flac     (577 h, 16 kHz mono)
        small/<speaker>/<book>/<file>.json     voice activity, SNR, book metadata
        medium/...                              (5,193 h)
        large/...                               (51,934 h)

Every ``.flac`` of the chosen subsets is a clip (minutes long: the pretraining
recipe reads random crops). The ``.json`` beside each clip is not read, except
that a ``.json`` whose ``.flac`` is absent counts as a missing clip; a
``.flac`` elsewhere than ``<subset>/<speaker>/<book>/`` is refused. The split
is by speaker, seeded: a speaker goes to ``valid`` when a hash of
``(seed, speaker)`` falls below ``valid_fraction`` (at least one speaker when
there are two or more), so a speaker's assignment does not depend on which
subsets or other speakers are present. CSV columns: ``ID,duration,wav,spk_id``.

Example
-------
>>> speaker_draw(0, "100") == speaker_draw(0, "100"), 0 <= speaker_draw(0, "1") < 1
(True, True)

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence

from bestrq2_lobes.datasets.preparation import (
    Clip,
    PrepareError,
    corpus_preparer,
    missing,
    prepare,
    refused,
)

logger = logging.getLogger(__name__)

SUBSETS = ("small", "medium", "large")


def speaker_draw(seed: int, speaker: str) -> float:
    """A number in [0, 1) fixed by ``(seed, speaker)``: the speaker's split draw."""
    digest = hashlib.sha256(f"{seed}\t{speaker}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def valid_speakers(speakers: Sequence[str], fraction: float, seed: int) -> set[str]:
    """The speakers of the valid split (see the module docstring).

    Example
    -------
    >>> len(valid_speakers([str(i) for i in range(1000)], 0.1, 0))
    96
    >>> valid_speakers(["a", "b"], 0.01, 0) | valid_speakers(["a"], 0.5, 0)
    {'a'}
    """
    speakers = sorted(set(speakers))
    if fraction <= 0 or len(speakers) < 2:
        return set()
    draws = {spk: speaker_draw(seed, spk) for spk in speakers}
    chosen = {spk for spk, draw in draws.items() if draw < fraction}
    if not chosen:
        chosen = {min(speakers, key=draws.__getitem__)}
    if len(chosen) == len(speakers):  # keep one speaker to train on
        chosen.discard(max(speakers, key=draws.__getitem__))
    return chosen


def check_subsets(data_folder: str, subsets: Sequence[str]) -> list[str]:
    """The chosen subsets present under the root (one-line error when none is)."""
    if isinstance(subsets, str):
        subsets = [subsets]
    subsets = list(dict.fromkeys(subsets))
    for name in subsets:
        if name not in SUBSETS:
            raise PrepareError(
                f"unknown Libri-Light subset {name!r}; known: {', '.join(SUBSETS)}"
            )
    if not subsets:
        raise PrepareError("subsets: give at least one Libri-Light subset")
    if not os.path.isdir(data_folder):
        raise PrepareError(f"Libri-Light: data folder not found: {data_folder!r}")
    present = [s for s in subsets if os.path.isdir(os.path.join(data_folder, s))]
    if not present:
        raise PrepareError(
            f"{data_folder!r} is not the Libri-Light root: expected "
            f"{'/, '.join(subsets)}/ in it (the folders small.tar, medium.tar and "
            "large.tar unpack to)"
        )
    absent = [s for s in subsets if s not in present]
    if absent:
        logger.warning("Libri-Light: %s/ not under %s: left out", absent, data_folder)
    return present


def collect(
    data_folder: str, subsets: Sequence[str], valid_fraction: float, seed: int
) -> tuple[list[Clip], list[dict]]:
    """Every clip of the subsets (train or valid by speaker); refused/missing rows."""
    found, skipped = [], []
    for subset in subsets:
        top = os.path.join(data_folder, subset)
        for root, dirs, files in os.walk(top):
            dirs.sort()
            parts = os.path.relpath(root, top).split(os.sep)
            names = set(files)
            for name in sorted(files):
                stem, ext = os.path.splitext(name)
                path = os.path.join(root, name)
                if ext == ".json" and f"{stem}.flac" not in names:
                    listed = os.path.relpath(path, data_folder)
                    skipped.append(missing(os.path.join(root, f"{stem}.flac"), listed))
                    continue
                if ext != ".flac":
                    continue
                if len(parts) != 2 or "." in parts:
                    skipped.append(
                        refused(
                            path,
                            f"refused: not at {subset}/<speaker>/<book>/<file>.flac",
                        )
                    )
                    continue
                speaker, book = parts
                uid = "__".join((subset, speaker, book, stem))
                found.append((uid, path, speaker))
    chosen = valid_speakers([spk for _, _, spk in found], valid_fraction, seed)
    clips = [
        Clip(uid, path, "valid" if spk in chosen else "train", {"spk_id": spk})
        for uid, path, spk in found
    ]
    return clips, skipped


@corpus_preparer
def prepare_librilight(
    data_folder: str,
    save_folder: str,
    subsets: Sequence[str] = SUBSETS,
    valid_fraction: float = 0.01,
    seed: int = 0,
    min_seconds: float = 1.0,
    check: str = "decode",
    jobs: int | None = None,
    progress: bool = True,
    skip_prep: bool = False,
) -> dict:
    """Prepares Libri-Light (official layout) into ``train.csv`` and ``valid.csv``.

    Arguments
    ---------
    data_folder : str
        The root: the folder holding ``small/``, ``medium/`` and/or ``large/``.
    save_folder : str
        Where ``train.csv``, ``valid.csv`` and ``skipped.csv`` go.
    subsets : Sequence[str]
        Of ``small``, ``medium``, ``large``; those absent are left out with a
        warning (an error when none is there).
    valid_fraction : float
        Share of the speakers in ``valid`` (0: no valid split).
    seed : int
        Seed of the speaker split.
    min_seconds : float
        Shorter clips are skipped.
    check : str
        ``decode`` (every clip decoded: days of CPU for ``large``; ``header``
        is the practical choice there), ``header`` or ``none``.
    jobs : int | None
        Worker processes for the checks (None: the CPUs available).
    progress : bool
        Show a progress bar.
    skip_prep : bool
        Prepare nothing; return the earlier outputs.

    Returns
    -------
    dict
        ``train_csv``, ``valid_csv`` (unless no speaker is in it),
        ``skipped_csv``, ``data_root`` and counts.

    Example
    -------
    >>> prepare_librilight(str(getfixture("tmpdir")), "unused")
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.preparation.PrepareError: ... expected small/, medium/...
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise PrepareError(f"valid_fraction {valid_fraction}: must be in [0, 1)")
    present = list(subsets) if skip_prep else check_subsets(data_folder, subsets)
    return prepare(
        "librilight",
        data_folder,
        save_folder,
        {"subsets": present, "valid_fraction": valid_fraction, "seed": seed},
        present,
        lambda: collect(data_folder, present, valid_fraction, seed),
        fields=("spk_id",),
        skip_prep=skip_prep,
        min_seconds=min_seconds,
        check=check,
        jobs=jobs,
        progress=progress,
    )
