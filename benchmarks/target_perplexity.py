"""Code perplexity of the targets for each ``target_norm`` mode, on real audio.

For every mode (``none``, the paper; ``patch``; ``utterance``; ``global``) the
valid clips of the shared sets ``asterisk_prompts``, ``gm_mixtures`` and
``office_sed`` (``../shared/data/<set>/valid.csv``) are quantised as training
quantises its targets (``MaskedPretrainingModel.target_codes``): 10 s from the
start of each clip, each clip alone, every valid patch; the front end, the patch
grid and the quantizer (8192 codes, seed 42) of ``hparams/bestrq2_vit.yaml``.
Reported per set and pooled: the perplexity of the code histogram (exp of its
entropy) and the number of codes used. The ``global`` statistics are estimated
on the train splits of the three sets (every clip, manifest order, 10 s from
the start), never on a valid or test split. ``--input_norm global|band`` first
normalises the front end's output (the encoder's input, and so the quantizer's)
by statistics of the same train clips, as the recipe's ``input_norm`` does.

    python benchmarks/target_perplexity.py            # the documented run
    python benchmarks/target_perplexity.py --quick    # smoke run (4 clips a set)
    python benchmarks/target_perplexity.py --json     # last line: the JSON record
    python benchmarks/target_perplexity.py --input_norm band

Without the shared data it says so and exits with 0.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bestrq2_lobes.model.targets import TARGET_NORMS  # noqa: E402

SETS = ("asterisk_prompts", "gm_mixtures", "office_sed")
TINY = {  # the encoder and predictor do not matter here; keep them small
    "embed_dim": 32,
    "depth": 1,
    "num_heads": 4,
    "predictor_depth": 1,
}


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--data", default=str(REPO.parent / "shared" / "data"), help="shared data")
    add("--hparams", default=str(REPO / "hparams" / "bestrq2_vit.yaml"))
    add("--seconds", type=float, default=10.0, help="read from each clip's start")
    add(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an hparams override (YAML value), e.g. normalized_stft=False",
    )
    add(
        "--input_norm",
        choices=("none", "global", "band"),
        default="none",
        help="normalise the encoder input by train-clip statistics first",
    )
    add("--quick", action="store_true", help="4 valid and 4 train clips per set")
    add("--json", action="store_true", help="print the JSON record last")
    return parser.parse_args(argv)


def load_model(hparams_file: str, overrides: list[str] = ()):
    """The pretraining model of the hparams (small encoder), front end as is."""
    import yaml
    from hyperpyyaml import load_hyperpyyaml

    extra = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: --override {item}: expected KEY=VALUE")
        extra[key] = yaml.safe_load(value)
    with tempfile.TemporaryDirectory() as out, open(hparams_file) as fin:
        hparams = load_hyperpyyaml(fin, {**TINY, **extra, "output_folder": out})
    return hparams["model"].eval(), hparams


def clip_patches(model, manifest, data_root, limit, seconds, sample_rate):
    """Raw patches (1, tokens, patch_dim) of each usable clip of a manifest."""
    from bestrq2_lobes.training.target_stats import first_clips

    clips = first_clips(
        manifest, data_root, limit, seconds, sample_rate, model.min_seconds
    )
    return [model.encoder.grid.patchify(model.frontend(w[None])) for w in clips]


def main(argv=None) -> int:
    """Runs the measurement and prints the table (and the JSON record)."""
    args = parse_args(argv)
    data = Path(args.data)
    if not all((data / name / "valid.csv").is_file() for name in SETS):
        print(f"shared data not found in {data}: nothing to measure (skipped)")
        return 0
    from bestrq2_lobes.model.frontend import band_to_global
    from bestrq2_lobes.model.targets import (
        TargetNormalization,
        estimate_band_statistics,
    )
    from bestrq2_lobes.training.code_usage import code_perplexity
    from bestrq2_lobes.training.target_stats import first_clips

    torch.set_grad_enabled(False)
    started = time.time()
    model, hparams = load_model(args.hparams, args.override)
    sample_rate, quantizer = hparams["sample_rate"], model.quantizer
    limit = 4 if args.quick else 10**9
    train_clips = []  # one entry per clip read (the clips are not kept)

    def train_wavs():
        for name in SETS:
            manifest, root = data / name / "train.csv", str(data / name)
            for wav in first_clips(
                manifest, root, limit, args.seconds, sample_rate, model.min_seconds
            ):
                train_clips.append(name)
                yield wav

    grid = model.encoder.grid
    mean, std, frames = estimate_band_statistics(train_wavs(), model.frontend, grid)
    if args.input_norm != "none":  # the statistics of the normalised log-mel
        input_mean, input_std = mean, std
        if args.input_norm == "global":
            input_mean, input_std = (torch.tensor(v) for v in band_to_global(mean, std))
        model.frontend.set_normalization(input_mean, input_std)
        mean, std = (mean - input_mean) / input_std, std / input_std
    valid = {
        name: clip_patches(
            model,
            data / name / "valid.csv",
            str(data / name),
            limit,
            args.seconds,
            sample_rate,
        )
        for name in SETS
    }

    rows = []
    for mode in TARGET_NORMS:
        norm = TargetNormalization(mode, grid.n_mels, grid.patch_freq, grid.patch_time)
        if mode == "global":
            norm.set_statistics(mean, std, frames)
        model.target_norm = norm
        pooled = torch.zeros(quantizer.codebook_size, dtype=torch.long)
        record = {"target_norm": mode}
        for name in SETS:
            counts = torch.zeros(quantizer.codebook_size, dtype=torch.long)
            for patches in valid[name]:
                codes = model.target_codes(patches)[0, :, 0]
                counts += torch.bincount(codes, minlength=quantizer.codebook_size)
            pooled += counts
            record[name] = {
                "perplexity": round(code_perplexity(counts), 1),
                "codes_used": int((counts > 0).sum()),
                "patches": int(counts.sum()),
            }
        record["all"] = {
            "perplexity": round(code_perplexity(pooled), 1),
            "codes_used": int((pooled > 0).sum()),
            "patches": int(pooled.sum()),
        }
        rows.append(record)

    print(
        f"Code perplexity / codes used of {quantizer.codebook_size} on the valid "
        f"clips ({args.seconds:g} s from the start; global statistics from "
        f"{len(train_clips)} train clips, {frames} frames; input_norm "
        f"{args.input_norm})"
    )
    print()
    header = ["target_norm", *SETS, "all three"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for record in rows:
        cells = [
            f"{record[key]['perplexity']:.1f} / {record[key]['codes_used']}"
            for key in (*SETS, "all")
        ]
        print(f"| `{record['target_norm']}` | " + " | ".join(cells) + " |")
    counts = ", ".join(f"{name} {len(valid[name])}" for name in SETS)
    print(f"\nvalid clips: {counts}; {time.time() - started:.0f} s")
    if args.json:
        result = {
            "codebook_size": quantizer.codebook_size,
            "quantizer_seed": quantizer.seed,
            "seconds": args.seconds,
            "valid_clips": {name: len(valid[name]) for name in SETS},
            "train_clips": len(train_clips),
            "global_frames": frames,
            "quick": args.quick,
            "overrides": args.override,
            "input_norm": args.input_norm,
            "modes": rows,
        }
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
