"""MagnaTagATune: 25,863 music clips of 29 s with 188 binary tags.

Layout of the official download (Law et al., ISMIR 2009; the mp3 archive
``mp3.zip.001``-``003`` and ``annotations_final.csv``)::

    magnatagatune/
        annotations_final.csv    TAB-separated, every field double-quoted:
                                 clip_id, 188 tag columns (0/1), mp3_path
        0/ ... f/                the mp3s (16 kHz mono), e.g.
            f/american_bach_soloists-j_s__bach_solo_cantatas-01-bwv54__i_aria-30-59.mp3

The protocol most papers follow (Dieleman & Schrauwen, ICASSP 2014; Pons et
al., ISMIR 2018; Won et al., "Evaluation of CNN-based automatic music tagging
models", SMC 2020): the 50 most frequent tags over the whole annotation file,
the split by folder (``0``-``b`` train, ``c`` valid, ``d``-``f`` test, 12:1:3),
and clips with none of the 50 tags left out. Columns ``ID,duration,wav,tags``
(space-separated tags, a space inside a tag name written ``_``).

Example
-------
>>> tag_name("no vocals"), split_of("c/x.mp3"), split_of("0/y.mp3")
('no_vocals', 'valid', 'train')

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import csv
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

META = "annotations_final.csv"
FOLDERS = "0123456789abcdef"
#: the folder of an mp3 -> its split (Dieleman & Schrauwen 2014)
SPLIT_OF_FOLDER = {
    **{f: "train" for f in "0123456789ab"},
    "c": "valid",
    **{f: "test" for f in "def"},
}
#: the top-50 tags of the full annotation file, most frequent first (as
#: listed by Won et al. 2020); the preparer counts them from the file itself
TOP50 = (
    "guitar classical slow techno strings drums electronic rock fast piano "
    "ambient beat violin vocal synth female indian opera male singing vocals "
    "no_vocals harpsichord loud quiet flute woman male_vocal no_vocal pop soft "
    "sitar solo man classic choir voice new_age dance male_voice female_vocal "
    "beats harp cello no_voice weird country metal female_voice choral"
).split()


def tag_name(tag: str) -> str:
    """A tag as written in the ``tags`` column (spaces become ``_``)."""
    return "_".join(tag.split())


def split_of(mp3_path: str) -> str | None:
    """The split of an ``mp3_path`` by its folder (None: not ``0``-``f``)."""
    folder = mp3_path.replace("\\", "/").split("/")[0]
    return SPLIT_OF_FOLDER.get(folder)


def read_annotations(path: str) -> tuple[list[str], list[dict]]:
    """The tag names and the rows (``clip_id``, ``mp3_path``, ``tags``: 0/1 strings).

    Arguments
    ---------
    path : str
        ``annotations_final.csv`` (tab-separated, fields quoted or not).

    Returns
    -------
    (list of str, list of dict)
        The tag columns in file order; per row ``clip_id``, ``mp3_path``,
        ``values`` (the raw cell of each tag, in that order) and ``line``.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "a.csv").write('"clip_id"\\t"no voice"\\t"rock"\\t"mp3_path"\\n'
    ...                           '"2"\\t"0"\\t"1"\\t"f/a-b-01-c-30-59.mp3"\\n')
    >>> tags, rows = read_annotations(str(tmp / "a.csv"))
    >>> tags, rows[0]["values"], rows[0]["mp3_path"]
    (['no voice', 'rock'], ['0', '1'], 'f/a-b-01-c-30-59.mp3')
    """
    with open(path, newline="", encoding="utf-8") as fin:
        reader = csv.reader(fin, delimiter="\t")
        header = next(reader, [])
        if len(header) < 3 or header[0] != "clip_id" or header[-1] != "mp3_path":
            raise PrepareError(
                f"{path}: the header must be clip_id, the tag columns, mp3_path "
                f"(tab-separated; found {' '.join(header[:2]) or 'nothing'} ...)"
            )
        tags = header[1:-1]
        rows = []
        for line, cells in enumerate(reader, start=2):
            if not cells:
                continue
            if len(cells) != len(header):
                raise PrepareError(
                    f"{path}:{line}: {len(cells)} fields, the header has {len(header)}"
                )
            rows.append(
                {
                    "clip_id": cells[0],
                    "values": cells[1:-1],
                    "mp3_path": cells[-1],
                    "line": line,
                }
            )
    return tags, rows


def top_tags(tags: Sequence[str], rows: Sequence[dict], count: int) -> list[str]:
    """The ``count`` most frequent tags (ties: file order); 0 or less: all.

    Example
    -------
    >>> rows = [{"values": ["1", "0", "1"]}, {"values": ["0", "0", "1"]}]
    >>> top_tags(["a", "b", "c"], rows, 2)
    ['c', 'a']
    """
    if count <= 0 or count >= len(tags):
        return list(tags)
    totals = [0] * len(tags)
    for row in rows:
        for i, value in enumerate(row["values"]):
            totals[i] += value == "1"
    order = sorted(range(len(tags)), key=lambda i: (-totals[i], i))
    return [tags[i] for i in order[:count]]


def read_meta(
    data_folder: str, audio_folder: str, count: int, keep_untagged: bool
) -> tuple[list[Clip], list[dict]]:
    """The clips of ``annotations_final.csv`` with their top tags, and refusals."""
    tags, rows = read_annotations(os.path.join(data_folder, META))
    vocabulary = set(top_tags(tags, rows, count))
    clips, skipped = [], []
    for row in rows:
        rel = row["mp3_path"]
        path = os.path.join(audio_folder, rel)
        where = path if rel else f"{META}:{row['line']}"
        bad = [v for v in row["values"] if v not in ("0", "1")]
        if bad:
            skipped.append(refused(where, f"label value {bad[0]!r} is not 0 or 1"))
            continue
        split = split_of(rel)
        if split is None:
            skipped.append(refused(where, "refused: mp3_path not in a folder 0-f"))
            continue
        chosen = [
            tag_name(t)
            for t, v in zip(tags, row["values"], strict=True)
            if v == "1" and t in vocabulary
        ]
        if not chosen and not keep_untagged:
            which = f"the top-{count} tags" if 0 < count < len(tags) else "the tags"
            skipped.append(refused(path, f"label: none of {which}"))
            continue
        if not os.path.isfile(path):
            skipped.append(missing(path, META))
            continue
        clips.append(Clip(row["clip_id"], path, split, {"tags": " ".join(chosen)}))
    return clips, skipped


@corpus_preparer
def prepare_magnatagatune(
    data_folder: str,
    save_folder: str,
    top: int = 50,
    keep_untagged: bool = False,
    audio_folder: str | None = None,
    min_seconds: float = 1.0,
    check: str = "decode",
    jobs: int | None = None,
    progress: bool = True,
    skip_prep: bool = False,
) -> dict:
    """Prepares MagnaTagATune (official layout): top-50 tags, the common split.

    Arguments
    ---------
    data_folder : str
        The root: holds ``annotations_final.csv`` and the folders ``0``-``f``.
    save_folder : str
        Where ``train.csv``, ``valid.csv``, ``test.csv`` and ``skipped.csv`` go.
    top : int
        Keep the ``top`` most frequent tags (0: all 188).
    keep_untagged : bool
        Keep clips with none of those tags (an empty ``tags``); most papers
        leave them out (the default).
    audio_folder : str, optional
        Where the folders ``0``-``f`` are (None: the root; relative to it).
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
    >>> prepare_magnatagatune(str(getfixture("tmpdir")), "unused")
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.preparation.PrepareError: ... annotations_final.csv ...
    """
    audio = os.path.join(data_folder, audio_folder or "")
    if not skip_prep:
        require(
            data_folder,
            "MagnaTagATune",
            META,
            hint="the folder with annotations_final.csv and the mp3 folders 0-f",
        )
        if not any(os.path.isdir(os.path.join(audio, f)) for f in FOLDERS):
            raise PrepareError(
                f"{audio!r} holds none of the MagnaTagATune mp3 folders 0-f "
                "(unpack mp3.zip.001-003 there, or set audio_folder)"
            )
    watched = [META] + [os.path.join(audio, f) for f in FOLDERS]
    return prepare(
        "magnatagatune",
        data_folder,
        save_folder,
        {"top": top, "keep_untagged": keep_untagged, "audio_folder": audio_folder},
        watched,
        lambda: read_meta(data_folder, audio, top, keep_untagged),
        fields=("tags",),
        skip_prep=skip_prep,
        min_seconds=min_seconds,
        check=check,
        jobs=jobs,
        progress=progress,
    )
