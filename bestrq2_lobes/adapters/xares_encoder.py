"""X-ARES encoder module of an exported BEST-RQ-2 encoder.

X-ARES builds the class with no arguments, so the encoder directory comes from the
environment variable ``BESTRQ2_ENCODER_DIR``::

    BESTRQ2_ENCODER_DIR=encoders/bestrq2 python -m xares.run \
        bestrq2_lobes/adapters/xares_encoder.py src/tasks/*.py

X-ARES caches embeddings by the encoder's class name: evaluate each checkpoint in
its own output root (or a copy of this file with the class renamed), or the
second checkpoint silently reuses the first one's embeddings.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import os

import torch

from bestrq2_lobes.lobe import frozen_encoder as ssl
from bestrq2_lobes.lobe.encoder_dir import EncoderDirError

ENV_VAR = "BESTRQ2_ENCODER_DIR"


class BestRQ2XaresEncoder(torch.nn.Module):
    """X-ARES interface: ``forward(audio [B, T]) -> [B, T', D]`` at 16 kHz.

    Batches come zero-padded without lengths; long audio is chunked by the lobe.
    The audio goes to the lobe unchanged, so the lobe's input checks apply (one-line
    ``LobeInputError``), and a clip shorter than one frame gives one frame.

    Example
    -------
    >>> os.environ.pop(ENV_VAR, None) and None
    >>> BestRQ2XaresEncoder()
    Traceback (most recent call last):
    ...
    bestrq2_lobes.lobe.encoder_dir.EncoderDirError: set BESTRQ2_ENCODER_DIR ...
    """

    def __init__(self):
        super().__init__()
        directory = os.environ.get(ENV_VAR)
        if not directory:
            raise EncoderDirError(
                f"set {ENV_VAR} to an exported encoder directory "
                "(python -m bestrq2_lobes.lobe.export RUN ENCODER_DIR)"
            )
        self.lobe = ssl.BestRQ2Encoder(directory, freeze=True)
        self.sampling_rate = self.lobe.sample_rate
        self.output_dim = self.lobe.output_dim
        self.hop_size_in_ms = self.lobe.hop_ms

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Encodes (batch, samples) audio into (batch, frames, output_dim)."""
        with torch.inference_mode():
            return self.lobe(audio)
