"""Tests for bestrq2_lobes.data.demo_corpus.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from bestrq2_lobes.data import demo_corpus
from bestrq2_lobes.data.audio import check_audio
from bestrq2_lobes.data.demo_corpus import DEMO_DESCRIPTION, FAMILIES, make_demo_corpus
from bestrq2_lobes.data.folder_scan import prepare_folder

ARGS = dict(num_clips=6, seed=5, min_seconds=1.0, max_seconds=2.0, progress=False)


def _files(folder):
    audio = os.path.join(folder, "audio")
    return {
        name: open(os.path.join(audio, name), "rb").read() for name in os.listdir(audio)
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_demo_corpus(tmp_path_factory.mktemp("demo") / "corpus", **ARGS)


def test_layout_marker_and_readme(corpus):
    names = sorted(os.listdir(os.path.join(corpus, "audio")))
    assert names == [f"demo_{i:04d}_{FAMILIES[i % 3]}.flac" for i in range(6)]
    with open(os.path.join(corpus, ".complete")) as f:
        assert json.load(f) == {
            "num_clips": 6,
            "seed": 5,
            "sample_rate": 16000,
            "min_seconds": 1.0,
            "max_seconds": 2.0,
        }
    readme = open(os.path.join(corpus, "README.txt")).read()
    assert DEMO_DESCRIPTION in readme and "not real audio" in readme


def test_clips_are_valid(corpus):
    for name in os.listdir(os.path.join(corpus, "audio")):
        path = os.path.join(corpus, "audio", name)
        info = check_audio(path, min_seconds=1.0)
        assert info.sample_rate == 16000 and info.channels == 1
        assert 1.0 - 1e-4 <= info.duration <= 2.0 + 1e-4
        assert sf.info(path).subtype == "PCM_16"
        x, _ = sf.read(path)
        assert np.abs(x).max() == pytest.approx(0.5, abs=1e-3)


def test_bit_identical_and_idempotent(corpus, tmp_path):
    again = make_demo_corpus(tmp_path / "again", **ARGS)
    assert _files(again) == _files(corpus)
    other = make_demo_corpus(tmp_path / "other", **{**ARGS, "seed": 6})
    assert _files(other) != _files(corpus)
    marker = os.path.join(again, ".complete")
    mtimes = {p: os.stat(p).st_mtime_ns for p in (marker, os.path.join(again, "audio"))}
    assert make_demo_corpus(again, **ARGS) == os.fspath(again)
    assert {p: os.stat(p).st_mtime_ns for p in mtimes} == mtimes


def test_changed_arguments_regenerate(tmp_path):
    folder = make_demo_corpus(tmp_path / "c", **ARGS)
    make_demo_corpus(folder, **{**ARGS, "num_clips": 3})
    assert len(_files(folder)) == 3  # stale clips removed
    assert json.load(open(os.path.join(folder, ".complete")))["num_clips"] == 3


def _log_flatness(x, n=512):
    """Median log10 spectral flatness of the louder frames."""
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[:: n // 2] * np.hanning(n)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-12
    energy = power.sum(axis=1)
    loud = power[energy > 0.01 * energy.max()]
    flat = np.exp(np.log(loud).mean(axis=1)) / loud.mean(axis=1)
    return np.log10(np.median(flat)), float(np.mean(energy <= 0.01 * energy.max()))


def test_families_differ(corpus):
    stats = {}
    for name, _ in sorted(_files(corpus).items()):
        x, _ = sf.read(os.path.join(corpus, "audio", name))
        stats.setdefault(name.split("_")[2].removesuffix(".flac"), []).append(
            _log_flatness(x)
        )
    flat = {fam: [s[0] for s in v] for fam, v in stats.items()}
    quiet = {fam: [s[1] for s in v] for fam, v in stats.items()}
    # Tonal music < voiced speech < noisy environment, with clear margins.
    assert max(flat["music"]) < min(flat["speech"]) - 1
    assert max(flat["speech"]) < min(flat["environment"]) - 0.5
    # Speech has syllable gaps and pauses; music is continuous.
    assert min(quiet["speech"]) > max(quiet["music"]) + 0.1


def test_numpy_resonator_fallback(monkeypatch):
    monkeypatch.setattr(demo_corpus, "lfilter", None)
    x = demo_corpus._clip(1, 0, 16000, 1.0, 1.5)
    assert np.isfinite(x).all() and np.abs(x).max() == pytest.approx(0.5)
    assert _log_flatness(x)[1] > 0.1


def test_prepares_as_a_manifest(corpus, tmp_path):
    out = prepare_folder(corpus, tmp_path / "save", 1.0, 0.2, progress=False)
    with open(out["skipped_csv"]) as f:
        assert f.read().strip() == "file,reason"
