"""Vectorised sampling of masked patches inside each clip's valid grid.

One ratio ``r ~ U(lo, hi)`` is drawn per call; a clip with ``N_b`` valid tokens gets
``floor(N_b * r)`` masked tokens (kept within ``[1, N_b - 1]`` so that a very short
clip still has a target and a visible token), chosen uniformly among its valid
tokens, and the rest of its valid tokens are visible. Padding tokens are never
visible and never masked. ``shared=True`` is the paper's mode: one noise vector
for the whole batch, so clips of equal length share one mask; ``shared=False``
draws a mask per clip.
Everything runs on the device without a Python loop over tokens or clips.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bestrq2_lobes.model.device_copy import to_device
from bestrq2_lobes.model.tokens import prefix_mask


@dataclass
class MaskPlan:
    """Indices of visible and masked tokens, padded to rectangles.

    Arguments
    ---------
    visible_idx : torch.Tensor
        (batch, V) token indices of the visible tokens, in positional order.
    visible_valid : torch.Tensor
        (batch, V) bool, False on slots that only pad the rectangle.
    masked_idx : torch.Tensor
        (batch, K) token indices of the masked tokens, in positional order.
    masked_valid : torch.Tensor
        (batch, K) bool, False on slots that only pad the rectangle.
    masked : torch.Tensor
        (batch, tokens) bool, True on masked tokens.
    ratio : float
        The mask ratio drawn for this batch.
    """

    visible_idx: torch.Tensor
    visible_valid: torch.Tensor
    masked_idx: torch.Tensor
    masked_valid: torch.Tensor
    masked: torch.Tensor
    ratio: float


class MaskSampler:
    """Draws unstructured random patch masks.

    Arguments
    ---------
    ratio_range : tuple of float
        ``(lo, hi)``: the ratio is drawn uniformly from this range at every call.
    shared : bool
        One noise vector for the whole batch (paper) or one per clip.

    Example
    -------
    >>> sampler = MaskSampler(ratio_range=(0.5, 0.5), shared=False)
    >>> plan = sampler(torch.tensor([128, 64]), num_tokens=128)
    >>> plan.masked.sum(dim=1)
    tensor([64, 32])
    >>> plan.visible_valid.sum(dim=1)
    tensor([64, 32])
    >>> bool(plan.masked[1, 64:].any())
    False
    """

    def __init__(self, ratio_range=(0.4, 0.6), shared: bool = True):
        lo, hi = float(ratio_range[0]), float(ratio_range[1])
        if not 0.0 <= lo <= hi < 1.0:
            raise ValueError(
                f"mask ratio range must satisfy 0 <= lo <= hi < 1, got {ratio_range}"
            )
        self.ratio_range = (lo, hi)
        self.shared = shared

    def draw_ratio(self, generator: torch.Generator | None = None) -> float:
        """Draws the mask ratio of one batch (on the CPU, no device sync)."""
        lo, hi = self.ratio_range
        u = torch.rand((), generator=generator if _on_cpu(generator) else None)
        return lo + (hi - lo) * float(u)

    def __call__(
        self,
        valid_tokens: torch.Tensor,
        num_tokens: int,
        device=None,
        generator: torch.Generator | None = None,
        ratio: float | None = None,
    ) -> MaskPlan:
        """Samples a mask plan.

        Arguments
        ---------
        valid_tokens : torch.Tensor
            (batch,) number of valid tokens per clip (padding follows them).
        num_tokens : int
            Length of the padded token sequence.
        device : torch.device, optional
            Where to build the plan (default: the device of ``valid_tokens``).
        generator : torch.Generator, optional
            Random generator (for reproducible validation masks).
        ratio : float, optional
            Use this ratio instead of drawing one.

        Returns
        -------
        MaskPlan
        """
        device = valid_tokens.device if device is None else torch.device(device)
        if ratio is None:
            ratio = self.draw_ratio(generator)
        counts = valid_tokens.long().cpu()
        num_masked = masked_count(counts, ratio)
        num_visible = counts - num_masked
        max_masked, max_visible = int(num_masked.max()), int(num_visible.max())

        batch = counts.shape[0]
        noise_shape = (1 if self.shared else batch, num_tokens)
        gen_device = generator.device if generator is not None else device
        noise = to_device(
            torch.rand(noise_shape, generator=generator, device=gen_device), device
        )
        noise = noise.expand(batch, num_tokens)
        counts_d, num_masked_d = to_device(torch.stack([counts, num_masked]), device)
        valid = prefix_mask(counts_d, num_tokens)
        noise = torch.where(valid, noise, torch.full_like(noise, 2.0))
        rank = noise.argsort(dim=1).argsort(dim=1)
        masked = rank < num_masked_d.unsqueeze(1)
        visible = valid & ~masked

        visible_idx = _first_true(visible, max_visible)
        masked_idx = _first_true(masked, max_masked)
        return MaskPlan(
            visible_idx=visible_idx,
            visible_valid=prefix_mask(counts_d - num_masked_d, max_visible),
            masked_idx=masked_idx,
            masked_valid=prefix_mask(num_masked_d, max_masked),
            masked=masked,
            ratio=ratio,
        )


def masked_count(valid_tokens: torch.Tensor, ratio: float) -> torch.Tensor:
    """``floor(N * ratio)`` per clip, kept within ``[1, N - 1]`` (0 when N = 1).

    Example
    -------
    >>> masked_count(torch.tensor([128, 64, 2, 1]), 0.45)
    tensor([57, 28,  1,  0])
    """
    counts = valid_tokens.long()
    num = torch.floor(counts.double() * ratio).long()
    return torch.minimum(num.clamp(min=1), (counts - 1).clamp(min=0))


def _first_true(flags: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the True entries of each row, in order, padded to ``count``."""
    order = torch.sort((~flags).to(torch.int32), dim=1, stable=True).indices
    return order[:, :count]


def _on_cpu(generator: torch.Generator | None) -> bool:
    return generator is not None and generator.device.type == "cpu"
