"""Linear probe, kNN and metrics of the probe suite (X-ARES protocol).

- Linear probe: LayerNorm + one Linear layer on the clip embeddings, AdamW,
  cross-entropy (multiclass) or binary cross-entropy (multilabel); the epoch
  with the best validation score is kept when there is a validation split
  (with early stopping), else the last of a fixed number of epochs.
- kNN: the ``k`` nearest training clips by cosine similarity; multiclass: the
  most frequent class among them (ties: the larger summed similarity);
  multilabel: the mean of their label vectors as scores.
- Metrics: accuracy (multiclass); mean average precision over the labels that
  have a positive clip (multilabel, scikit-learn ``average_precision_score``,
  macro).

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)


def label_classes(values: list[str], multilabel: bool) -> list[str]:
    """Sorted classes of the training labels.

    Example
    -------
    >>> label_classes(["b a", "c", ""], multilabel=True)
    ['a', 'b', 'c']
    >>> label_classes(["dog", "cat", "dog"], multilabel=False)
    ['cat', 'dog']
    """
    if multilabel:
        return sorted({tag for value in values for tag in value.split()})
    return sorted(set(values))


def encode_labels(
    values: list[str], classes: list[str], multilabel: bool
) -> tuple[torch.Tensor, set[str]]:
    """Targets of label strings, and the labels not among ``classes``.

    Multiclass: (n,) class indices, -1 for an unknown class (always wrong).
    Multilabel: (n, C) float 0/1, unknown tags dropped.

    Example
    -------
    >>> encode_labels(["b a", "z"], ["a", "b"], multilabel=True)
    (tensor([[1., 1.],
            [0., 0.]]), {'z'})
    >>> encode_labels(["b", "z"], ["a", "b"], multilabel=False)
    (tensor([ 1, -1]), {'z'})
    """
    index = {c: i for i, c in enumerate(classes)}
    unknown = set()
    if not multilabel:
        unknown = {v for v in values if v not in index}
        return torch.tensor([index.get(v, -1) for v in values]), unknown
    targets = torch.zeros(len(values), len(classes))
    for row, value in enumerate(values):
        for tag in value.split():
            if tag in index:
                targets[row, index[tag]] = 1.0
            else:
                unknown.add(tag)
    return targets, unknown


def accuracy(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of clips whose best-scoring class is the target.

    Example
    -------
    >>> accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1]))
    0.5
    """
    return float((scores.argmax(dim=-1) == targets).float().mean())


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Macro average precision over the labels with at least one positive.

    Example
    -------
    >>> targets = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    >>> round(mean_average_precision(torch.tensor([[.9, .1], [.8, .2], [.1, .3]]),
    ...                              targets), 4)
    0.8333
    """
    from sklearn.metrics import average_precision_score

    has_pos = targets.sum(dim=0) > 0
    if not bool(has_pos.any()):
        raise ValueError("no label has a positive clip: mAP is undefined")
    y_true = targets[:, has_pos].numpy()
    y_score = scores[:, has_pos].float().numpy()
    return float(average_precision_score(y_true, y_score, average="macro"))


def task_score(metric: str, scores: torch.Tensor, targets: torch.Tensor) -> float:
    """The task metric (``accuracy`` or ``map``) of scores against targets."""
    if metric == "accuracy":
        return accuracy(scores, targets)
    if metric == "map":
        return mean_average_precision(scores, targets)
    raise ValueError(f"unknown metric {metric!r}")


def knn_scores(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    k: int,
    num_classes: int,
    multilabel: bool,
) -> torch.Tensor:
    """(n_test, C) kNN scores by cosine similarity.

    Multiclass: neighbour votes per class plus the summed similarity of the
    voters scaled into (-0.5, 0.5), so the argmax is the majority class with ties
    broken by similarity. Multilabel: the mean label vector of the neighbours.

    Example
    -------
    >>> train_x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> knn_scores(train_x, torch.tensor([0, 0, 1]), torch.tensor([[1.0, 0.2]]),
    ...            k=2, num_classes=2, multilabel=False).argmax(-1)
    tensor([0])
    >>> knn_scores(train_x, torch.tensor([[1., 0.], [1., 1.], [0., 1.]]),
    ...            torch.tensor([[1.0, 0.2]]), k=2, num_classes=2, multilabel=True)
    tensor([[1.0000, 0.5000]])
    """
    k = min(k, train_x.shape[0])
    sims = (
        nn.functional.normalize(test_x.float(), dim=-1)
        @ nn.functional.normalize(train_x.float(), dim=-1).T
    )
    top_sims, top_idx = sims.topk(k, dim=-1)
    if multilabel:
        return train_y.float()[top_idx].mean(dim=1)
    votes = nn.functional.one_hot(train_y[top_idx], num_classes).float()
    counts = votes.sum(dim=1)
    similarity = (votes * top_sims.unsqueeze(-1)).sum(dim=1)
    return counts + similarity / (2 * k + 1)


class LinearProbe(nn.Module):
    """LayerNorm followed by one Linear layer.

    Arguments
    ---------
    input_dim : int
        Embedding width.
    num_classes : int
        Number of outputs.

    Example
    -------
    >>> LinearProbe(8, 3)(torch.randn(4, 8)).shape
    torch.Size([4, 3])
    """

    def __init__(self, input_dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(input_dim)
        self.linear = nn.Linear(input_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of (batch, input_dim) embeddings."""
        return self.linear(self.norm(x))


def train_linear_probe(
    train: tuple[torch.Tensor, torch.Tensor],
    valid: tuple[torch.Tensor, torch.Tensor] | None,
    num_classes: int,
    multilabel: bool,
    metric: str,
    opts: dict,
    log_epoch: Callable[[int, dict, dict | None], None] | None = None,
) -> tuple[LinearProbe, dict]:
    """Trains a linear probe with AdamW; selects the best validation epoch.

    Arguments
    ---------
    train : (Tensor, Tensor)
        Training embeddings (n, D) and targets.
    valid : (Tensor, Tensor), optional
        Validation embeddings and targets; None trains for ``epochs`` epochs.
    num_classes : int
        Number of outputs.
    multilabel : bool
        BCE on 0/1 targets if True, else cross-entropy on class indices.
    metric : str
        Validation metric (``accuracy`` or ``map``), higher is better.
    opts : dict
        ``epochs``, ``lr``, ``weight_decay``, ``batch_size``, ``patience``
        (epochs without improvement before stopping; 0: never stop early),
        ``seed``, ``device``.
    log_epoch : callable, optional
        Called as ``log_epoch(epoch, train_stats, valid_stats)``.

    Returns
    -------
    (LinearProbe, dict)
        The selected probe (on the CPU, eval mode) and ``{"epoch", "valid_score"}``.

    Example
    -------
    >>> x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    >>> y = (x[:, 0] > x[:, 1]).long()  # LayerNorm keeps the sign of x0 - x1
    >>> opts = dict(epochs=30, lr=0.1, weight_decay=0.0, batch_size=64,
    ...             patience=0, seed=0, device="cpu")
    >>> probe, info = train_linear_probe((x, y), (x, y), 2, False, "accuracy", opts)
    >>> info["valid_score"] > 0.9
    True
    """
    device = torch.device(opts["device"])
    torch.manual_seed(opts["seed"])
    probe = LinearProbe(train[0].shape[1], num_classes).to(device)
    optimizer = torch.optim.AdamW(
        probe.parameters(), lr=opts["lr"], weight_decay=opts["weight_decay"]
    )
    loss_fn = nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(opts["seed"])
    x, y = train[0].to(device), train[1].to(device)
    best = {"epoch": opts["epochs"], "valid_score": math.nan}
    best_state, since_best = None, 0
    for epoch in range(1, opts["epochs"] + 1):
        loss = _train_epoch(probe, optimizer, loss_fn, x, y, opts, generator)
        valid_stats = None
        if valid is not None:
            score = task_score(metric, predict(probe, valid[0]), valid[1])
            valid_stats = {metric: score}
            if best_state is None or score > best["valid_score"]:
                best = {"epoch": epoch, "valid_score": score}
                best_state, since_best = copy.deepcopy(probe.state_dict()), 0
            else:
                since_best += 1
        if log_epoch is not None:
            log_epoch(epoch, {"loss": loss}, valid_stats)
        if opts["patience"] and since_best >= opts["patience"]:
            break
    if best_state is not None:
        probe.load_state_dict(best_state)
    return probe.cpu().eval(), best


def _train_epoch(probe, optimizer, loss_fn, x, y, opts, generator) -> float:
    """One shuffled pass over the training embeddings; the mean loss."""
    probe.train()
    order = torch.randperm(x.shape[0], generator=generator).to(x.device)
    total = 0.0
    for batch in order.split(opts["batch_size"]):
        loss = loss_fn(probe(x[batch]), y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(batch)
    return total / x.shape[0]


def predict(probe: LinearProbe, x: torch.Tensor) -> torch.Tensor:
    """Scores of a probe on the CPU (logits; ranking metrics need no sigmoid)."""
    device = next(probe.parameters()).device
    probe.eval()
    with torch.no_grad():
        return probe(x.to(device)).float().cpu()


def weighted_mean(values: list[float], weights: list[float]) -> float:
    """Weighted mean.

    Example
    -------
    >>> weighted_mean([0.5, 1.0], [1.0, 3.0])
    0.875
    """
    values, weights = np.asarray(values, float), np.asarray(weights, float)
    return float((values * weights).sum() / weights.sum())


def probe_every_layer(
    embeddings: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    num_classes: int,
    multilabel: bool,
    metric: str,
    opts: dict,
    last: tuple[float, float] | None = None,
) -> dict:
    """A linear probe on each layer's embeddings; test and valid score of each.

    The best layer is the one with the best *valid* score (None without a
    valid split): the test split chooses nothing.

    Arguments
    ---------
    embeddings : dict
        ``{split: (clips, layers, D)}`` for ``train``, ``test`` and maybe ``valid``.
    targets : dict
        ``{split: targets}``.
    num_classes, multilabel, metric, opts
        As for :func:`train_linear_probe`.
    last : (float, float), optional
        The (test, valid) scores of the last layer when its probe was already
        trained with these options (the headline); it is not trained again.

    Returns
    -------
    dict
        ``layers_linear`` and ``layers_valid`` (one score per layer),
        ``best_layer`` and ``best_layer_linear`` (its test score).

    Example
    -------
    >>> gen = torch.Generator().manual_seed(0)
    >>> x = torch.randn(64, 2, 4, generator=gen)
    >>> y = (x[:, 1, 0] > x[:, 1, 1]).long()  # only layer 1 knows the class
    >>> opts = dict(epochs=30, lr=0.1, weight_decay=0.0, batch_size=64,
    ...             patience=0, seed=0, device="cpu")
    >>> out = probe_every_layer({"train": x, "valid": x, "test": x},
    ...     {"train": y, "valid": y, "test": y}, 2, False, "accuracy", opts)
    >>> out["best_layer"], out["layers_linear"][1] > out["layers_linear"][0]
    (1, True)
    """
    test, valid = [], []
    num_layers = embeddings["train"].shape[1]
    for layer in range(num_layers if last is None else num_layers - 1):
        train_split = (embeddings["train"][:, layer], targets["train"])
        valid_split = None
        if "valid" in embeddings:
            valid_split = (embeddings["valid"][:, layer], targets["valid"])
        probe, info = train_linear_probe(
            train_split, valid_split, num_classes, multilabel, metric, opts
        )
        x = embeddings["test"][:, layer]
        test.append(task_score(metric, predict(probe, x), targets["test"]))
        valid.append(info["valid_score"])
    if last is not None:
        test.append(last[0])
        valid.append(last[1])
    best = None
    if "valid" in embeddings:
        best = max(range(len(valid)), key=lambda i: (valid[i], i))
    return {
        "layers_linear": test,
        "layers_valid": valid,
        "best_layer": best,
        "best_layer_linear": None if best is None else test[best],
    }
