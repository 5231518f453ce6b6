"""Robust audio reading for BEST-RQ-2 data preparation and loading.

Every failure is reported as an :class:`AudioError` whose message is a one-line
reason (empty file, truncated file, non-finite samples, too short, ...), so that
data preparation can skip a bad file and say why instead of crashing mid-epoch.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch
import torchaudio

__all__ = [
    "AudioError",
    "AudioInfo",
    "probe_audio",
    "check_audio",
    "read_segment",
    "random_crop",
]


class AudioError(Exception):
    """An audio file cannot be used; the message is a one-line reason.

    Example
    -------
    >>> str(AudioError("empty file (0 bytes)"))
    'empty file (0 bytes)'
    """


@dataclass
class AudioInfo:
    """Basic facts about an audio file.

    Arguments
    ---------
    path : str
        Path of the file.
    sample_rate : int
        Native sampling rate in Hz.
    channels : int
        Number of channels.
    frames : int
        Number of frames (samples per channel).

    Example
    -------
    >>> AudioInfo("a.wav", 16000, 1, 24000).duration
    1.5
    """

    path: str
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        """Duration in seconds."""
        return self.frames / self.sample_rate


def _one_line(err: BaseException) -> str:
    """Returns the exception text squeezed onto one line."""
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _riff_missing_bytes(path: str) -> int:
    """Returns how many bytes of a RIFF/WAVE ``data`` chunk are missing.

    libsndfile silently shortens a truncated WAV file, so the ``data`` chunk
    size in the header is compared with the file size. Streaming writers that
    leave the size at 0 or 0xFFFFFFFF are not flagged.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0
        size = os.fstat(f.fileno()).st_size
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, length = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                if length in (0, 0xFFFFFFFF):
                    return 0
                return max(0, pos + 8 + length - size)
            pos += 8 + length + (length & 1)
    return 0


def probe_audio(path: str | os.PathLike) -> AudioInfo:
    """Reads the header of an audio file, raising AudioError if it is unusable.

    Arguments
    ---------
    path : str | os.PathLike
        Audio file (anything libsndfile reads: wav, flac, ogg, mp3, ...).

    Returns
    -------
    AudioInfo
        Header information. Samples are not decoded (see :func:`check_audio`).

    Raises
    ------
    AudioError
        Missing, not a regular file, unreadable, empty, undecodable, truncated
        WAV, or zero frames.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> path = str(getfixture("tmpdir") / "a.wav")
    >>> sf.write(path, np.zeros(8000), 16000)
    >>> probe_audio(path).duration
    0.5
    >>> open(path, "w").close()
    >>> probe_audio(path)
    Traceback (most recent call last):
    ...
    bestrq2_lobes.data.audio.AudioError: empty file (0 bytes)
    """
    path = os.fspath(path)
    if not os.path.lexists(path):
        raise AudioError("file does not exist")
    if not os.path.exists(path):
        raise AudioError("broken symbolic link")
    if not os.path.isfile(path):
        kind = "a directory" if os.path.isdir(path) else "a special file"
        raise AudioError(f"not a regular file ({kind})")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as err:
        raise AudioError(f"unreadable: {err.strerror or _one_line(err)}") from err
    if os.path.getsize(path) == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        info = sf.info(path)
    except Exception as err:  # libsndfile raises several types
        reason = _one_line(err).replace(f"Error opening {path!r}: ", "")
        raise AudioError(f"cannot open as audio: {reason}") from err
    missing = _riff_missing_bytes(path)
    if missing:
        raise AudioError(f"truncated WAV file ({missing} bytes of audio missing)")
    if info.frames <= 0:
        raise AudioError("contains no audio (0 frames)")
    return AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames))


def check_audio(
    path: str | os.PathLike, min_seconds: float, block_seconds: float = 30.0
) -> AudioInfo:
    """Fully decodes a file in blocks and checks it is usable for training.

    Arguments
    ---------
    path : str | os.PathLike
        Audio file.
    min_seconds : float
        Minimum duration; shorter files are rejected.
    block_seconds : float
        Decoding block length, which bounds memory use.

    Returns
    -------
    AudioInfo
        Information with ``frames`` set to the number of frames decoded.

    Raises
    ------
    AudioError
        Any :func:`probe_audio` failure, a decoding error or missing frames
        (truncated file), non-finite samples, or a too short file.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> path = str(getfixture("tmpdir") / "a.flac")
    >>> sf.write(path, np.zeros(16000), 16000)
    >>> check_audio(path, min_seconds=0.5).frames
    16000
    >>> check_audio(path, min_seconds=2.0)
    Traceback (most recent call last):
    ...
    bestrq2_lobes.data.audio.AudioError: shorter than 2 s (1.000 s)
    """
    info = probe_audio(path)
    block = max(1, int(block_seconds * info.sample_rate))
    decoded = 0
    try:
        with sf.SoundFile(info.path) as f:
            is_mp3 = f.format == "MP3"
            while True:
                data = f.read(block, dtype="float32", always_2d=True)
                if len(data) == 0:
                    break
                bad = ~np.isfinite(data)
                if bad.any():
                    at = (decoded + int(np.argmax(bad.any(axis=1)))) / info.sample_rate
                    raise AudioError(f"non-finite samples (NaN/Inf at {at:.3f} s)")
                decoded += len(data)
    except AudioError:
        raise
    except Exception as err:
        at = decoded / info.sample_rate
        raise AudioError(
            f"decoding failed after {at:.3f} s (truncated or corrupt?): "
            f"{_one_line(err)}"
        ) from err
    # MP3 headers may only estimate the length; other formats must match.
    tolerance = int(0.01 * info.frames) if is_mp3 else 0
    if decoded < info.frames - tolerance:
        raise AudioError(
            f"truncated: decoded {decoded} of {info.frames} frames in the header"
        )
    if decoded == 0:
        raise AudioError("contains no audio (0 frames)")
    info.frames = decoded
    if info.duration < min_seconds:
        raise AudioError(f"shorter than {min_seconds:g} s ({info.duration:.3f} s)")
    return info


def read_segment(
    path: str | os.PathLike,
    start: float = 0.0,
    duration: float | None = None,
    sample_rate: int = 16000,
) -> torch.Tensor:
    """Reads a segment of a file as mono float32 at ``sample_rate``.

    Only the requested frames are decoded. Multichannel audio is averaged to
    mono and resampled when the native rate differs. A segment reaching past
    either end of the file is clipped to the file.

    Arguments
    ---------
    path : str | os.PathLike
        Audio file.
    start : float
        Start of the segment in seconds.
    duration : float | None
        Length of the segment in seconds; ``None`` reads to the end.
    sample_rate : int
        Output sampling rate in Hz.

    Returns
    -------
    torch.Tensor
        1-D float32 waveform.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> path = str(getfixture("tmpdir") / "a.wav")
    >>> sf.write(path, np.zeros((44100, 2)), 44100)
    >>> read_segment(path, start=0.5, duration=0.25).shape
    torch.Size([4000])
    >>> read_segment(path, start=0.9, duration=5.0).shape
    torch.Size([1600])
    """
    path = os.fspath(path)
    try:
        with sf.SoundFile(path) as f:
            native = int(f.samplerate)
            first = min(max(0, round(start * native)), f.frames)
            count = f.frames - first
            if duration is not None:
                count = min(count, max(0, round(duration * native)))
            f.seek(first)
            data = f.read(count, dtype="float32", always_2d=True)
    except Exception as err:
        raise AudioError(f"{path}: cannot read: {_one_line(err)}") from err
    wav = torch.from_numpy(data).mean(dim=1)
    if native != sample_rate and wav.numel() > 0:
        wav = torchaudio.functional.resample(wav, native, sample_rate)
    return wav.contiguous()


def random_crop(
    info_duration: float,
    crop_seconds: float,
    generator: torch.Generator | None = None,
) -> float:
    """Draws a crop start time uniformly over ``[0, duration - crop]``.

    Arguments
    ---------
    info_duration : float
        Duration of the clip in seconds.
    crop_seconds : float
        Length of the crop in seconds.
    generator : torch.Generator | None
        Random generator; ``None`` uses the global torch RNG (follows seeding).

    Returns
    -------
    float
        Start time in seconds; 0.0 when the clip is not longer than the crop.

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> 0.0 <= random_crop(10.0, 4.0, g) <= 6.0
    True
    >>> random_crop(3.0, 4.0)
    0.0
    """
    room = info_duration - crop_seconds
    if not math.isfinite(room) or room <= 0:
        return 0.0
    return float(torch.rand((), generator=generator, dtype=torch.float64)) * room
