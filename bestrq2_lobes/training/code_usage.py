"""Codebook health in the logs: codes used and dead codes, per codebook.

The code perplexity of a batch says how spread its targets are; it does not say
how many of the codes ever appear. :class:`CodeUsage` counts the target codes of
every batch (on the device, without a host sync) and, at each log line, reports
per codebook how many codes appeared over the last ``window`` log intervals
(``codes_used_<q>``), how many never did (``dead_codes_<q>``) and the perplexity
of the codes pooled over the window (``pooled_perplexity_<q>``; for validation,
over the whole pass: the per-batch ``perplexity`` is bounded by the few hundred
targets of one batch, the pooled one much less). Under DDP the
counts of the interval are summed over the ranks (every rank must call
:meth:`CodeUsage.end_interval`).

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

from collections import deque

import torch


class CodeUsage:
    """Counts of target codes over a sliding window of log intervals.

    Arguments
    ---------
    num_codebooks : int
        Codebooks of the quantizer.
    codebook_size : int
        Codes per codebook.
    window : int
        Log intervals counted (the current one included).

    Example
    -------
    >>> usage = CodeUsage(num_codebooks=1, codebook_size=8, window=2)
    >>> usage.update(torch.tensor([[[1], [2]]]))
    >>> usage.end_interval()
    {'codes_used_0': 2, 'dead_codes_0': 6, 'pooled_perplexity_0': 2.0}
    >>> usage.update(torch.tensor([[[3], [4]]]), torch.tensor([[True, False]]))
    >>> usage.end_interval()["codes_used_0"]
    3
    >>> usage.update(torch.tensor([[[5]]]))
    >>> usage.end_interval()  # the first interval has left the window
    {'codes_used_0': 2, 'dead_codes_0': 6, 'pooled_perplexity_0': 2.0}
    """

    def __init__(self, num_codebooks: int, codebook_size: int, window: int = 10):
        if window < 1:
            raise ValueError(f"code usage window {window}: must be at least 1")
        self.num_codebooks = num_codebooks
        self.codebook_size = codebook_size
        self.intervals: deque[torch.Tensor] = deque(maxlen=window)
        self.current: torch.Tensor | None = None

    @torch.no_grad()
    def update(self, targets: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Adds the (batch, K, num_codebooks) codes of a batch (mask: True = real)."""
        codes = targets.reshape(-1, self.num_codebooks)
        if self.current is None or self.current.device != codes.device:
            self.current = torch.zeros(
                self.num_codebooks * self.codebook_size,
                dtype=torch.long,
                device=codes.device,
            )
        offsets = torch.arange(self.num_codebooks, device=codes.device)
        flat = (codes + offsets * self.codebook_size).reshape(-1)
        if mask is None:
            weights = torch.ones_like(flat)
        else:
            weights = mask.reshape(-1, 1).expand(-1, self.num_codebooks)
            weights = weights.reshape(-1).to(flat.dtype)
        self.current.scatter_add_(0, flat, weights)

    def end_interval(self) -> dict[str, int]:
        """Closes the interval (summed over DDP ranks) and reports the window."""
        size = self.num_codebooks * self.codebook_size
        current = self.current
        if current is None:
            current = torch.zeros(size, dtype=torch.long)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(current)
        self.intervals.append(current.cpu())
        self.current = None
        return self.summary()

    def summary(self) -> dict[str, int]:
        """``codes_used_<q>`` and ``dead_codes_<q>`` over the window."""
        if not self.intervals:
            return {}
        counts = torch.stack(list(self.intervals)).sum(dim=0)
        return usage_stats(counts.reshape(self.num_codebooks, self.codebook_size))


def usage_stats(counts: torch.Tensor) -> dict[str, int | float]:
    """Codes used, dead codes and pooled perplexity of (codebooks, codes) counts.

    Example
    -------
    >>> stats = usage_stats(torch.tensor([[0, 3, 1], [5, 0, 0]]))
    >>> stats["codes_used_0"], stats["dead_codes_1"], stats["pooled_perplexity_1"]
    (2, 2, 1.0)
    """
    stats = {}
    for q, row in enumerate(counts):
        used = int((row > 0).sum())
        stats[f"codes_used_{q}"] = used
        stats[f"dead_codes_{q}"] = row.numel() - used
        stats[f"pooled_perplexity_{q}"] = round(code_perplexity(row), 1)
    return stats


def code_perplexity(counts: torch.Tensor) -> float:
    """exp of the entropy of a code histogram: how many codes are in use.

    Example
    -------
    >>> code_perplexity(torch.tensor([5, 5, 0, 0]))
    2.0
    >>> code_perplexity(torch.zeros(3))
    1.0
    """
    probs = counts.double() / counts.sum().clamp(min=1)
    probs = probs[probs > 0]
    return round(float(torch.exp(-(probs * probs.log()).sum())), 6)
