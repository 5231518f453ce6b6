"""Checks of the waveforms and lengths given to the frozen lobe.

``BestRQ2Encoder`` (and through it the pretrained interface and the X-ARES
adapters) checks its input at the boundary, and anything it cannot encode stops
with a one-line :class:`LobeInputError` that says what was expected:

* waveforms: a floating-point tensor of shape (samples,) (one clip), (batch,
  samples) or (batch, 1, samples) (squeezed). Integer tensors are refused, not
  rescaled: the lobe cannot tell 16-bit from 24- or 32-bit PCM, so the caller
  converts (``wav.float() / 32768`` for 16-bit audio);
* ``wav_lens``: SpeechBrain relative lengths, one per clip, finite and in
  (0, 1] (up to ``1 + 1e-5`` is taken as 1, for float rounding);
* every clip has at least one sample;
* every sample inside a clip is finite (samples after a clip's end are padding:
  they are never read, whatever they hold). With ``nonfinite="zero"`` the lobe
  replaces non-finite samples by 0 and logs a warning instead of stopping.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import logging

import torch

from bestrq2_lobes.model.device_copy import to_device

logger = logging.getLogger(__name__)

NONFINITE_MODES = ("error", "zero")
LENGTH_TOLERANCE = 1e-5


class LobeInputError(ValueError):
    """Waveforms or lengths the lobe cannot encode (one-line message).

    Example
    -------
    >>> issubclass(LobeInputError, ValueError)
    True
    """


def as_batch(wav: torch.Tensor) -> torch.Tensor:
    """A (batch, samples) floating-point view of 1-D, 2-D or (batch, 1, T) audio.

    Arguments
    ---------
    wav : torch.Tensor
        (samples,), (batch, samples) or (batch, 1, samples) floating-point audio.

    Returns
    -------
    torch.Tensor
        (batch, samples), the same dtype and device.

    Example
    -------
    >>> as_batch(torch.zeros(5)).shape, as_batch(torch.zeros(2, 1, 5)).shape
    (torch.Size([1, 5]), torch.Size([2, 5]))
    >>> as_batch(torch.zeros(2, 5, dtype=torch.int16))
    Traceback (most recent call last):
    ...
    bestrq2_lobes.lobe.inputs.LobeInputError: expected a floating-point waveform, ...
    """
    if not isinstance(wav, torch.Tensor):
        raise LobeInputError(
            f"expected the waveforms as a torch.Tensor, got {type(wav).__name__}"
        )
    if not wav.is_floating_point():
        raise LobeInputError(
            f"expected a floating-point waveform, got {wav.dtype} (integer PCM is "
            "not rescaled: pass wav.float() / 32768 for 16-bit audio)"
        )
    shape = tuple(wav.shape)
    if wav.dim() == 1:
        wav = wav.unsqueeze(0)
    elif wav.dim() == 3 and wav.shape[1] == 1:
        wav = wav.squeeze(1)
    elif wav.dim() != 2:
        hint = " (downmix multi-channel audio first)" if wav.dim() == 3 else ""
        raise LobeInputError(
            "expected waveforms of shape (samples,), (batch, samples) or "
            f"(batch, 1, samples), got {shape}{hint}"
        )
    if wav.shape[0] == 0:
        raise LobeInputError(f"expected at least one clip, got shape {shape}")
    return wav


def clip_samples(
    wav_lens: torch.Tensor | None, batch: int, samples: int
) -> torch.Tensor:
    """Samples of each clip (CPU, long) from checked relative lengths.

    The counts are ``round(wav_lens * samples)``, as ``sample_counts`` and
    SpeechBrain compute them.

    Arguments
    ---------
    wav_lens : torch.Tensor, optional
        (batch,) relative lengths in (0, 1]; None: every clip is whole.
    batch : int
        Number of clips.
    samples : int
        Padded length of the batch.

    Returns
    -------
    torch.Tensor
        (batch,) sample counts on the CPU, each at least 1.

    Example
    -------
    >>> clip_samples(torch.tensor([1.0, 0.25]), 2, 16000)
    tensor([16000,  4000])
    >>> clip_samples(torch.tensor([1.0, 1.5]), 2, 16000)
    Traceback (most recent call last):
    ...
    bestrq2_lobes.lobe.inputs.LobeInputError: wav_lens[1] is 1.5: expected ...
    >>> clip_samples(None, 1, 0)
    Traceback (most recent call last):
    ...
    bestrq2_lobes.lobe.inputs.LobeInputError: batch item 0 is empty (0 samples)...
    """
    if wav_lens is None:
        counts = torch.full((batch,), samples, dtype=torch.long)
    else:
        counts = _relative_to_samples(wav_lens, batch, samples)
    empty = torch.nonzero(counts <= 0).flatten()
    if len(empty):
        item = int(empty[0])
        if wav_lens is None:
            why = "0 samples"
        else:
            value = float(torch.as_tensor(wav_lens).reshape(-1)[item])
            why = f"wav_lens[{item}] = {value:g} of {samples} samples rounds to 0"
        raise LobeInputError(
            f"batch item {item} is empty ({why}): every clip needs at least one sample"
        )
    return counts


def _relative_to_samples(wav_lens, batch: int, samples: int) -> torch.Tensor:
    """Sample counts of checked relative lengths (see ``clip_samples``)."""
    if not isinstance(wav_lens, torch.Tensor):
        try:
            wav_lens = torch.as_tensor(wav_lens)
        except (TypeError, ValueError, RuntimeError):
            raise LobeInputError(
                "expected wav_lens as a (batch,) tensor of relative lengths, got "
                f"{type(wav_lens).__name__}"
            ) from None
    lens = wav_lens.detach()
    if tuple(lens.shape) != (batch,):
        raise LobeInputError(
            f"expected wav_lens of shape ({batch},), one relative length per clip, "
            f"got {tuple(lens.shape)}"
        )
    if lens.is_complex() or lens.dtype == torch.bool:
        raise LobeInputError(f"expected real relative lengths, got {lens.dtype}")
    lens = lens.cpu().double()
    bad = ~torch.isfinite(lens) | (lens <= 0) | (lens > 1 + LENGTH_TOLERANCE)
    if bool(bad.any()):
        item = int(torch.nonzero(bad)[0])
        value = float(lens[item])
        hint = (
            f" (absolute lengths? divide them by wavs.shape[1] = {samples})"
            if value > 1
            else ""
        )
        raise LobeInputError(
            f"wav_lens[{item}] is {value:g}: expected a relative length in (0, 1]{hint}"
        )
    # the same rounding as sample_counts (fp32 relative length times samples)
    counts = (wav_lens.detach().float().cpu() * samples).round().long()
    return counts.clamp(max=samples)


def valid_samples(counts: torch.Tensor, samples: int, device) -> torch.Tensor:
    """(batch, samples) bool mask, True on each clip's own samples.

    Example
    -------
    >>> valid_samples(torch.tensor([2, 3]), 3, "cpu")
    tensor([[ True,  True, False],
            [ True,  True,  True]])
    """
    idx = torch.arange(samples, device=device).unsqueeze(0)
    return idx < to_device(counts, device).unsqueeze(1)


def check_finite(
    wav: torch.Tensor, sample_rate: int, mode: str = "error"
) -> torch.Tensor:
    """Stops at the first non-finite sample, or (``mode="zero"``) zeroes them.

    Call it after the padding is zeroed: any non-finite sample left is audio.

    Arguments
    ---------
    wav : torch.Tensor
        (batch, samples) waveforms whose padding is already zero.
    sample_rate : int
        Used to give the position in seconds too.
    mode : str
        ``"error"`` (raise) or ``"zero"`` (replace by 0 and log a warning).

    Returns
    -------
    torch.Tensor
        ``wav``, or a copy with the non-finite samples set to 0.

    Example
    -------
    >>> wav = torch.zeros(2, 16000)
    >>> wav[1, 8000] = float("nan")
    >>> check_finite(wav, 16000)
    Traceback (most recent call last):
    ...
    bestrq2_lobes.lobe.inputs.LobeInputError: batch item 1: non-finite sample (nan) ...
    >>> bool(check_finite(wav, 16000, mode="zero").isfinite().all())
    True
    """
    finite = torch.isfinite(wav)
    if bool(finite.all()):
        return wav
    bad = ~finite.cpu()
    items = torch.nonzero(bad.any(dim=1)).flatten()
    if mode == "zero":
        logger.warning(
            "zeroed %d non-finite samples in %d of %d clips (nonfinite='zero')",
            int(bad.sum()),
            len(items),
            wav.shape[0],
        )
        return torch.where(finite, wav, torch.zeros_like(wav))
    item = int(items[0])
    pos = int(torch.nonzero(bad[item])[0])
    value = float(wav[item, pos])
    raise LobeInputError(
        f"batch item {item}: non-finite sample ({value}) at sample {pos} "
        f"({pos / sample_rate:.3f} s); clean the audio, or build the lobe with "
        "nonfinite='zero' to replace such samples by 0"
    )


def check_mode(nonfinite: str) -> str:
    """Checks the ``nonfinite`` option of the lobe.

    Example
    -------
    >>> check_mode("zero")
    'zero'
    """
    if nonfinite not in NONFINITE_MODES:
        raise LobeInputError(
            f"nonfinite must be one of {list(NONFINITE_MODES)}, got {nonfinite!r}"
        )
    return nonfinite
