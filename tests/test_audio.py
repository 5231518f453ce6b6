"""Tests for bestrq2_lobes.data.audio.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

import os

import numpy as np
import pytest
import soundfile as sf
import torch

from bestrq2_lobes.data.audio import (
    AudioError,
    AudioInfo,
    check_audio,
    probe_audio,
    random_crop,
    read_segment,
)

SR = 16000


def _tone(seconds, sr=SR, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    x = 0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / sr)[:, None]
    x = x + 0.05 * rng.standard_normal((n, channels))
    return x[:, 0] if channels == 1 else x


def _write(path, data, sr=SR, **kwargs):
    sf.write(str(path), data, sr, **kwargs)
    return str(path)


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_probe_and_check_good_file(tmp_path, ext):
    path = _write(tmp_path / f"good.{ext}", _tone(1.5))
    info = probe_audio(path)
    assert info == AudioInfo(path, SR, 1, 24000)
    assert info.duration == pytest.approx(1.5)
    checked = check_audio(path, min_seconds=1.0, block_seconds=0.1)
    assert checked.frames == 24000 and checked.channels == 1


def _expect(path, fragment, **kwargs):
    with pytest.raises(AudioError) as err:
        if kwargs:
            check_audio(path, **kwargs)
        else:
            probe_audio(path)
    message = str(err.value)
    assert fragment in message
    assert "\n" not in message
    return message


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.touch()
    _expect(path, "empty file")


def test_header_only_wav(tmp_path):
    path = _write(tmp_path / "header.wav", np.zeros(0))
    assert os.path.getsize(path) > 0
    _expect(path, "no audio (0 frames)")


def test_text_file_named_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 20)
    _expect(path, "cannot open as audio")


def test_directory_named_wav(tmp_path):
    (tmp_path / "x.wav").mkdir()
    _expect(tmp_path / "x.wav", "not a regular file")


def test_missing_file(tmp_path):
    _expect(tmp_path / "nope.wav", "does not exist")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads anything"
)
def test_unreadable_file(tmp_path):
    path = _write(tmp_path / "secret.wav", _tone(1.0))
    os.chmod(path, 0)
    try:
        _expect(path, "unreadable")
    finally:
        os.chmod(path, 0o644)


def test_truncated_flac(tmp_path):
    path = _write(tmp_path / "cut.flac", _tone(3.0))
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    probe_audio(path)  # the header alone looks fine
    message = _expect(path, "truncated or corrupt", min_seconds=0.0)
    assert "decoding failed after" in message


def test_truncated_wav(tmp_path):
    path = _write(tmp_path / "cut.wav", _tone(2.0))
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:-1000])
    _expect(path, "truncated WAV file (1000 bytes")


def test_nan_samples(tmp_path):
    x = _tone(2.0).astype(np.float32)
    x[SR + 5] = np.nan
    path = _write(tmp_path / "nan.wav", x, subtype="FLOAT")
    probe_audio(path)
    message = _expect(path, "non-finite samples", min_seconds=0.0, block_seconds=0.5)
    assert "1.000 s" in message


def test_inf_samples(tmp_path):
    x = _tone(1.0).astype(np.float32)
    x[10] = np.inf
    path = _write(tmp_path / "inf.wav", x, subtype="FLOAT")
    _expect(path, "non-finite samples", min_seconds=0.0)


def test_too_short(tmp_path):
    path = _write(tmp_path / "short.flac", _tone(0.5))
    _expect(path, "shorter than 1 s (0.500 s)", min_seconds=1.0)


def test_read_segment_stereo_downmix(tmp_path):
    x = _tone(1.0, channels=2).astype(np.float32)
    path = _write(tmp_path / "stereo.wav", x, subtype="FLOAT")
    wav = read_segment(path)
    assert wav.dtype == torch.float32 and wav.ndim == 1
    torch.testing.assert_close(wav, torch.from_numpy(x.mean(axis=1)))


def test_read_segment_resamples(tmp_path):
    path = _write(tmp_path / "cd.wav", _tone(2.0, sr=44100), sr=44100)
    assert read_segment(path, sample_rate=16000).shape == (32000,)
    assert read_segment(path, 0.5, 1.0, sample_rate=16000).shape == (16000,)


def test_read_segment_offset_and_clipping(tmp_path):
    path = _write(tmp_path / "a.flac", _tone(2.0))
    direct, _ = sf.read(path, dtype="float32")
    wav = read_segment(path, start=0.25, duration=0.5)
    torch.testing.assert_close(wav, torch.from_numpy(direct[4000:12000]))
    assert read_segment(path, start=1.5, duration=10.0).shape == (8000,)
    assert read_segment(path, start=-1.0, duration=0.5).shape == (8000,)
    assert read_segment(path, start=5.0).shape == (0,)


def test_read_segment_error(tmp_path):
    path = tmp_path / "bad.wav"
    path.write_text("nope")
    with pytest.raises(AudioError, match="cannot read"):
        read_segment(path)


def test_random_crop():
    gen = torch.Generator().manual_seed(0)
    starts = [random_crop(10.0, 3.0, gen) for _ in range(200)]
    assert all(0.0 <= s <= 7.0 for s in starts)
    assert max(starts) - min(starts) > 5.0  # spread over the range
    assert random_crop(2.0, 3.0) == 0.0
    assert random_crop(3.0, 3.0) == 0.0
    a = [random_crop(10.0, 3.0, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert a[0] == a[1]
    torch.manual_seed(3)
    b = random_crop(10.0, 3.0)
    torch.manual_seed(3)
    assert random_crop(10.0, 3.0) == b
