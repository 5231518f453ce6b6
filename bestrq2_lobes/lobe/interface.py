"""SpeechBrain pretrained interface of an exported BEST-RQ-2 encoder.

Example::

    from bestrq2_lobes.lobe.interface import BestRQ2EncoderInterface
    model = BestRQ2EncoderInterface.from_hparams(source="encoders/bestrq2")
    frames = model.encode_file("speech.wav")          # (frames, D)
    frames = model.encode_batch(wavs, wav_lens)       # (batch, frames, D)
    # the authors' releases by hub id (downloaded, converted once, cached):
    model = BestRQ2EncoderInterface.from_hparams(source="ltuncay/BEST-RQ-2.2-base")

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import os

import torch
from speechbrain.inference.interfaces import Pretrained

from bestrq2_lobes.data.audio import read_segment
from bestrq2_lobes.lobe.encoder_dir import EncoderDirError
from bestrq2_lobes.lobe.hub import resolve_source
from bestrq2_lobes.lobe.inputs import LobeInputError


class BestRQ2EncoderInterface(Pretrained):
    """Encodes files or batches with an exported encoder directory.

    Build it with ``from_hparams(source=ENCODER_DIR)``; the directory's
    ``hyperparams.yaml`` names the frozen :class:`~bestrq2_lobes.BestRQ2Encoder`.

    Example
    -------
    >>> from bestrq2_lobes.model.encoder import ViTEncoder
    >>> from bestrq2_lobes.model.frontend import LogMel
    >>> from bestrq2_lobes.lobe.export import HPARAMS_TEMPLATE
    >>> from bestrq2_lobes.lobe.encoder_dir import write_encoder_dir
    >>> tmp = getfixture("tmpdir")
    >>> enc = ViTEncoder(n_mels=32, embed_dim=32, depth=1, num_heads=4)
    >>> path = write_encoder_dir(tmp / "enc", LogMel(n_mels=32), enc, 10.0)
    >>> _ = (tmp / "enc" / "hyperparams.yaml").write(
    ...     HPARAMS_TEMPLATE.format(sample_rate=16000))
    >>> model = BestRQ2EncoderInterface.from_hparams(source=path)
    >>> model.encode_batch(torch.randn(2, 32000), torch.tensor([1.0, 0.6])).shape
    torch.Size([2, 3, 32])
    """

    HPARAMS_NEEDED = ["sample_rate"]
    MODULES_NEEDED = ["encoder"]

    @classmethod
    def from_hparams(cls, source, hparams_file="hyperparams.yaml", **kwargs):
        """Loads the interface from an encoder directory or a hub id.

        A hub id (``revision=`` picks its branch, tag or commit) is resolved
        by ``bestrq2_lobes.lobe.hub.resolve_source`` into a converted directory.
        """
        source = os.fspath(resolve_source(source, kwargs.pop("revision", None)))
        if not os.path.isfile(os.path.join(source, hparams_file)):
            raise EncoderDirError(f"{source}: missing {hparams_file}")
        overrides = {"source": os.path.abspath(source), **kwargs.pop("overrides", {})}
        kwargs.setdefault("savedir", source)
        return super().from_hparams(
            source=source, hparams_file=hparams_file, overrides=overrides, **kwargs
        )

    @property
    def encoder(self):
        """The frozen lobe."""
        return self.mods.encoder

    def encode_batch(
        self, wavs: torch.Tensor, wav_lens: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(batch, frames, D) features of (batch, samples) waveforms.

        The lobe checks the input (``LobeInputError``): floating-point audio
        (integer PCM is refused, not rescaled), ``wav_lens`` in (0, 1], no empty
        clip, no non-finite sample. Every clip gives at least one frame.
        """
        if isinstance(wavs, torch.Tensor):
            wavs = wavs.to(self.device)
        if isinstance(wav_lens, torch.Tensor):
            wav_lens = wav_lens.to(self.device)
        return self.encoder(wavs, wav_lens)

    def encode_file(self, path: str | os.PathLike) -> torch.Tensor:
        """(frames, D) features of one audio file (resampled, downmixed).

        A file shorter than one frame gives one frame; an empty file or one with
        non-finite samples stops with a ``LobeInputError`` naming the file.
        """
        wav = read_segment(path, sample_rate=self.encoder.sample_rate)
        try:
            return self.encode_batch(wav.unsqueeze(0))[0]
        except LobeInputError as err:
            raise LobeInputError(f"{os.fspath(path)}: {err}") from None

    def forward(self, wavs, wav_lens=None):
        """Same as ``encode_batch``."""
        return self.encode_batch(wavs, wav_lens)
