"""AudioSet: 10 s YouTube segments with 527 multi-hot labels, as downloaded.

Google publishes the segment lists and the ontology, not the audio: every user
downloads the clips, and some videos are always gone. The root is the folder
that holds the lists (or their ``metadata/`` subfolder) and, below it, the
clips in one of three layouts::

    audioset/
        class_labels_indices.csv        index,mid,display_name
        balanced_train_segments.csv     # 3 header lines, then
        unbalanced_train_segments.csv   #   YTID, start_seconds, end_seconds,
        eval_segments.csv               #   "label,label"  (quoted MIDs)
        (metadata/...                    the same lists in a subfolder)
        <YTID>.wav | <YTID>.flac        layout "ytid" (any subfolder; also
                                        Y<YTID>.wav)
        Y<YTID>_<start>_<end>.wav       layout "segment" (start/end like 30.000)
        audio/{bal_train,unbal_train,eval}/<YTID>.flac
                                        layout "hf" (the Hugging Face dataset)

``layout="auto"`` picks ``hf`` when ``audio/bal_train``, ``audio/unbal_train``
or ``audio/eval`` exists, else the naming most files under the audio folder
follow. One CSV per set (``balanced_train.csv``, ``unbalanced_train.csv``,
``eval.csv``; columns ``ID,duration,wav,labels``, ``ID`` the YTID, ``labels``
the space-separated MIDs), plus ``train.csv`` (the chosen train sets together)
and ``valid.csv`` (``eval``) for the pretraining recipe, and
``class_labels_indices.csv`` (the vocabulary) in the save folder. Segments
whose clip is not on disk are counted and listed in ``skipped.csv``.

Example
-------
>>> parse_segment_line('--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"')
('--PJHxphWEs', '30.000', '40.000', ['/m/09x0r', '/t/dd00088'])

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import collections
import csv
import logging
import os
import re
import shutil
from collections.abc import Sequence

from bestrq2_lobes.data.files import atomic_open
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

VOCABULARY = "class_labels_indices.csv"
#: set name -> (its segment list, its folder in the Hugging Face layout)
SETS = {
    "balanced_train": ("balanced_train_segments.csv", "bal_train"),
    "unbalanced_train": ("unbalanced_train_segments.csv", "unbal_train"),
    "eval": ("eval_segments.csv", "eval"),
}
TRAIN_SETS = ("balanced_train", "unbalanced_train")
VALID_SET = "eval"
LAYOUTS = ("auto", "ytid", "segment", "hf")
METADATA_FOLDERS = ("", "metadata")
EXTENSIONS = (".wav", ".flac")
_YTID = r"[A-Za-z0-9_-]{11}"
_SEGMENT_NAME = re.compile(rf"^Y({_YTID})_(\d+(?:\.\d+)?)_(\d+(?:\.\d+)?)$")
_YTID_NAME = re.compile(rf"^Y?({_YTID})$")


def seconds_key(value: str) -> str:
    """A segment time as AudioSet file names write it (3 decimals).

    Example
    -------
    >>> seconds_key("30"), seconds_key("0.5")
    ('30.000', '0.500')
    """
    return f"{float(value):.3f}"


def parse_segment_line(line: str) -> tuple[str, str, str, list[str]] | None:
    """``(YTID, start, end, labels)`` of one line of a segment list.

    Arguments
    ---------
    line : str
        A line such as ``YTID, 30.000, 40.000, "/m/a,/m/b"``.

    Returns
    -------
    tuple or None
        None for a ``#`` comment or a blank line.

    Raises
    ------
    ValueError
        A line that is not four fields with numeric times.

    Example
    -------
    >>> parse_segment_line("# YTID, start_seconds, end_seconds, positive_labels")
    >>> parse_segment_line("abc, x, 1, /m/a")
    Traceback (most recent call last):
    ...
    ValueError: start/end are not numbers: 'x', '1'
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    try:
        fields = next(csv.reader([text], skipinitialspace=True))
    except csv.Error as err:
        raise ValueError(str(err)) from None
    if len(fields) != 4:
        raise ValueError(f"{len(fields)} fields, expected 4")
    ytid, start, end, labels = (f.strip() for f in fields)
    try:
        float(start), float(end)
    except ValueError:
        raise ValueError(f"start/end are not numbers: {start!r}, {end!r}") from None
    if not ytid:
        raise ValueError("empty YTID")
    return ytid, start, end, [m.strip() for m in labels.split(",") if m.strip()]


def read_segments(path: str) -> tuple[list[tuple], list[dict]]:
    """The segments of one list and a refused row per malformed line.

    Raises
    ------
    PrepareError
        Not one line of the file is a segment.
    """
    segments, bad = [], []
    with open(path, encoding="utf-8") as fin:
        for number, line in enumerate(fin, 1):
            try:
                parsed = parse_segment_line(line)
            except ValueError as err:
                bad.append(refused(f"{path}:{number}", f"refused: malformed ({err})"))
                continue
            if parsed is not None:
                segments.append(parsed)
    if not segments and bad:
        raise PrepareError(
            f"{path}: not an AudioSet segment list (line {bad[0]['file']}: "
            f"{bad[0]['reason']})"
        )
    return segments, bad


def read_vocabulary(path: str) -> dict[str, str]:
    """MID -> display name, from ``class_labels_indices.csv``.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "v.csv").write('index,mid,display_name\\n0,/m/09x0r,"Speech, x"\\n')
    >>> read_vocabulary(str(tmp / "v.csv"))
    {'/m/09x0r': 'Speech, x'}
    """
    with open(path, newline="", encoding="utf-8") as fin:
        reader = csv.DictReader(fin)
        absent = [
            c
            for c in ("index", "mid", "display_name")
            if c not in (reader.fieldnames or [])
        ]
        if absent:
            raise PrepareError(
                f"{path}: missing column {absent[0]!r} (want index,mid,display_name)"
            )
        vocabulary = {row["mid"].strip(): row["display_name"] for row in reader}
    if not vocabulary:
        raise PrepareError(f"{path}: no label listed")
    return vocabulary


def metadata_folder(data_folder: str, sets: Sequence[str]) -> str:
    """The folder holding the lists: the root or its ``metadata/`` (one-line error)."""
    for sub in METADATA_FOLDERS:
        if os.path.isfile(os.path.join(data_folder, sub, VOCABULARY)):
            break
    else:
        sub = ""
    lists = [os.path.join(sub, VOCABULARY)]
    lists += [os.path.join(sub, SETS[name][0]) for name in sets]
    require(
        data_folder,
        "AudioSet",
        *lists,
        hint="the folder holding the segment lists and class_labels_indices.csv, "
        "or their metadata/ subfolder",
    )
    return sub


def check_sets(sets: Sequence[str]) -> list[str]:
    """The set names, checked (one-line error on an unknown one).

    Example
    -------
    >>> check_sets(["eval", "train"])
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.preparation.PrepareError: unknown AudioSet set 'train'...
    """
    if isinstance(sets, str):
        sets = [sets]
    sets = list(dict.fromkeys(sets))
    for name in sets:
        if name not in SETS:
            raise PrepareError(
                f"unknown AudioSet set {name!r}; known: {', '.join(SETS)}"
            )
    if not sets:
        raise PrepareError("sets: give at least one AudioSet set")
    return sets


def _hf_base(audio: str) -> str | None:
    """The folder holding ``bal_train/`` etc. (``audio`` or ``audio/audio``).

    A set folder counts when it holds a ``<YTID>.flac`` (not a folder of
    segment-named clips that happens to be called ``eval``).
    """
    for base in (audio, os.path.join(audio, "audio")):
        for _, name in SETS.values():
            folder = os.path.join(base, name)
            if not os.path.isdir(folder):
                continue
            with os.scandir(folder) as entries:
                for entry in entries:
                    stem, ext = os.path.splitext(entry.name)
                    if ext == ".flac" and re.fullmatch(_YTID, stem):
                        return base
    return None


def scan_clips(audio: str) -> tuple[dict, dict, collections.Counter]:
    """Clip files under ``audio``: by YTID, by segment name, and the extensions."""
    by_ytid, by_segment, extensions = {}, {}, collections.Counter()
    for root, dirs, files in os.walk(audio):
        dirs.sort()
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in EXTENSIONS:
                continue
            path = os.path.join(root, name)
            match = _SEGMENT_NAME.match(stem)
            if match:
                ytid, start, end = match.groups()
                key = (ytid, seconds_key(start), seconds_key(end))
                by_segment.setdefault(key, path)
                extensions[ext] += 1
                continue
            match = _YTID_NAME.match(stem)
            if match:
                by_ytid.setdefault(match.group(1), path)
                extensions[ext] += 1
    return by_ytid, by_segment, extensions


def collect(
    data_folder: str,
    meta: str,
    sets: Sequence[str],
    audio_folder: str | None,
    layout: str,
) -> tuple[list[Clip], list[dict]]:
    """The clips of the chosen sets found on disk; the refused and missing rows."""
    vocabulary = read_vocabulary(os.path.join(data_folder, meta, VOCABULARY))
    audio = os.path.join(data_folder, audio_folder or "")
    hf_base = _hf_base(audio) if layout in ("auto", "hf") else None
    if layout == "hf" and hf_base is None:
        raise PrepareError(
            f"layout hf: no {'/, '.join(d for _, d in SETS.values())}/ under "
            f"{os.path.join(audio, 'audio')!r}"
        )
    by_ytid, by_segment, extensions = ({}, {}, collections.Counter())
    if hf_base is not None:
        layout = "hf"
    else:
        by_ytid, by_segment, extensions = scan_clips(audio)
        if layout == "auto":
            if not by_ytid and not by_segment:
                raise PrepareError(
                    f"no AudioSet clip under {audio!r}: expected <YTID>.wav|.flac, "
                    "Y<YTID>_<start>_<end>.wav or audio/bal_train/<YTID>.flac"
                )
            layout = "segment" if len(by_segment) >= len(by_ytid) else "ytid"
    ext = extensions.most_common(1)[0][0] if extensions else ".wav"
    logger.info("audioset: clips in layout %r under %s", layout, audio)
    clips, skipped, seen = [], [], {}
    for name in sets:
        listing, hf_dir = SETS[name]
        segments, bad = read_segments(os.path.join(data_folder, meta, listing))
        skipped += bad
        absent = 0
        for ytid, start, end, labels in segments:
            start, end = seconds_key(start), seconds_key(end)
            if layout == "hf":
                path = os.path.join(hf_base, hf_dir, f"{ytid}.flac")
                found = path if os.path.isfile(path) else None
            elif layout == "segment":
                path = os.path.join(audio, f"Y{ytid}_{start}_{end}.wav")
                found = by_segment.get((ytid, start, end))
            else:
                path = os.path.join(audio, f"{ytid}{ext}")
                found = by_ytid.get(ytid)
            path = found or path
            unknown = [m for m in labels if m not in vocabulary]
            if unknown:
                skipped.append(
                    refused(path, f"label {unknown[0]!r} not in {VOCABULARY}")
                )
                continue
            if not labels:
                skipped.append(refused(path, f"no label (listed in {listing})"))
                continue
            if ytid in seen:
                skipped.append(
                    refused(path, f"refused: {ytid} is listed in {seen[ytid]} too")
                )
                continue
            if found is None:
                skipped.append(missing(path, listing))
                absent += 1
                continue
            seen[ytid] = listing
            clips.append(Clip(ytid, found, name, {"labels": " ".join(labels)}))
        logger.info(
            "audioset %s: %d of %d segments have no clip on disk",
            name,
            absent,
            len(segments),
        )
    return clips, skipped


def check_audio_folder(data_folder: str, audio: str, save_folder: str) -> None:
    """The audio folder exists and does not hold the save folder (one-line errors).

    A save folder inside the watched audio folder would change it at every
    preparation, so a rerun could never be skipped.

    Example
    -------
    >>> tmp = str(getfixture("tmpdir"))
    >>> check_audio_folder(tmp, "", os.path.join(tmp, "prepared"))
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.preparation.PrepareError: save_folder ... is inside ...
    """
    folder = os.path.abspath(os.path.join(data_folder, audio))
    if not os.path.isdir(folder):
        raise PrepareError(f"audio_folder not found: {folder!r}")
    save = os.path.abspath(save_folder)
    if save == folder or save.startswith(folder + os.sep):
        raise PrepareError(
            f"save_folder {save!r} is inside the audio folder {folder!r}: "
            "give a save folder outside it (or audio_folder, e.g. audio)"
        )


def _concatenate(sources: Sequence[str], target: str) -> None:
    """Writes the rows of CSVs with one header into one CSV (the header once)."""
    with atomic_open(target, newline="") as fout:
        for number, source in enumerate(sources):
            with open(source, encoding="utf-8", newline="") as fin:
                header = fin.readline()
                if number == 0:
                    fout.write(header)
                shutil.copyfileobj(fin, fout)


def _train_valid(save_folder: str, vocabulary: str):
    """``extra_outputs``: ``train.csv``, ``valid.csv`` and the vocabulary copy."""

    def extra(kept: dict) -> dict:
        outputs = {}
        train = [os.path.join(save_folder, f"{s}.csv") for s in TRAIN_SETS if s in kept]
        if train:
            outputs["train_csv"] = os.path.join(save_folder, "train.csv")
            _concatenate(train, outputs["train_csv"])
        if VALID_SET in kept:
            outputs["valid_csv"] = os.path.join(save_folder, "valid.csv")
            _concatenate(
                [os.path.join(save_folder, f"{VALID_SET}.csv")], outputs["valid_csv"]
            )
        outputs["vocabulary_file"] = os.path.join(save_folder, VOCABULARY)
        shutil.copyfile(vocabulary, outputs["vocabulary_file"])
        return outputs

    return extra


@corpus_preparer
def prepare_audioset(
    data_folder: str,
    save_folder: str,
    sets: Sequence[str] = ("balanced_train", "unbalanced_train", "eval"),
    audio_folder: str | None = None,
    layout: str = "auto",
    min_seconds: float = 1.0,
    check: str = "decode",
    jobs: int | None = None,
    progress: bool = True,
    skip_prep: bool = False,
) -> dict:
    """Prepares AudioSet (the segment lists and the clips on disk) into CSVs.

    Arguments
    ---------
    data_folder : str
        The root: holds ``class_labels_indices.csv`` and the segment lists
        (or a ``metadata/`` subfolder with them), and the clips below it.
    save_folder : str
        Where ``<set>.csv``, ``train.csv``, ``valid.csv``, the vocabulary and
        ``skipped.csv`` go.
    sets : Sequence[str]
        Of ``balanced_train``, ``unbalanced_train``, ``eval``.
    audio_folder : str | None
        The clips' folder, relative to the root or absolute (None: the root;
        searched recursively, e.g. ``audio/`` or one folder per set).
    layout : str
        ``auto``, ``ytid`` (``<YTID>.wav|.flac``), ``segment``
        (``Y<YTID>_<start>_<end>.wav``) or ``hf``
        (``audio/{bal_train,unbal_train,eval}/<YTID>.flac``).
    min_seconds : float
        Shorter clips are skipped.
    check : str
        ``decode`` (every clip decoded: hours for the 2 M clips; ``header`` is
        much faster), ``header`` or ``none``.
    jobs : int | None
        Worker processes for the checks (None: the CPUs available).
    progress : bool
        Show a progress bar.
    skip_prep : bool
        Prepare nothing; return the earlier outputs.

    Returns
    -------
    dict
        ``<set>_csv`` per set with clips, ``train_csv`` and ``valid_csv``,
        ``vocabulary_file``, ``skipped_csv``, ``data_root`` and counts.

    Example
    -------
    >>> prepare_audioset(str(getfixture("tmpdir")), "unused")
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.preparation.PrepareError: ... expected class_labels_...
    """
    sets = check_sets(sets)
    if layout not in LAYOUTS:
        raise PrepareError(
            f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}"
        )
    meta = "" if skip_prep else metadata_folder(data_folder, sets)
    lists = [os.path.join(meta, VOCABULARY)]
    lists += [os.path.join(meta, SETS[name][0]) for name in sets]
    audio = audio_folder or ""
    if not skip_prep:
        check_audio_folder(data_folder, audio, save_folder)
    return prepare(
        "audioset",
        data_folder,
        save_folder,
        {"sets": sets, "audio_folder": audio_folder, "layout": layout},
        [*lists, audio or "."],
        lambda: collect(data_folder, meta, sets, audio_folder, layout),
        fields=("labels",),
        skip_prep=skip_prep,
        min_seconds=min_seconds,
        check=check,
        jobs=jobs,
        progress=progress,
        extra_outputs=_train_valid(
            save_folder, os.path.join(data_folder, meta, VOCABULARY)
        ),
    )
