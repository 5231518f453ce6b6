"""Frozen SSL lobe, encoder export, strict and safe loading, pretrained interface."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from bestrq2_lobes import BestRQ2Encoder, WeightedLayerSum
from bestrq2_lobes.lobe.encoder_dir import (
    PRETRAIN_CONFIG,
    EncoderDirError,
    encoder_config,
    load_encoder_dir,
    make_config,
    write_config,
    write_encoder_dir,
)
from bestrq2_lobes.lobe.export import export, find_checkpoint
from bestrq2_lobes.lobe.interface import BestRQ2EncoderInterface
from bestrq2_lobes.model.encoder import ViTEncoder
from bestrq2_lobes.model.frontend import LogMel

SR = 16000
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_modules(seed=0):
    torch.manual_seed(seed)
    frontend = LogMel(n_mels=32)
    encoder = ViTEncoder(n_mels=32, embed_dim=32, depth=2, num_heads=4)
    return frontend, encoder


def fake_pretraining_output(root: Path, encoder, frontend, step=7):
    """The layout the pretraining recipe writes: save/encoder_config.json, CKPTs."""
    save = root / "save"
    write_config(save / PRETRAIN_CONFIG, make_config(frontend, encoder, 10.0))
    for i, unixtime in enumerate([100.0, 200.0]):
        ckpt = save / f"CKPT+{i}"
        ckpt.mkdir(parents=True)
        scale = 1.0 if i == 1 else 0.0  # only the latest holds the real weights
        state = {k: v * scale for k, v in encoder.state_dict().items()}
        torch.save(state, ckpt / "encoder.ckpt")
        meta = {"unixtime": unixtime, "end-of-epoch": True, "step": step + i}
        (ckpt / "CKPT.yaml").write_text(yaml.safe_dump(meta))
    return root


def test_export_round_trip_same_outputs(tmp_path):
    frontend, encoder = tiny_modules()
    src = fake_pretraining_output(tmp_path / "run", encoder, frontend)
    assert find_checkpoint(src).name == "CKPT+1"
    out = export(src, tmp_path / "enc")
    for name in ("config.json", "encoder.safetensors", "hyperparams.yaml", "README.md"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["info"]["steps"] == 8 and config["hop_ms"] == 625.0
    assert "steps" in (out / "README.md").read_text()

    lobe = BestRQ2Encoder(out, freeze=True)
    wav = torch.randn(2, 3 * SR)
    lens = torch.tensor([1.0, 0.7])
    encoder.eval()
    feats = frontend(wav, (lens * wav.shape[1]).round().long())
    ref, valid = encoder(feats, frontend.num_frames((lens * wav.shape[1]).long()))
    ref = encoder.pool_frames(ref) * encoder.pool_frames(valid[..., None].float())
    torch.testing.assert_close(lobe(wav, lens), ref, atol=1e-5, rtol=1e-5)


def test_export_sets_the_readout_without_touching_the_weights(tmp_path):
    frontend = LogMel(n_mels=64)
    encoder = ViTEncoder(n_mels=64, embed_dim=32, depth=1, num_heads=4)
    run = fake_pretraining_output(tmp_path / "run", encoder, frontend)
    plain = BestRQ2Encoder(export(run, tmp_path / "mean"))
    wide_dir = export(run, tmp_path / "concat", frame_readout="concat")
    wide = BestRQ2Encoder(wide_dir)
    assert (plain.frame_readout, wide.frame_readout) == ("mean", "concat")
    assert (
        "| frame read-out | concat (128 features per frame) |"
        in (wide_dir / "README.md").read_text()
    )
    for key, value in plain.encoder.state_dict().items():
        assert torch.equal(value, wide.encoder.state_dict()[key]), key
    with pytest.raises(EncoderDirError, match="--frame_readout: frame_readout must"):
        export(run, tmp_path / "bad", frame_readout="max")


def test_export_cli_one_line_error(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bestrq2_lobes.lobe.export",
            str(tmp_path),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert "no checkpoint with encoder.ckpt" in proc.stderr


def test_frozen_lobe_has_no_trainable_params_and_stays_eval(tmp_path):
    cfg = encoder_config(embed_dim=32, depth=2, num_heads=4, n_mels=32)
    lobe = BestRQ2Encoder(None, freeze=True, config=cfg)
    assert sum(p.numel() for p in lobe.parameters() if p.requires_grad) == 0
    lobe.train()
    assert not lobe.training and not lobe.encoder.training
    out = lobe(torch.randn(1, SR, requires_grad=True))
    assert out.grad_fn is None and not out.requires_grad


def test_unfrozen_lobe_fine_tunes():
    cfg = encoder_config(embed_dim=32, depth=1, num_heads=4, n_mels=32)
    lobe = BestRQ2Encoder(None, freeze=False, config=cfg)
    lobe.train()
    assert lobe.training
    lobe(torch.randn(2, SR)).pow(2).mean().backward()
    grads = [p.grad for p in lobe.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda d: (d / "config.json").unlink(), "missing config file"),
        (lambda d: (d / "encoder.safetensors").unlink(), "missing weights file"),
        (lambda d: (d / "config.json").write_text("format: x\n"), "not plain JSON"),
        (
            lambda d: (d / "encoder.safetensors").write_bytes(b"\x00" * 10),
            "encoder.safetensors",
        ),
    ],
)
def test_broken_encoder_dir_fails_loudly(tmp_path, break_it, message):
    frontend, encoder = tiny_modules()
    path = Path(write_encoder_dir(tmp_path / "enc", frontend, encoder, 10.0))
    break_it(path)
    with pytest.raises(EncoderDirError, match=message) as err:
        BestRQ2Encoder(path)
    assert "\n" not in str(err.value)


def test_wrong_shapes_or_keys_fail_strictly(tmp_path):
    frontend, encoder = tiny_modules()
    path = Path(write_encoder_dir(tmp_path / "enc", frontend, encoder, 10.0))
    config = json.loads((path / "config.json").read_text())
    config["encoder"]["depth"] = 3
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(EncoderDirError, match="missing keys"):
        BestRQ2Encoder(path)
    config["encoder"]["depth"] = 2
    config["encoder"]["embed_dim"] = 64
    config["encoder"]["num_heads"] = 4
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(EncoderDirError, match="has shape"):
        BestRQ2Encoder(path)


class _RunsCode:
    """Unpickling this would call os.system: it must never happen."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused_and_does_not_run(tmp_path):
    frontend, encoder = tiny_modules()
    path = Path(write_encoder_dir(tmp_path / "enc", frontend, encoder, 10.0))
    marker = tmp_path / "pwned"
    (path / "encoder.safetensors").unlink()  # a directory of the older format
    torch.save({"x": _RunsCode(marker)}, path / "encoder.ckpt")
    with pytest.raises(EncoderDirError, match="refused"):
        load_encoder_dir(path)
    assert not marker.exists()


def test_yaml_with_tags_is_not_a_config(tmp_path):
    frontend, encoder = tiny_modules()
    path = Path(write_encoder_dir(tmp_path / "enc", frontend, encoder, 10.0))
    (path / "config.json").write_text("encoder: !new:os.system ['touch x']\n")
    with pytest.raises(EncoderDirError, match="not plain JSON"):
        BestRQ2Encoder(path)


def test_padding_invariance_and_output_lengths():
    cfg = encoder_config(embed_dim=32, depth=2, num_heads=4, n_mels=32)
    lobe = BestRQ2Encoder(None, config=cfg)
    torch.manual_seed(1)
    short, long = torch.randn(1, 4 * SR), torch.randn(1, 7 * SR)
    alone = lobe(short)
    batch = torch.zeros(2, 7 * SR)
    batch[0, : 4 * SR], batch[1] = short[0], long[0]
    lens = torch.tensor([4 / 7, 1.0])
    together = lobe(batch, lens)
    frames = alone.shape[1]
    torch.testing.assert_close(together[0, :frames], alone[0], atol=1e-4, rtol=1e-4)
    assert together[0, frames:].abs().sum() == 0
    rel = lobe.output_lengths(lens, batch.shape[1])
    assert torch.equal((rel * together.shape[1]).round().long(), torch.tensor([6, 11]))


def test_long_audio_is_chunked_by_crop_length():
    cfg = encoder_config(embed_dim=32, depth=1, num_heads=4, n_mels=32)
    cfg["crop_seconds"] = 2.0
    lobe = BestRQ2Encoder(None, config=cfg, chunk_batch=2)
    chunk = lobe.chunk_samples
    assert chunk % lobe.samples_per_frame == 0
    torch.manual_seed(2)
    wav = torch.randn(1, 5 * chunk + 3000)
    out = lobe(wav)
    per_chunk = chunk // lobe.samples_per_frame
    assert out.shape[1] == int(lobe.num_output_frames(torch.tensor([wav.shape[1]])))
    # every chunk equals that chunk encoded alone (attention stays in a chunk)
    for k in range(5):
        piece = lobe(wav[:, k * chunk : (k + 1) * chunk])
        got = out[:, k * per_chunk : (k + 1) * per_chunk]
        torch.testing.assert_close(got, piece, atol=1e-4, rtol=1e-4)
    # a clip up to one chunk long is encoded in one piece
    assert lobe(wav[:, :chunk]).shape[1] == per_chunk


def test_all_hiddens_and_weighted_layer_sum():
    cfg = encoder_config(embed_dim=32, depth=2, num_heads=4, n_mels=32)
    lobe = BestRQ2Encoder(None, output_all_hiddens=True, config=cfg)
    wav = torch.randn(2, 2 * SR)
    hiddens = lobe(wav)
    assert hiddens.shape == (3, 2, 3, 32)
    last = BestRQ2Encoder(None, config=cfg)
    last.load_state_dict(lobe.state_dict())
    torch.testing.assert_close(hiddens[-1], last(wav), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(hiddens[0], hiddens[-1])
    layer_sum = WeightedLayerSum(lobe.num_layers, layer_norm=True)
    mixed = layer_sum(hiddens)
    assert mixed.shape == (2, 3, 32)
    mixed.sum().backward()
    assert layer_sum.logits.grad is not None
    with pytest.raises(ValueError, match="expected 3 layers"):
        layer_sum(hiddens[:2])


def test_interface_encode_file_resamples_and_downmixes(tmp_path):
    frontend, encoder = tiny_modules()
    src = fake_pretraining_output(tmp_path / "run", encoder, frontend)
    out = export(src, tmp_path / "enc")
    model = BestRQ2EncoderInterface.from_hparams(source=out)
    rate = 44100
    t = np.arange(3 * rate) / rate
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)], 1)
    clip = 0.3 * stereo.astype(np.float32)
    sf.write(tmp_path / "clip.wav", clip, rate, subtype="FLOAT")
    feats = model.encode_file(tmp_path / "clip.wav")
    assert feats.shape == (4, 32)
    mono = torch.from_numpy(clip).mean(dim=1)
    import torchaudio.functional as AF

    ref = model.encode_batch(AF.resample(mono, rate, SR).unsqueeze(0))[0]
    torch.testing.assert_close(feats, ref, atol=1e-4, rtol=1e-4)
    with pytest.raises(EncoderDirError, match="missing hyperparams.yaml"):
        BestRQ2EncoderInterface.from_hparams(source=tmp_path)


def test_recipe_checkpoint_exports_and_loads(tmp_path):
    """A real pretraining run exports, and the lobe reproduces its encoder."""
    rng = np.random.default_rng(0)
    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(4):
        sf.write(audio / f"c{i}.wav", 0.2 * rng.standard_normal(2 * SR), SR)
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        str(REPO / "recipes" / "pretrain" / "train.py"),
        str(REPO / "hparams" / "bestrq_vit_onestage.yaml"),
        f"--data_folder={audio}",
        f"--output_folder={out}",
        "--embed_dim=32",
        "--depth=1",
        "--num_heads=4",
        "--codebook_size=64",
        "--n_mels=32",
        "--batch_size=2",
        "--num_workers=0",
        "--total_steps=2",
        "--device=cpu",
        "--frame_readout=concat",
        "--noprogressbar",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    enc_dir = export(out, tmp_path / "enc")
    config = json.loads((enc_dir / "config.json").read_text())
    assert config["info"]["model"] == "OneStageBestRQ"
    assert config["frame_readout"] == "concat"  # --frame_readout of the run
    lobe = BestRQ2Encoder(enc_dir)
    assert lobe.output_dim == 32 * 2  # 32 mels: two rows of 16
    state = torch.load(find_checkpoint(out) / "encoder.ckpt", weights_only=True)
    for key, value in lobe.encoder.state_dict().items():
        assert torch.equal(value, state[key]), key
