"""Fixed 2-D sin-cos positions indexed by each token's true (freq row, time column).

With ``D/4`` frequencies ``omega_k = 10000 ** (-k / (D/4))``, a token at row ``f`` and
column ``t`` gets ``[sin(f omega), sin(t omega), cos(f omega), cos(t omega)]``. The
table is computed from coordinates, so clips of any length are placed correctly (a
5 s clip gets the first columns of a 10 s clip's table).

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import torch


def sincos_2d(coords: torch.Tensor, dim: int) -> torch.Tensor:
    """Sin-cos embeddings of (..., 2) integer (freq row, time column) coordinates.

    Arguments
    ---------
    coords : torch.Tensor
        Integer coordinates (..., 2): frequency row, then time column.
    dim : int
        Embedding width, a multiple of 4.

    Returns
    -------
    torch.Tensor
        fp32 embeddings (..., dim).

    Example
    -------
    >>> pos = sincos_2d(torch.tensor([[0, 0], [1, 3]]), 8)
    >>> pos.shape
    torch.Size([2, 8])
    >>> pos[0]
    tensor([0., 0., 0., 0., 1., 1., 1., 1.])
    """
    if dim % 4 != 0:
        raise ValueError(f"sin-cos position width must be a multiple of 4, got {dim}")
    quarter = dim // 4
    omega = 10000.0 ** (
        -torch.arange(quarter, dtype=torch.float64, device=coords.device) / quarter
    )
    f = coords[..., 0:1].double() * omega
    t = coords[..., 1:2].double() * omega
    return torch.cat([f.sin(), t.sin(), f.cos(), t.cos()], dim=-1).float()


class SinCosPosition2d(torch.nn.Module):
    """Position table for a time-major token grid, cached for the longest seen.

    Arguments
    ---------
    dim : int
        Embedding width (multiple of 4).
    freq_rows : int
        Number of frequency rows of the patch grid.

    Example
    -------
    >>> pos = SinCosPosition2d(dim=16, freq_rows=8)
    >>> long, short = pos(128), pos(64)
    >>> torch.equal(short, long[:64])
    True
    """

    def __init__(self, dim: int, freq_rows: int):
        super().__init__()
        self.dim = dim
        self.freq_rows = freq_rows
        # A plain cache, not a buffer: it must not be broadcast or checkpointed.
        self._table = torch.zeros(0, dim)

    def forward(self, num_tokens: int, device=None) -> torch.Tensor:
        """(num_tokens, dim) positions of the first ``num_tokens`` tokens."""
        device = torch.device("cpu") if device is None else torch.device(device)
        if self._table.shape[0] < num_tokens or self._table.device != device:
            idx = torch.arange(max(num_tokens, self._table.shape[0]), device=device)
            coords = torch.stack([idx % self.freq_rows, idx // self.freq_rows], -1)
            self._table = sincos_2d(coords, self.dim)
        return self._table[:num_tokens]

    def at(
        self, token_idx: torch.Tensor, num_tokens: int | None = None
    ) -> torch.Tensor:
        """(..., dim) positions of the tokens at the given grid indices.

        ``num_tokens`` (the grid size, when the caller knows it) saves reading
        the largest index back from the device.

        Example
        -------
        >>> pos = SinCosPosition2d(dim=16, freq_rows=8)
        >>> idx = torch.tensor([[3, 17]])
        >>> torch.equal(pos.at(idx), pos.at(idx, num_tokens=128))
        True
        """
        if num_tokens is None:
            num_tokens = int(token_idx.max()) + 1
        return self(num_tokens, token_idx.device)[token_idx]
