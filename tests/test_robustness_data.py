"""What happens for every bad input: audio files, manifests and overrides.

Issue "Reliability", items 3 and 4; the table in ``docs/robustness.md`` points to
the tests below. Every case is generated on the fly in a temporary folder:

* bad audio goes through ``prepare_folder`` (listed in ``skipped.csv`` with a
  reason) and, together with the files that are handled (resampled, downmixed,
  silent, clipped, one hour long, ...), through one real pretraining run of the
  recipe with ``--data_folder``;
* a clip's quantizer targets are the same alone and padded into a batch with the
  silent, clipped and short clips;
* bad manifests and a misspelt override stop the recipe with a one-line error
  (the recipe runs of these cases are started together, to save time).
"""

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.batch import PaddedBatch

from bestrq2_lobes.data.audio import read_segment
from bestrq2_lobes.data.folder_scan import prepare_folder, scan_audio_folder
from bestrq2_lobes.data.manifest import read_manifest
from bestrq2_lobes.model.pretraining import masked_prediction_loss
from bestrq2_lobes.model.targets import TARGET_NORMS, TargetNormalization

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "pretrain" / "train.py"
HPARAMS = REPO / "hparams" / "bestrq2_vit.yaml"
SR = 16000
TINY = {
    "embed_dim": 32,
    "depth": 1,
    "num_heads": 4,
    "predictor_depth": 1,
    "codebook_size": 64,
    "n_mels": 32,
    "crop_seconds": 2.0,
}
TINY_ARGS = [f"--{k}={v}" for k, v in TINY.items()] + [
    "--batch_size=2",
    "--num_workers=0",
    "--device=cpu",
    "--noprogressbar",
]
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
    "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
}
# The paper patch grid (16 x 16 patches, hop 625 at 16 kHz): 15 hops = 0.5859 s.
MIN_SECONDS = 15 * 625 / SR

# Bad files: name -> the reason written to skipped.csv (exact text).
SKIPPED = {
    "empty.wav": "empty file (0 bytes)",
    "header_only.wav": "contains no audio (0 frames)",
    "zero_samples.ogg": "contains no audio (0 frames)",
    "truncated.wav": "truncated WAV file (1000 bytes of audio missing)",
    "truncated.flac": "decoding failed after 0.000 s (truncated or corrupt?): "
    "Error : flac decoder lost sync.",
    "text.wav": "cannot open as audio: Format not recognised.",
    "short_0.3s.wav": "shorter than 0.585938 s (0.300 s)",
    "nan.wav": "non-finite samples (NaN/Inf at 0.500 s)",
    "inf.wav": "non-finite samples (NaN/Inf at 1.250 s)",
}
# Handled files: name -> (seconds, native rate, channels).
HANDLED = {
    "silence.wav": (3.0, SR, 1),
    "clipped.wav": (2.5, SR, 1),
    "sr8000.wav": (2.0, 8000, 1),
    "sr22050.flac": (2.0, 22050, 1),
    "sr44100.wav": (2.0, 44100, 1),
    "sr48000.flac": (2.0, 48000, 1),
    "stereo.wav": (2.0, SR, 2),
    "six_channels.flac": (2.0, SR, 6),
    "short_ok_0.6s.wav": (0.6, SR, 1),
    "hour.wav": (3600.0, SR, 1),
}


def _tone(seconds, sr=SR, channels=1, seed=0):
    """A 440 Hz tone with a little noise, float32, (n,) or (n, channels)."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sr)
    x = 0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / sr)[:, None]
    x = x + 0.05 * rng.standard_normal((n, channels))
    return (x[:, 0] if channels == 1 else x).astype(np.float32)


def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[: keep(len(data))])


def make_bad_audio(folder):
    """Writes every bad-audio case of the table into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.wav").touch()
    sf.write(folder / "header_only.wav", np.zeros(0, np.float32), SR)
    sf.write(folder / "zero_samples.ogg", np.zeros(0, np.float32), SR)
    sf.write(folder / "truncated.wav", _tone(2.0), SR)
    _truncate(folder / "truncated.wav", lambda n: n - 1000)
    sf.write(folder / "truncated.flac", _tone(3.0), SR)
    _truncate(folder / "truncated.flac", lambda n: n // 2)
    (folder / "text.wav").write_text("this is not audio\n" * 20)
    sf.write(folder / "short_0.3s.wav", _tone(0.3), SR)
    nan = _tone(2.0)
    nan[SR // 2] = np.nan
    sf.write(folder / "nan.wav", nan, SR, subtype="FLOAT")
    inf = _tone(2.0)
    inf[SR + SR // 4] = np.inf
    sf.write(folder / "inf.wav", inf, SR, subtype="FLOAT")
    (folder / "dir.wav").mkdir()  # a directory: walked into, not a file

    for name, (seconds, rate, channels) in HANDLED.items():
        if name in ("silence.wav", "clipped.wav", "hour.wav"):
            continue
        sf.write(folder / name, _tone(seconds, rate, channels, seed=rate), rate)
    sf.write(folder / "silence.wav", np.zeros(3 * SR, np.float32), SR)
    square = np.where(np.arange(int(2.5 * SR)) % 160 < 80, 1.0, -1.0)
    sf.write(folder / "clipped.wav", square.astype(np.float32), SR, subtype="FLOAT")
    minute = (_tone(60.0) * 32767).astype(np.int16)
    with sf.SoundFile(folder / "hour.wav", "w", SR, 1, "PCM_16") as f:
        for _ in range(60):  # 1 h, 16 kHz, PCM_16: 115 MB
            f.write(minute)
    return folder


def snapshot(folder):
    """Names, kinds, sizes and mtimes of everything under ``folder``."""
    state = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            state[os.path.relpath(path, folder)] = (
                st.st_mode,
                st.st_size,
                st.st_mtime_ns,
            )
    return state


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def recipe_cmd(*args):
    return [sys.executable, str(RECIPE), str(HPARAMS), *TINY_ARGS, *args]


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory):
    return make_bad_audio(tmp_path_factory.mktemp("robust") / "audio")


@pytest.fixture(scope="module")
def tiny_model():
    """The recipe's model (hparams/bestrq2_vit.yaml) with the tiny overrides."""
    with open(HPARAMS, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, {**TINY, "data_folder": "unused"})
    return hparams["model"].eval()


# ---------------------------------------------------------------- audio cases


def test_min_seconds_is_one_patch(tiny_model):
    assert tiny_model.min_seconds == pytest.approx(MIN_SECONDS)


def test_prepare_folder_lists_each_bad_file_with_reason(data_folder, tmp_path):
    out = prepare_folder(
        data_folder, tmp_path / "manifests", MIN_SECONDS, 0.2, progress=False
    )
    skipped = read_csv(out["skipped_csv"])
    assert {os.path.basename(r["file"]): r["reason"] for r in skipped} == SKIPPED
    assert [r["file"] for r in skipped] == [
        str(data_folder / n) for n in sorted(SKIPPED)
    ]
    train = read_manifest(out["train_csv"], out["data_root"])
    valid = read_manifest(out["valid_csv"], out["data_root"])
    assert (len(train), len(valid)) == (8, 2)
    used = {os.path.basename(r["wav"]): r["duration"] for r in train + valid}
    assert used == {name: spec[0] for name, spec in HANDLED.items()}
    assert not any("dir.wav" in r["wav"] for r in train + valid)


def test_handled_files_are_resampled_and_downmixed(data_folder):
    for name, (seconds, _, _) in HANDLED.items():
        wav = read_segment(data_folder / name, 0.0, 2.0, sample_rate=SR)
        assert wav.dtype == torch.float32 and wav.ndim == 1, name
        assert wav.numel() == round(min(seconds, 2.0) * SR), name
        assert torch.isfinite(wav).all(), name
    assert not read_segment(data_folder / "silence.wav").any()
    clipped = read_segment(data_folder / "clipped.wav")
    assert clipped.abs().max() == 1.0
    stereo, _ = sf.read(data_folder / "stereo.wav", dtype="float32")
    mono = torch.from_numpy(stereo.mean(1))
    assert (read_segment(data_folder / "stereo.wav") - mono).abs().max() < 1e-6
    crop = read_segment(data_folder / "hour.wav", 1800.0, 10.0, sample_rate=SR)
    assert crop.shape == (10 * SR,)


RSS_SCRIPT = """
import json, sys
from bestrq2_lobes.data.audio import check_audio, read_segment

def peak_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

hour, warm = sys.argv[1:3]
read_segment(warm, 0.0, 1.0)  # first use of libsndfile and torch
base = peak_kb()
wav = read_segment(hour, 1800.0, 10.0)
crop = peak_kb()
check_audio(hour, min_seconds=0.5)
print(json.dumps({"base": base, "crop": crop, "check": peak_kb(), "n": wav.numel()}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc")
def test_one_hour_file_reads_only_the_crop(data_folder):
    """Peak RSS of a 10 s crop of a 1 h file; the whole file is 230 MB as float32."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            RSS_SCRIPT,
            str(data_folder / "hour.wav"),
            str(data_folder / "silence.wav"),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
        check=True,
    )
    peak = json.loads(proc.stdout.strip().splitlines()[-1])
    print("peak RSS (kB):", peak)
    assert peak["n"] == 10 * SR
    assert peak["crop"] - peak["base"] < 16 * 1024  # a 10 s crop is 0.6 MB
    assert peak["check"] - peak["base"] < 64 * 1024  # 30 s decoding blocks


SCAN_SCRIPT = """
import json, sys
from bestrq2_lobes.data.folder_scan import scan_audio_folder
print(json.dumps(scan_audio_folder(sys.argv[1], 0.5, progress=False)[1]))
"""


def test_unreadable_file_is_skipped(tmp_path):
    """chmod 000: skipped as unreadable. Root reads anything, so as root the
    scan runs as ``nobody`` through ``setpriv``, in a folder of its own under the
    temporary directory (pytest's ``tmp_path`` is closed to other users)."""
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if as_root and shutil.which("setpriv") is None:
        pytest.skip("root reads anything and setpriv is not available")
    folder = Path(tempfile.mkdtemp(prefix="bestrq2_perm_")) if as_root else tmp_path
    try:
        folder.chmod(0o755)
        sf.write(folder / "ok.wav", _tone(1.0), SR)
        sf.write(folder / "secret.wav", _tone(1.0), SR)
        (folder / "secret.wav").chmod(0)
        if as_root:
            nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            proc = subprocess.run(
                [*nobody, sys.executable, "-c", SCAN_SCRIPT, str(folder)],
                capture_output=True,
                text=True,
                env=ENV,
                timeout=120,
            )
            if proc.returncode != 0:
                pytest.skip(f"cannot run as nobody: {proc.stderr.strip()[-300:]}")
            skipped = json.loads(proc.stdout.strip().splitlines()[-1])
        else:
            skipped = scan_audio_folder(folder, 0.5, progress=False)[1]
        assert skipped == [
            {
                "file": str(folder / "secret.wav"),
                "reason": "unreadable: Permission denied",
            }
        ]
    finally:
        if (folder / "secret.wav").exists():
            (folder / "secret.wav").chmod(0o644)
        if as_root:
            shutil.rmtree(folder)


def _alone_codes(model, wav):
    """Patches and codes of every token of one clip, computed alone (no lengths)."""
    feats = model.frontend(wav[None])
    patches = model.encoder.grid.patchify(feats)[0]
    return patches, model.target_codes(patches[None])[0]


@pytest.mark.parametrize("target_norm", TARGET_NORMS)
def test_targets_of_a_clip_do_not_depend_on_its_batch(
    data_folder, tiny_model, target_norm
):
    """A clip's targets alone == in a batch padded with silent/clipped/short clips.

    With every target normalisation (``utterance`` takes statistics over each
    clip's valid frames: the batch padding must not enter them).
    """
    model = tiny_model
    grid = model.encoder.grid
    norm = TargetNormalization(target_norm, grid.n_mels, grid.patch_freq)
    if target_norm == "global":
        norm.set_statistics(
            torch.linspace(-90.0, -20.0, grid.n_mels), torch.full((grid.n_mels,), 12.0)
        )
    default, model.target_norm = model.target_norm, norm
    try:
        _check_targets_do_not_depend_on_batch(data_folder, model, target_norm)
    finally:
        model.target_norm = default


def _check_targets_do_not_depend_on_batch(data_folder, model, target_norm):
    clips = {
        name: read_segment(data_folder / name, sample_rate=SR)
        for name in (
            "sr44100.wav",
            "silence.wav",
            "clipped.wav",
            "short_ok_0.6s.wav",
            "six_channels.flac",
        )
    }
    alone = {name: _alone_codes(model, wav) for name, wav in clips.items()}

    # digital silence: log-mel at the floor (-100 dB), one finite code everywhere
    # (one per frequency row with per-band global statistics)
    patches, codes = alone["silence.wav"]
    assert torch.equal(patches, torch.full_like(patches, -100.0))
    rows = model.encoder.grid.freq_rows if target_norm == "global" else 1
    assert codes.unique().numel() <= rows
    for patches, codes in alone.values():
        assert torch.isfinite(patches).all()
        assert ((codes >= 0) & (codes < TINY["codebook_size"])).all()

    orders = [
        ["sr44100.wav", "silence.wav", "clipped.wav", "short_ok_0.6s.wav"],
        ["short_ok_0.6s.wav", "sr44100.wav", "six_channels.flac"],
        ["silence.wav", "short_ok_0.6s.wav"],
    ]
    for order in orders:
        batch = PaddedBatch([{"id": n, "sig": clips[n]} for n in order])
        wavs, wav_lens = batch.sig  # as in the recipe
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            patches, plan, targets, valid, _ = model.prepare(wavs, wav_lens, generator)
            out = model(wavs, wav_lens, torch.Generator().manual_seed(0))
            loss, _ = masked_prediction_loss(out)
        assert torch.isfinite(loss), order
        for i, name in enumerate(order):
            ref_patches, ref_codes = alone[name]
            n = int(valid[i])
            assert n == ref_patches.shape[0], name
            assert torch.equal(patches[i, :n], ref_patches), (order, name)
            codes = model.target_codes(patches[i : i + 1, :n])[0]
            assert torch.equal(codes, ref_codes), name
            # the batch's own valid counts: padding does not enter the statistics
            codes = model.target_codes(patches, valid)[i, :n]
            assert torch.equal(codes, ref_codes), (order, name)
            keep = plan.masked_valid[i]
            masked = plan.masked_idx[i][keep]
            assert torch.equal(targets[i][keep], ref_codes[masked]), (order, name)


def test_prepare_folder_without_validation_split(tmp_path):
    """valid_fraction=0 or one usable file: no valid.csv rows, valid_csv is None.

    (Before the fix the recipe stopped with "valid.csv: no data rows".)
    """
    sf.write(tmp_path / "only.wav", _tone(1.0), SR)
    (tmp_path / "bad.wav").write_text("nope")
    for fraction in (0.05, 0.0):
        save = tmp_path / f"save{fraction}"
        for _ in range(2):  # fresh, then up to date
            out = prepare_folder(tmp_path, save, 0.5, fraction, progress=False)
            assert out["valid_csv"] is None
            assert len(read_manifest(out["train_csv"], out["data_root"])) == 1
            assert read_csv(save / "valid.csv") == []
    sf.write(tmp_path / "second.wav", _tone(1.0), SR)
    out = prepare_folder(tmp_path, tmp_path / "save", 0.5, 0.05, progress=False)
    assert out["valid_csv"] == str(tmp_path / "save" / "valid.csv")


# ---------------------------------------------------------------- recipe runs


@pytest.fixture(scope="module")
def folder_run(data_folder, tmp_path_factory):
    """One tiny pretraining run on the folder with every bad-audio case."""
    base = tmp_path_factory.mktemp("folder_run")
    cwd, out = base / "cwd", base / "out"
    cwd.mkdir()
    before = snapshot(data_folder)
    proc = subprocess.run(
        recipe_cmd(
            f"--data_folder={data_folder}",
            f"--output_folder={out}",
            "--valid_fraction=0.2",
            "--number_of_epochs=1",
            "--log_interval=1",
        ),
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, out, cwd, before, snapshot(data_folder)


def test_recipe_trains_on_folder_with_every_bad_case(folder_run, data_folder):
    proc, out, _, _, _ = folder_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # 8 train clips, batch 2, drop_last: 4 steps, so every train clip was read
    assert "Pretraining finished: 4 optimiser steps" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    skipped = read_csv(out / "manifests" / "skipped.csv")
    assert [r["file"] for r in skipped] == sorted(
        str(data_folder / name) for name in SKIPPED
    )
    assert {os.path.basename(r["file"]): r["reason"] for r in skipped} == SKIPPED
    assert len(read_csv(out / "manifests" / "train.csv")) == 8
    assert len(read_csv(out / "manifests" / "valid.csv")) == 2
    lines = (out / "metrics.jsonl").read_text().splitlines()
    metrics = [json.loads(line) for line in lines]
    train = [m for m in metrics if m["stage"] == "train"]
    assert [m["step"] for m in train] == [1, 2, 3, 4]
    assert [m["stage"] for m in metrics].count("valid") == 1
    assert all(np.isfinite(m["loss"]) for m in metrics)
    assert all(m.get("skipped_updates", 0) == 0 for m in train)


def test_recipe_writes_nothing_outside_its_output_folder(folder_run):
    proc, out, cwd, before, after = folder_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert after == before  # the data folder: same names, sizes and mtimes
    assert list(cwd.iterdir()) == []  # the working directory stays empty
    assert (out / "manifests" / "train.csv").is_file()


def _write_manifest(path, rows, fields=("ID", "duration", "wav")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        writer.writerows(rows)
    return path


def make_bad_manifests(d):
    """Three good clips in ``d/audio`` and the manifests of MANIFEST_CASES."""
    audio = d / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        sf.write(audio / f"c{i}.wav", _tone(2.0, seed=i), SR)
    good = [(f"c{i}", "2.0", f"$data_root/c{i}.wav") for i in range(3)]
    _write_manifest(d / "good.csv", good)
    _write_manifest(
        d / "missing_audio.csv", good[:2] + [("gone", "2.0", "$data_root/gone.wav")]
    )
    _write_manifest(d / "duplicate.csv", good[:2] + [("c0", "2.0", good[2][2])])
    _write_manifest(d / "non_numeric.csv", [good[0], ("c1", "two", good[1][2])])
    _write_manifest(d / "negative.csv", [good[0], ("c1", "-2.0", good[1][2])])
    _write_manifest(
        d / "no_duration.csv", [(r[0], r[2]) for r in good], fields=("ID", "wav")
    )
    return d


# case -> (arguments, fragments of the one-line error)
MANIFEST_CASES = {
    "missing_audio": (
        ["--train_csv={d}/missing_audio.csv", "--data_root={d}/audio"],
        [
            "missing_audio.csv: row 3 (ID 'gone'), column 'wav': audio file not found: "
            "{d}/audio/gone.wav (is --data_root right?)"
        ],
    ),
    "duplicate_id": (
        ["--train_csv={d}/duplicate.csv", "--data_root={d}/audio"],
        ["duplicate.csv: row 3 (ID 'c0'), column 'ID': duplicate ID (first in row 1)"],
    ),
    "non_numeric_duration": (
        ["--train_csv={d}/non_numeric.csv", "--data_root={d}/audio"],
        ["non_numeric.csv: row 2 (ID 'c1'), column 'duration': not a number: 'two'"],
    ),
    "negative_duration": (
        ["--train_csv={d}/negative.csv", "--data_root={d}/audio"],
        [
            "negative.csv: row 2 (ID 'c1'), column 'duration': "
            "must be finite and >= 0, not '-2.0'"
        ],
    ),
    "missing_column": (
        ["--train_csv={d}/no_duration.csv", "--data_root={d}/audio"],
        [
            "no_duration.csv: header row: missing required column 'duration' "
            "(found: ID,wav)"
        ],
    ),
    "wrong_data_root": (
        ["--train_csv={d}/good.csv", "--data_root={d}/nowhere"],
        [
            "good.csv: row 1 (ID 'c0'), column 'wav': audio file not found: "
            "{d}/nowhere/c0.wav (is --data_root right?)"
        ],
    ),
    "missing_csv": (
        ["--train_csv={d}/nope.csv", "--data_root={d}/audio"],
        ["manifest not found: '{d}/nope.csv'"],
    ),
    "override_typo": (
        ["--train_csv={d}/good.csv", "--data_root={d}/audio", "--batch_sise", "4"],
        ["unknown option --batch_sise (did you mean --batch_size?)"],
    ),
}


# Runs the recipe script once per case in ONE Python process (imports are paid
# once), exactly as ``python train.py ARGS`` would: its folder first on
# sys.path (for its sibling modules), run as ``__main__``; a
# SystemExit with a message prints it to stderr and exits 1, as the interpreter
# does; any other exception is a traceback.
DRIVER = """
import contextlib, io, json, os, runpy, sys, traceback
recipe, cases = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, os.path.dirname(os.path.abspath(recipe)))
results = {}
for name, argv in cases.items():
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [recipe, *argv]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(recipe, run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
    results[name] = [code, out.getvalue(), err.getvalue()]
print(json.dumps(results))
"""
CLI_CASE = "missing_audio"  # also run as a real command line, to check the driver


@pytest.fixture(scope="module")
def manifest_runs(tmp_path_factory):
    """The recipe on every bad manifest: {case: (returncode, stdout, stderr)}."""
    d = make_bad_manifests(tmp_path_factory.mktemp("manifests"))

    def case_argv(name, output_folder):
        args, _ = MANIFEST_CASES[name]
        formatted = [a.format(d=d) for a in args]
        return recipe_cmd(*formatted, f"--output_folder={output_folder}")

    argvs = {name: case_argv(name, d / name) for name in MANIFEST_CASES}
    run = {"cwd": REPO, "env": ENV, "text": True}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    # its own output folder: run beside the driver's same case, one shared
    # folder would race in SpeechBrain's create_experiment_directory
    cli_argv = case_argv(CLI_CASE, d / f"cli_{CLI_CASE}")
    cli = subprocess.Popen(cli_argv, **run, **pipes)
    cases = json.dumps({name: argv[2:] for name, argv in argvs.items()})
    driver = subprocess.run(
        [sys.executable, "-c", DRIVER, str(RECIPE), cases],
        **run,
        capture_output=True,
        timeout=300,
    )
    stdout, stderr = cli.communicate(timeout=300)
    assert driver.returncode == 0, driver.stderr[-3000:]
    results = json.loads(driver.stdout.strip().splitlines()[-1])
    return d, results, (cli.returncode, stdout, stderr)


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("case", list(MANIFEST_CASES))
def test_bad_manifest_gives_one_line_error(case, manifest_runs):
    d, results, _ = manifest_runs
    returncode, stdout, stderr = results[case]
    assert returncode != 0
    assert "Traceback" not in stdout + stderr, stdout[-2000:] + stderr[-2000:]
    lines = _error_lines(stderr)
    assert lines and lines[-1].startswith("error: "), stderr[-2000:]
    for fragment in MANIFEST_CASES[case][1]:
        assert fragment.format(d=d) in lines[-1]
    # nothing else of the error spills onto other lines
    assert [line for line in lines if "error" in line.lower()] == [lines[-1]]


def test_bad_manifest_real_command_line(manifest_runs):
    """The real ``python train.py ...`` prints what the driver saw, exits 1."""
    _, results, (returncode, stdout, stderr) = manifest_runs
    assert returncode == 1
    assert "Traceback" not in stdout + stderr
    assert _error_lines(stderr)[-1] == _error_lines(results[CLI_CASE][2])[-1]
