"""The authors' released encoders: conversion, hub ids, safe loading, pretraining.

No network: the authors' weights are random tensors in their naming and shapes,
and the hub is a temporary folder laid out as the Hugging Face cache, read with
``HF_HUB_OFFLINE=1``. The features are checked against a small independent
reference: the authors' computation written plainly (torchaudio front end with
``normalized=True`` and ``AmplitudeToDB``, frequency-major ViT, fused qkv, their
fixed sin-cos table), not our modules.
"""

import functools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

from bestrq2_lobes import BestRQ2Encoder
from bestrq2_lobes.lobe import convert as conv
from bestrq2_lobes.lobe.encoder_dir import EncoderDirError, encoder_config
from bestrq2_lobes.lobe.hub import resolve_source
from bestrq2_lobes.lobe.interface import BestRQ2EncoderInterface
from bestrq2_lobes.model.frontend import LogMel

REPO = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


# ---------------------------------------------------------------- the authors'


def authors_positions(rows, cols, dim):
    """timm's build_sincos2d_pos_embed((rows, cols), dim), written plainly."""
    quarter = dim // 4
    bands = 1.0 / (10000.0 ** (torch.arange(quarter).float() / quarter))
    h, w = torch.meshgrid(
        torch.arange(rows).float(), torch.arange(cols).float(), indexing="ij"
    )
    h, w = h.reshape(-1, 1) * bands, w.reshape(-1, 1) * bands
    return torch.cat([h.sin(), w.sin(), h.cos(), w.cos()], dim=1)[None]


def authors_vit(gen, prefix, dim, depth, hidden, rows, cols):
    """Random tensors of one of their timm-style ViTs (LayerNorms not 1/0)."""

    def rnd(*shape, scale=0.05):
        return scale * torch.randn(*shape, generator=gen)

    state = {f"{prefix}pos_embed": authors_positions(rows, cols, dim)}
    for i in range(depth):
        block = f"{prefix}blocks.{i}."
        for norm in ("norm1", "norm2"):
            state[block + norm + ".weight"] = 1 + rnd(dim, scale=0.1)
            state[block + norm + ".bias"] = rnd(dim)
        state[block + "attn.qkv.weight"] = rnd(3 * dim, dim)
        state[block + "attn.qkv.bias"] = rnd(3 * dim)
        state[block + "attn.proj.weight"] = rnd(dim, dim)
        state[block + "attn.proj.bias"] = rnd(dim)
        state[block + "mlp.fc1.weight"] = rnd(hidden, dim)
        state[block + "mlp.fc1.bias"] = rnd(hidden)
        state[block + "mlp.fc2.weight"] = rnd(dim, hidden)
        state[block + "mlp.fc2.bias"] = rnd(dim)
    state[prefix + "norm.weight"] = 1 + rnd(dim, scale=0.1)
    state[prefix + "norm.bias"] = rnd(dim)
    return state


def authors_state(
    dim=128, depth=2, n_mels=128, codes=64, predictor=True, prefix="", seed=0
):
    """A full state dict in their Lightning module's naming and shapes."""
    gen = torch.Generator().manual_seed(seed)
    rows, cols = n_mels // 16, 16
    state = {
        prefix + "patch_embed.patch_embed.proj.weight": 0.05
        * torch.randn(dim, 1, 16, 16, generator=gen),
        prefix + "patch_embed.patch_embed.proj.bias": 0.05
        * torch.randn(dim, generator=gen),
        **authors_vit(gen, prefix + "encoder.", dim, depth, 4 * dim, rows, cols),
        prefix + "quantizer.P": torch.nn.init.xavier_uniform_(torch.empty(256, 16)),
        prefix + "quantizer.CB": F.normalize(torch.randn(codes, 16, generator=gen)),
        prefix + "mask_token": 0.02 * torch.randn(1, 1, dim, generator=gen),
    }
    if predictor:
        state.update(
            authors_vit(gen, prefix + "predictor.", dim, 1, 4 * dim, rows, cols)
        )
        state[prefix + "predictor_input_proj.weight"] = 0.05 * torch.randn(
            dim, dim, generator=gen
        )
        state[prefix + "predictor_input_proj.bias"] = torch.zeros(dim)
        state[prefix + "rq_proj.weight"] = 0.05 * torch.randn(codes, dim, generator=gen)
        state[prefix + "rq_proj.bias"] = torch.zeros(codes)
    else:
        state[prefix + "output_proj.weight"] = torch.randn(codes, dim, generator=gen)
        state[prefix + "output_proj.bias"] = torch.zeros(codes)
    return state


def authors_logmel(wav, n_mels=128):
    """Their front end: MelSpectrogram(normalized=True) then AmplitudeToDB()."""
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000,
        n_fft=2048,
        win_length=2048,
        hop_length=625,
        n_mels=n_mels,
        f_min=0,
        f_max=8000,
        power=2.0,
        normalized=True,
    )
    return torchaudio.transforms.AmplitudeToDB()(mel(wav))


def reference_frames(state, wav, heads, prefix="", n_mels=128):
    """Their 10 s features, averaged over frequency rows as their X-ARES does."""
    spec = authors_logmel(wav, n_mels)
    spec = spec[..., : spec.shape[-1] // 16 * 16].unsqueeze(1)  # 'truncate'
    weight = state[prefix + "patch_embed.patch_embed.proj.weight"]
    bias = state[prefix + "patch_embed.patch_embed.proj.bias"]
    x = F.conv2d(spec, weight, bias, stride=16)  # (B, D, rows, cols)
    batch, dim, rows, cols = x.shape
    x = x.flatten(2).transpose(1, 2)  # frequency-major tokens
    enc = prefix + "encoder."
    x = x + state[enc + "pos_embed"]
    hd = dim // heads
    i = 0
    while f"{enc}blocks.{i}.norm1.weight" in state:
        p = {k[len(f"{enc}blocks.{i}.") :]: v for k, v in state.items()
             if k.startswith(f"{enc}blocks.{i}.")}  # fmt: skip
        h = F.layer_norm(x, (dim,), p["norm1.weight"], p["norm1.bias"], 1e-5)
        qkv = F.linear(h, p["attn.qkv.weight"], p["attn.qkv.bias"])
        q, k, v = qkv.reshape(batch, -1, 3, heads, hd).permute(2, 0, 3, 1, 4)
        att = ((q @ k.transpose(-2, -1)) / math.sqrt(hd)).softmax(dim=-1) @ v
        att = att.transpose(1, 2).reshape(batch, -1, dim)
        x = x + F.linear(att, p["attn.proj.weight"], p["attn.proj.bias"])
        h = F.layer_norm(x, (dim,), p["norm2.weight"], p["norm2.bias"], 1e-5)
        h = F.gelu(F.linear(h, p["mlp.fc1.weight"], p["mlp.fc1.bias"]))
        x = x + F.linear(h, p["mlp.fc2.weight"], p["mlp.fc2.bias"])
        i += 1
    x = F.layer_norm(x, (dim,), state[enc + "norm.weight"], state[enc + "norm.bias"])
    return x.view(batch, rows, cols, dim).mean(dim=1)


def waves(batch=2, seconds=10.0, seed=1):
    gen = torch.Generator().manual_seed(seed)
    wav = torch.randn(batch, int(16000 * seconds), generator=gen)
    wav[-1] *= 0.01
    wav[-1, :16000] = 0.0  # a silent second: the floor
    return wav


@pytest.fixture(scope="module")
def authors_file(tmp_path_factory):
    """Their state dict as the .safetensors their callback writes."""
    folder = tmp_path_factory.mktemp("authors")
    state = authors_state()
    save_file(state, str(folder / "last.safetensors"))
    return folder / "last.safetensors", state


@pytest.fixture(scope="module")
def converted(authors_file, tmp_path_factory):
    src, _ = authors_file
    out = tmp_path_factory.mktemp("converted") / "enc"
    assert conv.main([str(src), str(out), "--pretraining"]) == 0
    return out


# ---------------------------------------------------------------- front end


def test_frontend_option_is_torchaudio_normalized_plus_amplitude_to_db():
    wav = waves(seconds=3.0)
    ours = LogMel(normalized=True)(wav)
    theirs = authors_logmel(wav)
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=0)
    # per-clip padding in a batch keeps it (the longest clip is the same)
    padded = LogMel(normalized=True)(wav, torch.tensor([48000, 48000]))
    assert torch.allclose(padded, theirs, atol=1e-4, rtol=0)
    shift = LogMel()(wav[:1, 16000:]) - LogMel(normalized=True)(wav[:1, 16000:])
    assert abs(float(shift.median()) - 10 * math.log10(768)) < 1e-3


def test_paper_preset_is_the_authors_frontend_and_old_configs_keep_theirs(tmp_path):
    assert encoder_config("paper")["frontend"]["normalized"] is True
    cfg = encoder_config(embed_dim=32, depth=1, num_heads=4, n_mels=32)
    del cfg["frontend"]["normalized"]  # a config.json written before the option
    assert BestRQ2Encoder(config=cfg).frontend.config["normalized"] is False


# ---------------------------------------------------------------- conversion


def test_converted_encoder_gives_the_reference_features(authors_file, converted):
    _, state = authors_file
    config = json.loads((converted / "config.json").read_text())
    assert config["frontend"]["normalized"] is True
    assert config["encoder"]["num_heads"] == 2  # no config.json: head width 64
    assert (converted / "encoder.safetensors").is_file()
    assert not (converted / "encoder.ckpt").exists()
    lobe = BestRQ2Encoder(str(converted))
    wav = waves()
    with torch.no_grad():
        ref = reference_frames(state, wav, heads=2)
        ours = lobe(wav)
    assert ours.shape == ref.shape == (2, 16, 128)
    assert float((ours - ref).abs().max()) < 1e-4


def test_interface_and_xares_adapter_load_the_converted_dir(converted, monkeypatch):
    model = BestRQ2EncoderInterface.from_hparams(source=str(converted))
    lobe = BestRQ2Encoder(str(converted))
    wav = waves(seconds=2.0)
    with torch.no_grad():
        assert torch.allclose(model.encode_batch(wav), lobe(wav), atol=1e-6)
    from bestrq2_lobes.adapters.xares_encoder import ENV_VAR, BestRQ2XaresEncoder

    monkeypatch.setenv(ENV_VAR, str(converted))
    assert BestRQ2XaresEncoder()(wav).shape == (2, 3, 128)


def test_prefixed_hub_folder_with_config_converts(tmp_path):
    """A hub folder: config.json with the kwargs and another key prefix."""
    folder = tmp_path / "hub"
    folder.mkdir()
    state = authors_state(dim=64, depth=1, n_mels=64, prefix="model.", predictor=False)
    save_file(state, str(folder / "model.safetensors"))
    hub_config = {
        "model_type": "best_rq",
        "encoder_kwargs": {"embed_dim": 64, "depth": 1, "num_heads": 4},
        "patch_embed_kwargs": {"img_size": [64, 256], "patch_size": [16, 16]},
    }
    (folder / "config.json").write_text(json.dumps(hub_config))
    (folder / "modeling_best_rq.py").write_text("raise SystemExit('never run')\n")
    result = conv.convert(folder, tmp_path / "enc")
    assert result["config"]["encoder"]["num_heads"] == 4
    assert result["config"]["frontend"]["n_mels"] == 64
    lobe = BestRQ2Encoder(str(tmp_path / "enc"))
    wav = waves()
    with torch.no_grad():
        ref = reference_frames(state, wav, heads=4, prefix="model.", n_mels=64)
        assert float((lobe(wav) - ref).abs().max()) < 1e-4
    hub_config["encoder_kwargs"]["depth"] = 3
    (folder / "config.json").write_text(json.dumps(hub_config))
    with pytest.raises(EncoderDirError, match="encoder_kwargs.depth = 3 but"):
        conv.convert(folder, tmp_path / "enc2")
    hub_config["encoder_kwargs"].update(depth=1, num_heads=10**9)
    (folder / "config.json").write_text(json.dumps(hub_config))
    with pytest.raises(EncoderDirError, match="num_heads is 1000000000"):
        conv.convert(folder, tmp_path / "enc2")
    hub_config["encoder_kwargs"]["num_heads"] = 4
    hub_config["patch_embed_kwargs"]["img_size"] = [2**30, 256]  # absurd mels
    (folder / "config.json").write_text(json.dumps(hub_config))
    with pytest.raises(EncoderDirError, match="not a multiple of 67108864 rows"):
        conv.convert(folder, tmp_path / "enc2")


def test_one_stage_pretraining_state_loads(tmp_path):
    from bestrq2_lobes.model.encoder import ViTEncoder
    from bestrq2_lobes.model.masking import MaskSampler
    from bestrq2_lobes.model.pretraining import OneStageBestRQ, OneStageHead
    from bestrq2_lobes.model.quantizer import RandomProjectionQuantizer

    state = authors_state(dim=64, depth=1, predictor=False)
    save_file(state, str(tmp_path / "onestage.safetensors"))
    out = conv.convert(tmp_path / "onestage.safetensors", tmp_path / "enc", True)
    cfg = json.loads(Path(out["pretraining_dir"], "config.json").read_text())
    assert cfg["model"] == "OneStageBestRQ"
    model = OneStageBestRQ(
        LogMel(**cfg["frontend"]),
        ViTEncoder(**cfg["encoder"]),
        OneStageHead(**cfg["head"]),
        RandomProjectionQuantizer(**cfg["quantizer"]),
        MaskSampler((0.5, 0.5)),
    )
    assert conv.init_pretraining(model, tmp_path / "enc") == len(state) - 1
    assert torch.equal(model.head.mask_token, state["mask_token"])
    assert torch.equal(model.head.heads.heads[0].weight, state["output_proj.weight"])


def test_lightning_ckpt_plain_loads_and_pickled_code_is_refused(tmp_path):
    state = authors_state(dim=64, depth=1)
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": state, "epoch": 3}, plain)
    assert conv.main([str(plain), str(tmp_path / "enc")]) == 0
    marker = tmp_path / "ran"
    hostile = tmp_path / "last.ckpt"
    torch.save(
        {
            "state_dict": state,
            "hyper_parameters": {"optimizer": functools.partial(torch.optim.AdamW)},
            "x": _RunsCode(str(marker)),
        },
        hostile,
    )
    with pytest.raises(EncoderDirError) as err:
        conv.convert(hostile, tmp_path / "enc2")
    message = str(err.value)
    assert "\n" not in message and "refused" in message and ".safetensors" in message
    assert not marker.exists()


class _RunsCode:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_other_quantizer_converts_the_encoder_only(tmp_path, capsys):
    state = authors_state(dim=64, depth=1)
    del state["quantizer.P"], state["quantizer.CB"]
    state["quantizer.projection"] = torch.randn(256, 16)
    state["quantizer.centroids"] = torch.randn(64, 16)
    src = tmp_path / "fitted.safetensors"
    save_file(state, str(src))
    assert conv.main([str(src), str(tmp_path / "enc"), "--pretraining"]) == 2
    err = capsys.readouterr().err
    assert "pretraining state not written" in err and "not the random" in err
    assert (tmp_path / "enc" / "encoder.safetensors").is_file()
    assert not (tmp_path / "enc" / "pretraining").exists()
    BestRQ2Encoder(str(tmp_path / "enc"))


def test_learned_positions_and_bad_sizes_stop_in_one_line(tmp_path, converted):
    state = authors_state(dim=64, depth=1)
    state["encoder.pos_embed"] = torch.randn_like(state["encoder.pos_embed"])
    src = tmp_path / "learned.safetensors"
    save_file(state, str(src))
    with pytest.raises(EncoderDirError, match="not the fixed 2-D sin-cos"):
        conv.convert(src, tmp_path / "enc")
    # a converted directory whose config disagrees with its weights
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("encoder.safetensors", "hyperparams.yaml"):
        (bad / name).write_bytes((converted / name).read_bytes())
    config = json.loads((converted / "config.json").read_text())
    config["encoder"]["embed_dim"] = 256
    config["encoder"]["num_heads"] = 4
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(EncoderDirError) as err:
        BestRQ2Encoder(str(bad))
    assert "\n" not in str(err.value) and "shape" in str(err.value)
    config["encoder"]["depth"] = 10**6  # absurd: refused before any allocation
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(EncoderDirError, match="depth"):
        BestRQ2Encoder(str(bad))


def test_legacy_ckpt_directory_still_loads(tmp_path, converted):
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    config = json.loads((converted / "config.json").read_text())
    del config["frontend"]["normalized"]  # as written before the option
    (legacy / "config.json").write_text(json.dumps(config))
    torch.save(
        load_file(str(converted / "encoder.safetensors")), legacy / "encoder.ckpt"
    )
    lobe = BestRQ2Encoder(str(legacy))
    assert lobe.frontend.config["normalized"] is False
    new = BestRQ2Encoder(str(converted))
    assert torch.equal(
        lobe.encoder.patch_embed.proj.weight, new.encoder.patch_embed.proj.weight
    )


# ---------------------------------------------------------------- hub ids


def lay_out_hub_cache(cache, repo_id, files):
    """A Hugging Face cache: blobs, a snapshot of symlinks, refs/main."""
    root = cache / ("models--" + repo_id.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    snap = root / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (root / "blobs").mkdir()
    for i, (name, data) in enumerate(files.items()):
        blob = root / "blobs" / f"{i:064x}"
        blob.write_bytes(data)
        (snap / name).symlink_to(os.path.relpath(blob, snap))
    return snap


def test_hub_id_loads_offline_from_the_cache(authors_file, tmp_path, monkeypatch):
    src, state = authors_file
    hub = tmp_path / "hf"
    config = {"encoder_kwargs": {"embed_dim": 128, "depth": 2, "num_heads": 2}}
    lay_out_hub_cache(
        hub,
        "ltuncay/BEST-RQ-2",
        {
            "config.json": json.dumps(config).encode(),
            "model.safetensors": src.read_bytes(),
        },
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("BESTRQ2_CACHE", str(tmp_path / "converted"))
    lobe = BestRQ2Encoder(source="ltuncay/BEST-RQ-2")
    target = tmp_path / "converted" / "ltuncay--BEST-RQ-2" / COMMIT
    assert Path(lobe.source) == target and (target / "encoder.safetensors").is_file()
    wav = waves()
    with torch.no_grad():
        ref = reference_frames(state, wav, heads=2)
        assert float((lobe(wav) - ref).abs().max()) < 1e-4
    stamp = (target / "encoder.safetensors").stat().st_mtime_ns
    again = BestRQ2Encoder(source="ltuncay/BEST-RQ-2", revision=COMMIT)
    assert Path(again.source) == target
    assert (target / "encoder.safetensors").stat().st_mtime_ns == stamp  # cached
    model = BestRQ2EncoderInterface.from_hparams(source="ltuncay/BEST-RQ-2")
    with torch.no_grad():
        assert torch.allclose(model.encode_batch(wav[:, :32000]), lobe(wav[:, :32000]))


def test_hub_id_offline_without_cache_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("BESTRQ2_CACHE", str(tmp_path / "converted"))
    with pytest.raises(EncoderDirError) as err:
        BestRQ2Encoder(source="ltuncay/BEST-RQ-2.2-base")
    message = str(err.value)
    assert "\n" not in message
    assert "ltuncay/BEST-RQ-2.2-base" in message and str(tmp_path / "empty") in message
    assert resolve_source(str(tmp_path)) == str(tmp_path)  # a path stays a path


# ---------------------------------------------------------------- pretraining


def test_pretraining_state_reproduces_targets_and_logits(authors_file, converted):
    """The converted model predicts the authors' logits for the authors' codes."""
    from bestrq2_lobes.model.encoder import ViTEncoder, encode_visible
    from bestrq2_lobes.model.masking import MaskSampler
    from bestrq2_lobes.model.predictor import Predictor
    from bestrq2_lobes.model.pretraining import BestRQ2
    from bestrq2_lobes.model.quantizer import RandomProjectionQuantizer

    _, state = authors_file
    cfg = json.loads((converted / "pretraining" / "config.json").read_text())
    model = BestRQ2(
        LogMel(**cfg["frontend"]),
        ViTEncoder(**cfg["encoder"]),
        Predictor(**cfg["predictor"]),
        RandomProjectionQuantizer(**cfg["quantizer"]),
        MaskSampler((0.5, 0.5)),
    ).eval()
    assert conv.init_pretraining(model, converted) > 0
    wav = waves(batch=1)
    spec = authors_logmel(wav)[..., :256].unsqueeze(1)
    raw = F.unfold(spec, kernel_size=16, stride=16).transpose(1, 2)  # freq-major
    proj = F.normalize(raw @ state["quantizer.P"], dim=-1)
    their_codes = F.linear(proj, state["quantizer.CB"]).argmax(dim=-1)
    fm = torch.arange(128)
    tm = (fm % 16) * 8 + fm // 16  # their token n is our token tm[n]
    patches = model.encoder.grid.patchify(model.frontend(wav))
    assert torch.equal(model.quantizer(patches)[0, tm, 0], their_codes[0])
    masked = torch.arange(0, 128, 3)
    visible = torch.tensor([n for n in range(128) if n % 3])
    with torch.no_grad():
        ctx = encode_visible(model.encoder, patches, tm[visible][None], None)
        logits = model.predictor(ctx, None, tm[masked][None], None, 128)[0]
    assert logits.shape == (1, len(masked), 64) and torch.isfinite(logits).all()


@pytest.fixture
def audio_folder(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, seconds in enumerate([1.5, 2.5, 3.0, 2.0]):
        t = np.arange(int(seconds * 16000)) / 16000
        wav = 0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t)
        wav = wav + 0.05 * rng.standard_normal(t.shape)
        sf.write(folder / f"clip{i}.flac", wav.astype(np.float32), 16000)
    return folder


def test_pretraining_init_continues_with_the_authors_targets(
    tmp_path, audio_folder, pretrain_args
):
    """--pretraining, then the recipe's --init_from for a few --debug steps."""
    folder = tmp_path / "hub"
    folder.mkdir()
    state = authors_state(dim=32, depth=1, n_mels=32, codes=64)
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(
        json.dumps(
            {
                "encoder_kwargs": {"embed_dim": 32, "depth": 1, "num_heads": 4},
                "patch_embed_kwargs": {"img_size": [32, 256], "patch_size": 16},
            }
        )
    )
    enc = tmp_path / "enc"
    assert conv.main([str(folder), str(enc), "--pretraining"]) == 0
    out = tmp_path / "out"
    args = pretrain_args(audio_folder, out, "--debug", "--crop_seconds=2.0")
    cmd = [sys.executable, *args, "--batch_size=2", "--init_from", str(enc)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Pretraining finished" in proc.stdout
    loaded = [ln for ln in proc.stdout.splitlines() if "tensors loaded" in ln]
    assert loaded and loaded[0].endswith(f"{len(state) - 2} tensors loaded")
    # a front end other than the init's stops in one line, before any write
    bad = pretrain_args(audio_folder, tmp_path / "out2", "--normalized_stft=False")
    proc = subprocess.run(
        [sys.executable, *bad, "--debug", "--init_from", str(enc)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0
    assert "front end normalized" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out2").exists()
