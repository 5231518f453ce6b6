"""Small-scale replication of the paper's claim on the shared real audio.

Pretrains a small ViT with BEST-RQ-2 (two-step) and with the one-stage
baseline under identical settings (data, steps, masks, quantizer, optimiser;
only the model differs), for one or more seeds; scores each encoder with the
probe suite (linear probe and kNN on speech, music and environment tasks); and
scores the two no-pretraining baselines (the same architecture with random
weights, one per seed; log-mel statistics). Writes ``results.json``,
``report.md`` and ``curves.png`` in the output folder.

    python benchmarks/replicate_small.py                 # the documented run
    python benchmarks/replicate_small.py --seeds 1 --steps 500   # shorter
    python benchmarks/replicate_small.py --quick         # smoke run, ~1 min
    python benchmarks/replicate_small.py --target_norm patch --input_norm band \
        --output_folder results/replicate_normalized \
        --paper_default docs/small_scale_replication_results.json

``--target_norm`` and ``--input_norm`` go to both models' pretraining (same
targets for both); ``--probe_layers all`` (the default) adds the per-layer
linear scores to the probe results, the last layer staying the headline;
``--paper_default`` adds the keys of an earlier ``results.json`` (the paper's
configuration) under ``paper_default``, beside this run's ``bestrq2``,
``onestage``, ``random`` and ``logmel``.

Every stage is a subprocess running the project's own recipes (the exact
commands go to ``commands.txt``); a stage whose output exists is not rerun, so
an interrupted run continues where it stopped when the command is repeated.
The pretraining data is the union of the train splits of ``asterisk_prompts``,
``gm_mixtures`` and ``office_sed`` (their valid splits give the pretraining
valid loss); the probes use the tasks of ``recipes/probe/tasks_shared.yaml``.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data"
TASKS_FILE = REPO / "recipes" / "probe" / "tasks_shared.yaml"
CORPORA = ("asterisk_prompts", "gm_mixtures", "office_sed")
MODELS = {"bestrq2": "bestrq2_vit.yaml", "onestage": "bestrq_vit_onestage.yaml"}
# Encoders scored per seed, and the one scored once (it has no weights).
PER_SEED = ("bestrq2", "onestage", "random")
KEYS = (*PER_SEED, "logmel")
LAYERS = "overall_linear_layers"  # per-layer curve of --probe_layers all


def build_parser(description: str = __doc__) -> argparse.ArgumentParser:
    """The options of a run (defaults: the run of docs/small_scale_replication.md)."""
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    add = parser.add_argument
    add("--data_dir", type=Path, default=DEFAULT_DATA, help="the shared data")
    add("--output_folder", type=Path, default=Path("results/replicate_small"))
    add("--seeds", type=int, nargs="+", default=[1, 2])
    add("--steps", type=int, default=1200, help="optimiser steps per run")
    add("--batch_size", type=int, default=32)
    add("--crop_seconds", type=float, default=5.0)
    add("--lr", type=float, default=5e-4)
    add("--embed_dim", type=int, default=384)
    add("--depth", type=int, default=6)
    add("--num_heads", type=int, default=6)
    add("--predictor_depth", type=int, default=2)
    add(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="pretraining precision; auto: bf16 on CUDA with bf16 and on CPUs with "
        "AMX or AVX512-BF16, fp32 elsewhere (bf16 is emulated on AVX2, ~25x slower)",
    )
    add("--device", default="cpu")
    add("--num_workers", type=int, default=1)
    add("--target_norm", default="none", help="target_norm of both models")
    add("--input_norm", default="none", help="input_norm of both models")
    add(
        "--frame_readout",
        default="mean",
        choices=["mean", "concat"],
        help="frame read-out of every encoder and of the random baseline",
    )
    add("--probe_layers", default="all", choices=["last", "all"])
    add(
        "--paper_default",
        type=Path,
        default=None,
        help="results.json of a paper-configuration run, kept under paper_default",
    )
    add(
        "--quick",
        action="store_true",
        help="smoke run: a tiny model, a few steps, probes in --debug mode",
    )
    return parser


def parse_args(argv=None, parser: argparse.ArgumentParser | None = None):
    """Parsed options; ``--quick`` shrinks the model, the steps and the seeds.

    ``--precision auto`` is resolved here, for ``--device``, with one line
    saying what it chose (``bestrq2_lobes.training.precision``); the request
    and the reason are kept in ``args.precision_requested`` and
    ``args.precision_reason``.
    """
    from bestrq2_lobes.training.precision import resolve_and_report

    args = (parser or build_parser()).parse_args(argv)
    args.precision_requested = args.precision
    args.precision, args.precision_reason = resolve_and_report(
        args.precision, args.device
    )
    if args.quick:
        args.steps, args.batch_size, args.seeds = 4, 4, args.seeds[:1]
        args.embed_dim, args.depth, args.num_heads, args.predictor_depth = 32, 1, 2, 1
        args.num_workers = 0
    return args


class Runner:
    """Runs stages as subprocesses; logs each to a file and its command to a list."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.commands_file = folder / "commands.txt"

    def run(self, name: str, command: list[str]) -> None:
        """Runs ``command`` from the repository root; stops with its log on failure."""
        log = self.folder / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        shown = " ".join(str(c) for c in command).replace(sys.executable, "python")
        with open(self.commands_file, "a", encoding="utf-8") as fout:
            fout.write(shown + "\n")
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {shown}", flush=True)
        started = time.time()
        with open(log, "w", encoding="utf-8") as fout:
            code = subprocess.call(
                [str(c) for c in command],
                cwd=REPO,
                stdout=fout,
                stderr=subprocess.STDOUT,
            )
        if code != 0:
            tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
            sys.exit(f"{name} failed (exit {code}); log {log}:\n" + "\n".join(tail))
        print(
            f"    done in {(time.time() - started) / 60:.1f} min, log {log}", flush=True
        )


def write_union_manifests(data_dir: Path, folder: Path) -> dict[str, Path]:
    """``train.csv``/``valid.csv``: the union of the corpora's splits, absolute paths.

    Example
    -------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for corpus in CORPORA:
    ...     (root / corpus).mkdir()
    ...     for split in ("train", "valid"):
    ...         _ = (root / corpus / f"{split}.csv").write_text(
    ...             "ID,duration,wav\\na,1.0,$data_root/audio/a.flac\\n")
    >>> paths = write_union_manifests(root, root / "out")
    >>> rows = list(csv.DictReader(open(paths["train"])))
    >>> [r["ID"] for r in rows]
    ['asterisk_prompts_a', 'gm_mixtures_a', 'office_sed_a']
    >>> rows[0]["wav"] == str(root / "asterisk_prompts" / "audio" / "a.flac")
    True
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split in ("train", "valid"):
        paths[split] = folder / f"{split}.csv"
        with open(paths[split], "w", newline="", encoding="utf-8") as fout:
            writer = csv.writer(fout)
            writer.writerow(["ID", "duration", "wav"])
            for corpus in CORPORA:
                source = data_dir / corpus / f"{split}.csv"
                with open(source, newline="", encoding="utf-8") as fin:
                    for row in csv.DictReader(fin):
                        wav = row["wav"].replace("$data_root", str(data_dir / corpus))
                        writer.writerow([f"{corpus}_{row['ID']}", row["duration"], wav])
    return paths


def write_tasks(data_dir: Path, out: Path) -> Path:
    """The shared probe tasks with their paths re-rooted on ``data_dir``."""
    tasks = yaml.safe_load(TASKS_FILE.read_text(encoding="utf-8"))

    def reroot(value):
        if isinstance(value, dict):
            return {k: reroot(v) for k, v in value.items()}
        if isinstance(value, str) and value.endswith((".csv", ".tsv")):
            path = os.path.normpath(TASKS_FILE.parent / value)
            return str(data_dir / os.path.relpath(path, DEFAULT_DATA))
        return value

    out.write_text(yaml.safe_dump([reroot(t) for t in tasks]), encoding="utf-8")
    return out


def machine(args) -> dict:
    """The CPU (model, torch's capability, AMX, AVX512-BF16) and precision of a run."""
    from bestrq2_lobes.training.precision import machine_record

    return machine_record(
        args.device, args.precision_requested, args.precision, args.precision_reason
    )


def pretrain_command(args, model: str, seed: int, manifests, out: Path) -> list:
    """The recipe command of one pretraining run (only the hparams file differs)."""
    command = [
        sys.executable, "recipes/pretrain/train.py", f"hparams/{MODELS[model]}",
        "--train_csv", manifests["train"], "--valid_csv", manifests["valid"],
        "--output_folder", out, "--seed", seed, "--device", args.device,
        "--precision", args.precision, "--total_steps", args.steps,
        "--batch_size", args.batch_size, "--crop_seconds", args.crop_seconds,
        "--lr", args.lr, "--embed_dim", args.embed_dim, "--depth", args.depth,
        "--num_heads", args.num_heads, "--num_workers", args.num_workers,
        "--log_interval", max(1, min(25, args.steps // 4)),
        "--check_manifest_audio", "False",
        "--target_norm", args.target_norm, "--input_norm", args.input_norm,
        "--frame_readout", args.frame_readout,
    ]  # fmt: skip
    if model == "bestrq2":
        command += ["--predictor_depth", args.predictor_depth]
    return command


def probe_command(args, tasks: Path, out: Path, seed: int, encoder_dir, baseline):
    """The probe-suite command for an encoder or a baseline."""
    command = [
        sys.executable, "recipes/probe/train.py", "hparams/probe.yaml",
        "--tasks", tasks, "--output_folder", out, "--seed", seed,
        "--device", args.device, "--encoder_dir", encoder_dir,
        "--precision", "fp32",  # scores comparable across machines, as recorded
    ]  # fmt: skip
    if baseline:
        command += ["--baseline", baseline]
    if baseline != "logmel":
        command += ["--probe_layers", args.probe_layers]
        command += ["--frame_readout", args.frame_readout]
    if args.quick:
        command += ["--debug", "--debug_batches", "2", "--debug_epochs", "2"]
    return command


def summarise(scores: dict[str, list[dict]]) -> dict:
    """Per key: every flat probe result averaged over seeds, with its spread.

    Example
    -------
    >>> s = summarise({"a": [{"overall_linear": 0.5}, {"overall_linear": 0.7}]})
    >>> stat = s["a"]["overall_linear"]
    >>> round(stat["mean"], 3), round(stat["std"], 3)
    (0.6, 0.141)
    """
    summary = {}
    for key, runs in scores.items():
        metrics = [m for m, v in runs[0].items() if isinstance(v, (int, float))]
        summary[key] = {}
        for metric in metrics:
            values = [run[metric] for run in runs]
            summary[key][metric] = {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "values": values,
            }
        curves = [run[LAYERS] for run in runs if LAYERS in run]
        if len(curves) == len(runs):  # the per-layer curve, averaged over seeds
            summary[key][LAYERS] = [
                statistics.fmean(v) for v in zip(*curves, strict=True)
            ]
    return summary


def claims(summary: dict) -> list[tuple[str, bool]]:
    """The issue's statements on the linear-probe overall scores.

    The first three compare means over seeds (the paper's claims); the last
    three hold only if BEST-RQ-2 wins in every seed, against the same seed's
    one-stage and random-weights encoders and against log-mel statistics.
    """
    score = {k: summary[k]["overall_linear"]["mean"] for k in KEYS}
    seeds = {k: summary[k]["overall_linear"]["values"] for k in KEYS}
    both = ("bestrq2", "onestage")

    def every_seed(other):
        pairs = zip(seeds["bestrq2"], seeds[other], strict=False)
        return all(ours > theirs for ours, theirs in pairs)

    return [
        ("BEST-RQ-2 > one-stage", score["bestrq2"] > score["onestage"]),
        (
            "both > random-weights encoder",
            all(score[m] > score["random"] for m in both),
        ),
        ("both > log-mel statistics", all(score[m] > score["logmel"] for m in both)),
        (
            "BEST-RQ-2 > log-mel statistics in every seed",
            all(v > score["logmel"] for v in seeds["bestrq2"]),
        ),
        ("BEST-RQ-2 > one-stage in every seed", every_seed("onestage")),
        ("BEST-RQ-2 > random weights in every seed", every_seed("random")),
    ]


def report(summary: dict, tasks: list[str], seeds: list[int]) -> str:
    """Markdown: per-task, per-domain and overall means (spread over seeds)."""

    def cell(key, metric):
        if metric not in summary[key]:
            return "-"
        stat = summary[key][metric]
        spread = f" ± {stat['std']:.3f}" if len(stat["values"]) > 1 else ""
        return f"{stat['mean']:.3f}{spread}"

    rows = [f"{t}_{p}" for t in tasks for p in ("linear", "knn")]
    domains = sorted(
        m[len("domain_") : m.rindex("_")]
        for m in summary["bestrq2"]
        if m.startswith("domain_") and m.endswith("_linear")
    )
    rows += [f"domain_{d}_{p}" for d in domains for p in ("linear", "knn")]
    rows += [f"overall_{p}" for p in ("linear", "knn")]
    if all("overall_best_layer_linear" in summary[k] for k in PER_SEED):
        rows.append("overall_best_layer_linear")
    lines = [
        f"Seeds: {', '.join(map(str, seeds))} (mean ± sample std over seeds; "
        "log-mel statistics have no seed).",
        "",
        "| score | BEST-RQ-2 | one-stage | random weights | log-mel stats |",
        "|---|---|---|---|---|",
    ]
    for metric in rows:
        label = metric.replace("_", " ")
        lines.append(f"| {label} | " + " | ".join(cell(k, metric) for k in KEYS) + " |")
    curves = {k: summary[k][LAYERS] for k in PER_SEED if LAYERS in summary[k]}
    if curves:
        width = max(len(c) for c in curves.values())
        lines += [
            "",
            "Overall linear score of a probe on each hidden state (0: the patch "
            "embeddings; the last is the headline), mean over seeds:",
            "",
            "| encoder | " + " | ".join(str(i) for i in range(width)) + " |",
            "|" + "---|" * (width + 1),
        ]
        for key, curve in curves.items():
            lines.append(f"| {key} | " + " | ".join(f"{v:.3f}" for v in curve) + " |")
    lines += ["", "Claims (linear-probe overall means):", ""]
    for text, holds in claims(summary):
        lines.append(f"- {text}: {'holds' if holds else 'does NOT hold'}")
    return "\n".join(lines) + "\n"


def plot_curves(runs: dict[str, Path], out: Path) -> None:
    """Train loss and valid accuracy against the step, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, folder in runs.items():
        records = [
            json.loads(line)
            for line in (folder / "metrics.jsonl").read_text().splitlines()
        ]
        for ax, stage, key in (
            (axes[0], "train", "loss"),
            (axes[1], "valid", "accuracy"),
        ):
            points = [(r["step"], r[key]) for r in records if r["stage"] == stage]
            style = "-" if "bestrq2" in name else "--"
            ax.plot(*zip(*points, strict=True), label=name, linestyle=style)
    axes[0].set(xlabel="optimiser step", ylabel="train loss (masked CE)")
    axes[1].set(xlabel="optimiser step", ylabel="valid accuracy (masked targets)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    """Pretrains, exports and probes every model and seed; writes the report."""
    args = parse_args(argv)
    missing = [c for c in CORPORA if not (args.data_dir / c / "train.csv").is_file()]
    if missing:
        print(
            f"{args.data_dir}: no {', '.join(missing)} (train.csv) here",
            file=sys.stderr,
        )
        return 2
    out = args.output_folder.resolve()
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(out)
    manifests = write_union_manifests(args.data_dir, out / "manifests")
    tasks = write_tasks(args.data_dir, out / "tasks.yaml")
    started = time.time()
    scores: dict[str, list[dict]] = {key: [] for key in KEYS}
    runs = {}
    for seed in args.seeds:
        for model in MODELS:
            run_dir = out / "pretrain" / f"{model}_seed{seed}"
            encoder_dir = out / "encoders" / f"{model}_seed{seed}"
            runs[f"{model} seed {seed}"] = run_dir
            if not (encoder_dir / "config.json").is_file():
                command = pretrain_command(args, model, seed, manifests, run_dir)
                runner.run(f"pretrain_{model}_seed{seed}", command)
                runner.run(
                    f"export_{model}_seed{seed}",
                    [
                        sys.executable,
                        "-m",
                        "bestrq2_lobes.lobe.export",
                        run_dir,
                        encoder_dir,
                    ],
                )
        evaluations = [(m, m, None) for m in MODELS] + [("random", "bestrq2", "random")]
        if seed == args.seeds[0]:
            evaluations.append(("logmel", "bestrq2", "logmel"))
        for key, model, baseline in evaluations:
            name = f"probe_{key}" + ("" if key == "logmel" else f"_seed{seed}")
            probe_dir = out / "probes" / name
            if not (probe_dir / "results.json").is_file():
                encoder_dir = out / "encoders" / f"{model}_seed{seed}"
                command = probe_command(
                    args, tasks, probe_dir, seed, encoder_dir, baseline
                )
                runner.run(name, command)
            scores[key].append(json.loads((probe_dir / "results.json").read_text()))

    summary = summarise(scores)
    task_names = list(scores["bestrq2"][0]["tasks"])
    results = {key: summary[key]["overall_linear"]["mean"] for key in KEYS}
    results["seeds"] = args.seeds
    results["claims"] = {text: holds for text, holds in claims(summary)}
    results["summary"] = summary
    results["settings"] = {k: str(v) for k, v in vars(args).items()}
    results["machine"] = machine(args)
    if args.paper_default is not None:
        earlier = json.loads(args.paper_default.read_text(encoding="utf-8"))
        results["paper_default"] = {key: earlier[key] for key in KEYS}
        results["paper_default"]["source"] = str(args.paper_default)
    plot_curves(runs, out / "curves.png")
    write_outputs(
        out,
        results,
        report(summary, task_names, args.seeds),
        f"Replication finished in {(time.time() - started) / 60:.1f} min: "
        + ", ".join(f"{k} {results[k]:.3f}" for k in KEYS)
        + " (linear overall)",
    )
    return 0


def write_outputs(out: Path, results: dict, report_text: str, summary: str) -> None:
    """Writes ``results.json`` and ``report.md``; prints the report and a summary."""
    (out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    (out / "report.md").write_text(report_text, encoding="utf-8")
    print(report_text)
    print(f"{summary}; {out / 'results.json'}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
