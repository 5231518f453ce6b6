"""A recipe's ``--corpus NAME --data_folder ROOT``: prepare, then use the CSVs.

SpeechBrain recipes call their corpus's preparer at the top, on the main
process, before the data is loaded; :func:`prepare_corpus` does that for any
corpus of :data:`bestrq2_lobes.datasets.CORPORA` and :func:`fill_manifests`
puts the prepared CSVs where the recipe reads its manifests (``train_csv``,
``valid_csv``, ``test_csv``, ``data_root``), unless the command line gave them.

The hparams keys it reads:

- ``corpus``: a corpus name, or null (the recipe reads given CSVs);
- ``data_folder``: the corpus root;
- ``corpus_options``: a mapping of the preparer's keyword options;
- ``prepare_folder``: where the CSVs go (default ``<output_folder>/prepared``).

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from bestrq2_lobes.datasets import get_preparer
from bestrq2_lobes.datasets.preparation import PrepareError

SPLIT_KEYS = ("train", "valid", "test")


def prepare_corpus(hparams: dict) -> dict | None:
    """Runs the corpus's preparer on the main process; every process gets its outputs.

    Arguments
    ---------
    hparams : dict
        The recipe's hparams (see the module docstring for the keys).

    Returns
    -------
    dict or None
        The preparer's outputs; None when no ``corpus`` is set.

    Raises
    ------
    PrepareError
        No ``data_folder``, an unknown corpus, or a preparation that failed.

    Example
    -------
    >>> prepare_corpus({"corpus": None}) is None
    True
    >>> prepare_corpus({"corpus": "esc50", "data_folder": None})
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.preparation.PrepareError: --corpus esc50 needs ...
    """
    from speechbrain.utils.distributed import ddp_barrier, if_main_process

    corpus = hparams.get("corpus")
    if not corpus:
        return None
    data_folder = hparams.get("data_folder")
    if not data_folder:
        raise PrepareError(f"--corpus {corpus} needs --data_folder, the corpus root")
    preparer = get_preparer(corpus)
    save_folder = hparams.get("prepare_folder") or os.path.join(
        hparams["output_folder"], "prepared"
    )
    kwargs = dict(hparams.get("corpus_options") or {})
    # absolute: a preparer's paths under a relative root would be resolved twice
    kwargs.update(data_folder=data_folder, save_folder=save_folder)
    error = None
    if if_main_process():
        try:
            preparer(**kwargs)
        except PrepareError as err:
            error = err
    ddp_barrier()
    if error is not None:
        raise error
    return preparer(**{**kwargs, "skip_prep": True})


def fill_manifests(
    hparams: dict, outputs: dict | None, splits: Sequence[str] = SPLIT_KEYS
) -> dict:
    """Sets ``<split>_csv`` and ``data_root`` from a preparation, where not given.

    Arguments
    ---------
    hparams : dict
        The recipe's hparams; changed in place.
    outputs : dict or None
        :func:`prepare_corpus`'s result (None: nothing changes).
    splits : Sequence[str]
        The splits the recipe reads.

    Returns
    -------
    dict
        ``hparams``.

    Example
    -------
    >>> h = {"train_csv": None, "valid_csv": "mine.csv", "data_root": None}
    >>> out = {"train_csv": "p/train.csv", "valid_csv": "p/valid.csv",
    ...        "data_root": "/data/c"}
    >>> fill_manifests(h, out, ("train", "valid"))
    {'train_csv': 'p/train.csv', 'valid_csv': 'mine.csv', 'data_root': '/data/c'}
    """
    if outputs is None:
        return hparams
    for split in splits:
        key = f"{split}_csv"
        if not hparams.get(key) and outputs.get(key):
            hparams[key] = outputs[key]
    if not hparams.get("data_root"):
        hparams["data_root"] = outputs["data_root"]
    return hparams
