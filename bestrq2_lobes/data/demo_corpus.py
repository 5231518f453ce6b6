"""A deterministic synthetic audio corpus so the pretraining recipe runs with no data.

Clips rotate over three families with learnable structure: music-like note
sequences, speech-like formant babble and environment-like noise beds with
impacts and chirps. The corpus is for smoke tests only; it is not real audio.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import soundfile as sf
from tqdm import tqdm

from bestrq2_lobes.data.files import atomic_open, atomic_path

try:
    from scipy.signal import lfilter
except ImportError:  # pragma: no cover - scipy comes with speechbrain
    lfilter = None

__all__ = ["DEMO_DESCRIPTION", "FAMILIES", "make_demo_corpus"]

DEMO_DESCRIPTION = (
    "Generated demo corpus of synthetic 16-bit mono FLAC clips (music-like note "
    "sequences, speech-like formant babble, environment-like noise with impacts "
    "and chirps) for smoke-testing BEST-RQ-2 pretraining; it is not real audio."
)
FAMILIES = ("music", "speech", "environment")
MARKER = ".complete"

# (F1, F2, F3) in Hz of a few vowels, and their bandwidths.
_VOWELS = np.array(
    [[730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010], [570, 840, 2410],
     [300, 870, 2240], [660, 1720, 2410], [490, 1350, 1690]], dtype=float
)  # fmt: skip
_BANDWIDTHS = np.array([80.0, 110.0, 160.0])
_SCALE = np.array([0, 2, 4, 7, 9])  # major pentatonic, semitones


def _adsr(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Attack-decay-sustain-release envelope of ``n`` samples."""
    a, d, r = (int(sr * v) for v in rng.uniform([0.005, 0.03, 0.05], [0.04, 0.1, 0.2]))
    a, d, r = max(a, 1), max(d, 1), max(min(r, n // 2), 1)
    sustain = rng.uniform(0.4, 0.8)
    env = np.full(n, sustain)
    env[:a] = np.linspace(0.0, 1.0, a)[:n]
    env[a : a + d] = np.linspace(1.0, sustain, d)[: max(0, n - a)]
    env[n - r :] *= np.linspace(1.0, 0.0, r)
    return env


def _music(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Melody plus bass line of harmonic notes with vibrato and ADSR envelopes."""
    out = np.zeros(n)
    key = rng.integers(45, 57)
    beat = rng.uniform(0.12, 0.3)
    for voice, (octave, gain) in enumerate([(12, 1.0), (-12, 0.6)]):
        t0 = 0
        while t0 < n:
            beats = rng.choice([1, 2, 2, 4] if voice else [1, 1, 2, 3])
            length = int(sr * beat * beats)
            note = key + octave + rng.choice(_SCALE) + 12 * rng.integers(0, 2)
            f0 = 440.0 * 2 ** ((note - 69) / 12)
            m = min(length, n - t0)
            t = np.arange(m) / sr
            depth, rate = rng.uniform(0.002, 0.008), rng.uniform(4, 7)
            vib = 1 + depth * np.sin(2 * np.pi * rate * t)
            phase = 2 * np.pi * np.cumsum(f0 * vib) / sr
            k = np.arange(1, rng.integers(3, 7) + 1)[:, None]
            partials = np.sin(k * phase) / k ** rng.uniform(0.8, 2.0)
            partials[(k * f0 >= 0.45 * sr)[:, 0]] = 0
            out[t0 : t0 + m] += gain * _adsr(m, sr, rng) * partials.sum(axis=0)
            t0 += length
    return out


def _resonators(
    x: np.ndarray, freqs: np.ndarray, sr: int, hop: int = 256
) -> np.ndarray:
    """Cascade of time-varying 2-pole formant resonators, ``freqs``: (frames, 3).

    Uses ``scipy.signal.lfilter`` block by block (state carried over); without
    scipy, the resonators' magnitude responses are applied per frame by FFT
    overlap-add instead.
    """
    r = np.exp(-np.pi * _BANDWIDTHS / sr)
    c = -(r**2)
    b = 2 * r * np.cos(2 * np.pi * freqs / sr)  # (frames, 3)
    a = 1 - b - c
    if lfilter is not None:
        y = x.copy()
        state = np.zeros((3, 2))
        for i, s in enumerate(range(0, len(x), hop)):
            for j in range(3):
                y[s : s + hop], state[j] = lfilter(
                    [a[i, j]], [1, -b[i, j], -c[j]], y[s : s + hop], zi=state[j]
                )
        return y
    b = np.vstack([b, b[-1:]])  # one more frame so overlap-add covers the end
    a = 1 - b - c
    win = np.hanning(2 * hop + 1)[:-1]
    pad = np.concatenate([np.zeros(hop), x, np.zeros(3 * hop)])
    idx = np.arange(len(b))[:, None] * hop + np.arange(2 * hop)
    spec = np.fft.rfft(pad[idx] * win, axis=1)
    z = np.exp(-1j * np.pi * np.arange(hop + 1) / hop)
    gain = np.prod(a[:, None] / (1 - b[:, None] * z[:, None] - c * z[:, None] ** 2), -1)
    frames = np.fft.irfft(spec * np.abs(gain), axis=1)
    y = np.zeros(len(pad))
    np.add.at(y, idx, frames)
    return y[hop : hop + len(x)]


def _speech(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Glottal pulses with drifting pitch through moving vowel formants."""
    hop = 256
    t = np.arange(n) / sr
    base = rng.uniform(90, 250)
    drift = sum(
        rng.uniform(0.03, 0.12) * np.sin(2 * np.pi * rng.uniform(0.2, 2) * t + p)
        for p in rng.uniform(0, 2 * np.pi, 3)
    )
    f0 = base * (1 + drift) * np.linspace(1.05, 0.9, n)  # declination
    cycle = np.cumsum(f0 / sr) % 1.0
    flow = np.where(cycle < 0.4, 0.5 - 0.5 * np.cos(np.pi * cycle / 0.4), 0.0)
    closing = (cycle >= 0.4) & (cycle < 0.56)
    flow[closing] = np.cos(0.5 * np.pi * (cycle[closing] - 0.4) / 0.16)
    source = np.diff(flow, prepend=0.0) * sr / base + 0.1 * rng.standard_normal(n)
    # Syllables at 3-6 Hz with a vowel target each, grouped into phrases by pauses.
    # Some syllables start with a fricative-like noise burst.
    env, hiss, targets, pos = np.zeros(n), np.zeros(n), [], 0
    while pos < n:
        for _ in range(rng.integers(3, 9)):
            length = int(sr / rng.uniform(3, 6))
            seg = np.sin(np.pi * np.arange(length) / length) ** 2
            env[pos : pos + length] = seg[: max(0, n - pos)]
            if pos < n and rng.random() < 0.4:
                m = min(int(sr * rng.uniform(0.04, 0.1)), n - pos)
                hiss[pos : pos + m] = np.hanning(m) * rng.uniform(0.5, 1.0)
            targets.append((pos + length // 2, _VOWELS[rng.integers(len(_VOWELS))]))
            pos += length
        pos += int(sr * rng.uniform(0.15, 0.6))
    frames = np.arange(0, n, hop)
    centres, vowels = zip(*targets, strict=True)
    freqs = np.stack(
        [np.interp(frames, centres, np.array(vowels)[:, j]) for j in range(3)], axis=1
    )
    freqs *= rng.uniform(0.9, 1.15)  # speaker's vocal tract length
    voiced = _resonators(source, freqs, sr, hop) * env
    frication = np.diff(rng.standard_normal(n + 1)) * hiss
    return voiced / np.abs(voiced).max() + 0.08 * frication


def _coloured_noise(n: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with a 1/f**alpha power spectrum."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
    return np.fft.irfft(spec / f ** (alpha / 2), n)


def _environment(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Coloured noise bed with wind-like swells, knocks, clicks and chirps."""
    t = np.arange(n) / sr
    bed = _coloured_noise(n, rng.uniform(0.5, 2.0), rng)
    bed *= 1 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t)
    out = 0.3 * bed / np.abs(bed).max()
    for _ in range(rng.integers(2, 6)):  # knocks: decaying resonant bursts
        pos, f, tau = rng.integers(0, n), rng.uniform(120, 600), rng.uniform(0.01, 0.04)
        for _ in range(rng.integers(1, 5)):
            m = min(int(6 * tau * sr), n - pos)
            k = np.arange(m) / sr
            burst = np.sin(2 * np.pi * f * k) + 0.5 * rng.standard_normal(m)
            out[pos : pos + m] += np.exp(-k / tau) * burst
            pos += int(sr * rng.uniform(0.12, 0.3))
            if pos >= n:
                break
    clicks = rng.integers(0, n, rng.integers(3, 15))
    out[clicks] += rng.choice([-1.0, 1.0], len(clicks)) * rng.uniform(0.5, 1.0)
    for _ in range(rng.integers(1, 3)):  # exponential chirps
        m = min(int(sr * rng.uniform(0.3, 1.5)), n)
        pos = rng.integers(0, n - m + 1)
        f_start, f_end = rng.uniform(300, 4000, 2)
        freq = f_start * (f_end / f_start) ** (np.arange(m) / m)
        chirp = np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.hanning(m)
        out[pos : pos + m] += rng.uniform(0.3, 0.8) * chirp
    return out


def _clip(index: int, seed: int, sr: int, lo: float, hi: float) -> np.ndarray:
    """Generates clip ``index``, peak-normalised to 0.5."""
    rng = np.random.default_rng([seed, index])
    n = int(round(rng.uniform(lo, hi) * sr))
    make = (_music, _speech, _environment)[index % 3]
    x = make(n, sr, rng)
    return 0.5 * x / max(np.abs(x).max(), 1e-9)


def make_demo_corpus(
    folder: str | os.PathLike,
    num_clips: int = 96,
    seed: int = 0,
    sample_rate: int = 16000,
    min_seconds: float = 3.0,
    max_seconds: float = 12.0,
    progress: bool = True,
) -> str:
    """Writes a deterministic synthetic corpus of FLAC clips into ``folder/audio``.

    Clip ``i`` is ``audio/demo_{i:04d}_{family}.flac`` with family
    ``FAMILIES[i % 3]`` and a duration drawn uniformly in
    ``[min_seconds, max_seconds]``; reruns give bit-identical files. A
    ``.complete`` marker records the arguments: if it matches, nothing is done.
    Each file is written under a temporary name and renamed, the marker last.

    Arguments
    ---------
    folder : str | os.PathLike
        Output folder (created).
    num_clips : int
        Number of clips.
    seed : int
        Seed of the numpy random generator.
    sample_rate : int
        Sampling rate in Hz.
    min_seconds : float
        Shortest clip duration.
    max_seconds : float
        Longest clip duration.
    progress : bool
        Show a progress bar (only on a terminal).

    Returns
    -------
    str
        ``folder``.

    Example
    -------
    >>> import soundfile as sf
    >>> folder = make_demo_corpus(getfixture("tmpdir") / "demo", num_clips=3,
    ...                           min_seconds=0.5, max_seconds=1.0, progress=False)
    >>> sorted(os.listdir(os.path.join(folder, "audio")))
    ['demo_0000_music.flac', 'demo_0001_speech.flac', 'demo_0002_environment.flac']
    >>> sf.info(os.path.join(folder, "audio", "demo_0001_speech.flac")).subtype
    'PCM_16'
    """
    folder = os.fspath(folder)
    if num_clips < 0 or not 0 < min_seconds <= max_seconds:
        raise ValueError("need num_clips >= 0 and 0 < min_seconds <= max_seconds")
    opts = {
        "num_clips": num_clips,
        "seed": seed,
        "sample_rate": sample_rate,
        "min_seconds": min_seconds,
        "max_seconds": max_seconds,
    }
    marker = os.path.join(folder, MARKER)
    try:
        with open(marker, encoding="utf-8") as f:
            if json.load(f) == opts:
                return folder
    except (OSError, ValueError):
        pass
    audio = os.path.join(folder, "audio")
    os.makedirs(audio, exist_ok=True)
    if os.path.exists(marker):
        os.remove(marker)
    names = [f"demo_{i:04d}_{FAMILIES[i % 3]}.flac" for i in range(num_clips)]
    for stale in set(os.listdir(audio)) - set(names):
        if stale.startswith("demo_") and stale.endswith(".flac"):
            os.remove(os.path.join(audio, stale))
    show = progress and sys.stderr.isatty()
    for i, name in enumerate(tqdm(names, desc="Demo corpus", disable=not show)):
        wav = _clip(i, seed, sample_rate, min_seconds, max_seconds)
        with atomic_path(os.path.join(audio, name)) as part:
            sf.write(part, wav, sample_rate, format="FLAC", subtype="PCM_16")
    with open(os.path.join(folder, "README.txt"), "w", encoding="utf-8") as f:
        f.write(
            f"{DEMO_DESCRIPTION}\n\nGenerated by bestrq2_lobes.data.demo_corpus."
            f"make_demo_corpus with {json.dumps(opts)}.\nDo not report results "
            "on it: it only checks that the pipeline runs end to end.\n"
        )
    with atomic_open(marker) as f:
        json.dump(opts, f)
    return folder
