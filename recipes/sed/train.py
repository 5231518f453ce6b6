#!/usr/bin/env python3
"""Recipe for sound event detection (strong labels) on a frozen BEST-RQ-2 encoder.

All hidden states of the encoder are combined by a learned weighted sum, a small
BiGRU head gives per-frame logits, and frame-level BCE (masked to valid frames)
is minimised. Labels are DCASE TSV files (``filename onset offset event_label``)
turned into targets at the encoder's frame hop (625 ms for the paper
configuration; see ``sed_labels``). Detections are post-processed (median filter,
per-class thresholds, runs of frames -> events), written to
``detections_test.tsv`` and scored with sed_eval (event-based and segment-based
F1) and sed_scores_eval (PSDS1). ``results.json`` also holds the scores of the
reference labels themselves passed through the frame encoding and decoding
(``oracle_*``): the ceiling set by the frame hop.

To run it on an exported encoder::

    python recipes/sed/train.py hparams/sed.yaml --encoder_dir ENCODER_DIR \
        --train_csv DATA/train.csv --valid_csv DATA/valid.csv \
        --test_csv DATA/test.csv

Without ``--encoder_dir`` a randomly initialised encoder is used (a baseline).
Label files default to ``<csv folder>/<csv stem>_events.tsv``; give them with
``--train_tsv``, ``--valid_tsv``, ``--test_tsv`` otherwise.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import logging
import sys
import time

import numpy as np
import speechbrain as sb
import torch
from sed_data import dataio_prepare, label_paths
from sed_labels import (
    LabelError,
    frame_targets,
    load_labels,
    prepare_labels,
)
from sed_metrics import import_sed_eval, psds1, sed_eval_metrics
from sed_post import (
    class_thresholds,
    decode,
    median_filter,
    write_events_tsv,
)
from speechbrain.utils.distributed import if_main_process, run_on_main

from bestrq2_lobes.data.manifest import ManifestError
from bestrq2_lobes.datasets.recipe_data import fill_manifests, prepare_corpus
from bestrq2_lobes.downstream.brain import FrozenEncoderBrain, start_run
from bestrq2_lobes.downstream.frames import frame_mask
from bestrq2_lobes.downstream.reporting import write_results
from bestrq2_lobes.training.run import shutdown_distributed

logger = logging.getLogger(__name__)


class SEDBrain(FrozenEncoderBrain):
    """Frame-level sound event detection on SSL features."""

    def forward_head(self, feats, counts, stage):
        """Frame logits (batch, frames, classes)."""
        return self.modules.head(feats, counts)

    def compute_objectives(self, predictions, batch, stage):
        """Frame BCE over valid frames; keeps the probabilities when evaluating."""
        logits, counts = predictions
        logits = logits.float()
        targets, _ = batch.targets
        frames = logits.shape[1]
        targets = fit_frames(targets.to(logits.device).float(), frames)
        mask = frame_mask(counts, frames)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, targets, reduction="none"
        )
        mask = mask.unsqueeze(-1).to(bce.dtype)
        loss = (bce * mask).sum() / (mask.sum() * bce.shape[-1]).clamp(min=1.0)
        if stage != sb.Stage.TRAIN:
            probs = torch.sigmoid(logits.detach()).cpu().numpy()
            for i, uid in enumerate(batch.id):
                self.scores[uid] = probs[i, : int(counts[i])]
        return loss

    def on_stage_start(self, stage, epoch=None):
        """Starts a fresh collection of frame probabilities."""
        self.scores = {}

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Scores valid/test detections, logs, checkpoints, writes test outputs."""
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            if self.has_valid:
                return
        stats = {"loss": stage_loss}
        if stage != sb.Stage.TRAIN:
            split = "valid" if stage == sb.Stage.VALID else "test"
            stats.update(self.score(split, full=stage == sb.Stage.TEST))
        if stage == sb.Stage.TEST:
            self.test_stats = stats
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats,
            )
            return
        self.hparams.train_logger.log_stats(
            stats_meta={"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]},
            train_stats={"loss": self.train_loss},
            valid_stats=stats if stage == sb.Stage.VALID else None,
        )
        meta = {"loss": stage_loss}
        keys = {}
        if stage == sb.Stage.VALID:
            meta.update({k: stats[k] or 0.0 for k in ("event_f1", "segment_f1")})
            keys = ckpt_selection(self.hparams.ckpt_metric)
        self.checkpointer.save_and_keep_only(
            meta=meta, num_to_keep=self.hparams.keep_checkpoints, **keys
        )

    def score(self, split, full):
        """Metrics of the collected probabilities (and test outputs if ``full``)."""
        hp = self.hparams
        clips = {uid: self.clips[split][uid] for uid in self.scores}
        hop_s = hp.ssl.hop_ms / 1000.0
        filtered = {
            uid: median_filter(probs, hp.median_filter)
            for uid, probs in self.scores.items()
        }
        reference = {c.filename: c.events for c in clips.values()}
        durations = {c.filename: c.duration for c in clips.values()}
        detections = {
            clips[uid].filename: decode(
                probs, self.labels, self.thresholds, hop_s, clips[uid].duration
            )
            for uid, probs in filtered.items()
        }
        stats = self.metrics(reference, detections, durations)
        if not full:
            return {k: stats[k] for k in ("event_f1", "segment_f1")}
        if hp.compute_psds:
            scores = {clips[uid].filename: p for uid, p in filtered.items()}
            stats["psds1"] = self.psds(scores, reference, durations)
        oracle = self.oracle(clips, reference, durations, hp.compute_psds)
        stats.update({f"oracle_{k}": v for k, v in oracle.items()})
        if if_main_process():
            write_events_tsv(hp.detections_file, detections)
        stats["num_detections"] = sum(len(d) for d in detections.values())
        stats["num_reference_events"] = sum(len(e) for e in reference.values())
        stats["num_clips"] = len(clips)
        return stats

    def metrics(self, reference, detections, durations):
        """sed_eval event- and segment-based metrics with the recipe's settings."""
        hp = self.hparams
        return sed_eval_metrics(
            reference,
            detections,
            durations,
            self.labels,
            collar=hp.event_collar,
            offset_ratio=hp.offset_collar_ratio,
            segment_s=hp.segment_seconds,
        )

    def psds(self, scores, reference, durations):
        """PSDS1, or None (with the reason logged) when it cannot be computed."""
        hop_s = self.hparams.ssl.hop_ms / 1000.0
        try:
            value, left_out = psds1(scores, hop_s, reference, durations, self.labels)
        except (ImportError, ValueError, AssertionError) as err:
            logger.warning("PSDS1 not computed: %s", err)
            return None
        if left_out:
            logger.warning("PSDS1 leaves out classes without test events: %s", left_out)
        return value

    def oracle(self, clips, reference, durations, with_psds):
        """Scores of the reference labels encoded to frames and decoded back."""
        hop_s = self.hparams.ssl.hop_ms / 1000.0
        scores, decoded = {}, {}
        for clip in clips.values():
            frames = self.num_frames(
                round(clip.duration * self.hparams.ssl.sample_rate)
            )
            targets = frame_targets(
                clip.events, self.labels, frames, hop_s, self.hparams.min_overlap
            )
            scores[clip.filename] = targets
            decoded[clip.filename] = decode(
                targets,
                self.labels,
                np.full(len(self.labels), 0.5),
                hop_s,
                clip.duration,
            )
        stats = self.metrics(reference, decoded, durations)
        out = {"event_f1": stats["event_f1"], "segment_f1": stats["segment_f1"]}
        if with_psds:
            out["psds1"] = self.psds(scores, reference, durations)
        return out


def ckpt_selection(metric: str) -> dict:
    """``max_keys`` / ``min_keys`` of the valid metric that picks checkpoints."""
    if metric == "loss":
        return {"min_keys": ["loss"]}
    if metric in ("event_f1", "segment_f1"):
        return {"max_keys": [metric]}
    raise SystemExit(
        f"error: ckpt_metric must be loss, event_f1 or segment_f1, not {metric!r}"
    )


def fit_frames(targets: torch.Tensor, frames: int) -> torch.Tensor:
    """Pads (zeros) or cuts (batch, T, C) targets to ``frames`` frames."""
    if targets.shape[1] >= frames:
        return targets[:, :frames]
    return torch.nn.functional.pad(targets, (0, 0, 0, frames - targets.shape[1]))


def summary_line(stats: dict, hparams: dict, hop_ms: float, started: float) -> str:
    """One line with the test metrics, the frame hop and the output files."""

    def fmt(value):
        return "n/a" if value is None else f"{value:.3f}"

    parts = [
        f"SED finished: test event F1 {fmt(stats['event_f1'])} "
        f"(collar {hparams['event_collar']:g} s)",
        f"segment F1 {fmt(stats['segment_f1'])} ({hparams['segment_seconds']:g} s)",
    ]
    if "psds1" in stats:
        parts.append(f"PSDS1 {fmt(stats['psds1'])}")
    parts += [
        f"frame hop {hop_ms:g} ms (ceiling of the frame labels: event F1 "
        f"{fmt(stats['oracle_event_f1'])}, PSDS1 {fmt(stats.get('oracle_psds1'))})",
        f"{(time.time() - started) / 60:.1f} min",
        f"detections: {hparams['detections_file']}",
        f"results: {hparams['results_file']}",
    ]
    return ", ".join(parts)


def main(argv: list[str]) -> None:
    """Parses arguments, prepares labels and data, trains and tests."""
    started = time.time()
    hparams, run_opts, _ = start_run(argv)
    ssl = hparams["ssl"]
    try:
        import_sed_eval()
    except ImportError as err:
        raise SystemExit(
            f"error: the SED metrics need sed_eval ({err}); "
            "pip install sed_eval sed_scores_eval"
        ) from None
    ckpt_selection(hparams["ckpt_metric"])  # fails early on a bad value
    try:
        # --corpus: its preparer writes the CSVs and their <stem>_events.tsv
        fill_manifests(hparams, prepare_corpus(hparams))
        paths = label_paths(hparams)
        run_on_main(
            prepare_labels,
            kwargs={"path": hparams["labels_file"], "train_tsv": paths["train"][1]},
        )
        labels = load_labels(hparams["labels_file"])

        def num_frames(samples):
            return int(ssl.num_output_frames(torch.tensor([samples]))[0])

        datasets, clips = dataio_prepare(hparams, paths, labels, num_frames)
        thresholds = class_thresholds(
            labels, hparams["threshold"], hparams["class_thresholds"]
        )
    except (LabelError, ManifestError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    if if_main_process():
        print(f"{len(labels)} event classes: {' '.join(labels)}", flush=True)

    head = hparams["sed_head"](num_classes=len(labels))
    hparams["checkpointer"].add_recoverable("head", head)
    modules = {"ssl": ssl, "layer_sum": hparams["layer_sum"], "head": head}
    brain = SEDBrain.from_hparams(hparams, run_opts, modules)
    brain.labels, brain.thresholds, brain.clips = labels, thresholds, clips
    brain.num_frames = num_frames
    brain.has_valid = "valid" in datasets
    keys = ckpt_selection(hparams["ckpt_metric"]) if brain.has_valid else {}
    brain.fit_then_test(
        datasets,
        **{k[:-1]: v[0] for k, v in keys.items()},  # max_keys -> max_key
    )
    results = {
        k: v for k, v in brain.test_stats.items() if not isinstance(v, (list, dict))
    }
    results["test_loss"] = results.pop("loss")
    results.update(
        frame_hop_ms=ssl.hop_ms,
        event_collar_s=hparams["event_collar"],
        segment_s=hparams["segment_seconds"],
        min_overlap=hparams["min_overlap"],
        median_filter=hparams["median_filter"],
        num_classes=len(labels),
    )
    if if_main_process():
        write_results(hparams["results_file"], results)
        print(summary_line(results, hparams, ssl.hop_ms, started), flush=True)
    shutdown_distributed(brain)


if __name__ == "__main__":
    main(sys.argv[1:])
