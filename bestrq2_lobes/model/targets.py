"""Normalisation of the quantizer's input (the targets), not of the encoder's.

The paper quantises the raw dB patches. A random projection of a raw patch is
dominated by the patch's level, so a few hundred of the 8192 codes take almost
every patch. :class:`TargetNormalization` normalises the patches on their way
to the quantizer only (the encoder reads the raw patches), in one of four modes:

* ``none``: the paper, raw dB patches;
* ``patch``: every patch to zero mean and unit standard deviation over its
  ``patch_freq x patch_time`` values (Audio-MAE's ``norm_pix_loss``);
* ``utterance``: every mel band to zero mean and unit standard deviation over
  the clip's valid frames (the frames of its whole patch columns; padding
  changes nothing);
* ``utterance_patch``: ``utterance``, then ``patch`` (the clip's channel, level
  and tilt removed, then each patch's own level and contrast);
* ``global``: every mel band by a fixed mean and standard deviation estimated
  once from training data (:func:`estimate_band_statistics`); they are buffers,
  so checkpoints carry them and a resumed run does not estimate them again.

Statistics are computed in float64 and applied in float32; the standard
deviation is ``sqrt(var + eps)``.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.nn import functional as F

from bestrq2_lobes.model.device_copy import to_device
from bestrq2_lobes.model.patches import PatchGrid
from bestrq2_lobes.model.tokens import gather_tokens

TARGET_NORMS = ("none", "patch", "utterance", "utterance_patch", "global")


class TargetNormalization(torch.nn.Module):
    """Normalises (batch, tokens, patch_dim) patches before the quantizer.

    Arguments
    ---------
    mode : str
        ``none``, ``patch``, ``utterance``, ``utterance_patch`` or ``global``
        (see the module).
    n_mels : int
        Mel bands of the front end.
    patch_freq : int
        Patch height in mel bands.
    patch_time : int
        Patch width in frames.
    eps : float
        Added to the variance before the square root.

    Example
    -------
    >>> norm = TargetNormalization("utterance", n_mels=32)
    >>> patches = 10 * torch.randn(2, 8, 256) - 50
    >>> out = norm(patches, torch.tensor([8, 4]))
    >>> out.shape, round(float(out[1, :4].mean()), 4) == 0.0
    (torch.Size([2, 8, 256]), True)
    >>> torch.equal(TargetNormalization("none", n_mels=32)(patches), patches)
    True
    >>> norm = TargetNormalization("global", n_mels=32)
    >>> norm.set_statistics(torch.full((32,), -50.0), torch.full((32,), 10.0))
    >>> sorted(norm.state_dict())
    ['frames', 'mean', 'std']
    """

    def __init__(
        self,
        mode: str = "none",
        n_mels: int = 128,
        patch_freq: int = 16,
        patch_time: int = 16,
        eps: float = 1e-5,
    ):
        super().__init__()
        if mode not in TARGET_NORMS:
            raise ValueError(
                f"target_norm {mode!r}: expected one of {', '.join(TARGET_NORMS)}"
            )
        self.mode = mode
        self.grid = PatchGrid(n_mels, patch_freq, patch_time)
        self.eps = eps
        self.estimated = False
        if mode == "global":  # only then: other modes keep no state
            self.register_buffer("mean", torch.zeros(n_mels))
            self.register_buffer("std", torch.ones(n_mels))
            self.register_buffer("frames", torch.zeros((), dtype=torch.long))

    def set_statistics(
        self, mean: torch.Tensor, std: torch.Tensor, frames: int = 1
    ) -> None:
        """Sets the per-band statistics of the ``global`` mode.

        Arguments
        ---------
        mean : torch.Tensor
            (n_mels,) mean of each band.
        std : torch.Tensor
            (n_mels,) standard deviation of each band (``sqrt(var + eps)``).
        frames : int
            Frames they were estimated on (recorded; must be positive).
        """
        if self.mode != "global":
            raise ValueError(f"target_norm {self.mode!r} has no statistics to set")
        shape = (self.grid.n_mels,)
        if tuple(mean.shape) != shape or tuple(std.shape) != shape:
            raise ValueError(
                f"statistics of shape {tuple(mean.shape)} and {tuple(std.shape)}, "
                f"expected {shape}"
            )
        if frames < 1 or not bool(torch.isfinite(mean).all() & (std > 0).all()):
            raise ValueError("target statistics must be finite, std > 0, frames > 0")
        self.mean.copy_(mean)
        self.std.copy_(std)
        self.frames.fill_(int(frames))
        self.estimated = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        frames = state_dict.get(prefix + "frames")
        if self.mode == "global" and frames is not None:
            self.estimated = int(frames) > 0

    def forward(
        self,
        patches: torch.Tensor,
        valid_tokens: torch.Tensor | None = None,
        index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Normalised patches (all of them, or those at ``index``), fp32.

        Arguments
        ---------
        patches : torch.Tensor
            (batch, tokens, patch_dim) patches of the grid, time-major.
        valid_tokens : torch.Tensor, optional
            (batch,) valid tokens of each clip (a whole number of columns);
            None: every token is valid. Only the ``utterance`` modes read it.
        index : torch.Tensor, optional
            (batch, K) token indices: return only those patches.

        Returns
        -------
        torch.Tensor
            (batch, tokens or K, patch_dim) float32.
        """
        with torch.autocast(device_type=patches.device.type, enabled=False):
            patches = patches.float()
            if self.mode in ("none", "patch"):
                if index is not None:
                    patches = gather_tokens(patches, index)
                if self.mode == "none":
                    return patches
                return F.layer_norm(patches, (patches.shape[-1],), eps=self.eps)
            if self.mode == "global":
                if not self.estimated:
                    raise RuntimeError(
                        "target_norm 'global' has no statistics: estimate them "
                        "(estimate_band_statistics) or load a checkpoint"
                    )
                mean, std = self.mean.unsqueeze(0), self.std.unsqueeze(0)
            else:  # utterance, utterance_patch
                mean, std = utterance_statistics(
                    patches, valid_tokens, self.grid, self.eps
                )
            rows = self.grid.freq_rows
            if index is None:  # token n of a time-major grid is on row n % rows
                index = torch.arange(patches.shape[1], device=patches.device)
                index = index.expand(len(patches), -1)
            else:
                patches = gather_tokens(patches, index)
            row, batch = index % rows, len(patches)
            mean = gather_tokens(self.per_row(mean).expand(batch, -1, -1), row)
            std = gather_tokens(self.per_row(std).expand(batch, -1, -1), row)
            out = (patches - mean) / std
            if self.mode == "utterance_patch":
                out = F.layer_norm(out, (out.shape[-1],), eps=self.eps)
            return out

    def per_row(self, band: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels) band values laid out as (batch, rows, patch_dim) patches.

        Example
        -------
        >>> norm = TargetNormalization("utterance", n_mels=4, patch_freq=2,
        ...                            patch_time=2)
        >>> norm.per_row(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
        tensor([[[1., 1., 2., 2.],
                 [3., 3., 4., 4.]]])
        """
        grid = self.grid
        rows = band.float().reshape(len(band), grid.freq_rows, grid.patch_freq, 1)
        rows = rows.expand(-1, -1, -1, grid.patch_time)
        return rows.reshape(len(band), grid.freq_rows, grid.patch_dim)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, eps={self.eps}"


def band_sums(
    patches: torch.Tensor, valid_tokens: torch.Tensor | None, grid: PatchGrid
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-clip, per-band sums over the valid frames, in float64.

    Arguments
    ---------
    patches : torch.Tensor
        (batch, tokens, patch_dim) time-major patches.
    valid_tokens : torch.Tensor, optional
        (batch,) valid tokens of each clip; None: all.
    grid : PatchGrid
        The patch geometry.

    Returns
    -------
    (count, sum, sum_of_squares)
        (batch, 1), (batch, n_mels) and (batch, n_mels) float64.

    Example
    -------
    >>> grid = PatchGrid(32, 16, 16)
    >>> count, total, squares = band_sums(torch.ones(1, 4, 256), None, grid)
    >>> count.item(), total.shape, total[0, 0].item()
    (32.0, torch.Size([1, 32]), 32.0)
    """
    x, valid = _columns(patches, valid_tokens, grid)
    x = torch.where(valid, x.double(), 0.0)
    batch = len(x)
    count = valid.double().sum(dim=(1, 2, 3, 4)).unsqueeze(1) * grid.patch_time
    total = x.sum(dim=(1, 4)).reshape(batch, grid.n_mels)
    squares = x.square().sum(dim=(1, 4)).reshape(batch, grid.n_mels)
    return count, total, squares


def utterance_statistics(
    patches: torch.Tensor,
    valid_tokens: torch.Tensor | None,
    grid: PatchGrid,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-clip, per-band mean and ``sqrt(var + eps)`` over the valid frames.

    Two passes in float64 (the mean, then the squared deviations): the result
    does not depend on the padding of the batch.

    Returns
    -------
    (mean, std)
        (batch, n_mels) float32 each.

    Example
    -------
    >>> grid = PatchGrid(32, 16, 16)
    >>> mean, std = utterance_statistics(torch.full((2, 4, 256), 3.0), None, grid)
    >>> mean[0, 0].item(), round(std[0, 0].item(), 5)
    (3.0, 0.00316)
    """
    x, valid = _columns(patches, valid_tokens, grid)
    x = x.double()
    count = valid.double().sum(dim=1, keepdim=True).clamp(min=1) * grid.patch_time
    mean = torch.where(valid, x, 0.0).sum(dim=(1, 4), keepdim=True) / count
    dev = torch.where(valid, (x - mean).square(), 0.0)
    var = dev.sum(dim=(1, 4), keepdim=True) / count
    batch = len(x)
    mean = mean.reshape(batch, grid.n_mels)
    std = (var + eps).sqrt().reshape(batch, grid.n_mels)
    return mean.float(), std.float()


def _columns(
    patches: torch.Tensor, valid_tokens: torch.Tensor | None, grid: PatchGrid
) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, columns, rows, patch_freq, patch_time) view and its column mask."""
    batch, num_tokens, dim = patches.shape
    if dim != grid.patch_dim or num_tokens % grid.freq_rows:
        raise ValueError(
            f"patches of shape {tuple(patches.shape)} do not fit the grid "
            f"({grid.freq_rows} rows of {grid.patch_dim} values)"
        )
    columns = num_tokens // grid.freq_rows
    x = patches.reshape(
        batch, columns, grid.freq_rows, grid.patch_freq, grid.patch_time
    )
    if valid_tokens is None:
        valid_cols = torch.full((batch,), columns, device=patches.device)
    else:
        valid_cols = torch.div(
            to_device(valid_tokens, patches.device),
            grid.freq_rows,
            rounding_mode="floor",
        )
    col = torch.arange(columns, device=patches.device)
    valid = (col.unsqueeze(0) < valid_cols.unsqueeze(1)).reshape(
        batch, columns, 1, 1, 1
    )
    return x, valid


@torch.no_grad()
def estimate_band_statistics(
    wavs: Iterable[torch.Tensor],
    frontend: torch.nn.Module,
    grid: PatchGrid,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-band mean and std of the log-mel of clips, for ``target_norm: global``.

    Each clip is processed alone (no padding), over the frames of its whole
    patch columns, and accumulated in float64 in the order given: the result
    is a pure function of the clips.

    Arguments
    ---------
    wavs : Iterable[torch.Tensor]
        1-D waveforms (e.g. the first N training clips, cropped from the start).
    frontend : torch.nn.Module
        The log-mel front end of the model.
    grid : PatchGrid
        The model's patch grid.
    eps : float
        Added to the variance before the square root.

    Returns
    -------
    (mean, std, frames)
        (n_mels,) float32 each, and the number of frames they were taken on.

    Example
    -------
    >>> from bestrq2_lobes.model.frontend import LogMel
    >>> wavs = [torch.randn(16000), torch.randn(24000)]
    >>> mean, std, frames = estimate_band_statistics(
    ...     wavs, LogMel(n_mels=32), PatchGrid(32, 16, 16))
    >>> mean.shape, frames
    (torch.Size([32]), 48)
    """
    count = torch.zeros((), dtype=torch.float64)
    total = torch.zeros(grid.n_mels, dtype=torch.float64)
    squares = torch.zeros(grid.n_mels, dtype=torch.float64)
    for wav in wavs:
        patches = grid.patchify(frontend(wav.reshape(1, -1).float()))
        if patches.shape[1] == 0:
            continue
        n, s, q = band_sums(patches, None, grid)
        count += n.sum()
        total += s[0]
        squares += q[0]
    if count == 0:
        raise ValueError("no clip long enough (one patch column) to estimate from")
    mean = total / count
    var = (squares / count - mean.square()).clamp(min=0)
    return mean.float(), (var + eps).sqrt().float(), int(count)
