"""Frozen random-projection quantizer (BEST-RQ targets).

A raw log-mel patch ``x`` (``patch_dim`` values) is projected by a fixed random matrix
``P`` (Xavier-uniform), L2-normalised, and assigned the code of the fixed random
L2-normalised codebook with the largest dot product, which is the nearest code on
the unit sphere. Nothing is trained. ``P`` and the codebooks are drawn from the
quantizer's own seeded generator, so every DDP rank and every rerun builds the same
targets, and they are buffers, so checkpoints carry them. The computation is always
fp32 and never builds a (batch, codes, time, dim) tensor.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import math

import torch


class RandomProjectionQuantizer(torch.nn.Module):
    """Frozen random-projection quantizer with one or several codebooks.

    Arguments
    ---------
    input_dim : int
        Size of an input vector (a flattened patch, e.g. 16 x 16 = 256).
    codebook_dim : int
        Projection width (16 in the paper).
    codebook_size : int
        Codes per codebook (8192 in the paper).
    num_codebooks : int
        Independent codebooks (and projections); one target per codebook.
    seed : int
        Seed of the quantizer's own generator.
    chunk_size : int
        Rows scored at once, to bound the (rows, codes) score memory.

    Example
    -------
    >>> quantizer = RandomProjectionQuantizer(256, 16, 8192, num_codebooks=2, seed=0)
    >>> targets = quantizer(torch.randn(4, 10, 256))
    >>> targets.shape, targets.dtype
    (torch.Size([4, 10, 2]), torch.int64)
    >>> again = RandomProjectionQuantizer(256, 16, 8192, num_codebooks=2, seed=0)
    >>> torch.equal(again(torch.ones(3, 256)), quantizer(torch.ones(3, 256)))
    True
    """

    def __init__(
        self,
        input_dim: int = 256,
        codebook_dim: int = 16,
        codebook_size: int = 8192,
        num_codebooks: int = 1,
        seed: int = 0,
        chunk_size: int = 8192,
    ):
        super().__init__()
        self.input_dim = input_dim
        self.codebook_dim = codebook_dim
        self.codebook_size = codebook_size
        self.num_codebooks = num_codebooks
        self.seed = seed
        self.chunk_size = chunk_size
        generator = torch.Generator().manual_seed(seed)
        bound = math.sqrt(6.0 / (input_dim + codebook_dim))
        projection = torch.rand(
            num_codebooks, input_dim, codebook_dim, generator=generator
        )
        codebooks = torch.randn(
            num_codebooks, codebook_size, codebook_dim, generator=generator
        )
        self.register_buffer("projection", (2 * projection - 1) * bound)
        self.register_buffer(
            "codebooks", torch.nn.functional.normalize(codebooks, dim=-1)
        )

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Quantizes (..., input_dim) vectors into (..., num_codebooks) code ids."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            flat = x.reshape(-1, self.input_dim).float()
            codes = torch.empty(
                flat.shape[0], self.num_codebooks, dtype=torch.long, device=x.device
            )
            for start in range(0, flat.shape[0], self.chunk_size):
                rows = flat[start : start + self.chunk_size]
                proj = torch.einsum("nd,qdk->qnk", rows, self.projection)
                proj = torch.nn.functional.normalize(proj, dim=-1)
                scores = torch.bmm(proj, self.codebooks.transpose(1, 2))
                codes[start : start + rows.shape[0]] = scores.argmax(dim=-1).T
        return codes.reshape(*x.shape[:-1], self.num_codebooks)
