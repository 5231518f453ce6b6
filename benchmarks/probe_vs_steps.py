"""Probe score against pretraining steps: one run, probed along the way.

Pretrains one model (BEST-RQ-2 by default) for ``--steps`` optimiser steps, its
learning-rate schedule set by that length, and stops it at each step of
``--probe_at``: the run checkpoints there (SpeechBrain's
``--optimizer_step_limit``), its encoder is exported and scored by the probe
suite, and the next stage resumes the same run from that checkpoint. So the
curve is the one run's, not several shorter runs with shorter schedules. The
log-mel statistics baseline is scored once, as the line to beat. Writes
``results.json``, ``report.md`` and ``probe_vs_steps.png`` in the output folder.

    python benchmarks/probe_vs_steps.py --target_norm utterance_patch \\
        --frame_readout concat --steps 4800 --probe_at 1200 2400 3600 4800 \\
        --output_folder results/probe_vs_steps
    python benchmarks/probe_vs_steps.py --quick   # smoke run, ~1 min

The other options (data, model sizes, batch, crop, precision, normalisations)
are those of ``benchmarks/replicate_small.py``, with the same defaults; the run
uses the first of ``--seeds``. A stage whose output exists is not rerun, so an
interrupted run continues when the command is repeated. A stop and resume at a
probe point starts a new epoch of the data order (the stopped epoch is cut
short), which a run without stops would not do; the weights and the learning
rate carry over exactly.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import replicate_small  # noqa: E402  (the sibling script's stages and options)

LAYERS = replicate_small.LAYERS
CURVES = ("overall_linear", "overall_valid_linear", "overall_best_layer_linear")


def parse_args(argv=None):
    """``replicate_small``'s options plus ``--model`` and ``--probe_at``."""
    parser = replicate_small.build_parser(__doc__)
    parser.add_argument(
        "--model", default="bestrq2", choices=list(replicate_small.MODELS)
    )
    parser.add_argument(
        "--probe_at",
        type=int,
        nargs="+",
        default=None,
        help="steps at which to probe (default: 4 even points, 2 with --quick)",
    )
    parser.set_defaults(steps=4800, output_folder=Path("results/probe_vs_steps"))
    args = replicate_small.parse_args(argv, parser)
    if args.probe_at is None:
        count = 2 if args.quick else 4
        args.probe_at = [args.steps * k // count for k in range(1, count + 1)]
    points = sorted(set(args.probe_at))
    if points[0] < 1 or points[-1] > args.steps:
        parser.error(f"--probe_at must lie in [1, --steps={args.steps}]")
    args.probe_at = points
    return args


def valid_loss_at(run_dir: Path, step: int) -> float | None:
    """The last validation loss logged at or before ``step`` (metrics.jsonl).

    Example
    -------
    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp())
    >>> _ = (run / "metrics.jsonl").write_text(
    ...     '{"stage": "valid", "step": 5, "loss": 2.0}\\n'
    ...     '{"stage": "train", "step": 6, "loss": 1.0}\\n'
    ...     '{"stage": "valid", "step": 9, "loss": 1.5}\\n')
    >>> valid_loss_at(run, 8), valid_loss_at(run, 9), valid_loss_at(run, 1)
    (2.0, 1.5, None)
    """
    loss = None
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["stage"] == "valid" and record["step"] <= step:
            loss = record["loss"]
    return loss


def report(points: list[dict], logmel: float) -> str:
    """Markdown table of the probe scores at each step, and the baseline.

    Example
    -------
    >>> row = {"step": 10, "valid_loss": 2.5, "overall_linear": 0.5,
    ...        "overall_valid_linear": 0.6, "overall_best_layer_linear": 0.55}
    >>> print(report([row], 0.4).splitlines()[2])
    | 10 | 2.500 | 0.500 | 0.600 | 0.550 |
    """
    lines = [
        "| step | valid loss | overall linear (test) | overall linear (valid) "
        "| best layer by valid (test) |",
        "|---|---|---|---|---|",
    ]
    for p in points:
        loss = "-" if p["valid_loss"] is None else f"{p['valid_loss']:.3f}"
        scores = " | ".join("-" if p.get(k) is None else f"{p[k]:.3f}" for k in CURVES)
        lines.append(f"| {p['step']} | {loss} | {scores} |")
    lines += ["", f"Log-mel statistics (no model): overall linear {logmel:.3f}."]
    return "\n".join(lines) + "\n"


def plot(points: list[dict], logmel: float, out: Path) -> None:
    """Probe scores and valid loss against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [p["step"] for p in points]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in zip(
        CURVES,
        ("test, last layer", "valid, last layer", "test, best layer by valid"),
        strict=True,
    ):
        ax.plot(steps, [p.get(key) for p in points], marker="o", label=label)
    ax.axhline(logmel, color="grey", linestyle=":", label="log-mel statistics (test)")
    ax.set(xlabel="optimiser step", ylabel="probe suite, overall linear")
    ax.grid(alpha=0.3)
    losses = [p["valid_loss"] for p in points]
    if all(v is not None for v in losses):
        twin = ax.twinx()
        twin.plot(steps, losses, color="black", alpha=0.4, linestyle="--")
        twin.set_ylabel("pretraining valid loss (dashed)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    """Pretrains in stages, probing the encoder at each stop; writes the report."""
    args = parse_args(argv)
    missing = [
        c
        for c in replicate_small.CORPORA
        if not (args.data_dir / c / "train.csv").is_file()
    ]
    if missing:
        print(
            f"{args.data_dir}: no {', '.join(missing)} (train.csv) here",
            file=sys.stderr,
        )
        return 2
    out = args.output_folder.resolve()
    out.mkdir(parents=True, exist_ok=True)
    runner = replicate_small.Runner(out)
    manifests = replicate_small.write_union_manifests(args.data_dir, out / "manifests")
    tasks = replicate_small.write_tasks(args.data_dir, out / "tasks.yaml")
    seed, started = args.seeds[0], time.time()
    run_dir = out / "pretrain" / f"{args.model}_seed{seed}"
    points = []
    for step in args.probe_at:
        encoder_dir = out / "encoders" / f"step{step}"
        if not (encoder_dir / "config.json").is_file():
            command = replicate_small.pretrain_command(
                args, args.model, seed, manifests, run_dir
            )
            runner.run(
                f"pretrain_to_step{step}", command + ["--optimizer_step_limit", step]
            )
            runner.run(
                f"export_step{step}",
                [
                    sys.executable,
                    "-m",
                    "bestrq2_lobes.lobe.export",
                    run_dir,
                    encoder_dir,
                ],
            )
        exported = json.loads((encoder_dir / "config.json").read_text())
        if exported["info"].get("steps") != step:
            sys.exit(
                f"{encoder_dir}: exported at step {exported['info'].get('steps')}, "
                f"expected {step}"
            )
        probe_dir = out / "probes" / f"step{step}"
        if not (probe_dir / "results.json").is_file():
            command = replicate_small.probe_command(
                args, tasks, probe_dir, seed, encoder_dir, None
            )
            runner.run(f"probe_step{step}", command)
        scores = json.loads((probe_dir / "results.json").read_text())
        points.append(
            {
                "step": step,
                "valid_loss": valid_loss_at(run_dir, step),
                **{key: scores.get(key) for key in CURVES},
                LAYERS: scores.get(LAYERS),
            }
        )
    logmel_dir = out / "probes" / "logmel"
    if not (logmel_dir / "results.json").is_file():
        encoder_dir = out / "encoders" / f"step{args.probe_at[0]}"
        command = replicate_small.probe_command(
            args, tasks, logmel_dir, seed, encoder_dir, "logmel"
        )
        runner.run("probe_logmel", command)
    logmel = json.loads((logmel_dir / "results.json").read_text())["overall_linear"]
    results = {
        "points": points,
        "logmel": logmel,
        "model": args.model,
        "seed": seed,
        "settings": {k: str(v) for k, v in vars(args).items()},
        "machine": replicate_small.machine(args),
    }
    plot(points, logmel, out / "probe_vs_steps.png")
    replicate_small.write_outputs(
        out,
        results,
        report(points, logmel),
        f"Probe against steps finished in {(time.time() - started) / 60:.1f} min: "
        + ", ".join(f"step {p['step']} {p['overall_linear']:.3f}" for p in points)
        + f" (log-mel {logmel:.3f})",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
