"""Frames of a batch by their counts: masks and masked means.

The frozen lobe states how many valid frames each clip has
(``BestRQ2Encoder.frame_counts``); these helpers use the counts directly.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import torch

from bestrq2_lobes.model.tokens import prefix_mask


def frame_mask(counts: torch.Tensor, frames: int, device=None) -> torch.Tensor:
    """(batch, frames) bool, True on the first ``counts[b]`` frames of clip b.

    Example
    -------
    >>> frame_mask(torch.tensor([2, 3]), 3)
    tensor([[ True,  True, False],
            [ True,  True,  True]])
    """
    return prefix_mask(counts.long(), frames, device=device)


def masked_mean(feats: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean over time of each clip's valid frames (padding is not counted).

    Arguments
    ---------
    feats : torch.Tensor
        (batch, frames, D).
    counts : torch.Tensor
        (batch,) valid frames per clip; a clip with none gets a zero vector.

    Returns
    -------
    torch.Tensor
        (batch, D)

    Example
    -------
    >>> x = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [4.0], [6.0]]])
    >>> masked_mean(x, torch.tensor([2, 3]))
    tensor([[2.],
            [4.]])
    """
    mask = frame_mask(counts, feats.shape[1], device=feats.device)
    mask = mask.to(feats.dtype).unsqueeze(-1)
    denom = counts.to(feats.device).clamp(min=1).unsqueeze(-1).to(feats.dtype)
    return (feats * mask).sum(dim=1) / denom
