"""Tests of benchmarks/probe_vs_steps.py: one run, stopped, probed and resumed.

The smoke run needs the shared data next to the repository and is skipped
without it.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "probe_vs_steps.py"
SHARED = REPO.parent / "shared" / "data"

sys.path.insert(0, str(SCRIPT.parent))
import probe_vs_steps  # noqa: E402


def run_script(*args):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_probe_points_default_and_bounds():
    assert probe_vs_steps.parse_args(["--steps", "100"]).probe_at == [25, 50, 75, 100]
    assert probe_vs_steps.parse_args(["--quick"]).probe_at == [2, 4]
    args = probe_vs_steps.parse_args(["--steps", "10", "--probe_at", "10", "5", "5"])
    assert args.probe_at == [5, 10]
    with pytest.raises(SystemExit):
        probe_vs_steps.parse_args(["--steps", "10", "--probe_at", "20"])


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")
def test_quick_run_stops_probes_and_resumes_one_run(tmp_path):
    out = tmp_path / "pvs"
    extra = ["--target_norm", "utterance_patch", "--frame_readout", "concat"]
    proc = run_script("--quick", "--output_folder", out, *extra)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert [p["step"] for p in results["points"]] == [2, 4]
    for point in results["points"]:
        assert 0.0 <= point["overall_linear"] <= 1.0
        assert point["valid_loss"] is not None
        assert len(point["overall_linear_layers"]) == 2  # depth 1
    for step in (2, 4):
        config = json.loads((out / f"encoders/step{step}/config.json").read_text())
        assert config["info"]["steps"] == step and config["frame_readout"] == "concat"
    # the second stage resumed the first one's checkpoint: one run, one schedule
    resumed = (out / "logs" / "pretrain_to_step4.log").read_text()
    assert "Loading a checkpoint from" in resumed
    commands = (out / "commands.txt").read_text().splitlines()
    assert "--total_steps 4" in commands[0]
    assert "--optimizer_step_limit 2" in commands[0]
    assert "--optimizer_step_limit 4" in commands[3]
    assert "| 4 |" in (out / "report.md").read_text()
    assert (out / "probe_vs_steps.png").stat().st_size > 10_000
    again = run_script("--quick", "--output_folder", out, *extra)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "commands.txt").read_text().splitlines() == commands
