"""ViT context encoder of BEST-RQ-2 and frame pooling for downstream use.

The encoder embeds log-mel patches with a ``Conv2d`` patch embedding, adds fixed
2-D sin-cos positions looked up by each token's true (freq row, time column), and
runs a pre-norm transformer stack with a final LayerNorm. During two-step
pretraining it reads only the visible tokens (``forward_tokens`` with their indices);
otherwise it reads the whole grid (``forward``). No CLS token.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import torch
from torch import nn

from bestrq2_lobes.model.device_copy import to_device
from bestrq2_lobes.model.patches import PatchEmbedding, PatchGrid
from bestrq2_lobes.model.position import SinCosPosition2d
from bestrq2_lobes.model.tokens import gather_tokens
from bestrq2_lobes.model.transformer import TransformerStack, init_vit_weights

# How a patch column's frequency rows become one frame (``pool_frames``).
FRAME_READOUTS = ("mean", "concat")


class ViTEncoder(nn.Module):
    """ViT context encoder over a time-major patch grid.

    Arguments
    ---------
    n_mels : int
        Mel bands of the front end.
    patch_freq : int
        Patch height (mel bands).
    patch_time : int
        Patch width (frames).
    embed_dim : int
        Width (768 for ViT-Base).
    depth : int
        Number of blocks (12 for ViT-Base).
    num_heads : int
        Attention heads (12 for ViT-Base).
    mlp_ratio : float
        MLP hidden width relative to ``embed_dim``.
    drop_path : float
        Stochastic depth of the last block (linear from 0).
    norm_eps : float
        LayerNorm epsilon.

    Example
    -------
    >>> enc = ViTEncoder(n_mels=32, embed_dim=32, depth=2, num_heads=4)
    >>> out, key_mask = enc(torch.randn(2, 32, 40), num_frames=torch.tensor([40, 20]))
    >>> out.shape, key_mask.sum(dim=1).tolist()
    (torch.Size([2, 4, 32]), [4, 2])
    >>> enc.pool_frames(out).shape
    torch.Size([2, 2, 32])
    """

    def __init__(
        self,
        n_mels: int = 128,
        patch_freq: int = 16,
        patch_time: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.1,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.config = dict(
            n_mels=n_mels,
            patch_freq=patch_freq,
            patch_time=patch_time,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            drop_path=drop_path,
            norm_eps=norm_eps,
        )
        self.grid = PatchGrid(n_mels, patch_freq, patch_time)
        self.embed_dim = embed_dim
        self.depth = depth
        self.patch_embed = PatchEmbedding(patch_freq, patch_time, embed_dim)
        self.position = SinCosPosition2d(embed_dim, self.grid.freq_rows)
        self.blocks = TransformerStack(
            embed_dim, depth, num_heads, mlp_ratio, drop_path, norm_eps
        )
        self.apply(init_vit_weights)

    def positions(
        self, token_idx: torch.Tensor, num_tokens: int | None = None
    ) -> torch.Tensor:
        """(batch, S, D) positions of the tokens at (batch, S) grid indices."""
        return self.position.at(token_idx, num_tokens)

    def forward_tokens(
        self,
        tokens: torch.Tensor,
        token_idx: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        return_hiddens: bool = False,
        num_tokens: int | None = None,
    ):
        """Encodes already embedded tokens that sit at the given grid indices.

        Arguments
        ---------
        tokens : torch.Tensor
            (batch, S, D) patch embeddings (or mask tokens), without positions.
        token_idx : torch.Tensor
            (batch, S) grid index of each token (time-major).
        key_mask : torch.Tensor, optional
            (batch, S) bool, True on real tokens; None when all are real.
        return_hiddens : bool
            Also return the ``depth + 1`` hidden states.
        num_tokens : int, optional
            Tokens in the whole grid (above every index); found from
            ``token_idx`` when not given.

        Returns
        -------
        torch.Tensor or (torch.Tensor, list of torch.Tensor)
        """
        x = tokens + self.positions(token_idx, num_tokens).to(tokens.dtype)
        return self.blocks(x, key_mask, return_hiddens=return_hiddens)

    def forward(
        self,
        feats: torch.Tensor,
        num_frames: torch.Tensor | None = None,
        return_hiddens: bool = False,
    ):
        """Encodes the whole patch grid of a log-mel batch.

        Arguments
        ---------
        feats : torch.Tensor
            (batch, n_mels, frames) log-mel features.
        num_frames : torch.Tensor, optional
            (batch,) valid frames per clip; None when no clip is padded.
        return_hiddens : bool
            Also return the ``depth + 1`` hidden states.

        Returns
        -------
        (torch.Tensor, torch.Tensor)
            Encoded tokens (batch, N, D), or the list of hidden states when
            ``return_hiddens``, and the (batch, N) bool mask of valid tokens.
        """
        patches = self.grid.patchify(feats)
        batch, num_tokens, _ = patches.shape
        if num_frames is None:
            num_frames = torch.full((batch,), feats.shape[-1], dtype=torch.long)
        valid_cpu = self.grid.token_mask(num_frames.cpu(), num_tokens)
        valid = to_device(valid_cpu, feats.device)
        key_mask = None if bool(valid_cpu.all()) else valid
        token_idx = torch.arange(num_tokens, device=feats.device).expand(batch, -1)
        out = self.forward_tokens(
            self.patch_embed(patches), token_idx, key_mask, return_hiddens, num_tokens
        )
        if return_hiddens:
            out = out[1]
        return out, valid

    def pool_frames(self, tokens: torch.Tensor, readout: str = "mean") -> torch.Tensor:
        """One frame per patch column of (batch, N, D) time-major tokens.

        Arguments
        ---------
        tokens : torch.Tensor
            (batch, N, D) tokens, the ``freq_rows`` rows of each column together.
        readout : str
            ``"mean"``: the average over the frequency rows, (batch, columns, D),
            as the authors' X-ARES wrapper reads them; ``"concat"``: the rows
            side by side, lowest band first, (batch, columns, freq_rows * D).

        Returns
        -------
        torch.Tensor
            (batch, time columns, D or freq_rows * D).

        Example
        -------
        >>> enc = ViTEncoder(n_mels=32, embed_dim=4, depth=1, num_heads=1)
        >>> tokens = torch.arange(16.0).reshape(1, 4, 4)  # 2 columns of 2 rows
        >>> enc.pool_frames(tokens)[0, 0].tolist()
        [2.0, 3.0, 4.0, 5.0]
        >>> enc.pool_frames(tokens, "concat")[0, 0].tolist()
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
        """
        batch, num_tokens, dim = tokens.shape
        rows = self.grid.freq_rows
        columns = tokens.reshape(batch, num_tokens // rows, rows, dim)
        if readout == "mean":
            return columns.mean(dim=2)
        if readout == "concat":
            return columns.reshape(batch, num_tokens // rows, rows * dim)
        raise ValueError(f"readout must be one of {FRAME_READOUTS}, got {readout!r}")


def encode_visible(
    encoder: ViTEncoder,
    patches: torch.Tensor,
    visible_idx: torch.Tensor,
    key_mask: torch.Tensor | None,
) -> torch.Tensor:
    """Embeds and encodes only the visible patches (two-step pretraining).

    Arguments
    ---------
    encoder : ViTEncoder
        The context encoder.
    patches : torch.Tensor
        (batch, N, patch_dim) all patches.
    visible_idx : torch.Tensor
        (batch, V) grid indices of the visible tokens.
    key_mask : torch.Tensor, optional
        (batch, V) bool, True on real visible slots.

    Returns
    -------
    torch.Tensor
        (batch, V, D) encoded visible tokens.

    Example
    -------
    >>> enc = ViTEncoder(n_mels=32, embed_dim=32, depth=1, num_heads=4)
    >>> patches = torch.randn(1, 6, 256)
    >>> encode_visible(enc, patches, torch.tensor([[0, 4]]), None).shape
    torch.Size([1, 2, 32])
    """
    visible = gather_tokens(patches, visible_idx)
    return encoder.forward_tokens(
        encoder.patch_embed(visible), visible_idx, key_mask, num_tokens=patches.shape[1]
    )
