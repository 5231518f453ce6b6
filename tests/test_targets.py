"""Tests for the target normalisation (bestrq2_lobes.model.targets), its global
statistics (bestrq2_lobes.training.target_stats), the codebook health in the
logs (bestrq2_lobes.training.code_usage) and ``plots codebook``.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from bestrq2_lobes.model.frontend import LogMel
from bestrq2_lobes.model.patches import PatchGrid
from bestrq2_lobes.model.targets import (
    TARGET_NORMS,
    TargetNormalization,
    estimate_band_statistics,
)
from bestrq2_lobes.model.tokens import gather_tokens
from bestrq2_lobes.training.code_usage import CodeUsage, code_perplexity
from bestrq2_lobes.training.target_stats import first_clips

SR = 16000
MELS, PF, PT = 32, 16, 4
EPS = 1e-5
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _feats(batch=3, frames=40, seed=0):
    """dB-like log-mels with a level and a slope per band, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    level = -60 + 30 * torch.rand(batch, 1, 1, generator=gen)
    slope = torch.linspace(0, -25, MELS).view(1, MELS, 1)
    return level + slope + 8 * torch.randn(batch, MELS, frames, generator=gen)


def _reference_band_norm(feats, frames, mean=None, std=None):
    """Hand loop: each clip, each band, over its first ``frames[b]`` frames."""
    out = torch.zeros_like(feats)
    for b in range(feats.shape[0]):
        n = int(frames[b])
        for m in range(MELS):
            row = feats[b, m, :n].double()
            if mean is None:
                mu, sd = row.mean(), (row.var(unbiased=False) + EPS).sqrt()
            else:
                mu, sd = mean[m].double(), std[m].double()
            out[b, m] = ((feats[b, m].double() - mu) / sd).float()
    return out


# ------------------------------------------------------------------ each mode


def test_none_is_the_raw_patches():
    grid = PatchGrid(MELS, PF, PT)
    patches = grid.patchify(_feats())
    norm = TargetNormalization("none", MELS, PF, PT)
    assert torch.equal(norm(patches), patches)
    assert norm.state_dict() == {}


def test_patch_mode_against_a_loop():
    grid = PatchGrid(MELS, PF, PT)
    patches = grid.patchify(_feats())
    out = TargetNormalization("patch", MELS, PF, PT)(patches)
    for b in range(patches.shape[0]):
        for n in range(patches.shape[1]):
            x = patches[b, n].double()
            ref = (x - x.mean()) / (x.var(unbiased=False) + EPS).sqrt()
            torch.testing.assert_close(out[b, n], ref.float(), atol=1e-5, rtol=1e-5)


def test_utterance_mode_against_a_loop_over_clips_and_bands():
    grid = PatchGrid(MELS, PF, PT)
    feats = _feats(batch=3, frames=40)
    frames = torch.tensor([40, 24, 8])  # whole columns: 10, 6 and 2
    valid_tokens = grid.valid_tokens(frames)
    out = TargetNormalization("utterance", MELS, PF, PT)(
        grid.patchify(feats), valid_tokens
    )
    expected = grid.patchify(_reference_band_norm(feats, frames))
    for b in range(3):
        n = int(valid_tokens[b])
        torch.testing.assert_close(out[b, :n], expected[b, :n], atol=1e-5, rtol=1e-5)
    # each band of each clip: mean 0, std ~1 over its valid frames
    assert out[1, : int(valid_tokens[1])].mean().abs() < 1e-5


def test_utterance_ignores_the_padding_and_what_is_in_it():
    """A clip's normalised patches: the same alone and padded (NaN in the padding)."""
    grid = PatchGrid(MELS, PF, PT)
    norm = TargetNormalization("utterance", MELS, PF, PT)
    feats = _feats(batch=2, frames=48, seed=3)
    alone = norm(grid.patchify(feats[1:, :, :20]))  # 5 columns
    padded = feats.clone()
    padded[1, :, 20:] = float("nan")
    out = norm(grid.patchify(padded), torch.tensor([24, 10]))
    assert torch.equal(out[1, :10], alone[0])
    assert torch.isfinite(out[0]).all()


def test_utterance_patch_mode_is_utterance_then_each_patch_against_loops():
    grid = PatchGrid(MELS, PF, PT)
    feats = _feats(batch=3, frames=40, seed=5)
    frames = torch.tensor([40, 24, 8])
    valid_tokens = grid.valid_tokens(frames)
    out = TargetNormalization("utterance_patch", MELS, PF, PT)(
        grid.patchify(feats), valid_tokens
    )
    banded = grid.patchify(_reference_band_norm(feats, frames))
    for b in range(3):
        for n in range(int(valid_tokens[b])):
            x = banded[b, n].double()
            ref = (x - x.mean()) / (x.var(unbiased=False) + EPS).sqrt()
            torch.testing.assert_close(out[b, n], ref.float(), atol=1e-4, rtol=1e-4)


def test_utterance_patch_ignores_the_padding():
    grid = PatchGrid(MELS, PF, PT)
    norm = TargetNormalization("utterance_patch", MELS, PF, PT)
    feats = _feats(batch=2, frames=48, seed=4)
    alone = norm(grid.patchify(feats[1:, :, :20]))
    padded = feats.clone()
    padded[1, :, 20:] = float("nan")
    out = norm(grid.patchify(padded), torch.tensor([24, 10]))
    assert torch.equal(out[1, :10], alone[0])


def test_global_mode_against_a_loop():
    grid = PatchGrid(MELS, PF, PT)
    feats = _feats()
    mean = torch.linspace(-80, -30, MELS)
    std = torch.linspace(5, 15, MELS)
    norm = TargetNormalization("global", MELS, PF, PT)
    with pytest.raises(RuntimeError, match="no statistics"):
        norm(grid.patchify(feats))
    norm.set_statistics(mean, std, frames=100)
    out = norm(grid.patchify(feats))
    frames = torch.full((3,), feats.shape[-1])
    expected = grid.patchify(_reference_band_norm(feats, frames, mean, std))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", TARGET_NORMS)
def test_index_gives_the_gathered_rows(mode):
    grid = PatchGrid(MELS, PF, PT)
    patches = grid.patchify(_feats(frames=40))
    valid = torch.tensor([20, 12, 4])
    norm = TargetNormalization(mode, MELS, PF, PT)
    if mode == "global":
        norm.set_statistics(torch.full((MELS,), -50.0), torch.full((MELS,), 9.0))
    index = torch.tensor([[19, 0, 3], [11, 5, 2], [3, 1, 0]])
    full = norm(patches, valid)
    assert torch.equal(norm(patches, valid, index), gather_tokens(full, index))


def test_bad_mode_and_statistics_are_one_line_errors():
    with pytest.raises(ValueError, match="expected one of none, patch"):
        TargetNormalization("layer", MELS, PF, PT)
    norm = TargetNormalization("global", MELS, PF, PT)
    with pytest.raises(ValueError, match="expected"):
        norm.set_statistics(torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="std > 0"):
        norm.set_statistics(torch.zeros(MELS), torch.zeros(MELS))
    with pytest.raises(ValueError, match="no statistics to set"):
        TargetNormalization("patch").set_statistics(torch.zeros(128), torch.ones(128))


def test_global_buffers_round_trip_through_a_state_dict():
    norm = TargetNormalization("global", MELS, PF, PT)
    norm.set_statistics(torch.linspace(-70, -40, MELS), torch.full((MELS,), 7.0), 55)
    fresh = TargetNormalization("global", MELS, PF, PT)
    assert not fresh.estimated
    fresh.load_state_dict(norm.state_dict())
    assert fresh.estimated and int(fresh.frames) == 55
    assert torch.equal(fresh.mean, norm.mean) and torch.equal(fresh.std, norm.std)


# ------------------------------------------------------------ global statistics


def test_band_statistics_against_a_direct_computation():
    frontend, grid = LogMel(n_mels=MELS), PatchGrid(MELS, PF, PT)
    gen = torch.Generator().manual_seed(0)
    wavs = [0.1 * torch.randn(n, generator=gen) for n in (16000, 9000, 24000)]
    mean, std, frames = estimate_band_statistics(wavs, frontend, grid, EPS)
    kept = []
    for wav in wavs:
        feats = frontend(wav[None])[0]
        kept.append(feats[:, : grid.num_columns(feats.shape[1]) * PT].double())
    allf = torch.cat(kept, dim=1)
    assert frames == allf.shape[1]
    torch.testing.assert_close(mean, allf.mean(1).float(), atol=1e-4, rtol=1e-6)
    ref_std = (allf.var(1, unbiased=False) + EPS).sqrt().float()
    torch.testing.assert_close(std, ref_std, atol=1e-4, rtol=1e-5)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Six clips of 1-3 s (one too short to use) and their manifest."""
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    rows = ["ID,duration,wav"]
    for i, seconds in enumerate([1.0, 0.3, 2.5, 1.5, 3.0, 2.0]):
        t = np.arange(int(seconds * SR)) / SR
        wav = np.sin(2 * np.pi * (200 + 150 * i) * t) * (t % 0.3 < 0.15)
        wav = 0.3 * wav + 0.01 * (i + 1) * rng.standard_normal(t.size)
        sf.write(folder / f"c{i}.wav", wav.astype(np.float32), SR)
        rows.append(f"c{i},{seconds},$data_root/c{i}.wav")
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_estimation_is_a_pure_function_of_manifest_and_settings(manifest):
    """The statistics depend on the manifest order and settings only (no RNG)."""
    frontend, grid = LogMel(n_mels=MELS), PatchGrid(MELS, PF, PT)

    def stats(max_clips):
        clips = first_clips(manifest / "train.csv", str(manifest), max_clips, 2.0, SR)
        return estimate_band_statistics(clips, frontend, grid)

    torch.manual_seed(1)
    first = stats(3)
    torch.manual_seed(2)
    again = stats(3)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert first[2] == again[2]
    assert not torch.equal(stats(4)[0], first[0])  # the first N, in manifest order
    lens = [
        len(w)
        for w in first_clips(manifest / "train.csv", str(manifest), 9, 2.0, SR, 0.5)
    ]
    assert lens == [16000, 32000, 24000, 32000, 32000]  # c1 (0.3 s) left out


DDP_SCRIPT = """
import os, sys, types
import torch
import torch.distributed as dist
from bestrq2_lobes.model.frontend import LogMel
from bestrq2_lobes.model.patches import PatchGrid
from bestrq2_lobes.model.targets import TargetNormalization
from bestrq2_lobes.training.target_stats import estimate_global_target_norm

dist.init_process_group("gloo")
rank = dist.get_rank()
manifest, root, out = sys.argv[1:4]
model = types.SimpleNamespace(
    frontend=LogMel(n_mels=32),
    encoder=types.SimpleNamespace(grid=PatchGrid(32, 16, 16)),
    target_norm=TargetNormalization("global", 32),
)
# only the main process reads the data: rank 1 is given a manifest that is not there
frames = estimate_global_target_norm(
    model, manifest if rank == 0 else "/nonexistent.csv", root, 3, 2.0, 16000, 0.6
)
norm = model.target_norm
torch.save(
    {"mean": norm.mean, "std": norm.std, "frames": frames}, f"{out}/rank{rank}.pt"
)
dist.destroy_process_group()
"""


def test_global_statistics_are_the_main_process_s_on_every_gloo_rank(
    manifest, tmp_path, torchrun_cmd
):
    script = tmp_path / "estimate.py"
    script.write_text(DDP_SCRIPT)
    repo = Path(__file__).resolve().parents[1]
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(repo), ENV.get("PYTHONPATH", "")])}
    cmd = [*torchrun_cmd(2), str(script), str(manifest / "train.csv"), str(manifest)]
    proc = subprocess.run(
        [*cmd, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    clips = first_clips(manifest / "train.csv", str(manifest), 3, 2.0, SR, 0.6)
    mean, std, frames = estimate_band_statistics(
        clips, LogMel(n_mels=MELS), PatchGrid(MELS, 16, 16)
    )
    for got in ranks:
        assert torch.equal(got["mean"], mean) and torch.equal(got["std"], std)
        assert got["frames"] == frames


# --------------------------------------------------------------- code usage


def test_code_usage_counts_real_targets_over_the_window():
    usage = CodeUsage(num_codebooks=2, codebook_size=5, window=2)
    targets = torch.tensor([[[0, 4], [1, 4], [2, 3]]])
    usage.update(targets, torch.tensor([[True, True, False]]))
    assert usage.end_interval() == {
        "codes_used_0": 2,
        "dead_codes_0": 3,
        "pooled_perplexity_0": 2.0,  # codes 0 and 1 once each
        "codes_used_1": 1,
        "dead_codes_1": 4,
        "pooled_perplexity_1": 1.0,  # code 4 twice
    }
    usage.update(targets)
    assert usage.end_interval()["codes_used_0"] == 3
    usage.end_interval()  # an empty interval
    assert usage.end_interval() == {
        "codes_used_0": 0,
        "dead_codes_0": 5,
        "pooled_perplexity_0": 1.0,  # no code: perplexity 1 by convention
        "codes_used_1": 0,
        "dead_codes_1": 5,
        "pooled_perplexity_1": 1.0,
    }
    assert code_perplexity(torch.tensor([1, 1, 1, 1])) == pytest.approx(4.0)


# ------------------------------------------------- the recipe: estimate, resume


def _run(cmd, timeout=600):
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _last_ckpt(out):
    return sorted((Path(out) / "save").glob("CKPT+*"))[-1]


def test_recipe_global_statistics_estimated_once_and_kept_on_resume(
    manifest, tmp_path, pretrain_args
):
    """Estimated before step 1 from the first clips; a resume loads, not re-estimates.

    The rerun asks for statistics of other clips (``target_norm_clips``, with
    ``--allow_changed_run``): were they estimated again, the buffer would change.
    """
    out = tmp_path / "run"
    common = [
        f"--train_csv={manifest / 'train.csv'}",
        f"--valid_csv={manifest / 'train.csv'}",
        f"--data_root={manifest}",
        "--target_norm=global",
        "--batch_size=2",
        "--crop_seconds=2.0",
        "--log_interval=1",
        "--ckpt_interval_steps=1",
        "--total_steps=3",
    ]
    args = pretrain_args("unused", out, *common)
    args = [a for a in args if not a.startswith("--data_folder")]
    first = _run(
        [
            sys.executable,
            *args,
            "--target_norm_clips=2",
            "--optimizer_step_limit=1",
        ]
    )
    assert "Pretraining finished: 1 optimiser steps" in first.stdout
    saved = torch.load(_last_ckpt(out) / "target_norm.ckpt", weights_only=True)
    frontend, grid = LogMel(n_mels=MELS, normalized=True), PatchGrid(MELS, 16, 16)
    clips = first_clips(manifest / "train.csv", str(manifest), 2, 2.0, SR, 0.58)
    mean, std, frames = estimate_band_statistics(clips, frontend, grid)
    assert torch.equal(saved["mean"], mean) and torch.equal(saved["std"], std)
    assert int(saved["frames"]) == frames
    log = (out / "log.txt").read_text()
    assert log.count("statistics estimated on") == 1

    # target_norm_clips is in the run fingerprint: the rerun must insist
    second = _run(
        [sys.executable, *args, "--target_norm_clips=5", "--allow_changed_run=True"]
    )
    assert "Pretraining finished: 3 optimiser steps" in second.stdout
    resumed = torch.load(_last_ckpt(out) / "target_norm.ckpt", weights_only=True)
    assert all(torch.equal(resumed[k], saved[k]) for k in saved)
    log = (out / "log.txt").read_text()
    assert log.count("statistics estimated on") == 1
    assert "statistics restored from the checkpoint" in log

    # codebook health next to the perplexity, every log line
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["stage"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3]
    valid = [r for r in records if r["stage"] == "valid"]
    assert valid
    for record in train + valid:
        assert 1 <= record["codes_used_0"] <= 64
        assert record["codes_used_0"] + record["dead_codes_0"] == 64
        assert 1.0 <= record["pooled_perplexity_0"] <= record["codes_used_0"] + 0.1
        assert "perplexity" in record


# ------------------------------------------------------------ plots codebook


@pytest.mark.parametrize("mode", ["patch", "utterance"])
def test_plots_codebook_quantises_through_the_target_norm(
    manifest, tmp_path, monkeypatch, mode
):
    from bestrq2_lobes.model.encoder import ViTEncoder
    from bestrq2_lobes.model.masking import MaskSampler
    from bestrq2_lobes.model.pretraining import OneStageBestRQ, OneStageHead
    from bestrq2_lobes.model.quantizer import RandomProjectionQuantizer
    from bestrq2_lobes.plots import run_plots

    model = OneStageBestRQ(
        LogMel(n_mels=MELS),
        ViTEncoder(n_mels=MELS, embed_dim=16, depth=1, num_heads=2),
        OneStageHead(16, 64),
        RandomProjectionQuantizer(256, 16, 64),
        MaskSampler((0.5, 0.5)),
        TargetNormalization(mode, MELS, 16, 16),
    ).eval()
    hparams = {"model": model, "sample_rate": SR}
    monkeypatch.setattr(run_plots, "load_run", lambda run_dir: hparams)
    info = run_plots.plot_codebook_usage(
        tmp_path, manifest / "train.csv", tmp_path / "c.png", str(manifest)
    )
    counts = torch.zeros(64, dtype=torch.long)
    grid = model.encoder.grid
    for clip in first_clips(manifest / "train.csv", str(manifest), 9, None, SR, 0.6):
        patches = grid.patchify(model.frontend(clip[None]))[0]
        if mode == "patch":
            inputs = torch.nn.functional.layer_norm(patches, (256,), eps=EPS)
        else:
            inputs = TargetNormalization(mode, MELS, 16, 16)(patches[None])[0]
        counts += torch.bincount(model.quantizer(inputs)[:, 0], minlength=64)
        raw = model.quantizer(patches)[:, 0]
        assert not torch.equal(raw, model.quantizer(inputs)[:, 0])
    assert info["dead_codes"] == int((counts == 0).sum())
    assert info["perplexity"] == pytest.approx(code_perplexity(counts), rel=1e-5)


# ------------------------------------------------------ in the pretraining model


def _tiny_bestrq2(mode):
    from bestrq2_lobes.model.encoder import ViTEncoder
    from bestrq2_lobes.model.masking import MaskSampler
    from bestrq2_lobes.model.predictor import Predictor
    from bestrq2_lobes.model.pretraining import BestRQ2
    from bestrq2_lobes.model.quantizer import RandomProjectionQuantizer

    torch.manual_seed(0)
    return BestRQ2(
        LogMel(n_mels=MELS),
        ViTEncoder(n_mels=MELS, embed_dim=16, depth=1, num_heads=2, drop_path=0.0),
        Predictor(16, 16, depth=1, num_heads=2, freq_rows=2, codebook_size=64),
        RandomProjectionQuantizer(256, 16, 64),
        MaskSampler((0.5, 0.5), shared=False),
        TargetNormalization(mode, MELS, 16, 16),
    ).eval()


def test_model_targets_are_normalised_and_the_encoder_input_is_not():
    wav = 0.1 * torch.randn(2, 3 * SR, generator=torch.Generator().manual_seed(0))
    wav_lens = torch.tensor([1.0, 0.6])
    raw, norm = _tiny_bestrq2("none"), _tiny_bestrq2("utterance")
    outs, seen = {}, {}
    for name, model in (("none", raw), ("utterance", norm)):
        handle = model.encoder.blocks.register_forward_pre_hook(
            lambda mod, args, name=name: seen.setdefault(name, args[0].clone())
        )
        with torch.no_grad():
            outs[name] = model(wav, wav_lens, torch.Generator().manual_seed(1))
        handle.remove()
    assert torch.equal(seen["none"], seen["utterance"])  # the encoder reads raw dB
    out = outs["utterance"]
    lengths = (wav_lens * wav.shape[1]).round().long()
    patches = norm.encoder.grid.patchify(norm.frontend(wav, lengths))
    expected = norm.quantizer(norm.target_norm(patches, out.valid_tokens))
    for b in range(2):
        assert torch.equal(out.targets[b], expected[b, out.plan.masked_idx[b]])
    assert not torch.equal(out.targets, outs["none"].targets)


def test_model_rejects_a_target_norm_of_another_grid():
    from bestrq2_lobes.model.encoder import ViTEncoder
    from bestrq2_lobes.model.masking import MaskSampler
    from bestrq2_lobes.model.pretraining import OneStageBestRQ, OneStageHead
    from bestrq2_lobes.model.quantizer import RandomProjectionQuantizer

    with pytest.raises(ValueError, match="target_norm grid 64 mels"):
        OneStageBestRQ(
            LogMel(n_mels=MELS),
            ViTEncoder(n_mels=MELS, embed_dim=16, depth=1, num_heads=2),
            OneStageHead(16, 64),
            RandomProjectionQuantizer(256, 16, 64),
            MaskSampler((0.5, 0.5)),
            TargetNormalization("patch", 64, 16, 16),
        )
