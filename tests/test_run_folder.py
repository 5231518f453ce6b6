"""One output folder, one run: the demo and your own audio stay apart.

The pretraining recipe records its data and model settings in
``run_fingerprint.json``; a rerun on the folder with other ones is refused before
anything is written, unless ``--allow_changed_run True``. The demo writes to
its own folder. Tiny model, tiny data, CPU.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

SR = 16000
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SHORT = ["--crop_seconds=1.5", "--batch_size=2", "--total_steps=2", "--log_interval=1"]


def make_audio(folder, count, pitch):
    folder.mkdir()
    rng = np.random.default_rng(pitch)
    t = np.arange(2 * SR) / SR
    for i in range(count):
        wav = 0.3 * np.sin(2 * np.pi * (pitch + 40 * i) * t)
        wav += 0.02 * rng.standard_normal(t.size)
        sf.write(folder / f"clip{i}.wav", wav.astype(np.float32), SR)
    return folder


def snapshot(folder):
    """Names, sizes, mtimes and content hashes of everything under ``folder``."""
    state = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            digest = None
            if os.path.isfile(path):
                with open(path, "rb") as fin:
                    digest = hashlib.sha256(fin.read()).hexdigest()
            rel = os.path.relpath(path, folder)
            state[rel] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return state


def run(args, cwd=None):
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def refused(proc):
    """The run stopped with a one-line error; returns that line."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr[-3000:]
    return last


@pytest.fixture(scope="module")
def base(tmp_path_factory, pretrain_args):
    """A finished two-step run on folder A; also folder B: the same file names
    and sizes elsewhere (only the folder differs)."""
    root = tmp_path_factory.mktemp("runs")
    audio_a = make_audio(root / "a", 6, 200)
    audio_b = make_audio(root / "b", 6, 500)
    out = root / "run"
    ok(run(pretrain_args(audio_a, out, *SHORT)))
    return audio_a, audio_b, out


def test_a_run_records_its_fingerprint(base):
    audio_a, _, out = base
    record = json.loads((out / "run_fingerprint.json").read_text())
    assert record["data"]["kind"] == "folder"
    assert record["data"]["files"] == 6
    assert record["data"]["where"] == str(audio_a)
    assert record["settings"]["embed_dim"] == 32
    assert record["settings"]["model"] == "BestRQ2"


def test_same_data_resumes(base, tmp_path, pretrain_args):
    audio_a, _, out = base
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    extra = [a for a in SHORT if "total_steps" not in a]
    proc = ok(run(pretrain_args(audio_a, copy, *extra, "--total_steps=4")))
    assert "Pretraining finished: 4 optimiser steps" in proc.stdout
    console = proc.stdout + proc.stderr
    assert "up to date" in console  # the manifests are reused
    assert "step 3 of 4 (75%)" in console and "left" in console  # progress, ETA
    assert "torchvision" not in console


def test_changed_manifest_is_refused(base, tmp_path, pretrain_args):
    audio_a, _, out = base
    manifest = tmp_path / "train.csv"
    shutil.copy(out / "manifests" / "train.csv", manifest)
    run_out = tmp_path / "run"
    args = [
        a
        for a in pretrain_args(audio_a, run_out, *SHORT)
        if not a.startswith("--data_folder")
    ]
    args += [f"--train_csv={manifest}", f"--data_root={audio_a}"]
    ok(run(args))
    record = json.loads((run_out / "run_fingerprint.json").read_text())
    assert record["data"]["kind"] == "manifests"
    before = snapshot(run_out)
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines[:-1]) + "\n")  # one clip fewer
    line = refused(run(args))
    assert "data: manifests " in line and "files) -> manifests " in line
    assert snapshot(run_out) == before


@pytest.mark.parametrize(
    "change, named",
    [
        ("data", "data: folder "),
        ("size", "embed_dim: 32 -> 64"),
        ("quantizer", "quantizer_seed: 42 -> 7"),
    ],
)
def test_a_changed_run_is_refused_and_writes_nothing(
    base, change, named, pretrain_args
):
    audio_a, audio_b, out = base
    before = snapshot(out)
    if change == "data":
        args = pretrain_args(audio_b, out, *SHORT)
    elif change == "size":
        args = pretrain_args(audio_a, out, *SHORT)
        args = [a.replace("--embed_dim=32", "--embed_dim=64") for a in args]
    else:
        args = pretrain_args(audio_a, out, *SHORT, "--quantizer_seed=7")
    line = refused(run(args))
    assert named in line
    assert "--output_folder" in line and "--allow_changed_run True" in line
    assert snapshot(out) == before


def test_the_override_continues(base, tmp_path, pretrain_args):
    _, audio_b, out = base
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    extra = [a for a in SHORT if "total_steps" not in a]
    args = pretrain_args(audio_b, copy, *extra, "--total_steps=4")
    proc = ok(run([*args, "--allow_changed_run=True"]))
    assert "Pretraining finished: 4 optimiser steps" in proc.stdout
    assert "--allow_changed_run: continuing the run" in proc.stdout + proc.stderr
    record = json.loads((copy / "run_fingerprint.json").read_text())
    assert record["data"]["where"] == str(audio_b)  # the new data, from now on
    opts = json.loads((copy / "manifests" / "prepare_opts.json").read_text())
    assert opts["data_folder"] == str(audio_b)  # manifests of the new folder


def test_an_old_demo_folder_is_not_continued(base, tmp_path, pretrain_args):
    """A demo run made before run records (no record, the demo corpus inside)."""
    audio_a, _, _ = base
    old = tmp_path / "results" / "bestrq2_vit" / "1986"
    (old / "demo_corpus" / "audio").mkdir(parents=True)
    (old / "save").mkdir()
    (old / "hyperparams.yaml").write_text("demo: true\n")
    before = snapshot(old)
    line = refused(run(pretrain_args(audio_a, old, *SHORT)))
    assert "holds a run of the built-in demo" in line
    assert snapshot(old) == before


@pytest.mark.parametrize(
    "bad",
    [
        ["--data_folder=/nonexistent"],
        ["--train_csv=/nonexistent/train.csv"],
        ["--valid_fraction=1.5"],
        ["--frame_readout=max"],
    ],
)
def test_a_rejected_run_leaves_the_previous_record_intact(
    base, bad, tmp_path, pretrain_args
):
    audio_a, _, out = base
    before = snapshot(out)
    args = pretrain_args(audio_a, out, *SHORT)
    if bad[0].startswith(("--data_folder", "--train_csv")):
        args = [a for a in args if not a.startswith("--data_folder")]
    line = refused(run([*args, *bad]))
    assert bad[0].split("=")[1] in line
    assert snapshot(out) == before
    # into a new folder: not even the folder is created
    fresh = tmp_path / "fresh"
    args = [a.replace(str(out), str(fresh)) for a in args]
    refused(run([*args, *bad]))
    assert not fresh.exists()


def test_demo_then_own_audio_are_two_intact_runs(base, tmp_path, pretrain_args):
    """The README's two commands, at tiny size, from one working directory."""
    audio_a, _, _ = base
    given = ("--data_folder", "--output_folder")
    tiny = [a for a in pretrain_args(audio_a, "x") if not a.startswith(given)]
    demo = ok(run([*tiny, "--total_steps=2", "--batch_size=2"], cwd=tmp_path))
    assert "running the built-in DEMO" in demo.stdout
    demo_out = tmp_path / "results" / "bestrq2_vit_demo" / "1986"
    assert f"Writing to {os.path.relpath(demo_out, tmp_path)}" in demo.stdout
    assert (demo_out / "run_fingerprint.json").is_file()
    before = snapshot(demo_out)

    own = run([*tiny, f"--data_folder={audio_a}", *SHORT], cwd=tmp_path)
    ok(own)
    assert "DEMO" not in own.stdout
    own_out = tmp_path / "results" / "bestrq2_vit" / "1986"
    assert "Would load a checkpoint here, but none found" in own.stdout + own.stderr
    assert snapshot(demo_out) == before  # the demo is intact
    assert sorted(own_out.glob("save/CKPT+*"))
    record = json.loads((own_out / "run_fingerprint.json").read_text())
    assert record["data"]["where"] == str(audio_a)
    assert "demo_" not in (own_out / "manifests" / "train.csv").read_text()
    demo_train = (demo_out / "manifests" / "train.csv").read_text()
    assert "demo_" in demo_train
