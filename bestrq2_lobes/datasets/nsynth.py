"""NSynth: 305,979 four-second musical notes, instrument family (11 classes).

Layout of the official archives (``nsynth-{train,valid,test}.jsonwav.tar.gz``,
each unpacking to its own folder; put the three in one root)::

    nsynth/
        nsynth-train/examples.json     {note_str: {instrument_family_str, ...}}
        nsynth-train/audio/<note_str>.wav    e.g. bass_synthetic_033-022-050.wav
        nsynth-valid/examples.json, nsynth-valid/audio/
        nsynth-test/examples.json, nsynth-test/audio/

The split is the official one (Engel et al., ICML 2017, "Neural Audio Synthesis
of Musical Notes with WaveNet Autoencoders"; its instruments do not overlap
between train and valid/test). The label is ``instrument_family_str`` (the
X-ARES task), or ``instrument_source_str`` with ``label="instrument_source"``.
CSV columns: ``ID,duration,wav,label,instrument,pitch``.

Example
-------
>>> len(FAMILIES), FAMILIES[9], SOURCES
(11, 'synth_lead', ('acoustic', 'electronic', 'synthetic'))

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import json
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

SPLITS = ("train", "valid", "test")
#: the instrument families in the order of ``instrument_family``
FAMILIES = (
    "bass",
    "brass",
    "flute",
    "guitar",
    "keyboard",
    "mallet",
    "organ",
    "reed",
    "string",
    "synth_lead",
    "vocal",
)
#: the instrument sources in the order of ``instrument_source``
SOURCES = ("acoustic", "electronic", "synthetic")
LABELS = {"instrument_family": FAMILIES, "instrument_source": SOURCES}


def examples_file(split: str) -> str:
    """``nsynth-<split>/examples.json``."""
    return f"nsynth-{split}/examples.json"


def read_examples(
    data_folder: str, splits: Sequence[str], label: str
) -> tuple[list[Clip], list[dict]]:
    """The notes of each split's ``examples.json`` and the skipped entries.

    Arguments
    ---------
    data_folder : str
        The root holding the ``nsynth-<split>/`` folders.
    splits : Sequence[str]
        Which of train, valid and test.
    label : str
        ``instrument_family`` or ``instrument_source``.

    Returns
    -------
    (list of Clip, list of dict)

    Example
    -------
    >>> root = getfixture("tmpdir")
    >>> _ = (root / "nsynth-test").mkdir()
    >>> _ = (root / "nsynth-test" / "examples.json").write(json.dumps(
    ...     {"bass_synthetic_033-022-050": {"instrument_family_str": "bass",
    ...      "instrument_family": 0, "instrument_str": "bass_synthetic_033",
    ...      "pitch": 22}}))
    >>> clips, skipped = read_examples(str(root), ["test"], "instrument_family")
    >>> clips, skipped[0]["reason"]
    ([], 'missing (listed in nsynth-test/examples.json)')
    """
    vocabulary = LABELS[label]
    clips, skipped = [], []
    for split in splits:
        meta = examples_file(split)
        path = os.path.join(data_folder, meta)
        try:
            with open(path, encoding="utf-8") as fin:
                examples = json.load(fin)
        except ValueError as err:
            raise PrepareError(f"{path}: not JSON ({err})") from None
        if not isinstance(examples, dict):
            raise PrepareError(f"{path}: expected a JSON object of notes")
        for note, info in sorted(examples.items()):
            wav = os.path.join(data_folder, f"nsynth-{split}", "audio", f"{note}.wav")
            name = info.get(f"{label}_str") if isinstance(info, dict) else None
            if name not in vocabulary:
                skipped.append(refused(wav, f"label {name!r} is not an NSynth {label}"))
                continue
            index = info.get(label)
            if index is not None and str(index) != str(vocabulary.index(name)):
                skipped.append(
                    refused(wav, f"label {name!r} does not match {label} {index!r}")
                )
                continue
            if not os.path.isfile(wav):
                skipped.append(missing(wav, meta))
                continue
            fields = {
                "label": name,
                "instrument": info.get("instrument_str", ""),
                "pitch": info.get("pitch", ""),
            }
            clips.append(Clip(note, wav, split, fields))
    return clips, skipped


@corpus_preparer
def prepare_nsynth(
    data_folder: str,
    save_folder: str,
    label: str = "instrument_family",
    splits: Sequence[str] = SPLITS,
    min_seconds: float = 0.5,
    check: str = "decode",
    jobs: int | None = None,
    progress: bool = True,
    skip_prep: bool = False,
) -> dict:
    """Prepares NSynth (official layout and split) for instrument classification.

    Arguments
    ---------
    data_folder : str
        The root holding ``nsynth-train/``, ``nsynth-valid/``, ``nsynth-test/``.
    save_folder : str
        Where ``train.csv``, ``valid.csv``, ``test.csv`` and ``skipped.csv`` go.
    label : str
        ``instrument_family`` (11 classes) or ``instrument_source`` (3).
    splits : Sequence[str]
        The splits to prepare (the train archive alone is 22 GB).
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
        ``<split>_csv`` per split, ``skipped_csv``, ``data_root`` and counts.

    Example
    -------
    >>> prepare_nsynth(str(getfixture("tmpdir")), "unused")
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.preparation.PrepareError: ... nsynth-train/examples.json...
    """
    if label not in LABELS:
        raise PrepareError(
            f"nsynth: label must be one of {list(LABELS)}, not {label!r}"
        )
    splits = list(splits)
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise PrepareError(f"nsynth: splits must be among {list(SPLITS)}, not {splits}")
    watched = [p for s in splits for p in (examples_file(s), f"nsynth-{s}/audio")]
    if not skip_prep:
        require(
            data_folder,
            "NSynth",
            *watched,
            hint="the folder holding the unpacked nsynth-<split>/ folders",
        )
    return prepare(
        "nsynth",
        data_folder,
        save_folder,
        {"label": label, "splits": splits},
        watched,
        lambda: read_examples(data_folder, splits, label),
        fields=("label", "instrument", "pitch"),
        skip_prep=skip_prep,
        min_seconds=min_seconds,
        check=check,
        jobs=jobs,
        progress=progress,
    )
