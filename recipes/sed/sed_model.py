"""Small frame-level head for sound event detection on frozen SSL features.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import torch
from torch import nn


class SEDHead(nn.Module):
    """Dropout, an optional bidirectional GRU, and a linear layer to class logits.

    Arguments
    ---------
    input_dim : int
        Feature width (the encoder's ``output_dim``).
    num_classes : int
        Number of event classes.
    hidden_size : int
        GRU width per direction.
    rnn_layers : int
        GRU layers; 0 gives a per-frame linear classifier.
    dropout : float
        Dropout on the input features (and between GRU layers).

    Example
    -------
    >>> head = SEDHead(32, 5, hidden_size=16)
    >>> head(torch.randn(2, 7, 32), torch.tensor([7, 3])).shape
    torch.Size([2, 7, 5])
    >>> SEDHead(32, 5, rnn_layers=0)(torch.randn(2, 7, 32)).shape
    torch.Size([2, 7, 5])
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        hidden_size: int = 128,
        rnn_layers: int = 1,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.rnn = None
        width = input_dim
        if rnn_layers > 0:
            self.rnn = nn.GRU(
                input_dim,
                hidden_size,
                num_layers=rnn_layers,
                batch_first=True,
                bidirectional=True,
                dropout=dropout if rnn_layers > 1 else 0.0,
            )
            width = 2 * hidden_size
        self.out = nn.Linear(width, num_classes)

    def forward(
        self, feats: torch.Tensor, counts: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Frame logits (batch, frames, classes) of features (batch, frames, D).

        ``counts`` are the valid frames of each clip: the GRU reads each clip up
        to its last valid frame only, so padding never reaches valid frames.
        """
        x = self.dropout(feats)
        if self.rnn is not None:
            frames = x.shape[1]
            if counts is None:
                x, _ = self.rnn(x)
            else:
                counts = counts.long().clamp(1, frames)
                packed = nn.utils.rnn.pack_padded_sequence(
                    x, counts.cpu(), batch_first=True, enforce_sorted=False
                )
                x, _ = self.rnn(packed)
                x, _ = nn.utils.rnn.pad_packed_sequence(
                    x, batch_first=True, total_length=frames
                )
        return self.out(x)
