"""Log-mel front end of BEST-RQ-2.

The paper preset is 16 kHz audio, a centred STFT with a 2048-sample Hann window and
a 625-sample hop (39.0625 ms), 128 HTK mel bands over 0-8000 Hz without area
normalisation, power 2 and ``10 * log10(max(x, 1e-10))``. With ``normalized=True``
the STFT is divided by ``sqrt(sum(window ** 2))`` first (torchaudio's
``MelSpectrogram(normalized=True)``, the authors' front end): every value is
``10 * log10(768) = 28.85`` dB lower before the floor. The front end always runs in
fp32, also under autocast.

Each signal of a padded batch is reflect-padded at *its own* end before the STFT, so
the frames of a clip are the same whether it is alone or padded into a batch.

The encoder input can be normalised by fixed statistics, ``(x - norm_mean) /
norm_std``: one number each (global) or one per mel band. They are part of the
front end's ``config``, so an exported encoder directory applies exactly what
pretraining applied; the pretraining recipe's ``input_norm`` estimates them from
the training data (:func:`band_to_global` turns per-band statistics into global
ones).

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchaudio

from bestrq2_lobes.model.device_copy import to_device


class LogMel(torch.nn.Module):
    """Log-mel spectrogram, fp32, with per-sample edge padding.

    Arguments
    ---------
    sample_rate : int
        Sampling rate of the input waveforms.
    n_fft : int
        FFT size.
    win_length : int
        Hann window length in samples.
    hop_length : int
        Hop between frames in samples.
    n_mels : int
        Number of mel bands.
    f_min : float
        Lowest mel band edge (Hz).
    f_max : float
        Highest mel band edge (Hz).
    floor : float
        Power floor before the logarithm (1e-10 gives -100 dB).
    norm_mean : float or list of float, optional
        A fixed mean subtracted from the log-mel, one number or one per mel band
        (off by default, as in the paper).
    norm_std : float or list of float, optional
        A fixed standard deviation the log-mel is divided by, one number or one
        per band (off by default; every value must be positive).
    normalized : bool
        Divide the STFT by the window's L2 norm, as the authors' front end does
        (the paper preset sets it; False when absent, as in older configs).

    Example
    -------
    >>> frontend = LogMel()
    >>> feats = frontend(torch.zeros(2, 16000 * 10))
    >>> feats.shape
    torch.Size([2, 128, 257])
    >>> frontend.num_frames(torch.tensor([160000, 80000]))
    tensor([257, 129])
    >>> frontend.hop_ms
    39.0625
    >>> wav = torch.randn(1, 16000)
    >>> diff = LogMel()(wav) - LogMel(normalized=True)(wav)
    >>> round(float(diff.median()), 2)
    28.85
    >>> bands = LogMel(n_mels=4, norm_mean=[-60.0, -50.0, -40.0, -30.0], norm_std=10.0)
    >>> bands.config["norm_mean"], bands.config["norm_std"]
    ([-60.0, -50.0, -40.0, -30.0], 10.0)
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 2048,
        win_length: int = 2048,
        hop_length: int = 625,
        n_mels: int = 128,
        f_min: float = 0.0,
        f_max: float = 8000.0,
        floor: float = 1e-10,
        norm_mean: float | Sequence[float] | None = None,
        norm_std: float | Sequence[float] | None = None,
        normalized: bool = False,
    ):
        super().__init__()
        self.n_mels = n_mels
        self.config = dict(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            n_mels=n_mels,
            f_min=f_min,
            f_max=f_max,
            floor=floor,
            norm_mean=None,
            norm_std=None,
            normalized=bool(normalized),
        )
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.floor = floor
        self.register_buffer("norm_mean", None, persistent=False)
        self.register_buffer("norm_std", None, persistent=False)
        self.set_normalization(norm_mean, norm_std)
        self.melspec = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            f_min=f_min,
            f_max=f_max,
            n_mels=n_mels,
            power=2.0,
            center=True,
            pad_mode="reflect",
            norm=None,
            mel_scale="htk",
            normalized=bool(normalized),
        )

    def set_normalization(
        self,
        mean: float | Sequence[float] | torch.Tensor | None,
        std: float | Sequence[float] | torch.Tensor | None,
    ) -> None:
        """Sets the fixed input statistics (and the ``config`` that records them).

        Arguments
        ---------
        mean : float, sequence of ``n_mels`` floats, tensor or None
            Subtracted from the log-mel (None: nothing).
        std : float, sequence of ``n_mels`` floats, tensor or None
            The log-mel is divided by it (None: nothing); positive.

        Example
        -------
        >>> frontend = LogMel(n_mels=2)
        >>> frontend.set_normalization(torch.tensor([-50.0, -40.0]), 5.0)
        >>> frontend.config["norm_mean"], frontend.norm_mean.shape
        ([-50.0, -40.0], torch.Size([2, 1]))
        >>> frontend.set_normalization(0.0, -1.0)
        Traceback (most recent call last):
        ...
        ValueError: norm_std must be finite and positive, got -1.0
        """
        for name, value in (("norm_mean", mean), ("norm_std", std)):
            if value is None:
                setattr(self, name, None)
                self.config[name] = None
                continue
            values = torch.as_tensor(value, dtype=torch.float32).detach().cpu()
            if values.dim() > 1 or (values.dim() == 1 and len(values) != self.n_mels):
                raise ValueError(
                    f"{name} must be one number or {self.n_mels} (one per mel band), "
                    f"got shape {tuple(values.shape)}"
                )
            ok = bool(torch.isfinite(values).all())
            if name == "norm_std":
                ok = ok and bool((values > 0).all())
            if not ok:
                kind = "finite and positive" if name == "norm_std" else "finite"
                raise ValueError(f"{name} must be {kind}, got {value!r}")
            self.config[name] = values.tolist()
            shape = (-1, 1) if values.dim() == 1 else ()
            setattr(self, name, values.reshape(shape).to(self._device()))

    def _device(self) -> torch.device:
        """The device of the front end's tensors (the CPU before any exists)."""
        tensors = list(self.buffers(recurse=True))
        return tensors[0].device if tensors else torch.device("cpu")

    @property
    def hop_ms(self) -> float:
        """Frame hop in milliseconds."""
        return 1000.0 * self.hop_length / self.sample_rate

    @property
    def min_samples(self) -> int:
        """Shortest signal the centred reflect padding accepts."""
        return self.n_fft // 2 + 1

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Number of frames of signals of the given lengths (in samples)."""
        return torch.div(num_samples, self.hop_length, rounding_mode="floor") + 1

    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Computes the log-mel spectrogram.

        Arguments
        ---------
        wav : torch.Tensor
            Waveforms (batch, samples).
        lengths : torch.Tensor, optional
            Absolute lengths in samples (batch,). When given, every signal is
            reflect-padded at its own end so its frames do not see the batch padding.

        Returns
        -------
        torch.Tensor
            Log-mel features (batch, n_mels, frames), fp32.
        """
        with torch.autocast(device_type=wav.device.type, enabled=False):
            wav = wav.float()
            num_frames = wav.shape[-1] // self.hop_length + 1
            if lengths is not None:
                # room after the longest clip, so every tail is reflected in full
                wav = torch.nn.functional.pad(wav, (0, self.n_fft // 2))
                wav = reflect_tails(wav, lengths, self.n_fft // 2)
            power = self.melspec(wav)[..., :num_frames]
            feats = 10.0 * torch.log10(power.clamp(min=self.floor))
            if self.norm_mean is not None:
                feats = feats - self.norm_mean
            if self.norm_std is not None:
                feats = feats / self.norm_std
        return feats


def reflect_tails(wav: torch.Tensor, lengths: torch.Tensor, width: int) -> torch.Tensor:
    """Replaces the ``width`` samples after each signal's end by its reflection.

    This reproduces, inside a padded batch, the reflect padding a centred STFT
    applies at the end of a signal that stands alone.

    Arguments
    ---------
    wav : torch.Tensor
        Waveforms (batch, samples).
    lengths : torch.Tensor
        Absolute lengths in samples (batch,).
    width : int
        How many samples after each end to fill.

    Returns
    -------
    torch.Tensor
        Waveforms of the same shape.

    Example
    -------
    >>> wav = torch.tensor([[1.0, 2.0, 3.0, 0.0, 0.0, 0.0]])
    >>> reflect_tails(wav, torch.tensor([3]), 2)
    tensor([[1., 2., 3., 2., 1., 0.]])
    """
    idx = torch.arange(wav.shape[1], device=wav.device).unsqueeze(0)
    end = to_device(lengths, wav.device).long().unsqueeze(1)
    tail = (idx >= end) & (idx < end + width)
    source = torch.where(tail, (2 * (end - 1) - idx).clamp(min=0), idx)
    return torch.where(tail, wav.gather(1, source), wav)


def band_to_global(mean: torch.Tensor, std: torch.Tensor) -> tuple[float, float]:
    """One mean and standard deviation from per-band ones over the same frames.

    Every band has as many values as the others, so the global mean is the mean
    of the band means, and the global variance is the mean of the band variances
    plus the variance of the band means.

    Arguments
    ---------
    mean : torch.Tensor
        (n_mels,) per-band means.
    std : torch.Tensor
        (n_mels,) per-band standard deviations.

    Returns
    -------
    (mean, std)
        Two floats.

    Example
    -------
    >>> x = torch.randn(4, 1000) * torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    >>> mean, std = band_to_global(x.mean(1), x.std(1, correction=0))
    >>> abs(mean - float(x.mean())) < 1e-5, abs(std - float(x.std(correction=0))) < 1e-4
    (True, True)
    """
    mean, std = mean.double(), std.double()
    center = mean.mean()
    var = (std.square() + (mean - center).square()).mean()
    return float(center), float(var.sqrt())
