"""LibriSpeech: 1,000 h of read English audiobooks in seven official splits.

Layout of the official archives (each ``<split>.tar.gz`` unpacks into
``LibriSpeech/``)::

    LibriSpeech/
        SPEAKERS.TXT CHAPTERS.TXT BOOKS.TXT README.TXT LICENSE.TXT   (not read)
        <split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac   (16 kHz)
        <split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt
                                    one line per utterance: <utt ID> TRANSCRIPT

The splits are ``train-clean-100``, ``train-clean-360``, ``train-other-500``,
``dev-clean``, ``dev-other``, ``test-clean`` and ``test-other``. Each chosen
split gets its own CSV (``dev-clean.csv``, ...) with the columns
``ID,duration,wav,spk_id,wrd``, and the recipes' names are written too:
``train.csv`` (the chosen ``train-*`` splits together), ``valid.csv``
(``dev-clean``, or the first dev split chosen) and ``test.csv``
(``test-clean``, or the first test split chosen).

Example
-------
>>> parse_transcript_line("19-198-0001 HELLO WORLD")
('19-198-0001', 'HELLO WORLD')
>>> bad_characters("IT'S A DOG"), bad_characters("NO 1 HERE!")
('', '!1')

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import os
import re
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

SPLITS = (
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
)
DEFAULT_SPLITS = ("train-clean-100", "dev-clean", "test-clean")
_UTT = re.compile(r"^(\d+)-(\d+)-(\d+)$")
_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ")


def parse_transcript_line(line: str) -> tuple[str, str]:
    """``(utterance ID, transcript)`` of a ``.trans.txt`` line.

    Raises
    ------
    ValueError
        A line that does not start with ``<speaker>-<chapter>-<utt>``.
    """
    uid, _, text = line.strip().partition(" ")
    if not _UTT.match(uid):
        raise ValueError(f"not '<speaker>-<chapter>-<utt> TEXT': {line.strip()!r}")
    return uid, " ".join(text.split())


def bad_characters(text: str) -> str:
    """The sorted characters of ``text`` outside A-Z, the apostrophe and space."""
    return "".join(sorted(set(text) - _ALPHABET))


def choose_splits(splits: str | Sequence[str], data_folder: str) -> list[str]:
    """The splits to read: a list of official names, or ``all`` (those present).

    Example
    -------
    >>> choose_splits(["dev-clean"], "/nowhere")
    ['dev-clean']
    >>> choose_splits(["dev"], "/nowhere")
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.preparation.PrepareError: LibriSpeech: unknown split ...
    """
    if isinstance(splits, str):
        if splits != "all":
            splits = [splits]
        else:
            present = [
                s for s in SPLITS if os.path.isdir(os.path.join(data_folder, s))
            ]
            if not present:
                raise PrepareError(
                    f"{data_folder!r} is not the LibriSpeech root: expected "
                    f"one of {', '.join(SPLITS)} in it"
                )
            return present
    chosen = list(splits)
    for split in chosen:
        if split not in SPLITS:
            raise PrepareError(
                f"LibriSpeech: unknown split {split!r} (splits: {', '.join(SPLITS)}, "
                "or all)"
            )
    if not chosen or len(set(chosen)) != len(chosen):
        raise PrepareError(f"LibriSpeech: splits must be distinct and given: {chosen}")
    return chosen


def read_chapter(
    data_folder: str, split: str, folder: str, transcripts: bool
) -> tuple[list[Clip], list[dict]]:
    """The clips of one ``<split>/<speaker>/<chapter>`` folder and its refusals."""
    speaker, chapter = folder.split(os.sep)[-2:]
    here = os.path.join(data_folder, split, folder)
    flacs = {
        os.path.splitext(n)[0]: os.path.join(here, n)
        for n in os.listdir(here)
        if n.endswith(".flac")
    }
    trans_name = f"{speaker}-{chapter}.trans.txt"
    trans_rel = f"{split}/{speaker}/{chapter}/{trans_name}"
    texts: dict[str, str] = {}
    clips, skipped = [], []
    if transcripts:
        trans = os.path.join(here, trans_name)
        if os.path.isfile(trans):
            with open(trans, encoding="utf-8") as fin:
                for number, line in enumerate(fin, start=1):
                    if not line.strip():
                        continue
                    try:
                        uid, text = parse_transcript_line(line)
                    except ValueError as err:
                        where = f"{trans_rel}:{number}"
                        skipped.append(refused(where, f"refused: {err}"))
                        continue
                    texts[uid] = text
                    if uid not in flacs:
                        skipped.append(
                            missing(os.path.join(here, uid + ".flac"), trans_rel)
                        )
    for uid, path in sorted(flacs.items()):
        if not _UTT.match(uid) or not uid.startswith(f"{speaker}-{chapter}-"):
            skipped.append(
                refused(path, f"refused: not {speaker}-{chapter}-<utt>.flac")
            )
            continue
        fields = {"spk_id": speaker, "wrd": ""}
        if transcripts:
            if uid not in texts:
                skipped.append(refused(path, f"refused: no line in {trans_rel}"))
                continue
            bad = bad_characters(texts[uid])
            if bad:
                skipped.append(
                    refused(
                        path,
                        f"label: transcript has characters outside A-Z, ' and "
                        f"space: {bad!r}",
                    )
                )
                continue
            fields["wrd"] = texts[uid]
        clips.append(Clip(uid, path, split, fields))
    return clips, skipped


def read_splits(
    data_folder: str, splits: Sequence[str], transcripts: bool
) -> tuple[list[Clip], list[dict]]:
    """The clips of the chosen splits and the refused entries."""
    clips, skipped = [], []
    for split in splits:
        base = os.path.join(data_folder, split)
        for speaker in sorted(os.listdir(base)):
            if not os.path.isdir(os.path.join(base, speaker)):
                continue
            for chapter in sorted(os.listdir(os.path.join(base, speaker))):
                if os.path.isdir(os.path.join(base, speaker, chapter)):
                    more, refusals = read_chapter(
                        data_folder, split, os.path.join(speaker, chapter), transcripts
                    )
                    clips.extend(more)
                    skipped.extend(refusals)
    return clips, skipped


def recipe_splits(splits: Sequence[str]) -> dict[str, list[str]]:
    """Which official splits make the recipes' ``train``, ``valid`` and ``test``.

    Example
    -------
    >>> recipe_splits(["train-clean-100", "train-other-500", "dev-other",
    ...                "dev-clean", "test-other"])
    {'train': ['train-clean-100', 'train-other-500'], 'valid': ['dev-clean'], \
'test': ['test-other']}
    """
    out = {"train": [s for s in splits if s.startswith("train-")]}
    for name, prefix in (("valid", "dev-"), ("test", "test-")):
        chosen = [s for s in splits if s.startswith(prefix)]
        clean = f"{prefix}clean"
        out[name] = [clean] if clean in chosen else chosen[:1]
    return {k: v for k, v in out.items() if v}


def write_recipe_csvs(save_folder: str, splits: Sequence[str], kept: dict) -> dict:
    """Writes ``train.csv``, ``valid.csv``, ``test.csv`` from the split CSVs."""
    outputs = {}
    for name, parts in recipe_splits(splits).items():
        parts = [p for p in parts if p in kept]
        if not parts:
            continue
        lines: list[str] = []
        for i, part in enumerate(parts):
            with open(os.path.join(save_folder, f"{part}.csv"), encoding="utf-8") as f:
                text = f.read().splitlines(keepends=True)
            lines.extend(text if i == 0 else text[1:])
        path = os.path.join(save_folder, f"{name}.csv")
        with open(path, "w", encoding="utf-8", newline="") as fout:
            fout.writelines(lines)
        outputs[f"{name}_csv"] = path
    return outputs


@corpus_preparer
def prepare_librispeech(
    data_folder: str,
    save_folder: str,
    splits: str | Sequence[str] = DEFAULT_SPLITS,
    transcripts: bool = True,
    min_seconds: float = 0.0,
    check: str = "decode",
    jobs: int | None = None,
    progress: bool = True,
    skip_prep: bool = False,
) -> dict:
    """Prepares LibriSpeech (official layout): one CSV per split, plus the recipes'.

    Arguments
    ---------
    data_folder : str
        The root, ``LibriSpeech/`` (holds the split folders).
    save_folder : str
        Where ``<split>.csv``, ``train.csv``/``valid.csv``/``test.csv`` and
        ``skipped.csv`` go.
    splits : str or Sequence[str]
        Official split names, or ``all``: every split present (pretraining on
        960 h: ``train.csv`` then holds the three train splits).
    transcripts : bool
        Read the ``.trans.txt`` files (ASR). False: unlabelled (pretraining;
        ``wrd`` is empty and no transcript is needed).
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
        ``<split>_csv`` per split, ``train_csv``/``valid_csv``/``test_csv``,
        ``skipped_csv``, ``data_root`` and counts.

    Example
    -------
    >>> prepare_librispeech(str(getfixture("tmpdir")), "unused")
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.preparation.PrepareError: ... expected train-clean-100 ...
    """
    chosen: list[str] = []
    if not skip_prep:
        require(data_folder, "LibriSpeech")
        chosen = choose_splits(splits, data_folder)
        require(
            data_folder,
            "LibriSpeech",
            *chosen,
            hint="the folder LibriSpeech/ the official archives unpack to",
        )
    return prepare(
        "librispeech",
        data_folder,
        save_folder,
        {"splits": chosen, "transcripts": transcripts},
        chosen,
        lambda: read_splits(data_folder, chosen, transcripts),
        fields=("spk_id", "wrd"),
        skip_prep=skip_prep,
        min_seconds=min_seconds,
        check=check,
        jobs=jobs,
        progress=progress,
        extra_outputs=lambda kept: write_recipe_csvs(save_folder, chosen, kept),
    )
