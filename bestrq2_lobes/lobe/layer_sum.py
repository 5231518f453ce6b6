"""Learnable softmax-weighted sum of an SSL encoder's hidden layers.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import torch
from torch import nn


class WeightedLayerSum(nn.Module):
    """Softmax-weighted sum over layers, optionally layer-normalising each first.

    A separate trainable module, so the SSL lobe can stay frozen.

    Arguments
    ---------
    num_layers : int
        Number of stacked hidden states: ``ssl.num_layers`` of the lobe
        (its ``depth + 1``).
    layer_norm : bool
        Apply a parameter-free layer norm to each hidden state before summing.

    Example
    -------
    >>> layer_sum = WeightedLayerSum(3)
    >>> hiddens = torch.stack([torch.full((2, 4, 8), v) for v in (0.0, 1.0, 2.0)])
    >>> layer_sum(hiddens)[0, 0, 0].item()
    1.0
    >>> [round(w, 4) for w in layer_sum.weights().tolist()]
    [0.3333, 0.3333, 0.3333]
    """

    def __init__(self, num_layers: int, layer_norm: bool = False):
        super().__init__()
        self.num_layers = num_layers
        self.layer_norm = layer_norm
        self.logits = nn.Parameter(torch.zeros(num_layers))

    def weights(self) -> torch.Tensor:
        """The current softmax weights of the layers."""
        return self.logits.softmax(dim=0)

    def forward(self, hiddens: torch.Tensor) -> torch.Tensor:
        """Combines (L, ..., D) hidden states into (..., D)."""
        if hiddens.shape[0] != self.num_layers:
            raise ValueError(
                f"expected {self.num_layers} layers, got {hiddens.shape[0]}"
            )
        if self.layer_norm:
            hiddens = nn.functional.layer_norm(hiddens, hiddens.shape[-1:])
        weights = self.weights().to(hiddens.dtype)
        return torch.einsum("l,l...->...", weights, hiddens)
