"""BEST-RQ-2 encoder as an SSL lobe for downstream SpeechBrain recipes.

Use it from any HyperPyYAML file::

    ssl: !new:bestrq2_lobes.BestRQ2Encoder
        source: !ref <encoder_dir>
        freeze: True
        output_all_hiddens: True

Features are the encoder tokens reshaped to (freq rows, time columns), one frame
per patch column (625 ms for the paper configuration, 40 ms for the speech one;
``hop_ms``). ``frame_readout`` says how a column's rows become its frame:
``"mean"`` averages them (D features, the authors' X-ARES read-out and the
default), ``"concat"`` keeps them side by side (``freq_rows`` x D features: the
frame still says which band holds what). An encoder directory carries its
default read-out in ``config.json``; the argument overrides it. Audio longer than the
pretraining crop is cut into chunks of that length (whole patch columns), encoded
as separate items in bounded groups, and the frames are concatenated; a clip up to
one crop long is encoded in one piece exactly as in pretraining. Each clip's frames
depend only on its own samples, whatever else is padded into the batch.

Every clip of at least one sample gives at least one frame: a clip shorter than
``min_samples`` (one patch column, 0.586 s for the paper grid, 30 ms for the
speech one) is zero-padded to that length and encoded as a clip of that length,
as pretraining pads a batch. The input is checked first (see
``bestrq2_lobes.lobe.inputs``): shapes, dtype, relative lengths, empty clips and
non-finite samples stop with a one-line ``LobeInputError``.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import os

import torch
from torch import nn

from bestrq2_lobes.lobe.encoder_dir import (
    build_modules,
    encoder_config,
    load_encoder_dir,
)
from bestrq2_lobes.lobe.hub import resolve_source
from bestrq2_lobes.lobe.inputs import (
    LobeInputError,
    as_batch,
    check_finite,
    check_mode,
    clip_samples,
    valid_samples,
)
from bestrq2_lobes.model.device_copy import to_device
from bestrq2_lobes.model.encoder import FRAME_READOUTS

__all__ = ["BestRQ2Encoder", "LobeInputError"]


class BestRQ2Encoder(nn.Module):
    """Frozen (or fine-tuned) BEST-RQ-2 encoder giving frame features.

    Arguments
    ---------
    source : str, optional
        An exported encoder directory, or a Hugging Face hub id of the authors'
        releases (``"ltuncay/BEST-RQ-2.2-base"``: downloaded, converted on first
        use and cached; see ``bestrq2_lobes.lobe.hub``). ``None`` builds a
        randomly initialised encoder from ``config`` (for smoke tests and the
        random baseline).
    freeze : bool
        No parameter requires grad, the module stays in eval mode even when
        ``train()`` is called, and the forward pass builds no graph.
    output_all_hiddens : bool
        Return all ``num_layers`` (= ``depth + 1``) hidden states (layer 0:
        patch embeddings plus positions), each pooled to frames, stacked as
        (num_layers, batch, frames, D).
    config : dict, optional
        Config of the random encoder (see ``encoder_config``); ignored when
        ``source`` is given. Defaults to the paper configuration.
    chunk_batch : int, optional
        Chunks (of ``crop_seconds``) encoded at once, which bounds memory on
        long audio. Default: 16 on the CPU, 256 on a GPU (where small groups
        would leave it waiting on Python).
    revision : str, optional
        Branch, tag or commit of a hub id ``source`` (default: ``main``).
    nonfinite : str
        What a NaN or infinite sample inside a clip does: ``"error"`` (default)
        stops with a ``LobeInputError`` naming the batch item and the sample;
        ``"zero"`` replaces such samples by 0 and logs a warning.
    frame_readout : str, optional
        ``"mean"`` (average a patch column's frequency rows: ``output_dim`` is
        the encoder width D) or ``"concat"`` (the rows side by side:
        ``freq_rows`` x D). None (default): the config's ``frame_readout``, or
        ``"mean"`` when it has none.

    Example
    -------
    >>> from bestrq2_lobes.lobe.encoder_dir import encoder_config
    >>> cfg = encoder_config(embed_dim=32, depth=2, num_heads=4, n_mels=32)
    >>> ssl = BestRQ2Encoder(None, freeze=True, config=cfg)
    >>> feats = ssl(torch.randn(2, 16000 * 3), torch.tensor([1.0, 0.5]))
    >>> feats.shape, ssl.hop_ms, ssl.output_dim, ssl.num_layers
    (torch.Size([2, 4, 32]), 625.0, 32, 3)
    >>> ssl.frame_counts(torch.tensor([1.0, 0.5]), 16000 * 3)
    tensor([4, 2])
    >>> ssl.output_lengths(torch.tensor([1.0, 0.5]), 16000 * 3)
    tensor([1.0000, 0.5000])
    >>> BestRQ2Encoder(None, output_all_hiddens=True, config=cfg)(
    ...     torch.randn(1, 16000)).shape
    torch.Size([3, 1, 1, 32])

    The rows of each column side by side (2 rows of 32 here):

    >>> wide = BestRQ2Encoder(None, config=cfg, frame_readout="concat")
    >>> wide.output_dim, wide(torch.randn(1, 16000 * 3)).shape
    (64, torch.Size([1, 4, 64]))

    A clip shorter than one patch column still gives one frame:

    >>> ssl(torch.randn(1, 9000)).shape, ssl.min_samples
    (torch.Size([1, 1, 32]), 9375)
    >>> ssl(torch.randn(2, 100), torch.tensor([1.0, 2.0]))
    Traceback (most recent call last):
    ...
    bestrq2_lobes.lobe.inputs.LobeInputError: wav_lens[1] is 2: expected ...
    """

    def __init__(
        self,
        source: str | os.PathLike | None = None,
        freeze: bool = True,
        output_all_hiddens: bool = False,
        config: dict | None = None,
        chunk_batch: int | None = None,
        nonfinite: str = "error",
        revision: str | None = None,
        frame_readout: str | None = None,
    ):
        super().__init__()
        self.nonfinite = check_mode(nonfinite)
        if frame_readout is not None and frame_readout not in FRAME_READOUTS:
            raise ValueError(
                f"frame_readout must be one of {list(FRAME_READOUTS)}, "
                f"got {frame_readout!r}"
            )
        if chunk_batch is not None and (
            isinstance(chunk_batch, bool)
            or not isinstance(chunk_batch, int)
            or chunk_batch < 1
        ):
            raise ValueError(
                f"chunk_batch must be a positive integer, got {chunk_batch!r}"
            )
        if source is not None:
            source = resolve_source(source, revision)
            frontend, encoder, config = load_encoder_dir(source)
        else:
            config = config or encoder_config("paper")
            frontend, encoder = build_modules(config)
        self.source = None if source is None else os.fspath(source)
        self.frontend = frontend
        self.encoder = encoder
        self.frame_readout = frame_readout or config.get("frame_readout", "mean")
        self.config = {**config, "frame_readout": self.frame_readout}
        self.freeze = freeze
        self.output_all_hiddens = output_all_hiddens
        self.chunk_batch = chunk_batch
        grid = encoder.grid
        self.samples_per_frame = frontend.hop_length * grid.patch_time
        crop = int(config["crop_seconds"] * frontend.sample_rate)
        self.chunk_samples = max(1, crop // self.samples_per_frame) * (
            self.samples_per_frame
        )
        if freeze:
            self.requires_grad_(False)
            self.eval()

    @property
    def output_dim(self) -> int:
        """Feature width: D, or ``freq_rows`` x D with ``frame_readout="concat"``."""
        if self.frame_readout == "concat":
            return self.encoder.embed_dim * self.encoder.grid.freq_rows
        return self.encoder.embed_dim

    @property
    def num_layers(self) -> int:
        """Hidden states given with ``output_all_hiddens``: ``depth + 1``.

        The embeddings plus one per transformer block, as SpeechBrain's SSL
        lobes count them: ``WeightedLayerSum(num_layers=ssl.num_layers)``.
        """
        return self.encoder.depth + 1

    @property
    def depth(self) -> int:
        """Number of transformer blocks."""
        return self.encoder.depth

    @property
    def hop_ms(self) -> float:
        """Exact frame hop of the features in milliseconds."""
        return 1000.0 * self.samples_per_frame / self.frontend.sample_rate

    @property
    def sample_rate(self) -> int:
        """Expected sampling rate of the input waveforms."""
        return self.frontend.sample_rate

    @property
    def min_samples(self) -> int:
        """Shortest clip encoded as it is; a shorter one is zero-padded to it.

        One whole patch column (``patch_time`` frames, i.e. ``patch_time - 1``
        hops), and more than half an FFT for the front end's reflect padding.
        """
        need = (self.encoder.grid.patch_time - 1) * self.frontend.hop_length
        return max(need, self.frontend.min_samples, 1)

    def train(self, mode: bool = True):
        """A frozen lobe stays in eval mode (Brain calls ``modules.train()``)."""
        return super().train(mode and not self.freeze)

    def num_output_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Frames produced for clips of the given lengths in samples.

        At least one for every clip of at least one sample (a clip shorter than
        ``min_samples`` is padded to it); 0 for an empty clip, which ``forward``
        refuses.

        Example
        -------
        >>> from bestrq2_lobes.lobe.encoder_dir import encoder_config
        >>> cfg = encoder_config(embed_dim=32, depth=1, num_heads=4, n_mels=32)
        >>> BestRQ2Encoder(config=cfg).num_output_frames(
        ...     torch.tensor([0, 1, 9375, 20000, 160000, 170000]))
        tensor([ 0,  1,  1,  2, 16, 17])
        """
        num_samples = num_samples.long()
        padded = num_samples.clamp(min=self.min_samples)
        num_samples = torch.where(num_samples > 0, padded, torch.zeros_like(padded))
        full, rest = (
            torch.div(num_samples, self.chunk_samples, rounding_mode="floor"),
            num_samples % self.chunk_samples,
        )
        per_chunk = self.chunk_samples // self.samples_per_frame
        return full * per_chunk + self._piece_frames(rest)

    def _piece_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Frames of chunks of the given lengths, not padded (0 for 0 samples)."""
        frames = self.encoder.grid.valid_columns(self.frontend.num_frames(num_samples))
        return torch.where(num_samples > 0, frames, torch.zeros_like(frames))

    def frame_counts(
        self, wav_lens: torch.Tensor | None, num_samples: int, batch: int = 1
    ) -> torch.Tensor:
        """Valid output frames of each clip (CPU, long): the lengths contract.

        Arguments
        ---------
        wav_lens : torch.Tensor, optional
            SpeechBrain relative lengths of the waveforms; None: ``batch``
            whole clips.
        num_samples : int
            Padded length of the waveform batch (``wavs.shape[1]``).
        batch : int
            Batch size, used when ``wav_lens`` is None.

        Returns
        -------
        torch.Tensor
            (batch,) frame counts, each at least 1; ``forward`` returns
            ``counts.max()`` frames, and frames at or after a clip's count are
            zero. Lengths ``forward`` refuses raise the same ``LobeInputError``.
        """
        if wav_lens is not None:
            batch = torch.as_tensor(wav_lens).reshape(-1).shape[0]
        return self.num_output_frames(clip_samples(wav_lens, batch, num_samples))

    def output_lengths(
        self, wav_lens: torch.Tensor | None, num_samples: int
    ) -> torch.Tensor:
        """Relative lengths of the output frames, SpeechBrain style."""
        if wav_lens is None:
            clip_samples(None, 1, num_samples)  # an empty batch still fails
            return torch.ones(1)
        frames = self.frame_counts(wav_lens, num_samples)
        return frames.float() / frames.max().clamp(min=1).float()

    def forward(
        self, wav: torch.Tensor, wav_lens: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encodes a batch of waveforms.

        Arguments
        ---------
        wav : torch.Tensor
            (batch, samples) floating-point audio at ``sample_rate``; a 1-D
            tensor is one clip (batch of one) and (batch, 1, samples) is
            squeezed. Integer PCM is refused, not rescaled.
        wav_lens : torch.Tensor, optional
            SpeechBrain relative lengths (batch,) in (0, 1]; None: no padding.

        Returns
        -------
        torch.Tensor
            (batch, frames, D), or (L+1, batch, frames, D) with
            ``output_all_hiddens``; ``frames`` is the largest of
            ``frame_counts``. Frames after a clip's end are zero.

        Raises
        ------
        LobeInputError
            One line saying what was expected: bad shape or dtype, bad
            ``wav_lens``, an empty clip, a non-finite sample (batch item and
            sample position), or, for a frozen lobe, non-finite features.
        """
        if self.freeze:
            with torch.no_grad():
                return self._encode(wav, wav_lens)
        return self._encode(wav, wav_lens)

    def _prepare(self, wav: torch.Tensor, wav_lens: torch.Tensor | None):
        """Checked fp32 (batch, samples) audio, zero after each clip, and lengths.

        The lengths are each clip's own samples, raised to ``min_samples``; the
        waveforms are zero-padded to hold the longest of them.
        """
        wav = as_batch(wav)
        batch, samples = wav.shape
        counts = clip_samples(wav_lens, batch, samples)
        wav = wav.float()
        if bool((counts < samples).any()):  # padding is never read, whatever it is
            valid = valid_samples(counts, samples, wav.device)
            wav = torch.where(valid, wav, torch.zeros_like(wav))
        wav = check_finite(wav, self.sample_rate, self.nonfinite)
        lengths = counts.clamp(min=self.min_samples)
        longest = int(lengths.max())
        if longest > samples:
            wav = torch.nn.functional.pad(wav, (0, longest - samples))
        return wav, lengths

    def _encode(self, wav: torch.Tensor, wav_lens: torch.Tensor | None):
        wav, lengths = self._prepare(wav, wav_lens)
        batch, samples = wav.shape
        chunk = self.chunk_samples
        num_chunks = max(1, -(-samples // chunk))
        padded = torch.nn.functional.pad(wav, (0, num_chunks * chunk - samples))
        pieces = padded.reshape(batch * num_chunks, chunk)
        starts = torch.arange(num_chunks) * chunk
        piece_len = (lengths.unsqueeze(1) - starts).clamp(min=0, max=chunk).reshape(-1)
        piece_frames = self._piece_frames(piece_len)
        per_chunk = chunk // self.samples_per_frame
        layers = self.num_layers if self.output_all_hiddens else 1
        out = wav.new_zeros(
            layers, batch * num_chunks, per_chunk, self.output_dim, dtype=torch.float32
        )
        todo = torch.nonzero(piece_frames > 0).flatten()
        group_size = self.chunk_batch or (16 if wav.device.type == "cpu" else 256)
        for group in todo.split(group_size):
            group_d = to_device(group, wav.device)
            out[:, group_d] = self._encode_pieces(
                pieces[group_d], piece_len[group], per_chunk
            ).to(out.dtype)
        out = out.reshape(layers, batch, num_chunks * per_chunk, self.output_dim)
        frames = int(self.num_output_frames(lengths).max())
        out = out[:, :, :frames]
        if self.freeze:
            self._check_features(out, wav)
        return out if self.output_all_hiddens else out[0]

    def _check_features(self, out: torch.Tensor, wav: torch.Tensor) -> None:
        """A frozen lobe never returns non-finite features silently."""
        finite = torch.isfinite(out).flatten(2).all(dim=2).all(dim=0)
        if bool(finite.all()):
            return
        item = int(torch.nonzero(~finite.cpu())[0])
        peak = float(wav[item].abs().max())
        raise LobeInputError(
            f"batch item {item}: the encoder gave non-finite features (peak "
            f"|sample| {peak:.3g}; expected audio at waveform scale, |x| <= 1)"
        )

    def _encode_pieces(self, pieces, lengths, per_chunk):
        """(layers, n, per_chunk, D) pooled frames of chunks of equal padding."""
        longest = int(lengths.max())
        pieces = pieces[:, :longest]
        feats = self.frontend(pieces, lengths)
        num_frames = self.frontend.num_frames(lengths)
        encoded, valid = self.encoder(
            feats, num_frames, return_hiddens=self.output_all_hiddens
        )
        hiddens = encoded if self.output_all_hiddens else [encoded]
        readout = self.frame_readout
        stacked = torch.stack([self.encoder.pool_frames(h, readout) for h in hiddens])
        mask = self.encoder.pool_frames(valid.unsqueeze(-1).float()) > 0
        stacked = stacked * mask.unsqueeze(0).to(stacked.dtype)
        return torch.nn.functional.pad(stacked, (0, 0, 0, per_chunk - stacked.shape[2]))
