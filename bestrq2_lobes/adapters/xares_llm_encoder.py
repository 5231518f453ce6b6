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
from bestrq2_lobes.lobe.inputs import LobeInputError, as_batch

ENV_VAR = "BESTRQ2_ENCODER_DIR"


class BestRQ2XaresLLMEncoder(torch.nn.Module):
    """``forward(audio, audio_attention_mask) -> (features, feature_attention_mask)``.

    Arguments
    ---------
    encoder_dir : str, optional
        Exported encoder directory (default: ``$BESTRQ2_ENCODER_DIR``).

    Frames computed only from padding are masked out (mask 0) and zeroed. The
    mask's row sums are the clip lengths (a prefix of each row is taken as the
    clip); the lobe's input checks apply, so a row of zeros (an empty clip) stops
    with a one-line ``LobeInputError``, and a clip shorter than one frame gives one
    frame, with mask 1.
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
        audio = as_batch(audio)
        batch, samples = audio.shape
        if audio_attention_mask is None:
            wav_lens = None
        else:
            mask = torch.as_tensor(audio_attention_mask).detach()
            if tuple(mask.shape) != (batch, samples):
                raise LobeInputError(
                    f"expected audio_attention_mask of shape {(batch, samples)}, "
                    f"like the audio, got {tuple(mask.shape)}"
                )
            lengths = (mask != 0).long().sum(dim=1).cpu()
            wav_lens = lengths.double() / max(samples, 1)
        with torch.inference_mode():
            feats = self.lobe(audio, wav_lens)
        frames = self.lobe.frame_counts(wav_lens, samples, batch)
        idx = torch.arange(feats.shape[1])
        mask = (idx.unsqueeze(0) < frames.unsqueeze(1)).to(feats.device)
        return feats, mask.long()
