"""Token-index helpers shared by the encoder, the masking and the pretraining models.

Token counts and sample counts of a batch: gathering tokens at indices, masks
that are True on the first ``n`` entries of each row, and SpeechBrain relative
lengths turned into sample counts.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import torch

from bestrq2_lobes.model.device_copy import to_device


def sample_counts(
    wav_lens: torch.Tensor | None, batch: int, samples: int
) -> torch.Tensor:
    """Samples of each clip (CPU, long) from SpeechBrain relative lengths.

    Arguments
    ---------
    wav_lens : torch.Tensor, optional
        (batch,) lengths relative to ``samples``; None: every clip is whole.
    batch : int
        Number of clips.
    samples : int
        Padded length of the batch.

    Returns
    -------
    torch.Tensor
        (batch,) sample counts on the CPU.

    Example
    -------
    >>> sample_counts(torch.tensor([1.0, 0.25]), 2, 16000)
    tensor([16000,  4000])
    >>> sample_counts(None, 2, 10)
    tensor([10, 10])
    """
    if wav_lens is None:
        return torch.full((batch,), samples, dtype=torch.long)
    return (wav_lens.detach().float().cpu() * samples).round().long()


def gather_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gathers (batch, K, D) tokens from (batch, N, D) at (batch, K) indices.

    Example
    -------
    >>> x = torch.arange(12.0).view(1, 4, 3)
    >>> gather_tokens(x, torch.tensor([[3, 1]]))
    tensor([[[ 9., 10., 11.],
             [ 3.,  4.,  5.]]])
    """
    return tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def prefix_mask(counts: torch.Tensor, length: int, device=None) -> torch.Tensor:
    """(batch, length) bool mask, True on the first ``counts[b]`` entries of row b.

    Example
    -------
    >>> prefix_mask(torch.tensor([2, 0]), 3)
    tensor([[ True,  True, False],
            [False, False, False]])
    """
    device = counts.device if device is None else device
    idx = torch.arange(length, device=device).unsqueeze(0)
    return idx < to_device(counts, device).unsqueeze(1)
