"""Speech Commands v2: 105,829 one-second utterances of 35 words, official lists.

Layout of the official archive (``speech_commands_v0.02.tar.gz`` unpacks its
content straight into the folder it is extracted in)::

    speech_commands_v0.02/
        <word>/<speaker hash>_nohash_<n>.wav     (16 kHz mono, at most 1 s)
        validation_list.txt    <word>/<file>.wav, one a line
        testing_list.txt
        _background_noise_/    long noise recordings (not clips; left out)
        LICENSE  README.md

The split is the official one (Warden 2018, arXiv:1804.03209): the files of
``validation_list.txt`` are ``valid``, those of ``testing_list.txt`` are
``test``, all others ``train`` (the lists are fixed by a hash of the speaker,
so no speaker is in two splits). CSV columns: ``ID,duration,wav,label,speaker``.

Tasks (``task``):

- ``words35`` (default): the 35 words as 35 classes (version 1 of the corpus
  has 30 of them: it prepares the same way);
- ``commands11``: the 10 command words, the 25 others as ``_unknown_``. The
  ``_silence_`` class of the 12-class benchmark is not made (it needs clips cut
  out of ``_background_noise_``).

Example
-------
>>> len(WORDS), COMMANDS[:3]
(35, ('yes', 'no', 'up'))

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

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

VALID_LIST = "validation_list.txt"
TEST_LIST = "testing_list.txt"
NOISE = "_background_noise_"
COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
#: the 35 words of version 2 (version 1: the first 30)
WORDS = COMMANDS + tuple(
    "zero one two three four five six seven eight nine "
    "bed bird cat dog happy house marvin sheila tree wow "
    "backward forward follow learn visual".split()
)
UNKNOWN = "_unknown_"
TASKS = ("words35", "commands11")


def read_list(path: str) -> set[str]:
    """The ``<word>/<file>.wav`` entries of an official list file.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "l.txt").write("right/a_nohash_0.wav\\n\\nbed\\\\b_nohash_1.wav\\n")
    >>> sorted(read_list(str(tmp / "l.txt")))
    ['bed/b_nohash_1.wav', 'right/a_nohash_0.wav']
    """
    with open(path, encoding="utf-8") as fin:
        return {line.strip().replace("\\", "/") for line in fin if line.strip()}


def label_of(word: str, task: str) -> str:
    """The class of a word in a task.

    Example
    -------
    >>> label_of("stop", "commands11"), label_of("bed", "commands11")
    ('stop', '_unknown_')
    """
    if task == "commands11" and word not in COMMANDS:
        return UNKNOWN
    return word


def word_folders(data_folder: str) -> list[str]:
    """The folders of the root that hold clips (all but ``_background_noise_``)."""
    return sorted(
        name
        for name in os.listdir(data_folder)
        if os.path.isdir(os.path.join(data_folder, name))
        and name != NOISE
        and not name.startswith(".")
    )


def read_corpus(data_folder: str, task: str) -> tuple[list[Clip], list[dict]]:
    """The clips of every word folder, split by the official lists.

    Arguments
    ---------
    data_folder : str
        The corpus root.
    task : str
        ``words35`` or ``commands11``.

    Returns
    -------
    (list of Clip, list of dict)
        The clips, and the skipped entries (refused, or listed and missing).
    """
    lists = {
        "valid": read_list(os.path.join(data_folder, VALID_LIST)),
        "test": read_list(os.path.join(data_folder, TEST_LIST)),
    }
    clips, skipped, found = [], [], set()
    for word in word_folders(data_folder):
        folder = os.path.join(data_folder, word)
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".wav"):
                continue
            rel = f"{word}/{name}"
            found.add(rel)
            wav = os.path.join(folder, name)
            if word not in WORDS:
                skipped.append(
                    refused(wav, f"label {word!r} is not a Speech Commands word")
                )
                continue
            split = next((s for s, files in lists.items() if rel in files), "train")
            fields = {"label": label_of(word, task), "speaker": name.split("_")[0]}
            clips.append(Clip(f"{word}_{name[:-4]}", wav, split, fields))
    for split, files in lists.items():
        listed_in = VALID_LIST if split == "valid" else TEST_LIST
        for rel in sorted(files - found):
            skipped.append(missing(os.path.join(data_folder, rel), listed_in))
    return clips, skipped


@corpus_preparer
def prepare_speech_commands(
    data_folder: str,
    save_folder: str,
    task: str = "words35",
    min_seconds: float = 0.1,
    check: str = "decode",
    jobs: int | None = None,
    progress: bool = True,
    skip_prep: bool = False,
) -> dict:
    """Prepares Speech Commands (v2 or v1, official layout and lists).

    Arguments
    ---------
    data_folder : str
        The root: the folder the archive was extracted in (it holds
        ``validation_list.txt``, ``testing_list.txt`` and the word folders).
    save_folder : str
        Where ``train.csv``, ``valid.csv``, ``test.csv`` and ``skipped.csv`` go.
    task : str
        ``words35`` (each word a class) or ``commands11`` (10 commands and
        ``_unknown_``).
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
    >>> prepare_speech_commands(str(getfixture("tmpdir")), "unused")
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.preparation.PrepareError: ... expected validation_list.txt...
    """
    if task not in TASKS:
        raise PrepareError(
            f"speech_commands: task must be one of {TASKS}, not {task!r}"
        )
    if not skip_prep:
        require(
            data_folder,
            "Speech Commands",
            VALID_LIST,
            TEST_LIST,
            hint="the folder speech_commands_v0.02.tar.gz was extracted in",
        )
        watched = [VALID_LIST, TEST_LIST, *word_folders(data_folder)]
    else:
        watched = []
    return prepare(
        "speech_commands",
        data_folder,
        save_folder,
        {"task": task},
        watched,
        lambda: read_corpus(data_folder, task),
        fields=("label", "speaker"),
        skip_prep=skip_prep,
        min_seconds=min_seconds,
        check=check,
        jobs=jobs,
        progress=progress,
    )
