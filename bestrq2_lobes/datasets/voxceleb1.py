"""VoxCeleb1 speaker identification: 153,516 utterances of 1,251 speakers.

Layout: the two audio archives of the official release and the identification
split file (``iden_split.txt``, downloaded beside them from the VoxCeleb
page)::

    VoxCeleb1/
        iden_split.txt                   <1|2|3> id10001/1zcIwhmdeo4/00001.wav
        vox1_dev_wav/wav/id1xxxx/<youtube id>/<nnnnn>.wav    (16 kHz mono)
        vox1_test_wav/wav/id1xxxx/<youtube id>/<nnnnn>.wav

The common alternative, both archives unpacked into one ``wav/`` folder
(``VoxCeleb1/wav/id1xxxx/...``), is found too; so is a split file elsewhere
(``split_file``, absolute or relative to the root).

The split is the official identification split (Nagrani et al., Interspeech
2017, "VoxCeleb: a large-scale speaker identification dataset"): code 1 is
``train``, 2 ``valid``, 3 ``test``; every speaker is in all three. CSV columns:
``ID,duration,wav,label,video`` (``label`` is the speaker ID).

Example
-------
>>> SPLIT_CODES["3"], is_speaker("id10001"), is_speaker("10001")
('test', True, False)

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import os
import re

from bestrq2_lobes.datasets.preparation import (
    Clip,
    PrepareError,
    corpus_preparer,
    missing,
    prepare,
    refused,
    require,
)

SPLIT_FILE = "iden_split.txt"
#: where the audio may sit, in the order searched
AUDIO_ROOTS = ("wav", "vox1_dev_wav/wav", "vox1_test_wav/wav")
SPLIT_CODES = {"1": "train", "2": "valid", "3": "test"}
SPEAKER_RE = re.compile(r"^id\d{5}$")


def is_speaker(name: str) -> bool:
    """Whether a name is a VoxCeleb1 speaker ID (``id`` and five digits)."""
    return bool(SPEAKER_RE.match(name))


def parse_split_line(line: str) -> tuple[str, str] | None:
    """``(code, id/video/utt.wav)`` of a line of ``iden_split.txt``, or None.

    Example
    -------
    >>> parse_split_line("1 id10001/1zcIwhmdeo4/00001.wav\\n")
    ('1', 'id10001/1zcIwhmdeo4/00001.wav')
    >>> parse_split_line("   ") is None, parse_split_line("1 a b") is None
    (True, True)
    """
    words = line.split()
    if len(words) != 2:
        return None
    return words[0], words[1].replace("\\", "/")


def audio_roots(data_folder: str) -> list[str]:
    """The audio folders present under the root (absolute), in search order."""
    return [
        os.path.join(data_folder, rel)
        for rel in AUDIO_ROOTS
        if os.path.isdir(os.path.join(data_folder, rel))
    ]


def read_split(data_folder: str, split_file: str) -> tuple[list[Clip], list[dict]]:
    """The clips of the identification split and the skipped entries.

    Arguments
    ---------
    data_folder : str
        The corpus root.
    split_file : str
        ``iden_split.txt`` (absolute, or relative to the root).

    Returns
    -------
    (list of Clip, list of dict)
    """
    path = os.path.join(data_folder, split_file)
    roots = audio_roots(data_folder)
    clips, skipped = [], []
    with open(path, encoding="utf-8") as fin:
        lines = [line for line in fin if line.strip()]
    for num, line in enumerate(lines, start=1):
        parsed = parse_split_line(line)
        if parsed is None:
            skipped.append(
                refused(f"{path}:{num}", "refused: not '<1|2|3> <id>/<video>/<n>.wav'")
            )
            continue
        code, rel = parsed
        parts = rel.split("/")
        where = next(
            (
                os.path.join(r, rel)
                for r in roots
                if os.path.isfile(os.path.join(r, rel))
            ),
            os.path.join(roots[0], rel),
        )
        if code not in SPLIT_CODES:
            skipped.append(refused(where, f"refused: split code {code!r} is not 1-3"))
            continue
        if len(parts) != 3 or not is_speaker(parts[0]):
            skipped.append(
                refused(where, f"label {parts[0]!r} is not a VoxCeleb1 speaker ID")
            )
            continue
        if not os.path.isfile(where):
            skipped.append(missing(where, os.path.basename(split_file)))
            continue
        ID = "_".join(parts).removesuffix(".wav")
        fields = {"label": parts[0], "video": parts[1]}
        clips.append(Clip(ID, where, SPLIT_CODES[code], fields))
    return clips, skipped


@corpus_preparer
def prepare_voxceleb1(
    data_folder: str,
    save_folder: str,
    split_file: str = SPLIT_FILE,
    min_seconds: float = 0.5,
    check: str = "decode",
    jobs: int | None = None,
    progress: bool = True,
    skip_prep: bool = False,
) -> dict:
    """Prepares VoxCeleb1 identification (official split) into train/valid/test.

    Arguments
    ---------
    data_folder : str
        The root: holds ``vox1_dev_wav/wav/`` and ``vox1_test_wav/wav/`` (as the
        archives unpack) or one merged ``wav/``.
    save_folder : str
        Where ``train.csv``, ``valid.csv``, ``test.csv`` and ``skipped.csv`` go.
    split_file : str
        The identification split, absolute or relative to the root.
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
    >>> prepare_voxceleb1(str(getfixture("tmpdir")), "unused")
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.preparation.PrepareError: ... expected iden_split.txt...
    """
    if not skip_prep:
        hint = "download iden_split.txt from the VoxCeleb1 page into the root"
        require(data_folder, "VoxCeleb1", split_file, hint=hint)
        if not audio_roots(data_folder):
            raise PrepareError(
                f"{data_folder!r} is not the VoxCeleb1 root: expected "
                "vox1_dev_wav/wav/ (and vox1_test_wav/wav/), or one merged wav/, in it"
            )
    watched = [split_file, *AUDIO_ROOTS]
    return prepare(
        "voxceleb1",
        data_folder,
        save_folder,
        {"split_file": split_file},
        watched,
        lambda: read_split(data_folder, split_file),
        fields=("label", "video"),
        skip_prep=skip_prep,
        min_seconds=min_seconds,
        check=check,
        jobs=jobs,
        progress=progress,
    )
