"""Tests for the encoder input normalisation: ``LogMel(norm_mean, norm_std)`` with
one number or one per band, the recipe's ``input_norm`` (estimated before step 1,
read back on resume) and its way into an exported encoder directory.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bestrq2_lobes import BestRQ2Encoder
from bestrq2_lobes.lobe.config_checks import check_config
from bestrq2_lobes.lobe.encoder_dir import (
    encoder_config,
    load_encoder_dir,
    write_encoder_dir,
)
from bestrq2_lobes.model.encoder import ViTEncoder
from bestrq2_lobes.model.frontend import LogMel, band_to_global
from bestrq2_lobes.model.patches import PatchGrid
from bestrq2_lobes.model.targets import estimate_band_statistics
from bestrq2_lobes.training.target_stats import first_clips

SR = 16000
MELS = 32
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _wavs(batch=2, seconds=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, int(seconds * SR), generator=gen)


def test_per_band_and_global_statistics_against_the_raw_log_mel():
    wavs = _wavs()
    raw = LogMel(n_mels=MELS)(wavs)
    mean = torch.linspace(-80, -20, MELS)
    std = torch.linspace(3, 12, MELS)
    bands = LogMel(n_mels=MELS, norm_mean=mean.tolist(), norm_std=std.tolist())
    expected = torch.stack(
        [
            torch.stack([(raw[b, m] - mean[m]) / std[m] for m in range(MELS)])
            for b in range(len(raw))
        ]
    )
    torch.testing.assert_close(bands(wavs), expected, rtol=1e-5, atol=1e-5)
    one = LogMel(n_mels=MELS, norm_mean=-50.0, norm_std=10.0)
    torch.testing.assert_close(one(wavs), (raw + 50.0) / 10.0, rtol=1e-5, atol=1e-5)


def test_statistics_stay_out_of_the_state_dict_so_old_weights_still_load():
    frontend = LogMel(n_mels=MELS, norm_mean=[0.0] * MELS, norm_std=2.0)
    assert frontend.norm_mean.shape == (MELS, 1) and frontend.norm_std.shape == ()
    assert frontend.state_dict().keys() == LogMel(n_mels=MELS).state_dict().keys()
    frontend.load_state_dict(LogMel(n_mels=MELS).state_dict(), strict=True)
    assert frontend.config["norm_std"] == 2.0


@pytest.mark.parametrize(
    "mean, std, message",
    [
        ([0.0] * 3, 1.0, "one number or 32"),
        (0.0, 0.0, "norm_std must be finite and positive"),
        (float("nan"), 1.0, "norm_mean must be finite"),
        (0.0, [1.0] * 31 + [-1.0], "norm_std must be finite and positive"),
    ],
)
def test_bad_statistics_are_one_line_errors(mean, std, message):
    with pytest.raises(ValueError, match=message) as err:
        LogMel(n_mels=MELS, norm_mean=mean, norm_std=std)
    assert "\n" not in str(err.value)


@settings(max_examples=40, deadline=None)
@given(
    means=st.lists(st.floats(-100, 40), min_size=1, max_size=16),
    data=st.data(),
)
def test_band_to_global_is_the_pooled_statistics(means, data):
    stds = data.draw(
        st.lists(st.floats(0.01, 30), min_size=len(means), max_size=len(means))
    )
    gen = torch.Generator().manual_seed(len(means))
    unit = torch.randn(len(means), 400, generator=gen, dtype=torch.float64)
    unit = (unit - unit.mean(1, keepdim=True)) / unit.std(1, keepdim=True, correction=0)
    values = unit * torch.tensor(stds, dtype=torch.float64).unsqueeze(1)
    values = values + torch.tensor(means, dtype=torch.float64).unsqueeze(1)
    mean, std = band_to_global(torch.tensor(means), torch.tensor(stds))
    assert mean == pytest.approx(float(values.mean()), abs=1e-3)
    assert std == pytest.approx(float(values.std(correction=0)), rel=1e-3, abs=1e-3)


def test_an_encoder_directory_applies_the_statistics_it_was_written_with(tmp_path):
    mean = torch.linspace(-70, -30, MELS)
    frontend = LogMel(n_mels=MELS, norm_mean=mean, norm_std=7.5)
    encoder = ViTEncoder(n_mels=MELS, embed_dim=32, depth=1, num_heads=4)
    path = write_encoder_dir(tmp_path / "enc", frontend, encoder, 2.0)
    config = json.loads((tmp_path / "enc" / "config.json").read_text())
    assert config["frontend"]["norm_mean"] == mean.tolist()
    assert config["frontend"]["norm_std"] == 7.5
    loaded, _, _ = load_encoder_dir(path)
    wavs = _wavs()
    torch.testing.assert_close(loaded(wavs), frontend(wavs))
    lobe = BestRQ2Encoder(source=str(path), freeze=True)
    torch.testing.assert_close(lobe.frontend(wavs), frontend(wavs))


def test_config_checks_bound_every_band():
    config = encoder_config(n_mels=MELS, embed_dim=32, depth=1, num_heads=4)
    config["frontend"]["norm_mean"] = [0.0] * MELS
    config["frontend"]["norm_std"] = [1.0] * MELS
    check_config(config)
    config["frontend"]["norm_std"] = [1.0] * (MELS - 1) + [0.0]
    with pytest.raises(ValueError, match=r"frontend.norm_std\[31\] must be a number"):
        check_config(config)
    config["frontend"]["norm_std"] = [1.0] * MELS
    config["frontend"]["norm_mean"] = [0.0] * (MELS - 1) + ["x"]
    with pytest.raises(ValueError, match=r"frontend.norm_mean\[31\]"):
        check_config(config)


# ------------------------------------------------- the recipe: estimate, resume


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Four clips of 1-3 s and their manifest."""
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    rows = ["ID,duration,wav"]
    for i, seconds in enumerate([1.0, 2.5, 1.5, 3.0]):
        t = np.arange(int(seconds * SR)) / SR
        wav = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t)
        wav = wav + 0.01 * (i + 1) * rng.standard_normal(t.size)
        sf.write(folder / f"c{i}.wav", wav.astype(np.float32), SR)
        rows.append(f"c{i},{seconds},$data_root/c{i}.wav")
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    return folder


def _run(cmd, timeout=600):
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_recipe_band_statistics_reach_the_exported_encoder_and_survive_a_resume(
    manifest, tmp_path, pretrain_args
):
    """Estimated once before step 1; a resume reads them back; export keeps them.

    The rerun asks for statistics of other clips (``input_norm_clips``, with
    ``--allow_changed_run``): were they estimated again, they would change.
    """
    out = tmp_path / "run"
    args = pretrain_args(
        "unused",
        out,
        f"--train_csv={manifest / 'train.csv'}",
        f"--valid_csv={manifest / 'train.csv'}",
        f"--data_root={manifest}",
        "--input_norm=band",
        "--batch_size=2",
        "--crop_seconds=2.0",
        "--ckpt_interval_steps=1",
        "--total_steps=2",
    )
    args = [a for a in args if not a.startswith("--data_folder")]
    _run([sys.executable, *args, "--input_norm_clips=2", "--optimizer_step_limit=1"])
    saved = json.loads((out / "save" / "encoder_config.json").read_text())["frontend"]
    raw = LogMel(n_mels=MELS, normalized=True)
    clips = first_clips(manifest / "train.csv", str(manifest), 2, 2.0, SR, 0.58)
    mean, std, _ = estimate_band_statistics(clips, raw, PatchGrid(MELS, 16, 16))
    # the same computation, in another process with another thread count
    torch.testing.assert_close(torch.tensor(saved["norm_mean"]), mean)
    torch.testing.assert_close(torch.tensor(saved["norm_std"]), std)
    assert (out / "log.txt").read_text().count("statistics estimated on") == 1

    second = _run(
        [sys.executable, *args, "--input_norm_clips=4", "--allow_changed_run=True"]
    )
    assert "Pretraining finished: 2 optimiser steps" in second.stdout
    again = json.loads((out / "save" / "encoder_config.json").read_text())["frontend"]
    assert again == saved
    log = (out / "log.txt").read_text()
    assert log.count("statistics estimated on") == 1 and "read back from" in log

    exported = tmp_path / "enc"
    _run([sys.executable, "-m", "bestrq2_lobes.lobe.export", str(out), str(exported)])
    lobe = BestRQ2Encoder(source=str(exported), freeze=True)
    wavs = _wavs()
    expected = (raw(wavs) - mean.view(-1, 1)) / std.view(-1, 1)
    torch.testing.assert_close(lobe.frontend(wavs), expected, rtol=1e-5, atol=1e-4)


def test_recipe_refuses_input_norm_over_fixed_statistics(
    manifest, tmp_path, pretrain_args
):
    args = pretrain_args(
        "unused",
        tmp_path / "run",
        f"--train_csv={manifest / 'train.csv'}",
        f"--data_root={manifest}",
        "--input_norm=global",
        "--total_steps=1",
    )
    args = [a for a in args if not a.startswith("--data_folder")]
    yaml = tmp_path / "fixed.yaml"
    hparams = (
        open(args[1])
        .read()
        .replace(
            "    normalized: !ref <normalized_stft>",
            "    normalized: !ref <normalized_stft>\n    norm_mean: -40.0",
        )
    )
    yaml.write_text(hparams)
    args[1] = str(yaml)
    proc = subprocess.run(
        [sys.executable, *args], env=ENV, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode != 0
    assert "leave the front end's norm_mean and norm_std unset" in (
        proc.stdout + proc.stderr
    )
