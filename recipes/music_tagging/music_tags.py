"""Pieces of the music tagging recipe: label set, targets, pooling, head, metrics.

Tags come from one column of the manifests (``tags`` by default) holding the
tags of a clip separated by spaces. The label set is the sorted union of the
tags of the training manifest; tags of other splits that are not in it are
ignored with a warning. A single-label column (one genre per clip) is the
special case of one tag per clip.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import nn

from bestrq2_lobes.downstream.labels import (  # noqa: F401 (the recipe's names)
    LabelError,
    keep_label_set,
    load_labels,
)

logger = logging.getLogger(__name__)

LABELS_FILE = "labels.json"


def split_tags(text: str | None, separator: str | None = None) -> list[str]:
    """The distinct tags of one manifest cell, in order of appearance.

    Arguments
    ---------
    text : str, optional
        The cell; empty or ``None`` means no tag.
    separator : str, optional
        ``None`` splits on any whitespace; otherwise on this string (for tags
        that contain spaces, e.g. ``";"``).

    Returns
    -------
    list of str

    Example
    -------
    >>> split_tags(" piano  drums piano ")
    ['piano', 'drums']
    >>> split_tags("hip hop;jazz", separator=";")
    ['hip hop', 'jazz']
    >>> split_tags("")
    []
    """
    if not text:
        return []
    parts = text.split() if separator is None else text.split(separator)
    return list(dict.fromkeys(p.strip() for p in parts if p.strip()))


def check_label_column(rows: Sequence[dict], column: str, path: str) -> None:
    """Stops with a one-line error naming the column when a manifest lacks it.

    Example
    -------
    >>> try:
    ...     check_label_column([{"ID": "a", "wav": "a.wav"}], "genre", "x.csv")
    ... except LabelError as err:
    ...     print(err)
    x.csv: no label column 'genre' (columns: ID, wav); choose one with --label_column
    """
    if rows and column not in rows[0]:
        found = ", ".join(rows[0])
        raise LabelError(
            f"{path}: no label column {column!r} (columns: {found}); "
            "choose one with --label_column"
        )


def label_set(
    rows: Iterable[dict], column: str, separator: str | None = None
) -> list[str]:
    """The sorted union of the tags of all rows.

    Example
    -------
    >>> label_set([{"tags": "b a"}, {"tags": "c"}, {"tags": "a"}], "tags")
    ['a', 'b', 'c']
    """
    tags = set()
    for row in rows:
        tags.update(split_tags(row[column], separator))
    return sorted(tags)


def unseen_tags(
    rows: Iterable[dict],
    column: str,
    labels: Sequence[str],
    separator: str | None = None,
) -> Counter:
    """How many clips carry each tag that is not in ``labels``.

    Example
    -------
    >>> unseen_tags([{"t": "a x"}, {"t": "x y"}], "t", ["a"])
    Counter({'x': 2, 'y': 1})
    """
    known = set(labels)
    counts = Counter()
    for row in rows:
        counts.update(t for t in split_tags(row[column], separator) if t not in known)
    return counts


def warn_unseen(path: str, counts: Counter, limit: int = 10) -> None:
    """Logs one warning listing the ignored tags of a manifest."""
    if not counts:
        return
    shown = ", ".join(f"{tag} ({n} clips)" for tag, n in counts.most_common(limit))
    more = f" and {len(counts) - limit} more" if len(counts) > limit else ""
    logger.warning(
        "%s: %d tags not in the training label set are ignored: %s%s",
        path,
        len(counts),
        shown,
        more,
    )


def prepare_labels(
    rows: Sequence[dict],
    column: str,
    save_folder: str | os.PathLike,
    separator: str | None = None,
) -> list[str]:
    """Builds the label set of the training rows, or checks the saved one.

    A run resumed in the same folder must have the same label set, since the
    head's output units are checkpointed in that order.

    Arguments
    ---------
    rows : sequence of dict
        Training manifest rows.
    column : str
        Label column.
    save_folder : str or PathLike
        Where ``labels.json`` is written (or found).
    separator : str, optional
        Tag separator (see ``split_tags``).

    Returns
    -------
    list of str
        The sorted tags.

    Example
    -------
    >>> folder = getfixture("tmpdir")
    >>> prepare_labels([{"tags": "b a"}], "tags", folder)
    ['a', 'b']
    >>> try:
    ...     prepare_labels([{"tags": "c"}], "tags", folder)
    ... except LabelError as err:
    ...     print(err)
    /...labels.json was made from other labels (2 labels, 1 in the training ...
    """
    labels = label_set(rows, column, separator)
    if not labels:
        raise LabelError(f"the training manifest has no tags in column {column!r}")
    path = os.path.join(os.fspath(save_folder), LABELS_FILE)
    return keep_label_set(path, labels, "the training tags", label_column=column)


def encode_tags(tags: Sequence[str], index: dict[str, int]) -> torch.Tensor:
    """A multi-hot float vector of the known tags (unknown tags are ignored).

    Example
    -------
    >>> encode_tags(["c", "a", "zzz"], {"a": 0, "b": 1, "c": 2})
    tensor([1., 0., 1.])
    """
    target = torch.zeros(len(index))
    for tag in tags:
        if tag in index:
            target[index[tag]] = 1.0
    return target


class TaggingHead(nn.Module):
    """Clip-level classifier: LayerNorm, then Linear or a one-hidden-layer MLP.

    Arguments
    ---------
    input_dim : int
        Width of the pooled features.
    num_tags : int
        Output units (logits).
    hidden_dim : int
        0: LayerNorm + Linear (a probe); > 0: LayerNorm + MLP with GELU.
    dropout : float
        Dropout before each Linear layer.

    Example
    -------
    >>> head = TaggingHead(8, 3, hidden_dim=16)
    >>> head(torch.randn(2, 8)).shape
    torch.Size([2, 3])
    """

    def __init__(
        self, input_dim: int, num_tags: int, hidden_dim: int = 0, dropout: float = 0.0
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.LayerNorm(input_dim), nn.Dropout(dropout)]
        if hidden_dim > 0:
            layers += [nn.Linear(input_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout)]
            input_dim = hidden_dim
        layers.append(nn.Linear(input_dim, num_tags))
        self.net = nn.Sequential(*layers)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """(batch, input_dim) -> (batch, num_tags) logits."""
        return self.net(pooled)


def tagging_metrics(scores: np.ndarray, targets: np.ndarray) -> dict:
    """Macro mAP and macro ROC-AUC over the tags that can be scored.

    AP is averaged over the tags with at least one positive clip, ROC-AUC over
    the tags with both positive and negative clips; a tag that cannot be scored
    gets NaN in the per-tag lists and is left out of the mean.

    Arguments
    ---------
    scores : np.ndarray
        (clips, tags) scores (probabilities or logits).
    targets : np.ndarray
        (clips, tags) 0/1 targets.

    Returns
    -------
    dict
        ``map``, ``roc_auc`` (NaN when no tag can be scored), ``ap`` and
        ``auc`` (per-tag lists), ``positives`` (per tag), ``num_scored``
        (tags in the mAP).

    Example
    -------
    >>> y = np.array([[1, 0], [0, 0], [1, 0]])
    >>> s = np.array([[0.9, 0.1], [0.2, 0.3], [0.1, 0.5]])
    >>> m = tagging_metrics(s, y)
    >>> round(m["map"], 4), m["roc_auc"], m["num_scored"]
    (0.8333, 0.5, 1)
    """
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets) > 0.5
    positives = targets.sum(axis=0)
    negatives = len(targets) - positives
    ap, auc = [], []
    for k in range(targets.shape[1]):
        y, s = targets[:, k], scores[:, k]
        ap.append(float(average_precision_score(y, s)) if positives[k] else math.nan)
        both = positives[k] and negatives[k]
        auc.append(float(roc_auc_score(y, s)) if both else math.nan)
    return {
        "map": _nanmean(ap),
        "roc_auc": _nanmean(auc),
        "ap": ap,
        "auc": auc,
        "positives": [int(p) for p in positives],
        "num_scored": int(np.sum(~np.isnan(ap))),
    }


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def write_per_tag_table(
    folder: str | os.PathLike, labels: Sequence[str], metrics: dict
) -> tuple[str, str]:
    """Writes ``per_tag_ap.md`` and ``per_tag_ap.csv`` (tag, positives, AP, AUC).

    Example
    -------
    >>> folder = getfixture("tmpdir")
    >>> m = tagging_metrics(np.array([[0.9], [0.1]]), np.array([[1], [0]]))
    >>> md, _ = write_per_tag_table(folder, ["piano"], m)
    >>> print(open(md).read().splitlines()[2])
    | piano | 1 | 1.000 | 1.000 |
    """
    folder = os.fspath(folder)
    rows = list(
        zip(labels, metrics["positives"], metrics["ap"], metrics["auc"], strict=True)
    )
    md_path = os.path.join(folder, "per_tag_ap.md")
    csv_path = os.path.join(folder, "per_tag_ap.csv")
    lines = ["| tag | positives | AP | ROC-AUC |", "|---|---|---|---|"]
    for tag, pos, ap, auc in rows:
        lines.append(f"| {tag} | {pos} | {_fmt(ap)} | {_fmt(auc)} |")
    lines.append(
        f"| **macro** ({metrics['num_scored']} tags) | | "
        f"{_fmt(metrics['map'])} | {_fmt(metrics['roc_auc'])} |"
    )
    with open(md_path, "w", encoding="utf-8") as fout:
        fout.write("\n".join(lines) + "\n")
    with open(csv_path, "w", newline="", encoding="utf-8") as fout:
        writer = csv.writer(fout)
        writer.writerow(["tag", "positives", "ap", "roc_auc"])
        writer.writerows(rows)
    return md_path, csv_path


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"
