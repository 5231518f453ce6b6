"""BEST-RQ-2 two-step model and the one-stage BEST-RQ ViT baseline.

Both share the front end, the patch grid, the masking and the frozen quantizer, and
the same interface: waveforms and SpeechBrain relative lengths in, a
:class:`PretrainOutput` (logits at the masked cells, their targets, diagnostics)
out. The log-mel is computed once per step: the encoder reads the patches, the
quantizer reads them through the target normalisation
(:class:`~bestrq2_lobes.model.targets.TargetNormalization`; ``none``, the
paper's raw dB patches, by default).

* :class:`BestRQ2` (contextualize-then-predict): the encoder reads only the visible
  tokens; the predictor adds mask tokens at the masked cells and predicts codes.
* :class:`OneStageBestRQ`: the encoder reads all tokens, masked patch embeddings
  replaced by a learned mask token (before positions are added); linear heads on the
  encoder outputs at the masked cells.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import torch
from torch import nn

from bestrq2_lobes.model.encoder import ViTEncoder, encode_visible
from bestrq2_lobes.model.frontend import LogMel
from bestrq2_lobes.model.masking import MaskSampler
from bestrq2_lobes.model.objective import (  # noqa: F401 (also imported from here)
    PretrainOutput,
    masked_prediction_loss,
)
from bestrq2_lobes.model.predictor import CodebookHeads, Predictor
from bestrq2_lobes.model.quantizer import RandomProjectionQuantizer
from bestrq2_lobes.model.targets import TargetNormalization
from bestrq2_lobes.model.tokens import gather_tokens, prefix_mask, sample_counts


class MaskedPretrainingModel(nn.Module):
    """Shared part of both models: log-mel, patches, mask and targets.

    Arguments
    ---------
    frontend : LogMel
        The log-mel front end.
    encoder : ViTEncoder
        The context encoder (kept after pretraining).
    quantizer : RandomProjectionQuantizer
        The frozen target quantizer.
    mask_sampler : MaskSampler
        Draws the masks.
    target_norm : TargetNormalization, optional
        Normalisation of the quantizer's input (the encoder's is untouched);
        None: ``none``, the paper's raw patches.
    """

    def __init__(
        self,
        frontend: LogMel,
        encoder: ViTEncoder,
        quantizer: RandomProjectionQuantizer,
        mask_sampler: MaskSampler,
        target_norm: TargetNormalization | None = None,
    ):
        super().__init__()
        if quantizer.input_dim != encoder.grid.patch_dim:
            raise ValueError(
                f"quantizer input_dim {quantizer.input_dim} != patch size "
                f"{encoder.grid.patch_dim} (patch_freq x patch_time)"
            )
        if frontend.n_mels != encoder.grid.n_mels:
            raise ValueError(
                f"front end gives {frontend.n_mels} mels, encoder expects "
                f"{encoder.grid.n_mels}"
            )
        grid = encoder.grid
        if target_norm is None:
            target_norm = TargetNormalization(
                "none", grid.n_mels, grid.patch_freq, grid.patch_time
            )
        shape = (grid.n_mels, grid.patch_freq, grid.patch_time)
        norm_grid = target_norm.grid
        if (norm_grid.n_mels, norm_grid.patch_freq, norm_grid.patch_time) != shape:
            raise ValueError(
                f"target_norm grid {norm_grid.n_mels} mels, {norm_grid.patch_freq} x "
                f"{norm_grid.patch_time} patches != the encoder's {shape}"
            )
        self.frontend = frontend
        self.encoder = encoder
        self.quantizer = quantizer
        self.mask_sampler = mask_sampler
        self.target_norm = target_norm

    @torch.no_grad()
    def target_codes(
        self,
        patches: torch.Tensor,
        valid_tokens: torch.Tensor | None = None,
        index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The quantizer's codes of patches, as training computes its targets.

        Arguments
        ---------
        patches : torch.Tensor
            (batch, tokens, patch_dim) raw patches of the grid.
        valid_tokens : torch.Tensor, optional
            (batch,) valid tokens per clip (None: all); ``utterance`` uses it.
        index : torch.Tensor, optional
            (batch, K) tokens to quantise (None: all).

        Returns
        -------
        torch.Tensor
            (batch, tokens or K, num_codebooks) code ids.
        """
        return self.quantizer(self.target_norm(patches, valid_tokens, index))

    @property
    def min_seconds(self) -> float:
        """Shortest clip with two tokens (one target, one visible) to learn from.

        That is one whole patch column, or two when the grid has one frequency
        row; the signal must also be longer than half an FFT (reflect padding).
        """
        frontend, grid = self.frontend, self.encoder.grid
        columns = 1 if grid.freq_rows > 1 else 2
        need = (columns * grid.patch_time - 1) * frontend.hop_length
        return max(need, frontend.min_samples) / frontend.sample_rate

    def prepare(
        self,
        wav: torch.Tensor,
        wav_lens: torch.Tensor | None,
        generator: torch.Generator | None = None,
    ):
        """Log-mel, patches, mask plan and targets of a batch.

        Returns
        -------
        (patches, plan, targets, valid_tokens, audio_seconds)
        """
        batch, samples = wav.shape
        lengths = sample_counts(wav_lens, batch, samples)
        feats = self.frontend(wav, lengths if wav_lens is not None else None)
        patches = self.encoder.grid.patchify(feats)
        num_tokens = patches.shape[1]
        num_frames = self.frontend.num_frames(lengths)
        valid_tokens = self.encoder.grid.valid_tokens(num_frames).clamp(max=num_tokens)
        if int(valid_tokens.min()) < 2:
            raise ValueError(
                f"a clip in the batch is shorter than {self.min_seconds:.3f} s "
                "(two patches); data preparation should have left it out"
            )
        plan = self.mask_sampler(
            valid_tokens, num_tokens, device=wav.device, generator=generator
        )
        targets = self.target_codes(patches, valid_tokens, plan.masked_idx)
        seconds = float(lengths.sum()) / self.frontend.sample_rate
        return patches, plan, targets, valid_tokens, seconds


class BestRQ2(MaskedPretrainingModel):
    """BEST-RQ-2: contextualize the visible tokens, then predict the masked ones.

    Arguments
    ---------
    frontend : LogMel
        The log-mel front end.
    encoder : ViTEncoder
        The context encoder; sees only visible tokens.
    predictor : Predictor
        The lightweight predictor (discarded after pretraining).
    quantizer : RandomProjectionQuantizer
        The frozen target quantizer.
    mask_sampler : MaskSampler
        Draws the masks.
    target_norm : TargetNormalization, optional
        Normalisation of the quantizer's input; None: the paper's raw patches.

    Example
    -------
    >>> model = BestRQ2(
    ...     LogMel(n_mels=32),
    ...     ViTEncoder(n_mels=32, embed_dim=32, depth=1, num_heads=4),
    ...     Predictor(32, 32, depth=1, num_heads=4, freq_rows=2, codebook_size=64),
    ...     RandomProjectionQuantizer(256, 16, 64),
    ...     MaskSampler((0.5, 0.5)),
    ... )
    >>> out = model(torch.randn(2, 32000), torch.tensor([1.0, 0.5]))
    >>> out.logits[0].shape, out.targets.shape
    (torch.Size([2, 3, 64]), torch.Size([2, 3, 1]))
    >>> out.target_mask.sum(dim=1).tolist()
    [3, 1]
    """

    def __init__(
        self,
        frontend: LogMel,
        encoder: ViTEncoder,
        predictor: Predictor,
        quantizer: RandomProjectionQuantizer,
        mask_sampler: MaskSampler,
        target_norm: TargetNormalization | None = None,
    ):
        super().__init__(frontend, encoder, quantizer, mask_sampler, target_norm)
        self.predictor = predictor

    def forward(
        self,
        wav: torch.Tensor,
        wav_lens: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> PretrainOutput:
        """Masked prediction on a batch of waveforms (batch, samples)."""
        patches, plan, targets, valid_tokens, seconds = self.prepare(
            wav, wav_lens, generator
        )
        padded = bool((valid_tokens < patches.shape[1]).any())
        visible_mask = plan.visible_valid if padded else None
        masked_mask = plan.masked_valid if padded else None
        context = encode_visible(self.encoder, patches, plan.visible_idx, visible_mask)
        logits = self.predictor(
            context, visible_mask, plan.masked_idx, masked_mask, patches.shape[1]
        )
        return PretrainOutput(logits, targets, masked_mask, plan, valid_tokens, seconds)


class OneStageHead(nn.Module):
    """Learned mask token and linear heads of the one-stage baseline.

    Arguments
    ---------
    dim : int
        Encoder width.
    codebook_size : int
        Codes per codebook.
    num_codebooks : int
        Number of codebooks.

    Example
    -------
    >>> head = OneStageHead(8, 16)
    >>> head.mask_token.shape
    torch.Size([1, 1, 8])
    """

    def __init__(self, dim: int, codebook_size: int, num_codebooks: int = 1):
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.heads = CodebookHeads(dim, codebook_size, num_codebooks)
        for head in self.heads.heads:
            nn.init.trunc_normal_(head.weight, std=0.02)
            nn.init.zeros_(head.bias)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One (..., codebook_size) logit tensor per codebook."""
        return self.heads(x)


class OneStageBestRQ(MaskedPretrainingModel):
    """One-stage BEST-RQ with a ViT: all tokens in, mask token in place of masked.

    Arguments
    ---------
    frontend : LogMel
        The log-mel front end.
    encoder : ViTEncoder
        The encoder; sees all tokens.
    head : OneStageHead
        Mask token and linear heads.
    quantizer : RandomProjectionQuantizer
        The frozen target quantizer.
    mask_sampler : MaskSampler
        Draws the masks.
    target_norm : TargetNormalization, optional
        Normalisation of the quantizer's input; None: the paper's raw patches.

    Example
    -------
    >>> model = OneStageBestRQ(
    ...     LogMel(n_mels=32),
    ...     ViTEncoder(n_mels=32, embed_dim=32, depth=1, num_heads=4),
    ...     OneStageHead(32, 64),
    ...     RandomProjectionQuantizer(256, 16, 64),
    ...     MaskSampler((0.5, 0.5)),
    ... )
    >>> out = model(torch.randn(2, 32000))
    >>> out.logits[0].shape
    torch.Size([2, 3, 64])
    """

    def __init__(
        self,
        frontend: LogMel,
        encoder: ViTEncoder,
        head: OneStageHead,
        quantizer: RandomProjectionQuantizer,
        mask_sampler: MaskSampler,
        target_norm: TargetNormalization | None = None,
    ):
        super().__init__(frontend, encoder, quantizer, mask_sampler, target_norm)
        self.head = head

    def forward(
        self,
        wav: torch.Tensor,
        wav_lens: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> PretrainOutput:
        """Masked prediction on a batch of waveforms (batch, samples)."""
        patches, plan, targets, valid_tokens, seconds = self.prepare(
            wav, wav_lens, generator
        )
        batch, num_tokens, _ = patches.shape
        tokens = self.encoder.patch_embed(patches)
        mask_token = self.head.mask_token.to(tokens.dtype)
        tokens = torch.where(plan.masked.unsqueeze(-1), mask_token, tokens)
        padded = bool((valid_tokens < num_tokens).any())
        key_mask = prefix_mask(valid_tokens, num_tokens, wav.device) if padded else None
        token_idx = torch.arange(num_tokens, device=wav.device).expand(batch, -1)
        encoded = self.encoder.forward_tokens(
            tokens, token_idx, key_mask, num_tokens=num_tokens
        )
        logits = self.head(gather_tokens(encoded, plan.masked_idx))
        masked_mask = plan.masked_valid if padded else None
        return PretrainOutput(logits, targets, masked_mask, plan, valid_tokens, seconds)
