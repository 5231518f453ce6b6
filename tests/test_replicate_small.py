"""Tests of benchmarks/replicate_small.py: its helpers, and a smoke run.

The smoke run (``--quick``: a tiny model, 4 steps, probes in debug mode) needs
the shared data next to the repository and is skipped without it.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "replicate_small.py"
SHARED = REPO.parent / "shared" / "data"

sys.path.insert(0, str(SCRIPT.parent))
import replicate_small  # noqa: E402


def run_script(*args, timeout=600):
    """Runs the script in a subprocess and returns the completed process."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def fake_summary(scores):
    """A summary as ``summarise`` builds it, from overall linear scores."""
    runs = {
        key: [
            {"overall_linear": v, "overall_knn": v, "t_linear": v, "t_knn": v}
            for v in values
        ]
        for key, values in scores.items()
    }
    return replicate_small.summarise(runs)


def test_claims_compare_linear_overall_means_and_every_seed():
    summary = fake_summary(
        {
            "bestrq2": [0.6, 0.5],
            "onestage": [0.5, 0.5],
            "random": [0.55, 0.45],
            "logmel": [0.52],
        }
    )
    assert replicate_small.claims(summary) == [
        ("BEST-RQ-2 > one-stage", True),
        ("both > random-weights encoder", False),
        ("both > log-mel statistics", False),
        ("BEST-RQ-2 > log-mel statistics in every seed", False),  # 0.5 < 0.52
        ("BEST-RQ-2 > one-stage in every seed", False),  # a tie in seed 2
        ("BEST-RQ-2 > random weights in every seed", True),  # seed by seed
    ]


def test_report_shows_mean_and_spread_and_claims():
    summary = fake_summary(
        {
            "bestrq2": [0.6, 0.4],
            "onestage": [0.3, 0.3],
            "random": [0.2],
            "logmel": [0.1],
        }
    )
    text = replicate_small.report(summary, ["t"], [1, 2])
    assert "| t linear | 0.500 ± 0.141 | 0.300 ± 0.000 | 0.200 | 0.100 |" in text
    assert "- BEST-RQ-2 > one-stage: holds" in text
    assert "NOT" not in text


def test_tasks_are_rerooted_on_the_data_dir(tmp_path):
    out = replicate_small.write_tasks(tmp_path / "data", tmp_path / "tasks.yaml")
    tasks = yaml.safe_load(out.read_text())
    assert [t["name"] for t in tasks] == [
        "asterisk_words",
        "gm_instruments",
        "office_events",
    ]
    assert tasks[0]["train_csv"] == str(tmp_path / "data/asterisk_prompts/train.csv")
    events = tasks[2]["prepare"]["events"]["test"]
    assert events == str(tmp_path / "data/office_sed/test_events.tsv")


def test_missing_data_is_a_one_line_error(tmp_path):
    proc = run_script("--data_dir", tmp_path, "--output_folder", tmp_path / "out")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"{tmp_path}: no asterisk_prompts, gm_mixtures, office_sed (train.csv) here"
    )


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")
def test_quick_run_end_to_end_and_resume(tmp_path):
    out = tmp_path / "rep"
    paper = REPO / "docs" / "small_scale_replication_results.json"
    normalised = ["--target_norm", "patch", "--input_norm", "band"]
    normalised += ["--frame_readout", "concat"]
    proc = run_script(
        "--quick", "--output_folder", out, *normalised, "--paper_default", paper
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    for key in ("bestrq2", "onestage", "random", "logmel"):
        assert 0.0 <= results[key] <= 1.0
        assert results[key] == results["summary"][key]["overall_linear"]["mean"]
    assert results["seeds"] == [1]
    assert len(results["claims"]) == 6
    report = (out / "report.md").read_text()
    assert "| overall linear |" in report
    assert "Overall linear score of a probe on each hidden state" in report
    layers = results["summary"]["bestrq2"]["overall_linear_layers"]
    assert len(layers) == 2  # depth 1: the patch embeddings and the last block
    earlier = json.loads(paper.read_text())
    assert results["paper_default"]["bestrq2"] == earlier["bestrq2"]
    assert (out / "curves.png").stat().st_size > 10_000
    commands = (out / "commands.txt").read_text().splitlines()
    assert len(commands) == 8  # 2 pretrain + 2 export + 4 probe runs
    assert "hparams/bestrq_vit_onestage.yaml" in commands[2]
    for pretraining in (commands[0], commands[2]):  # the same targets for both
        assert "--target_norm patch --input_norm band" in pretraining
    for probe in commands[4:7]:  # both encoders and the random weights
        assert "--probe_layers all --frame_readout concat" in probe
    assert "logmel" in commands[-1] and "frame_readout" not in commands[-1]
    exported = json.loads((out / "encoders/bestrq2_seed1/config.json").read_text())
    assert exported["frame_readout"] == "concat"
    # Rerun: every stage's output exists, so nothing runs again.
    again = run_script("--quick", "--output_folder", out, *normalised)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "commands.txt").read_text().splitlines() == commands
    assert (
        json.loads((out / "results.json").read_text())["bestrq2"] == results["bestrq2"]
    )
