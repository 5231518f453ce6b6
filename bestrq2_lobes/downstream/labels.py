"""A run's label set, saved once and checked on every rerun.

The order of the labels is the order of a head's output units, which are
checkpointed: a run resumed in the same folder must see the same label set.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from bestrq2_lobes.data.files import atomic_open


class LabelError(ValueError):
    """A label column, label file or label set is unusable (one-line message)."""


def save_labels(path: str | os.PathLike, labels: Sequence[str], **meta) -> None:
    """Writes ``{"labels": [...], **meta}`` as JSON, atomically.

    Example
    -------
    >>> path = getfixture("tmpdir") / "labels.json"
    >>> save_labels(path, ["a", "b"], label_column="tags")
    >>> load_labels(path)
    ['a', 'b']
    """
    with atomic_open(path) as fout:
        json.dump({**meta, "labels": list(labels)}, fout, indent=1)


def load_labels(path: str | os.PathLike) -> list[str]:
    """Reads a label set written by ``save_labels`` (or a plain JSON list).

    Example
    -------
    >>> path = getfixture("tmpdir") / "old.json"
    >>> _ = path.write('["x", "y"]')
    >>> load_labels(path)
    ['x', 'y']
    """
    with open(path, encoding="utf-8") as fin:
        saved = json.load(fin)
    labels = saved.get("labels") if isinstance(saved, dict) else saved
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise LabelError(f"{os.fspath(path)}: not a label set (a JSON list of labels)")
    return labels


def keep_label_set(
    path: str | os.PathLike, labels: Sequence[str], source: str, **meta
) -> list[str]:
    """Saves ``labels`` at ``path`` on the first run; later runs must match it.

    Arguments
    ---------
    path : str or PathLike
        The run's label file.
    labels : sequence of str
        The label set found in the training data now.
    source : str
        Where ``labels`` come from, for the error message.
    **meta
        Extra keys saved beside the labels.

    Returns
    -------
    list of str

    Example
    -------
    >>> path = getfixture("tmpdir") / "labels.json"
    >>> keep_label_set(path, ["a", "b"], "train.csv")
    ['a', 'b']
    >>> try:
    ...     keep_label_set(path, ["c"], "other.csv")
    ... except LabelError as err:
    ...     print(err)
    /...labels.json was made from other labels (2 labels, 1 in other.csv now): ...
    """
    labels = list(labels)
    if os.path.isfile(path):
        saved = load_labels(path)
        if saved != labels:
            raise LabelError(
                f"{os.fspath(path)} was made from other labels ({len(saved)} "
                f"labels, {len(labels)} in {source} now): use a new --output_folder"
            )
        return labels
    save_labels(path, labels, **meta)
    return labels
