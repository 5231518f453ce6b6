"""A frozen encoder's hidden states of each clip, kept for the later epochs.

With a frozen encoder and audio read the same way every epoch, the encoder's
output for a clip never changes: encoding it again each epoch only costs time
(nearly all of a downstream run's time with a ViT-Base encoder on a CPU). The
cache keeps each clip's valid frames of all hidden states on the CPU, in
memory, up to a size bound; a batch whose clips are all cached is rebuilt from
it, zero-padded exactly as the encoder pads, so results do not change.

The Brain turns it off for a stage whose audio is random (training crops) and
whenever the encoder is fine-tuned.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class FeatureCache:
    """Per-clip encoder outputs in memory, bounded in bytes.

    Arguments
    ---------
    max_bytes : int
        The cache never holds more; clips that do not fit are encoded every
        time.

    Example
    -------
    >>> cache = FeatureCache(max_bytes=10**6)
    >>> hiddens = torch.randn(3, 2, 4, 8)  # (layers, batch, frames, D)
    >>> cache.put(["a", "b"], [4, 4], hiddens, num_samples=[16000, 16000])
    >>> cache.get(["b", "a"], num_samples=[16000, 16000]).shape
    torch.Size([3, 2, 4, 8])
    >>> cache.get(["a", "c"], num_samples=[16000, 16000]) is None
    True
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.items: dict[tuple[str, int], torch.Tensor] = {}
        self.hits = self.misses = 0

    def get(
        self, ids: Sequence[str], num_samples: Sequence[int]
    ) -> torch.Tensor | None:
        """(layers, batch, frames, D) of a batch whose clips are all cached."""
        keys = list(zip(ids, (int(n) for n in num_samples), strict=True))
        if not all(key in self.items for key in keys):
            self.misses += 1
            return None
        self.hits += 1
        parts = [self.items[key] for key in keys]
        frames = max(part.shape[1] for part in parts)
        out = parts[0].new_zeros(
            parts[0].shape[0], len(parts), frames, parts[0].shape[-1]
        )
        for i, part in enumerate(parts):
            out[:, i, : part.shape[1]] = part
        return out

    def put(
        self,
        ids: Sequence[str],
        counts: Sequence[int],
        hiddens: torch.Tensor,
        num_samples: Sequence[int],
    ) -> None:
        """Keeps each clip's ``counts[i]`` valid frames of (layers, batch, T, D)."""
        for i, (uid, count, samples) in enumerate(
            zip(ids, counts, num_samples, strict=True)
        ):
            key = (uid, int(samples))
            part = hiddens[:, i, : int(count)]
            size = part.numel() * part.element_size()
            if key in self.items or self.bytes + size > self.max_bytes:
                continue
            self.items[key] = part.detach().to("cpu", copy=True)
            self.bytes += size
