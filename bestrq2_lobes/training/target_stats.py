"""Statistics estimated once before step 1: ``target_norm: global`` and ``input_norm``.

The per-band mean and standard deviation come from the first ``max_clips``
usable clips of the training manifest, in manifest order, each read from its
start (``crop_seconds`` long, no random crop), through the model's own front
end and patch grid (:func:`bestrq2_lobes.model.targets.estimate_band_statistics`):
a pure function of the manifest and the settings. The main process computes
them and broadcasts them, so every DDP rank holds the very same buffer. A run
that resumes from a checkpoint does not call this: the buffer comes back with
the checkpoint.

``input_norm`` (``global`` or ``band``) estimates the encoder's input statistics
the same way, on the raw log-mel, and sets them on the front end
(:meth:`~bestrq2_lobes.model.frontend.LogMel.set_normalization`): its ``config``
then carries them into the run's ``encoder_config.json`` and every exported
encoder directory, and a resumed run reads them back from there.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import torch
from speechbrain.utils.distributed import ddp_broadcast, if_main_process

from bestrq2_lobes.data.audio import read_segment
from bestrq2_lobes.data.manifest import read_manifest
from bestrq2_lobes.model.frontend import band_to_global
from bestrq2_lobes.model.targets import estimate_band_statistics

INPUT_NORMS = ("none", "global", "band")


def first_clips(
    manifest: str | os.PathLike,
    data_root: str | None,
    max_clips: int,
    seconds: float,
    sample_rate: int,
    min_seconds: float = 0.0,
) -> Iterator[torch.Tensor]:
    """The first ``max_clips`` clips of a manifest at least ``min_seconds`` long.

    Each is read from its start, ``seconds`` long (shorter clips whole).

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> tmp = getfixture("tmpdir")
    >>> for name, sec in (("a", 0.2), ("b", 2.0), ("c", 1.0)):
    ...     sf.write(str(tmp / f"{name}.wav"), np.zeros(int(sec * 16000)), 16000)
    >>> _ = (tmp / "m.csv").write(
    ...     "ID,duration,wav\\na,0.2,$data_root/a.wav\\nb,2.0,$data_root/b.wav\\n"
    ...     "c,1.0,$data_root/c.wav\\n")
    >>> [len(w) for w in first_clips(tmp / "m.csv", str(tmp), 5, 1.5, 16000, 0.5)]
    [24000, 16000]
    """
    rows = read_manifest(manifest, data_root=data_root)
    rows = [row for row in rows if row["duration"] >= min_seconds][:max_clips]
    for row in rows:
        yield read_segment(row["wav"], 0.0, seconds, sample_rate)


def estimate_global_target_norm(
    model: torch.nn.Module,
    manifest: str | os.PathLike,
    data_root: str | None,
    max_clips: int,
    seconds: float,
    sample_rate: int,
    min_seconds: float = 0.0,
    clips: Iterable[torch.Tensor] | None = None,
) -> int:
    """Sets ``model.target_norm``'s statistics from the first training clips.

    Computed on the main process and broadcast to every DDP rank (every rank
    must call this).

    Arguments
    ---------
    model : torch.nn.Module
        A pretraining model (``frontend``, ``encoder.grid``, ``target_norm``).
    manifest : str | os.PathLike
        The training manifest.
    data_root : str | None
        ``$data_root`` of the manifest.
    max_clips : int
        Clips to estimate from (the first ones in manifest order).
    seconds : float
        Length read from the start of each clip (the training crop length).
    sample_rate : int
        Sampling rate of the model.
    min_seconds : float
        Clips shorter than this are skipped (as the training set skips them).
    clips : Iterable[torch.Tensor] | None
        The clips themselves (lazily read, e.g. from shards), instead of the
        manifest's first ones; ``manifest`` is then unused.

    Returns
    -------
    int
        The number of frames the statistics were taken on.
    """
    if clips is None:
        clips = first_clips(
            manifest, data_root, max_clips, seconds, sample_rate, min_seconds
        )
    mean, std, frames = _main_process_statistics(model, clips, model.target_norm.eps)
    model.target_norm.set_statistics(mean, std, frames)
    return frames


def _main_process_statistics(model, clips, eps: float = 1e-5):
    """Per-band (mean, std, frames) of ``clips`` through the model's front end
    in eval mode, computed on the main process and broadcast to every rank
    (``clips`` is a lazy iterator: only the main process reads the audio)."""
    stats = None
    if if_main_process():
        frontend = model.frontend
        training = frontend.training
        frontend.eval()
        try:
            stats = estimate_band_statistics(clips, frontend, model.encoder.grid, eps)
        finally:
            frontend.train(training)
    return ddp_broadcast(stats, src=0)


def estimate_input_norm(
    model: torch.nn.Module,
    mode: str,
    manifest: str | os.PathLike,
    data_root: str | None,
    max_clips: int,
    seconds: float,
    sample_rate: int,
    min_seconds: float = 0.0,
    clips: Iterable[torch.Tensor] | None = None,
) -> int:
    """Sets the front end's input statistics from the first training clips.

    ``band``: a mean and standard deviation per mel band; ``global``: one of
    each over all bands (:func:`~bestrq2_lobes.model.frontend.band_to_global`).
    Computed on the main process from the raw log-mel and broadcast to every
    DDP rank (every rank must call this).

    Arguments
    ---------
    model : torch.nn.Module
        A pretraining model (``frontend`` without statistics, ``encoder.grid``).
    mode : str
        ``global`` or ``band``.
    manifest, data_root, max_clips, seconds, sample_rate, min_seconds, clips
        As for :func:`estimate_global_target_norm`.

    Returns
    -------
    int
        The number of frames the statistics were taken on.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> from types import SimpleNamespace
    >>> from bestrq2_lobes.model.frontend import LogMel
    >>> from bestrq2_lobes.model.patches import PatchGrid
    >>> tmp = getfixture("tmpdir")
    >>> sf.write(str(tmp / "a.wav"), np.random.randn(32000) * 0.1, 16000)
    >>> _ = (tmp / "m.csv").write("ID,duration,wav\\na,2.0,$data_root/a.wav\\n")
    >>> model = SimpleNamespace(frontend=LogMel(n_mels=32),
    ...                         encoder=SimpleNamespace(grid=PatchGrid(32, 16, 16)))
    >>> estimate_input_norm(model, "band", tmp / "m.csv", str(tmp), 10, 2.0, 16000)
    48
    >>> len(model.frontend.config["norm_mean"])
    32
    """
    if mode not in INPUT_NORMS[1:]:
        raise ValueError(f"input_norm {mode!r}: expected global or band")
    frontend = model.frontend
    if frontend.norm_mean is not None or frontend.norm_std is not None:
        raise ValueError(
            f"input_norm {mode} estimates the input statistics: leave the front "
            "end's norm_mean and norm_std unset"
        )
    if clips is None:
        clips = first_clips(
            manifest, data_root, max_clips, seconds, sample_rate, min_seconds
        )
    mean, std, frames = _main_process_statistics(model, clips)
    if mode == "global":
        mean, std = band_to_global(mean, std)
    frontend.set_normalization(mean, std)
    return frames
