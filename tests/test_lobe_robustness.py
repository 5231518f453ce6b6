"""The frozen lobe under any input: short clips, bad lengths, shapes, dtypes,
non-finite audio and weights, broken configs (issue 16, docs/robustness.md)."""

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bestrq2_lobes import BestRQ2Encoder
from bestrq2_lobes.lobe import encoder_dir
from bestrq2_lobes.lobe.encoder_dir import (
    CONFIG_FILE,
    EncoderDirError,
    build_modules,
    encoder_config,
    write_encoder_dir,
)
from bestrq2_lobes.lobe.export import HPARAMS_TEMPLATE
from bestrq2_lobes.lobe.inputs import LobeInputError

SR = 16000
ERRORS = (LobeInputError, EncoderDirError)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(preset="paper", crop_seconds=2.0):
    cfg = encoder_config(preset, embed_dim=32, depth=1, num_heads=4, n_mels=32)
    cfg["crop_seconds"] = crop_seconds
    return cfg


def tiny_lobe(preset="paper", seed=0, **kwargs):
    torch.manual_seed(seed)
    return BestRQ2Encoder(None, config=tiny_config(preset), **kwargs)


LOBES = {"paper": tiny_lobe("paper"), "speech": tiny_lobe("speech")}


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text and text, text
    return text


def assert_same_frames(batch_out, alone_out, count):
    torch.testing.assert_close(
        batch_out[:count], alone_out[:count], atol=2e-4, rtol=2e-4
    )


# ------------------------------------------------------------------ short clips


@pytest.mark.parametrize("preset", ["paper", "speech"])
def test_clip_shorter_than_one_column_gives_one_frame(preset):
    lobe = LOBES[preset]
    need = lobe.min_samples
    assert need == (lobe.encoder.grid.patch_time - 1) * lobe.frontend.hop_length
    for samples in (1, 2, need // 2, need - 1, need):
        wav = torch.randn(1, samples)
        out = lobe(wav)
        assert out.shape == (1, 1, 32), samples
        assert torch.isfinite(out).all()
        assert lobe.frame_counts(None, samples).tolist() == [1]
        assert lobe.num_output_frames(torch.tensor([samples])).tolist() == [1]
        # the documented padding: zeros up to one column, encoded as that clip
        padded = torch.nn.functional.pad(wav, (0, need - samples))
        torch.testing.assert_close(out, lobe(padded), atol=1e-5, rtol=1e-5)


def test_paper_grid_example_of_the_issue():
    lobe = LOBES["paper"]
    out = lobe(torch.randn(1, 9000), torch.ones(1))
    assert out.shape == (1, 1, 32) and torch.isfinite(out).all()
    assert lobe.output_lengths(torch.ones(1), 9000).tolist() == [1.0]


def test_short_and_long_clips_in_one_batch_keep_their_frames():
    lobe = LOBES["paper"]
    torch.manual_seed(3)
    short, long = torch.randn(300), torch.randn(3 * lobe.chunk_samples + 5000)
    batch = torch.zeros(2, long.numel())
    batch[0, :300], batch[1] = short, long
    batch[0, 300:] = 7.0  # padding content is never read
    lens = torch.tensor([300 / long.numel(), 1.0])
    out = lobe(batch, lens)
    counts = lobe.frame_counts(lens, batch.shape[1])
    assert counts.tolist() == [
        1,
        int(lobe.num_output_frames(torch.tensor([5000 + 3 * lobe.chunk_samples]))),
    ]
    assert out.shape[1] == int(counts.max())
    assert_same_frames(out[0], lobe(short)[0], 1)
    assert out[0, 1:].abs().sum() == 0
    assert_same_frames(out[1], lobe(long)[0], int(counts[1]))


def test_zero_length_input_names_the_item():
    lobe = LOBES["paper"]
    with pytest.raises(LobeInputError, match="batch item 0 is empty") as err:
        lobe(torch.randn(1, 0))
    one_line(err)
    with pytest.raises(LobeInputError, match="batch item 1 is empty") as err:
        lobe(torch.randn(2, 16000), torch.tensor([1.0, 1e-6]))
    one_line(err)
    with pytest.raises(LobeInputError, match="batch item 1 is empty"):
        lobe.frame_counts(torch.tensor([1.0, 1e-6]), 16000)
    with pytest.raises(LobeInputError, match="at least one clip"):
        lobe(torch.randn(0, 16000))
    assert lobe.num_output_frames(torch.tensor([0])).tolist() == [0]


# ----------------------------------------------------------- non-finite audio


@pytest.mark.parametrize("value, text", [(float("nan"), "nan"), (float("inf"), "inf")])
def test_nonfinite_sample_names_item_and_position(value, text):
    lobe = LOBES["paper"]
    wav = torch.randn(3, 20000)
    wav[2, 12345] = value
    with pytest.raises(LobeInputError) as err:
        lobe(wav)
    msg = one_line(err)
    assert f"batch item 2: non-finite sample ({text}) at sample 12345" in msg
    assert "nonfinite='zero'" in msg


def test_nonfinite_in_padding_is_ignored_and_zero_option_zeroes():
    lobe = LOBES["paper"]
    torch.manual_seed(4)
    wav = torch.randn(2, 30000)
    lens = torch.tensor([1.0, 0.5])
    ref = lobe(wav, lens)
    wav[1, 20000] = float("nan")  # after the end of clip 1: padding
    torch.testing.assert_close(lobe(wav, lens), ref)
    wav[0, 100] = float("-inf")
    zeroing = BestRQ2Encoder(None, config=lobe.config, nonfinite="zero")
    zeroing.load_state_dict(lobe.state_dict())
    cleaned = wav.clone()
    cleaned[0, 100] = 0.0
    torch.testing.assert_close(zeroing(wav, lens), lobe(cleaned, lens))
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        BestRQ2Encoder(None, config=lobe.config, nonfinite="ignore")


def test_huge_amplitude_gives_an_error_not_nan_features():
    lobe = LOBES["paper"]
    with pytest.raises(LobeInputError, match="non-finite features") as err:
        lobe(torch.full((1, 16000), 1e25))
    one_line(err)


# ------------------------------------------------------------ lengths, shapes


@pytest.mark.parametrize(
    "wav_lens, match",
    [
        (torch.tensor([1.0, 1.5]), r"wav_lens\[1\] is 1.5: expected a relative length"),
        (torch.tensor([1.0, -0.2]), r"wav_lens\[1\] is -0.2"),
        (torch.tensor([0.0, 1.0]), r"wav_lens\[0\] is 0"),
        (torch.tensor([1.0, float("nan")]), r"wav_lens\[1\] is nan"),
        (torch.tensor([16000.0, 8000.0]), "absolute lengths"),
        (torch.tensor([1.0]), r"expected wav_lens of shape \(2,\)"),
        (torch.ones(2, 1), r"expected wav_lens of shape \(2,\)"),
        (torch.tensor([True, True]), "expected real relative lengths"),
    ],
)
def test_bad_relative_lengths_are_refused(wav_lens, match):
    lobe = LOBES["paper"]
    with pytest.raises(LobeInputError, match=match) as err:
        lobe(torch.randn(2, 16000), wav_lens)
    one_line(err)


def test_relative_length_rounding_and_sequences():
    lobe = LOBES["paper"]
    wav = torch.randn(2, 16000)
    ref = lobe(wav, torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(lobe(wav, torch.tensor([1.0 + 1e-6, 0.5])), ref)
    torch.testing.assert_close(lobe(wav, [1.0, 0.5]), ref)
    assert lobe.frame_counts([1.0, 0.5], 16000).tolist() == [1, 1]


def test_shapes_and_dtypes_at_the_boundary():
    lobe = LOBES["speech"]
    torch.manual_seed(5)
    wav = torch.randn(2, 8000)
    ref = lobe(wav)
    torch.testing.assert_close(lobe(wav.unsqueeze(1)), ref)
    torch.testing.assert_close(lobe(wav[0]), ref[:1])
    torch.testing.assert_close(lobe(wav.double()), ref, atol=1e-4, rtol=1e-4)
    for dtype in (torch.float16, torch.bfloat16):
        low = wav.to(dtype)
        torch.testing.assert_close(lobe(low), lobe(low.float()))
    bad = [
        (torch.randn(2, 2, 8000), "downmix multi-channel audio first"),
        (torch.randn(1, 1, 1, 8000), r"got \(1, 1, 1, 8000\)"),
        (torch.zeros(2, 8000, dtype=torch.int16), "integer PCM is not rescaled"),
        (torch.zeros(2, 8000, dtype=torch.int32), "expected a floating-point"),
        (torch.zeros(2, 8000, dtype=torch.bool), "expected a floating-point"),
        (torch.zeros(2, 8000, dtype=torch.complex64), "expected a floating-point"),
        (np.zeros((2, 8000), np.float32), "as a torch.Tensor"),
    ]
    for wav_bad, match in bad:
        with pytest.raises(LobeInputError, match=match) as err:
            lobe(wav_bad)
        one_line(err)


# ------------------------------------------------------------ loading checks


@pytest.fixture
def enc_dir(tmp_path):
    frontend, encoder = build_modules(tiny_config())
    return Path(write_encoder_dir(tmp_path / "enc", frontend, encoder, 2.0))


def edit_config(path, part, **sizes):
    cfg_path = path / CONFIG_FILE
    config = json.loads(cfg_path.read_text())
    (config[part] if part else config).update(sizes)
    cfg_path.write_text(json.dumps(config))


FE, ENC = "frontend", "encoder"


@pytest.mark.parametrize(
    "edits, match",
    [
        ({FE: dict(hop_length=0)}, r"frontend.hop_length must be an integer in \[1"),
        ({FE: dict(hop_length=62.5)}, "frontend.hop_length must be an integer"),
        ({FE: dict(n_fft=512, win_length=1024)}, "must not exceed n_fft"),
        ({FE: dict(sample_rate=True)}, "frontend.sample_rate must be an integer"),
        ({FE: dict(f_max=16000.0)}, "f_max <= sample_rate / 2"),
        ({FE: dict(floor=0.0)}, r"frontend.floor must be a number in \(0"),
        ({FE: dict(n_mels=64)}, r"encoder.n_mels \(32\) must equal"),
        ({ENC: dict(depth=100000)}, r"encoder.depth must be an integer in \[1, 256\]"),
        ({ENC: dict(depth=0)}, "encoder.depth must be an integer"),
        ({ENC: dict(depth="12")}, "encoder.depth must be an integer"),
        ({ENC: dict(embed_dim=30, num_heads=3)}, "multiple of 4"),
        ({ENC: dict(embed_dim=34)}, "multiple of num_heads"),
        ({ENC: dict(embed_dim=10**9)}, "encoder.embed_dim must be an integer"),
        ({ENC: dict(patch_freq=5)}, "multiple of patch_freq"),
        ({ENC: dict(mlp_ratio=float("nan"))}, "encoder.mlp_ratio must be a number"),
        ({ENC: dict(unknown=1)}, "encoder.unknown is not a setting"),
        ({"": dict(crop_seconds=-1.0)}, r"crop_seconds must be a number in \(0"),
        ({"": dict(crop_seconds=1e6)}, "crop_seconds must be a number"),
        ({FE: dict(hop_length=1), ENC: dict(patch_time=1)}, "tokens, at most"),
    ],
)
def test_bad_config_sizes_fail_before_anything_is_built(
    enc_dir, monkeypatch, edits, match
):
    for part, sizes in edits.items():
        edit_config(enc_dir, part, **sizes)
    built = []
    monkeypatch.setattr(encoder_dir, "ViTEncoder", lambda **kw: built.append(kw))
    start = time.perf_counter()
    with pytest.raises(EncoderDirError, match=match) as err:
        BestRQ2Encoder(enc_dir)
    assert time.perf_counter() - start < 5.0
    assert CONFIG_FILE in one_line(err)
    assert not built


def test_config_disagreeing_with_weights_fails_before_building(enc_dir, monkeypatch):
    edit_config(enc_dir, "encoder", depth=200)  # in bounds, but the file has 1 block

    def must_not_build(config):
        raise AssertionError("modules built before the weights were checked")

    monkeypatch.setattr(encoder_dir, "build_modules", must_not_build)
    with pytest.raises(EncoderDirError, match="missing keys") as err:
        BestRQ2Encoder(enc_dir)
    one_line(err)
    edit_config(enc_dir, "encoder", depth=1, embed_dim=64, num_heads=4)
    with pytest.raises(EncoderDirError, match="has shape") as err:
        BestRQ2Encoder(enc_dir)
    one_line(err)


def test_random_encoder_config_is_checked_too():
    with pytest.raises(EncoderDirError, match="encoder.depth") as err:
        BestRQ2Encoder(None, config=encoder_config(depth=100000))
    one_line(err)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_weights_are_refused_naming_the_tensor(tmp_path, value):
    frontend, encoder = build_modules(tiny_config())
    with torch.no_grad():
        encoder.blocks.blocks[0].attn.qkv.weight[3, 4] = value
    path = write_encoder_dir(tmp_path / "enc", frontend, encoder, 2.0)
    with pytest.raises(EncoderDirError, match="non-finite") as err:
        BestRQ2Encoder(path)
    assert "blocks.blocks.0.attn.qkv.weight" in one_line(err)


# ------------------------------------------------------- interface, adapters


def digit_like(seconds, seed):
    """A voiced, vowel-like burst with an onset and decay, like a spoken digit."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = rng.uniform(90, 220)
    voiced = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 12))
    envelope = np.sin(np.pi * t / t[-1]) ** 0.5 if len(t) > 1 else np.ones(1)
    noise = 0.05 * rng.standard_normal(len(t))
    return (0.3 * voiced * envelope + noise).astype(np.float32)


def export_dir(lobe, path):
    write_encoder_dir(path, lobe.frontend, lobe.encoder, lobe.config["crop_seconds"])
    (path / "hyperparams.yaml").write_text(HPARAMS_TEMPLATE.format(sample_rate=SR))
    return path


@pytest.mark.parametrize("preset", ["paper", "speech"])
def test_spoken_digit_clips_alone_in_batch_and_from_file(tmp_path, preset):
    from bestrq2_lobes.lobe.interface import BestRQ2EncoderInterface

    lobe = LOBES[preset]
    model = BestRQ2EncoderInterface.from_hparams(
        source=export_dir(lobe, tmp_path / "enc")
    )
    clips = [
        torch.from_numpy(digit_like(s, i)) for i, s in enumerate([0.15, 0.3, 0.45, 0.6])
    ]
    longs = [torch.from_numpy(digit_like(s, 10 + i)) for i, s in enumerate([2.5, 4.1])]
    every = clips + longs
    longest = max(c.numel() for c in every)
    batch = torch.zeros(len(every), longest)
    for i, clip in enumerate(every):
        batch[i, : clip.numel()] = clip
    lens = torch.tensor([c.numel() / longest for c in every])
    together = lobe(batch, lens)
    counts = lobe.frame_counts(lens, longest)
    assert (counts >= 1).all()
    for i, clip in enumerate(clips):
        alone = lobe(clip)[0]
        assert alone.shape[0] == int(counts[i]) >= 1
        assert torch.isfinite(alone).all()
        assert_same_frames(together[i], alone, int(counts[i]))
        assert together[i, int(counts[i]) :].abs().sum() == 0
        wav_path = tmp_path / f"digit{i}.wav"
        sf.write(wav_path, clip.numpy(), SR, subtype="FLOAT")
        from_file = model.encode_file(wav_path)
        assert_same_frames(from_file, alone, alone.shape[0])
        assert from_file.shape == alone.shape
    batch_iface = model.encode_batch(batch, lens)
    torch.testing.assert_close(batch_iface, together, atol=1e-5, rtol=1e-5)


def test_interface_names_the_file_on_bad_audio(tmp_path):
    from bestrq2_lobes.lobe.interface import BestRQ2EncoderInterface

    model = BestRQ2EncoderInterface.from_hparams(
        source=export_dir(LOBES["paper"], tmp_path / "enc")
    )
    nan = np.zeros(8000, np.float32)
    nan[4000] = np.nan
    sf.write(tmp_path / "nan.wav", nan, SR, subtype="FLOAT")
    with pytest.raises(
        LobeInputError, match="nan.wav: batch item 0: non-finite"
    ) as err:
        model.encode_file(tmp_path / "nan.wav")
    assert "at sample 4000" in one_line(err)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), SR, subtype="FLOAT")
    with pytest.raises(LobeInputError, match="empty.wav: batch item 0 is empty"):
        model.encode_file(tmp_path / "empty.wav")
    sf.write(tmp_path / "tick.wav", np.ones(1, np.float32), SR, subtype="FLOAT")
    assert model.encode_file(tmp_path / "tick.wav").shape == (1, 32)


@pytest.fixture
def adapter_dir(tmp_path, monkeypatch):
    path = export_dir(LOBES["paper"], tmp_path / "enc")
    monkeypatch.setenv("BESTRQ2_ENCODER_DIR", str(path))
    return path


def test_xares_adapter_short_clips_and_checks(adapter_dir):
    from bestrq2_lobes.adapters.xares_encoder import BestRQ2XaresEncoder

    encoder = BestRQ2XaresEncoder()
    out = encoder(torch.randn(2, 4000))
    assert out.shape == (2, 1, 32) and torch.isfinite(out).all()
    assert encoder(torch.randn(2, 1, 4000)).shape == (2, 1, 32)
    wav = torch.randn(2, 4000)
    wav[1, 10] = float("nan")
    with pytest.raises(LobeInputError, match="batch item 1: non-finite sample"):
        encoder(wav)
    with pytest.raises(LobeInputError, match="batch item 0 is empty"):
        encoder(torch.randn(1, 0))


def test_xares_llm_adapter_short_clips_and_masks(adapter_dir):
    from bestrq2_lobes.adapters.xares_llm_encoder import BestRQ2XaresLLMEncoder

    encoder = BestRQ2XaresLLMEncoder()
    torch.manual_seed(6)
    audio = torch.randn(3, 3 * SR)
    mask = torch.zeros(3, 3 * SR, dtype=torch.long)
    mask[0], mask[1, :500], mask[2, : 2 * SR] = 1, 1, 1
    feats, feat_mask = encoder(audio, mask)
    assert feat_mask.sum(dim=1).tolist() == [4, 1, 3]
    assert feats.shape[1] == 4
    alone, alone_mask = encoder(audio[1:2, :500])
    assert alone.shape == (1, 1, 32) and alone_mask.tolist() == [[1]]
    assert_same_frames(feats[1], alone[0], 1)
    mask[2] = 0
    with pytest.raises(LobeInputError, match=r"wav_lens\[2\] is 0") as err:
        encoder(audio, mask)
    one_line(err)
    with pytest.raises(LobeInputError, match="audio_attention_mask of shape"):
        encoder(audio, mask[:, :100])


# -------------------------------------------------------- property-based test


@st.composite
def batches(draw):
    """A batch with its relative lengths, and the error it must raise (or None)."""
    lobe_name = draw(st.sampled_from(sorted(LOBES)))
    lobe = LOBES[lobe_name]
    crop = lobe.chunk_samples
    size = draw(st.integers(1, 4))
    length = st.one_of(
        st.integers(1, lobe.min_samples + 10),  # around one column
        st.integers(1, 3 * crop + 1000),  # up to several crops
    )
    lengths = draw(st.lists(length, min_size=size, max_size=size))
    dtypes = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
    dtype = draw(st.sampled_from(dtypes))
    scale = draw(st.sampled_from([0.0, 1e-4, 0.5, 1.0, 30.0]))
    seed = draw(st.integers(0, 2**16))
    with_lens = draw(st.booleans()) or len(set(lengths)) > 1
    extra = draw(st.integers(0, 2000))  # batch padding after the longest clip
    fault = draw(st.sampled_from([None] * 6 + ["empty", "nan", "long_len"]))
    layout = draw(st.sampled_from(["2d", "3d"] + (["1d"] if size == 1 else [])))
    return lobe_name, lengths, dtype, scale, seed, with_lens, extra, fault, layout


def build_batch(lengths, dtype, scale, seed, with_lens, extra, fault, layout):
    gen = torch.Generator().manual_seed(seed)
    samples = max(lengths) + (extra if with_lens else 0)
    clips = [(scale * torch.randn(n, generator=gen)).to(dtype) for n in lengths]
    wav = torch.full((len(lengths), samples), 3.0, dtype=dtype)  # junk padding
    for i, clip in enumerate(clips):
        wav[i, : clip.numel()] = clip
    lens = torch.tensor([n / samples for n in lengths]) if with_lens else None
    item = len(lengths) - 1
    expect = None
    if fault == "empty":
        lens = torch.tensor([n / samples for n in lengths])
        lens[item] = 0.0
        expect = rf"wav_lens\[{item}\] is 0"
    elif fault == "nan":
        pos = lengths[item] // 2
        wav[item, pos] = float("nan")
        expect = rf"batch item {item}: non-finite sample \(nan\) at sample {pos}"
    elif fault == "long_len":
        lens = torch.tensor([n / samples for n in lengths])
        lens[item] = 1.5
        expect = rf"wav_lens\[{item}\] is 1.5"
    if layout == "3d":
        wav = wav.unsqueeze(1)
    elif layout == "1d":
        wav = wav[0]
    return clips, wav, lens, expect


@pytest.mark.usefixtures("no_broken_lazy_modules")  # see tests/conftest.py
@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batches())
def test_any_batch_gives_finite_documented_frames_or_a_one_line_error(case):
    lobe_name, *args = case
    lobe = LOBES[lobe_name]
    clips, wav, lens, expect = build_batch(*args)
    try:
        out = lobe(wav, lens)
    except ERRORS as err:
        message = str(err)
        assert "\n" not in message
        assert expect is not None, f"unexpected error: {message}"
        assert re.search(expect, message), (expect, message)
        return
    assert expect is None, f"no error, expected {expect}"
    samples = wav.shape[-1]
    counts = lobe.frame_counts(lens, samples, len(clips))
    assert (counts >= 1).all()
    assert out.shape == (len(clips), int(counts.max()), lobe.output_dim)
    assert torch.isfinite(out).all()
    rel = lobe.output_lengths(lens, samples) if lens is not None else None
    if rel is not None:
        assert torch.equal((rel * out.shape[1]).round().long(), counts)
    for i, clip in enumerate(clips):
        count = int(counts[i])
        assert count == int(lobe.num_output_frames(torch.tensor([clip.numel()])))
        assert out[i, count:].abs().sum() == 0
        alone = lobe(clip)
        assert alone.shape[1] == count
        assert_same_frames(out[i], alone[0], count)
