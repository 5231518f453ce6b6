"""Patch grid and patch embedding.

A log-mel spectrogram (batch, mels, frames) is cut into non-overlapping patches of
``patch_freq`` mels x ``patch_time`` frames. Tokens are ordered **time-major**: token
``n`` is at time column ``n // freq_rows`` and frequency row ``n % freq_rows``, so the
valid tokens of a shorter clip are a prefix of the sequence and padding sits at the
end. The patch vector is flattened mel-major, exactly as a ``Conv2d`` kernel is.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import torch

from bestrq2_lobes.model.tokens import prefix_mask


class PatchGrid:
    """Geometry of the patch grid: patches, coordinates and padding masks.

    Arguments
    ---------
    n_mels : int
        Number of mel bands of the front end.
    patch_freq : int
        Patch height in mel bands.
    patch_time : int
        Patch width in frames.

    Example
    -------
    >>> grid = PatchGrid(n_mels=128, patch_freq=16, patch_time=16)
    >>> patches = grid.patchify(torch.randn(2, 128, 257))
    >>> patches.shape
    torch.Size([2, 128, 256])
    >>> grid.freq_rows, grid.num_columns(257)
    (8, 16)
    >>> grid.valid_tokens(torch.tensor([257, 129]))
    tensor([128,  64])
    """

    def __init__(self, n_mels: int = 128, patch_freq: int = 16, patch_time: int = 16):
        if n_mels % patch_freq != 0:
            raise ValueError(
                f"n_mels ({n_mels}) must be a multiple of patch_freq ({patch_freq})"
            )
        self.n_mels = n_mels
        self.patch_freq = patch_freq
        self.patch_time = patch_time
        self.freq_rows = n_mels // patch_freq
        self.patch_dim = patch_freq * patch_time

    def num_columns(self, num_frames: int) -> int:
        """Number of whole patch columns in ``num_frames`` frames."""
        return num_frames // self.patch_time

    def valid_columns(self, num_frames: torch.Tensor) -> torch.Tensor:
        """Whole patch columns of each clip, from its number of valid frames."""
        return torch.div(num_frames, self.patch_time, rounding_mode="floor")

    def valid_tokens(self, num_frames: torch.Tensor) -> torch.Tensor:
        """Number of valid (non-padding) tokens of each clip."""
        return self.valid_columns(num_frames) * self.freq_rows

    def token_mask(self, num_frames: torch.Tensor, num_tokens: int) -> torch.Tensor:
        """Boolean (batch, num_tokens) mask, True on valid tokens."""
        return prefix_mask(self.valid_tokens(num_frames), num_tokens)

    def coordinates(self, num_tokens: int, device=None) -> torch.Tensor:
        """(num_tokens, 2) long tensor of (freq row, time column) per token."""
        idx = torch.arange(num_tokens, device=device)
        return torch.stack([idx % self.freq_rows, idx // self.freq_rows], dim=-1)

    def patchify(self, feats: torch.Tensor) -> torch.Tensor:
        """Cuts (batch, mels, frames) into (batch, tokens, patch_dim) patches.

        Frames beyond the last whole patch column are dropped.
        """
        batch, mels, frames = feats.shape
        if mels != self.n_mels:
            raise ValueError(f"expected {self.n_mels} mel bands, got {mels}")
        cols = self.num_columns(frames)
        x = feats[:, :, : cols * self.patch_time]
        x = x.reshape(batch, self.freq_rows, self.patch_freq, cols, self.patch_time)
        x = x.permute(0, 3, 1, 2, 4)  # batch, col, row, mel-in-patch, frame-in-patch
        return x.reshape(batch, cols * self.freq_rows, self.patch_dim)


class PatchEmbedding(torch.nn.Module):
    """``Conv2d(1, D, kernel=stride=patch)`` applied to already cut patches.

    Holding the weights as a convolution keeps checkpoints interchangeable with a
    ViT patch embedding, while applying them as a linear map lets the encoder
    embed only the patches it needs (the visible ones).

    Arguments
    ---------
    patch_freq : int
        Patch height in mel bands.
    patch_time : int
        Patch width in frames.
    embed_dim : int
        Output width.

    Example
    -------
    >>> embed = PatchEmbedding(16, 16, 32)
    >>> embed(torch.randn(2, 10, 256)).shape
    torch.Size([2, 10, 32])
    """

    def __init__(self, patch_freq: int, patch_time: int, embed_dim: int):
        super().__init__()
        self.proj = torch.nn.Conv2d(
            1,
            embed_dim,
            kernel_size=(patch_freq, patch_time),
            stride=(patch_freq, patch_time),
        )

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Embeds (..., patch_dim) patches into (..., embed_dim) tokens."""
        weight = self.proj.weight.flatten(1)
        return torch.nn.functional.linear(patches, weight, self.proj.bias)
