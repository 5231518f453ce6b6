"""Corpus preparers: public corpora in their official layouts to SpeechBrain CSVs.

One module per corpus, each with one ``prepare_<corpus>(data_folder,
save_folder, ..., skip_prep=False)`` in SpeechBrain's habit: it checks that
``data_folder`` is the corpus root (one line naming the expected file
otherwise), reads the corpus's own metadata, checks every clip (missing,
unreadable and too short clips go to ``skipped.csv`` with the reason) and
writes one CSV per split with ``$data_root`` paths. A rerun with the same
options on unchanged files does nothing. The shared frame is
:mod:`bestrq2_lobes.datasets.preparation`; the recipes call a preparer through
:mod:`bestrq2_lobes.datasets.recipe_data`; the shell command is::

    python -m bestrq2_lobes.datasets list
    python -m bestrq2_lobes.datasets prepare esc50 /data/ESC-50-master prep/esc50

This layer imports only from ``data``; ``docs/datasets.md`` gives each
corpus's layout, split, protocol and command.

Example
-------
>>> "esc50" in CORPORA and get_preparer("esc50").__name__
'prepare_esc50'

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from bestrq2_lobes.datasets.preparation import PrepareError

#: corpus name -> its module under ``bestrq2_lobes.datasets`` (the function is
#: ``prepare_<corpus>``), in the order of ``docs/datasets.md``
CORPORA = {
    "audioset": "audioset",
    "librispeech": "librispeech",
    "librilight": "librilight",
    "magnatagatune": "magnatagatune",
    "gtzan": "gtzan",
    "desed": "desed",
    "urbansed": "urbansed",
    "esc50": "esc50",
    "urbansound8k": "urbansound8k",
    "speech_commands": "speech_commands",
    "voxceleb1": "voxceleb1",
    "cremad": "cremad",
    "nsynth": "nsynth",
    "fsd50k": "fsd50k",
}


def get_preparer(corpus: str) -> Callable[..., dict]:
    """The ``prepare_<corpus>`` function of a corpus name.

    Raises
    ------
    PrepareError
        An unknown name (the message lists the known ones).
    """
    if corpus not in CORPORA:
        raise PrepareError(
            f"unknown corpus {corpus!r}; known: {', '.join(sorted(CORPORA))}"
        )
    module = importlib.import_module(f"{__name__}.{CORPORA[corpus]}")
    return getattr(module, f"prepare_{corpus}")


__all__ = ["CORPORA", "PrepareError", "get_preparer"]
