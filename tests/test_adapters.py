"""X-ARES and XARES-LLM adapters of an exported encoder."""

import importlib

import pytest
import torch

from bestrq2_lobes.lobe.encoder_dir import write_encoder_dir
from bestrq2_lobes.model.encoder import ViTEncoder
from bestrq2_lobes.model.frontend import LogMel

SR = 16000
MODULES = [
    "bestrq2_lobes.adapters.xares_encoder",
    "bestrq2_lobes.adapters.xares_llm_encoder",
]


@pytest.fixture
def encoder_dir(tmp_path, monkeypatch):
    torch.manual_seed(0)
    encoder = ViTEncoder(n_mels=32, embed_dim=32, depth=1, num_heads=4)
    path = write_encoder_dir(tmp_path / "enc", LogMel(n_mels=32), encoder, 10.0)
    monkeypatch.setenv("BESTRQ2_ENCODER_DIR", str(path))
    return path


@pytest.mark.parametrize("name", MODULES)
def test_module_defines_exactly_one_encoder_name(name):
    module = importlib.import_module(name)
    names = [n for n in vars(module) if n.endswith("Encoder")]
    assert len(names) == 1, names


def test_xares_checker_accepts_the_encoder(encoder_dir):
    checker = pytest.importorskip("xares.audio_encoder_checker")
    from bestrq2_lobes.adapters.xares_encoder import BestRQ2XaresEncoder

    encoder = BestRQ2XaresEncoder()
    assert encoder.sampling_rate == 16000 and encoder.hop_size_in_ms == 625.0
    assert checker.check_audio_encoder(encoder) is True


def test_xares_encoder_frames_follow_the_hop(encoder_dir):
    from bestrq2_lobes.adapters.xares_encoder import BestRQ2XaresEncoder

    encoder = BestRQ2XaresEncoder()
    out = encoder(torch.randn(2, 25 * SR))  # longer than one 10 s chunk
    assert out.shape == (2, 40, 32)  # 25 s / 625 ms
    assert not out.requires_grad


def test_xares_llm_masks_padding_frames(encoder_dir):
    from bestrq2_lobes.adapters.xares_llm_encoder import BestRQ2XaresLLMEncoder

    encoder = BestRQ2XaresLLMEncoder()
    torch.manual_seed(1)
    audio = torch.randn(2, 5 * SR)
    mask = torch.ones(2, 5 * SR, dtype=torch.long)
    mask[1, 2 * SR :] = 0
    audio[1, 2 * SR :] = 0
    feats, feat_mask = encoder(audio, mask)
    assert feat_mask.sum(dim=1).tolist() == [8, 3]
    assert feats[1, 3:].abs().sum() == 0
    alone, alone_mask = encoder(audio[1:, : 2 * SR])
    torch.testing.assert_close(feats[1, :3], alone[0], atol=1e-4, rtol=1e-4)
    assert alone_mask.sum().item() == 3
