"""XARES-LLM encoder module of an exported BEST-RQ-2 encoder.

The encoder directory comes from ``BESTRQ2_ENCODER_DIR``, as for X-ARES.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import os

import torch

from bestrq2_lobes.lobe import frozen_encoder as ssl
from bestrq2_lobes.lobe.encoder_dir import EncoderDirError

ENV_VAR = "BESTRQ2_ENCODER_DIR"


class BestRQ2XaresLLMEncoder(torch.nn.Module):
    """``forward(audio, audio_attention_mask) -> (features, feature_attention_mask)``.

    Arguments
    ---------
    encoder_dir : str, optional
        Exported encoder directory (default: ``$BESTRQ2_ENCODER_DIR``).

    Frames computed only from padding are masked out (mask 0) and zeroed.
    """

    def __init__(self, encoder_dir: str | None = None):
        super().__init__()
        directory = encoder_dir or os.environ.get(ENV_VAR)
        if not directory:
            raise EncoderDirError(f"set {ENV_VAR} or pass encoder_dir")
        self.lobe = ssl.BestRQ2Encoder(directory, freeze=True)
        self.output_dim = self.lobe.output_dim
        self.sampling_rate = self.lobe.sample_rate
        self.hop_size_in_ms = self.lobe.hop_ms

    def forward(
        self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encodes (batch, samples) audio with a (batch, samples) 1/0 mask."""
        batch, samples = audio.shape
        if audio_attention_mask is None:
            lengths = torch.full((batch,), samples, dtype=torch.long)
        else:
            lengths = audio_attention_mask.detach().long().sum(dim=1).cpu()
        with torch.inference_mode():
            feats = self.lobe(audio.float(), lengths.float() / samples)
        frames = self.lobe.num_output_frames(lengths)
        idx = torch.arange(feats.shape[1])
        mask = (idx.unsqueeze(0) < frames.unsqueeze(1)).to(feats.device)
        return feats, mask.long()
