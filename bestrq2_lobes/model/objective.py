"""What a pretraining model returns, and the masked-prediction loss on it.

Both pretraining models (``model.pretraining``) return a :class:`PretrainOutput`:
logits at the masked cells and the quantizer's target codes there. The loss is
the mean cross-entropy over the masked cells, averaged over codebooks, with the
diagnostics the recipe logs (masked-token accuracy, target-code perplexity).

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from bestrq2_lobes.model.masking import MaskPlan


@dataclass
class PretrainOutput:
    """What a pretraining model returns for one batch.

    Arguments
    ---------
    logits : list of torch.Tensor
        One (batch, K, codebook_size) tensor per codebook, at the masked cells.
    targets : torch.Tensor
        (batch, K, num_codebooks) code ids of the masked cells.
    target_mask : torch.Tensor, optional
        (batch, K) bool, False on slots that only pad; None when all are real.
    plan : MaskPlan
        The mask that was used.
    valid_tokens : torch.Tensor
        (batch,) valid tokens per clip (CPU).
    audio_seconds : float
        Seconds of real (unpadded) audio in the batch.
    """

    logits: list
    targets: torch.Tensor
    target_mask: torch.Tensor | None
    plan: MaskPlan
    valid_tokens: torch.Tensor
    audio_seconds: float


def masked_prediction_loss(out: PretrainOutput) -> tuple[torch.Tensor, dict]:
    """Mean cross-entropy over the masked cells, averaged over codebooks.

    Arguments
    ---------
    out : PretrainOutput
        The model output.

    Returns
    -------
    (torch.Tensor, dict)
        The loss and detached diagnostics: ``accuracy`` (masked-token accuracy)
        and ``perplexity`` (exp of the entropy of the target codes in the batch,
        averaged over codebooks: how many codes are in use).

    Example
    -------
    >>> logits = [torch.zeros(1, 2, 4)]
    >>> targets = torch.tensor([[[1], [2]]])
    >>> out = PretrainOutput(logits, targets, None, None, None, 0.0)
    >>> loss, stats = masked_prediction_loss(out)
    >>> round(float(loss), 4), round(float(stats["perplexity"]), 4)
    (1.3863, 2.0)
    """
    weight = None
    if out.target_mask is not None:
        weight = out.target_mask.reshape(-1).float()
    losses, correct, perplexity = [], [], []
    for q, logits in enumerate(out.logits):
        target = out.targets[..., q].reshape(-1)
        flat = logits.reshape(-1, logits.shape[-1]).float()
        ce = F.cross_entropy(flat, target, reduction="none")
        with torch.no_grad():
            # on the fp32 copy: the CPU argmax of bf16 is several times slower
            hit = (flat.argmax(dim=-1) == target).float()
            counts = torch.zeros(flat.shape[-1], device=flat.device)
            counts.scatter_add_(
                0, target, torch.ones_like(hit) if weight is None else weight
            )
            probs = counts / counts.sum().clamp(min=1)
            entropy = -(probs * probs.clamp(min=1e-12).log()).sum()
            perplexity.append(entropy.exp())
        if weight is None:
            losses.append(ce.mean())
            correct.append(hit.mean())
        else:
            denom = weight.sum().clamp(min=1)
            losses.append((ce * weight).sum() / denom)
            correct.append((hit * weight).sum() / denom)
    loss = torch.stack(losses).mean()
    stats = {
        "accuracy": torch.stack(correct).mean().detach(),
        "perplexity": torch.stack(perplexity).mean().detach(),
    }
    return loss, stats
