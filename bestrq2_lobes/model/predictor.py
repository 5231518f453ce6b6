"""Lightweight predictor of BEST-RQ-2 (discarded after pretraining).

The encoder outputs of the visible tokens are linearly projected (no position is
added again); at every masked cell a shared learned mask token plus the cell's
sin-cos position is appended; a few pre-norm blocks with full attention over
visible and masked tokens follow, then a final LayerNorm and, on the masked outputs
only, one linear head per codebook.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import torch
from torch import nn

from bestrq2_lobes.model.position import SinCosPosition2d
from bestrq2_lobes.model.transformer import TransformerStack, init_vit_weights


class CodebookHeads(nn.Module):
    """One linear classifier per codebook.

    Arguments
    ---------
    dim : int
        Input width.
    codebook_size : int
        Codes per codebook.
    num_codebooks : int
        Number of codebooks.

    Example
    -------
    >>> heads = CodebookHeads(8, 16, 2)
    >>> [logits.shape for logits in heads(torch.randn(2, 3, 8))]
    [torch.Size([2, 3, 16]), torch.Size([2, 3, 16])]
    """

    def __init__(self, dim: int, codebook_size: int, num_codebooks: int = 1):
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Linear(dim, codebook_size) for _ in range(num_codebooks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Returns one (..., codebook_size) logit tensor per codebook."""
        return [head(x) for head in self.heads]


class Predictor(nn.Module):
    """Predicts the codes of masked cells from the encoded visible tokens.

    Arguments
    ---------
    encoder_dim : int
        Width of the encoder outputs.
    dim : int
        Predictor width (768 in the paper).
    depth : int
        Number of blocks (4 in the paper).
    num_heads : int
        Attention heads (12 in the paper).
    freq_rows : int
        Frequency rows of the patch grid (for positions).
    codebook_size : int
        Codes per codebook.
    num_codebooks : int
        Number of codebooks (one head each).
    mlp_ratio : float
        MLP hidden width relative to ``dim``.
    norm_eps : float
        LayerNorm epsilon.

    Example
    -------
    >>> pred = Predictor(32, 32, depth=1, num_heads=4, freq_rows=2, codebook_size=16)
    >>> ctx = torch.randn(2, 3, 32)
    >>> logits = pred(ctx, None, torch.tensor([[1, 4], [0, 2]]), None)
    >>> logits[0].shape
    torch.Size([2, 2, 16])
    """

    def __init__(
        self,
        encoder_dim: int = 768,
        dim: int = 768,
        depth: int = 4,
        num_heads: int = 12,
        freq_rows: int = 8,
        codebook_size: int = 8192,
        num_codebooks: int = 1,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.input_proj = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = SinCosPosition2d(dim, freq_rows)
        self.blocks = TransformerStack(dim, depth, num_heads, mlp_ratio, 0.0, norm_eps)
        self.heads = CodebookHeads(dim, codebook_size, num_codebooks)
        self.apply(init_vit_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(
        self,
        context: torch.Tensor,
        context_mask: torch.Tensor | None,
        masked_idx: torch.Tensor,
        masked_mask: torch.Tensor | None,
        num_tokens: int | None = None,
    ) -> list[torch.Tensor]:
        """Predicts code logits at the masked cells.

        Arguments
        ---------
        context : torch.Tensor
            (batch, V, encoder_dim) encoded visible tokens.
        context_mask : torch.Tensor, optional
            (batch, V) bool, True on real visible slots (None: all real).
        masked_idx : torch.Tensor
            (batch, K) grid indices of the masked cells.
        masked_mask : torch.Tensor, optional
            (batch, K) bool, True on real masked slots (None: all real).
        num_tokens : int, optional
            Tokens in the whole grid (above every index); found from
            ``masked_idx`` when not given.

        Returns
        -------
        list of torch.Tensor
            One (batch, K, codebook_size) logit tensor per codebook.
        """
        ctx = self.input_proj(context)
        positions = self.position.at(masked_idx, num_tokens).to(ctx.dtype)
        queries = self.mask_token.to(ctx.dtype) + positions
        x = torch.cat([ctx, queries], dim=1)
        key_mask = None
        if context_mask is not None or masked_mask is not None:
            key_mask = torch.cat(
                [_all_true(context_mask, ctx), _all_true(masked_mask, queries)], dim=1
            )
        x = self.blocks(x, key_mask)
        return self.heads(x[:, ctx.shape[1] :])


def _all_true(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if mask is not None:
        return mask
    return torch.ones(like.shape[:2], dtype=torch.bool, device=like.device)
