"""The lobe's frame read-out: a patch column's rows averaged, or side by side."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bestrq2_lobes import BestRQ2Encoder
from bestrq2_lobes.lobe.encoder_dir import (
    EncoderDirError,
    encoder_config,
    read_config,
    write_encoder_dir,
)
from bestrq2_lobes.model.encoder import ViTEncoder
from bestrq2_lobes.model.frontend import LogMel

SR = 16000


def tiny_config(**extra):
    return encoder_config(embed_dim=32, depth=2, num_heads=4, n_mels=64, **extra)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    rows=st.integers(1, 5),
    columns=st.integers(1, 4),
    dim=st.integers(1, 6),
)
def test_pool_frames_against_loops(batch, rows, columns, dim):
    encoder = ViTEncoder(n_mels=16 * rows, embed_dim=8, depth=1, num_heads=1)
    assert encoder.grid.freq_rows == rows
    tokens = torch.randn(batch, rows * columns, dim)
    mean = encoder.pool_frames(tokens)
    concat = encoder.pool_frames(tokens, "concat")
    assert concat.shape == (batch, columns, rows * dim)
    for b in range(batch):
        for c in range(columns):
            column = [tokens[b, c * rows + r] for r in range(rows)]  # time-major
            torch.testing.assert_close(concat[b, c], torch.cat(column))
            torch.testing.assert_close(mean[b, c], torch.stack(column).mean(0))


def test_pool_frames_refuses_an_unknown_readout():
    encoder = ViTEncoder(n_mels=32, embed_dim=8, depth=1, num_heads=1)
    with pytest.raises(ValueError, match="readout must be one of"):
        encoder.pool_frames(torch.randn(1, 4, 8), "max")


def test_concat_lobe_is_the_mean_lobe_before_averaging():
    """Same weights: averaging the concat frame's row blocks gives the mean frame."""
    torch.manual_seed(0)
    mean_lobe = BestRQ2Encoder(None, config=tiny_config(), output_all_hiddens=True)
    wide = BestRQ2Encoder(
        None, config=tiny_config(), output_all_hiddens=True, frame_readout="concat"
    )
    wide.encoder.load_state_dict(mean_lobe.encoder.state_dict())
    rows, dim = wide.encoder.grid.freq_rows, mean_lobe.output_dim
    assert rows == 4 and wide.output_dim == rows * dim
    wav = torch.randn(2, 3 * SR)
    lens = torch.tensor([1.0, 0.4])
    every_row = wide(wav, lens)
    averaged = every_row.reshape(*every_row.shape[:-1], rows, dim).mean(-2)
    torch.testing.assert_close(averaged, mean_lobe(wav, lens), atol=1e-5, rtol=1e-5)


def test_concat_frames_are_padding_invariant_and_zero_after_the_end():
    torch.manual_seed(1)
    lobe = BestRQ2Encoder(None, config=tiny_config(frame_readout="concat"))
    assert lobe.frame_readout == "concat" and lobe.output_dim == 128
    short, long = torch.randn(1, 2 * SR), torch.randn(1, 5 * SR)
    alone = lobe(short)
    batch = torch.zeros(2, 5 * SR)
    batch[0, : 2 * SR], batch[1] = short[0], long[0]
    together = lobe(batch, torch.tensor([0.4, 1.0]))
    frames = alone.shape[1]
    torch.testing.assert_close(together[0, :frames], alone[0], atol=1e-4, rtol=1e-4)
    assert together[0, frames:].abs().sum() == 0
    assert lobe(torch.randn(1, 100)).shape == (1, 1, 128)  # shorter than a frame


def test_encoder_directory_carries_its_readout_and_the_argument_overrides(tmp_path):
    frontend = LogMel(n_mels=64)
    encoder = ViTEncoder(n_mels=64, embed_dim=32, depth=1, num_heads=4)
    path = write_encoder_dir(tmp_path / "enc", frontend, encoder, 10.0, None, "concat")
    assert read_config(path)["frame_readout"] == "concat"
    assert BestRQ2Encoder(path).output_dim == 4 * 32
    assert BestRQ2Encoder(path, frame_readout="mean").output_dim == 32
    # an older directory has no key: the X-ARES mean
    config_path = tmp_path / "enc" / "config.json"
    config = json.loads(config_path.read_text())
    del config["frame_readout"]
    config_path.write_text(json.dumps(config))
    lobe = BestRQ2Encoder(path)
    assert lobe.frame_readout == "mean" and lobe.output_dim == 32
    assert lobe.config["frame_readout"] == "mean"  # what caches hash


def test_bad_readouts_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match=r"frame_readout must be one of \['mean'"):
        BestRQ2Encoder(None, config=tiny_config(), frame_readout="rows")
    frontend = LogMel(n_mels=64)
    encoder = ViTEncoder(n_mels=64, embed_dim=32, depth=1, num_heads=4)
    path = write_encoder_dir(tmp_path / "enc", frontend, encoder, 10.0, None, "max")
    with pytest.raises(EncoderDirError, match="config.json: frame_readout must be"):
        BestRQ2Encoder(path)
