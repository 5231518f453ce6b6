"""Pictures of a pretraining run: training curves, one clip's masked prediction,
codebook usage, and the probe suite's bar chart.

Usage::

    python -m bestrq2_lobes.plots curves RUN_DIR curves.png
    python -m bestrq2_lobes.plots clip RUN_DIR AUDIO_FILE clip.png [--start S]
    python -m bestrq2_lobes.plots codebook RUN_DIR MANIFEST.csv codebook.png \
        [--data_root DIR] [--max_clips N]
    python -m bestrq2_lobes.plots probe RESULTS.json probe.png

``RUN_DIR`` is a pretraining output folder. ``clip`` and ``codebook`` rebuild the
run's model from its own ``hyperparams.yaml`` (HyperPyYAML, which constructs
objects: use them on your own runs only) and load its latest checkpoint.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from bestrq2_lobes.plots.probe_chart import plot_results  # noqa: E402

CURVES = [
    ("loss", "masked-prediction loss"),
    ("accuracy", "masked-token accuracy"),
    ("perplexity", "target-code perplexity"),
    ("lr", "learning rate"),
    ("audio_sec_per_sec", "audio seconds / second"),
]


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The records of ``metrics.jsonl`` of a pretraining run."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics log (is {run_dir} a run folder?)")
    with open(path, encoding="utf-8") as fin:
        return [json.loads(line) for line in fin if line.strip()]


def plot_training_curves(run_dir: str | os.PathLike, out: str | os.PathLike) -> str:
    """Loss, accuracy, code perplexity, lr and throughput against steps.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> rows = [{"stage": "train", "step": s, "loss": 9 - s, "accuracy": s / 10,
    ...          "perplexity": 100.0, "lr": 1e-4, "audio_sec_per_sec": 50.0}
    ...         for s in range(1, 5)]
    >>> _ = (tmp / "metrics.jsonl").write("\\n".join(json.dumps(r) for r in rows))
    >>> os.path.getsize(plot_training_curves(tmp, tmp / "c.png")) > 0
    True
    """
    records = read_metrics(run_dir)
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    for ax, (key, title) in zip(axes, CURVES, strict=True):
        for stage, style in (("train", "-"), ("valid", "o--")):
            points = [
                (r["step"], r[key]) for r in records if r["stage"] == stage and key in r
            ]
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, style, label=stage, markersize=3)
        ax.set_title(title)
        ax.set_xlabel("optimiser step")
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Pretraining run {Path(run_dir).resolve().name}")
    return _save(fig, out)


def load_run(run_dir: str | os.PathLike):
    """Rebuilds a run's hparams from its ``hyperparams.yaml`` and latest checkpoint."""
    from hyperpyyaml import load_hyperpyyaml

    path = Path(run_dir) / "hyperparams.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (is {run_dir} a run folder?)")
    with open(path, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin)
    ckpt = hparams["checkpointer"].recover_if_possible()
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint to load")
    hparams["model"].eval()
    return hparams


@torch.no_grad()
def plot_clip_predictions(
    run_dir: str | os.PathLike,
    audio: str | os.PathLike,
    out: str | os.PathLike,
    start: float = 0.0,
    seed: int = 0,
) -> dict:
    """Log-mel of one clip, masked cells shaded, each marked right or wrong.

    Returns the figure path and the clip's masked-token accuracy.
    """
    from bestrq2_lobes.data.audio import read_segment

    hparams = load_run(run_dir)
    model = hparams["model"]
    wav = read_segment(audio, start, hparams["crop_seconds"], hparams["sample_rate"])
    generator = torch.Generator().manual_seed(seed)
    output = model(wav.unsqueeze(0), None, generator=generator)
    feats = model.frontend(wav.unsqueeze(0))[0]
    grid = model.encoder.grid
    predicted = output.logits[0][0].argmax(dim=-1)
    target = output.targets[0, :, 0]
    hits = (predicted == target).tolist()
    cells = output.plan.masked_idx[0].tolist()

    fig, ax = plt.subplots(figsize=(12, 4))
    ax.imshow(feats.numpy(), origin="lower", aspect="auto", cmap="magma")
    for idx, hit in zip(cells, hits, strict=True):
        row, col = idx % grid.freq_rows, idx // grid.freq_rows
        x0, y0 = col * grid.patch_time - 0.5, row * grid.patch_freq - 0.5
        ax.add_patch(
            plt.Rectangle(
                (x0, y0), grid.patch_time, grid.patch_freq, color="white", alpha=0.35
            )
        )
        ax.text(
            x0 + grid.patch_time / 2,
            y0 + grid.patch_freq / 2,
            "✓" if hit else "✗",
            color="lime" if hit else "red",
            ha="center",
            va="center",
            fontsize=9,
            fontweight="bold",
        )
    for col in range(feats.shape[1] // grid.patch_time + 1):
        ax.axvline(col * grid.patch_time - 0.5, color="white", lw=0.3)
    for row in range(grid.freq_rows + 1):
        ax.axhline(row * grid.patch_freq - 0.5, color="white", lw=0.3)
    accuracy = sum(hits) / max(1, len(hits))
    ax.set_title(
        f"{Path(audio).name}: {len(cells)} masked cells (shaded), "
        f"predicted code right on {sum(hits)} ({accuracy:.0%})"
    )
    ax.set_xlabel("frame")
    ax.set_ylabel("mel band")
    return {"path": _save(fig, out), "accuracy": accuracy}


@torch.no_grad()
def plot_codebook_usage(
    run_dir: str | os.PathLike,
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    data_root: str | None = None,
    max_clips: int | None = None,
) -> dict:
    """Histogram of the target codes of every valid patch of a dataset.

    The codes are computed as training computes its targets: through the run's
    target normalisation (``target_norm``) and quantizer
    (``MaskedPretrainingModel.target_codes``), each clip alone.

    Returns the figure path, the perplexity and the number of dead codes.
    """
    from tqdm import tqdm

    from bestrq2_lobes.data.datasets import audio_dataset

    hparams = load_run(run_dir)
    model = hparams["model"]
    quantizer, grid = model.quantizer, model.encoder.grid
    dataset = audio_dataset(manifest, data_root, hparams["sample_rate"])
    counts = torch.zeros(quantizer.num_codebooks, quantizer.codebook_size)
    total = len(dataset) if max_clips is None else min(max_clips, len(dataset))
    for i in tqdm(range(total), desc="quantizing", disable=not sys.stderr.isatty()):
        wav = dataset[i]["sig"].unsqueeze(0)
        if wav.shape[1] < model.min_seconds * hparams["sample_rate"]:
            continue
        patches = grid.patchify(model.frontend(wav))
        codes = model.target_codes(patches)[0].T
        for q in range(quantizer.num_codebooks):
            counts[q] += torch.bincount(codes[q], minlength=quantizer.codebook_size)
    usage = counts[0]
    probs = usage / usage.sum().clamp(min=1)
    nz = probs[probs > 0]
    perplexity = math.exp(float(-(nz * nz.log()).sum()))
    dead = int((usage == 0).sum())

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.6))
    left.bar(range(len(usage)), usage.numpy(), width=1.0)
    left.set_xlabel("code id")
    left.set_ylabel("patches")
    left.set_title("target codes")
    ranked = usage.sort(descending=True).values
    right.loglog(range(1, len(ranked) + 1), ranked.clamp(min=0.5).numpy())
    right.set_xlabel("code rank")
    right.set_title("rank-frequency")
    fig.suptitle(
        f"{int(usage.sum())} patches from {total} clips: perplexity {perplexity:.1f}, "
        f"{dead} of {len(usage)} codes never used"
    )
    return {"path": _save(fig, out), "perplexity": perplexity, "dead_codes": dead}


def _save(fig, out) -> str:
    out = os.fspath(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bestrq2_lobes.plots")
    sub = parser.add_subparsers(dest="command", required=True)
    curves = sub.add_parser("curves", help="training curves of a run")
    curves.add_argument("run_dir")
    curves.add_argument("out")
    clip = sub.add_parser("clip", help="one clip's masked prediction")
    clip.add_argument("run_dir")
    clip.add_argument("audio")
    clip.add_argument("out")
    clip.add_argument("--start", type=float, default=0.0)
    clip.add_argument("--seed", type=int, default=0)
    codebook = sub.add_parser("codebook", help="codebook usage over a manifest")
    codebook.add_argument("run_dir")
    codebook.add_argument("manifest")
    codebook.add_argument("out")
    codebook.add_argument("--data_root", default=None)
    codebook.add_argument("--max_clips", type=int, default=None)
    probe = sub.add_parser("probe", help="bar chart of probe results.json")
    probe.add_argument("results")
    probe.add_argument("out")
    args = parser.parse_args(argv)
    try:
        if args.command == "curves":
            info = {"path": plot_training_curves(args.run_dir, args.out)}
        elif args.command == "clip":
            info = plot_clip_predictions(
                args.run_dir, args.audio, args.out, args.start, args.seed
            )
        elif args.command == "codebook":
            info = plot_codebook_usage(
                args.run_dir, args.manifest, args.out, args.data_root, args.max_clips
            )
        else:
            with open(args.results, encoding="utf-8") as fin:
                info = {"path": plot_results(json.load(fin), args.out)}
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in info.items()
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
