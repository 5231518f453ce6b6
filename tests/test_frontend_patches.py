"""Tests for bestrq2_lobes.model.frontend and bestrq2_lobes.model.patches.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

import pytest
import torch
import torchaudio
from torch.nn import functional as F

from bestrq2_lobes.model.frontend import LogMel, reflect_tails
from bestrq2_lobes.model.patches import PatchEmbedding, PatchGrid

SR = 16000


def _noise(batch, samples, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, samples, generator=gen)


# ---------------------------------------------------------------- front end


def test_paper_preset_shape_and_frames():
    frontend = LogMel()
    feats = frontend(_noise(2, 10 * SR))
    assert feats.shape == (2, 128, 257)
    assert feats.dtype == torch.float32
    assert torch.isfinite(feats).all()
    lengths = torch.tensor([10 * SR, 5 * SR, 9375, 1025])
    assert frontend.num_frames(lengths).tolist() == [257, 129, 16, 2]
    assert frontend.hop_ms == pytest.approx(39.0625)
    assert frontend.min_samples == 1025
    # 257 frames -> 16 whole 16-frame columns x 8 rows = 128 tokens.
    grid = PatchGrid(128, 16, 16)
    assert grid.patchify(feats).shape == (2, 128, 256)


def test_num_frames_matches_stft_output_length():
    frontend = LogMel(n_mels=32)
    for samples in (1025, 9375, 9999, 20000, 31250):
        feats = frontend(_noise(1, samples))
        assert feats.shape[-1] == int(frontend.num_frames(torch.tensor(samples)))


def test_matches_reference_log_mel():
    """Hann STFT (centred, reflect), |X|^2, HTK mel without norm, 10 log10."""
    torch.manual_seed(0)
    frontend = LogMel(n_mels=32)
    wav = _noise(2, 20000, seed=3)
    spec = torch.stft(
        wav.double(),
        n_fft=2048,
        hop_length=625,
        win_length=2048,
        window=torch.hann_window(2048, dtype=torch.float64),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    power = spec.abs() ** 2
    fbank = torchaudio.functional.melscale_fbanks(
        1025, 0.0, 8000.0, 32, SR, norm=None, mel_scale="htk"
    ).double()
    mel = torch.einsum("bft,fm->bmt", power, fbank)
    expected = 10 * torch.log10(mel.clamp(min=1e-10))
    got = frontend(wav)
    assert got.shape == expected.shape
    torch.testing.assert_close(got.double(), expected, atol=2e-3, rtol=0)


def test_floor_on_silence():
    feats = LogMel(n_mels=32)(torch.zeros(1, 16000))
    assert torch.all(feats == -100.0)


def test_optional_fixed_normalisation():
    wav = _noise(1, 16000)
    plain = LogMel(n_mels=32)(wav)
    normed = LogMel(n_mels=32, norm_mean=-20.0, norm_std=4.0)(wav)
    torch.testing.assert_close(normed, (plain + 20.0) / 4.0)


def test_fp32_under_bf16_autocast():
    frontend = LogMel(n_mels=32)
    wav = _noise(2, 16000)
    reference = frontend(wav)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = frontend(wav)
        from_bf16 = frontend(wav.bfloat16())
    assert feats.dtype == torch.float32
    assert from_bf16.dtype == torch.float32
    torch.testing.assert_close(feats, reference, atol=1e-5, rtol=0)


def test_padded_5s_clip_matches_alone_with_lengths():
    frontend = LogMel()
    wav = _noise(2, 10 * SR, seed=1)
    wav[1, 5 * SR :] = 0.0
    lengths = torch.tensor([10 * SR, 5 * SR])
    batched = frontend(wav, lengths)
    alone = frontend(wav[1:, : 5 * SR])
    n = int(frontend.num_frames(torch.tensor(5 * SR)))
    assert alone.shape[-1] == n == 129
    torch.testing.assert_close(batched[1, :, :n], alone[0], atol=1e-4, rtol=0)
    # The long clip is unaffected by the lengths argument.
    torch.testing.assert_close(batched[0], frontend(wav[:1])[0], atol=1e-4, rtol=0)
    # Without lengths the last frames see the zero padding: the test is sensitive.
    unaware = frontend(wav)
    assert (unaware[1, :, n - 1] - alone[0, :, n - 1]).abs().max() > 1.0


def test_padded_clip_close_to_batch_length_matches_alone():
    frontend = LogMel()
    samples, length = 10 * SR, 10 * SR - 100
    wav = _noise(2, samples, seed=2)
    wav[1, length:] = 0.0
    batched = frontend(wav, torch.tensor([samples, length]))
    alone = frontend(wav[1:, :length])
    n = alone.shape[-1]
    # 256 frames -> 16 whole columns: the last frame belongs to a valid token.
    assert n == 256
    torch.testing.assert_close(batched[1, :, :n], alone[0], atol=1e-3, rtol=0)


def test_reflect_tails_matches_pad_reference():
    gen = torch.Generator().manual_seed(0)
    batch, samples, width = 6, 300, 25
    wav = torch.randn(batch, samples, generator=gen)
    lengths = torch.randint(width + 1, samples + 1, (batch,), generator=gen)
    lengths[0] = samples  # no room for a tail
    lengths[1] = samples - 10  # tail cut by the row end
    lengths[2] = width + 1  # shortest legal reflection
    out = reflect_tails(wav, lengths, width)
    assert out.shape == wav.shape
    for b in range(batch):
        n = int(lengths[b])
        ref = F.pad(wav[b : b + 1, :n].unsqueeze(0), (0, width), mode="reflect")[0, 0]
        expected = wav[b].clone()
        stop = min(samples, n + width)
        expected[:stop] = ref[:stop]
        torch.testing.assert_close(out[b], expected, atol=0, rtol=0)
    # The input is not modified in place.
    assert not torch.equal(out, wav)


# ------------------------------------------------------------------ patches


@pytest.mark.parametrize("patch_freq,patch_time", [(16, 16), (8, 4)])
def test_patchify_embedding_equals_conv2d(patch_freq, patch_time):
    torch.manual_seed(0)
    n_mels, frames, dim = 32, 70, 32
    grid = PatchGrid(n_mels, patch_freq, patch_time)
    embed = PatchEmbedding(patch_freq, patch_time, dim)
    feats = torch.randn(2, n_mels, frames)
    patches = grid.patchify(feats)
    cols = frames // patch_time
    assert patches.shape == (2, cols * grid.freq_rows, patch_freq * patch_time)

    conv = torch.nn.Conv2d(1, dim, (patch_freq, patch_time), (patch_freq, patch_time))
    conv.load_state_dict(embed.proj.state_dict())
    ref = conv(feats.unsqueeze(1))  # (B, D, rows, cols)
    assert ref.shape[-2:] == (grid.freq_rows, cols)
    ref = ref.permute(0, 3, 2, 1).reshape(2, cols * grid.freq_rows, dim)
    torch.testing.assert_close(embed(patches), ref, atol=1e-5, rtol=1e-5)

    # Token n sits at column n // freq_rows and row n % freq_rows.
    for n in range(patches.shape[1]):
        col, row = n // grid.freq_rows, n % grid.freq_rows
        block = feats[
            :,
            row * patch_freq : (row + 1) * patch_freq,
            col * patch_time : (col + 1) * patch_time,
        ]
        assert torch.equal(patches[:, n], block.reshape(2, -1))


def test_patchify_rejects_wrong_mels():
    with pytest.raises(ValueError):
        PatchGrid(n_mels=30, patch_freq=16)
    with pytest.raises(ValueError):
        PatchGrid(n_mels=32).patchify(torch.zeros(1, 16, 32))


def test_valid_tokens_and_token_mask():
    grid = PatchGrid(n_mels=32, patch_freq=16, patch_time=16)
    num_frames = torch.tensor([70, 47, 16, 15, 64])
    assert grid.valid_columns(num_frames).tolist() == [4, 2, 1, 0, 4]
    assert grid.valid_tokens(num_frames).tolist() == [8, 4, 2, 0, 8]
    mask = grid.token_mask(num_frames, 8)
    expected = torch.tensor([[n < v for n in range(8)] for v in (8, 4, 2, 0, 8)])
    assert mask.dtype == torch.bool
    assert torch.equal(mask, expected)
    # Paper preset: 10 s and 5 s clips.
    paper = PatchGrid()
    assert paper.valid_tokens(torch.tensor([257, 129])).tolist() == [128, 64]


def test_coordinates():
    grid = PatchGrid(n_mels=128, patch_freq=16, patch_time=16)
    coords = grid.coordinates(20)
    assert coords.shape == (20, 2)
    assert coords.dtype == torch.long
    for n in range(20):
        assert coords[n].tolist() == [n % 8, n // 8]
    # Coordinates of a shorter sequence are a prefix of the longer one.
    assert torch.equal(grid.coordinates(128)[:20], coords)
