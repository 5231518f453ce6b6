#!/usr/bin/env python3
"""Recipe for music tagging with a frozen BEST-RQ-2 encoder.

Each clip is encoded by the (frozen) encoder; all its hidden layers are mixed by
a learnable weighted sum, averaged over the valid frames of the clip, and a small
head (LayerNorm + Linear, or an MLP) gives one logit per tag (BCE loss). The
tags of a clip are the space-separated entries of ``--label_column`` (default
``tags``); the label set is the sorted union of the training tags, saved to
``<save_folder>/labels.json``. A single-label column (e.g. one genre per clip)
works unchanged: each label is one tag.

Valid macro mAP is computed after every epoch and the checkpoint with the best
one is evaluated on the test set: macro mAP, macro ROC-AUC and a per-tag table
(``per_tag_ap.md`` / ``.csv``) in the output folder, ``results.json`` with the
final numbers.

To run it::

    python recipes/music_tagging/train.py hparams/music_tagging.yaml \
        --encoder_dir ENCODER_DIR \
        --train_csv train.csv --valid_csv valid.csv --test_csv test.csv

Without ``--encoder_dir`` a randomly initialised encoder is used (a baseline).

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import logging
import math
import os
import sys

import speechbrain as sb
import torch
from music_tags import (
    LABELS_FILE,
    check_label_column,
    encode_tags,
    prepare_labels,
    split_tags,
    tagging_metrics,
    unseen_tags,
    warn_unseen,
    write_per_tag_table,
)
from speechbrain.utils.distributed import if_main_process, run_on_main

from bestrq2_lobes.data.audio import random_crop, read_segment
from bestrq2_lobes.data.manifest import ManifestError, read_manifest
from bestrq2_lobes.datasets.recipe_data import fill_manifests, prepare_corpus
from bestrq2_lobes.downstream.brain import FrozenEncoderBrain, start_run
from bestrq2_lobes.downstream.frames import masked_mean
from bestrq2_lobes.downstream.labels import LabelError, load_labels
from bestrq2_lobes.downstream.reporting import write_results
from bestrq2_lobes.lobe.encoder_dir import EncoderDirError
from bestrq2_lobes.training.run import shutdown_distributed

logger = logging.getLogger(__name__)


class TaggingBrain(FrozenEncoderBrain):
    """Masked mean pooling of the mixed layers and a tagging head."""

    def forward_head(self, feats, counts, stage):
        """Logits (batch, tags) from frames (batch, T, D) with valid counts."""
        return self.modules.head(masked_mean(feats, counts)).float()

    def compute_objectives(self, predictions, batch, stage):
        """BCE with logits; keeps the scores of valid/test clips for the metrics."""
        logits, _ = predictions
        targets = batch.targets.data.to(self.device)
        loss = self.hparams.loss(logits, targets)
        if stage != sb.Stage.TRAIN:
            self.scores.append(torch.sigmoid(logits).detach().cpu())
            self.targets.append(targets.detach().cpu())
        return loss

    def on_stage_start(self, stage, epoch=None):
        """Resets the collected scores."""
        self.scores, self.targets = [], []

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Computes the metrics, logs them and keeps the best checkpoint."""
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            return
        metrics = tagging_metrics(
            torch.cat(self.scores).numpy(), torch.cat(self.targets).numpy()
        )
        stats = {
            "loss": stage_loss,
            "map": metrics["map"],
            "roc_auc": metrics["roc_auc"],
        }
        if stage == sb.Stage.VALID:
            # main-process-only inside, with a broadcast: every rank calls it
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]},
                train_stats={"loss": self.train_loss},
                valid_stats=stats,
            )
            score = metrics["map"] if math.isfinite(metrics["map"]) else -1.0
            self.checkpointer.save_and_keep_only(
                meta={"map": score, "epoch": epoch}, max_keys=["map"]
            )
        else:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats,
            )
            num_clips = sum(len(s) for s in self.scores)
            self.test_metrics = {**metrics, "loss": stage_loss, "clips": num_clips}


def manifest_rows(csv_path: str, hparams: dict) -> tuple[list[dict], str]:
    """Checked rows of a manifest with a label column, and its data root."""
    data_root = hparams["data_root"] or os.path.dirname(os.path.abspath(csv_path))
    rows = read_manifest(csv_path, data_root=data_root)
    check_label_column(rows, hparams["label_column"], csv_path)
    return rows, data_root


def make_dataset(
    rows: list[dict], labels: list[str], hparams: dict, train: bool
) -> sb.dataio.dataset.DynamicItemDataset:
    """A dataset giving ``sig`` (random crop when training) and ``targets``."""
    index = {tag: i for i, tag in enumerate(labels)}
    column, separator = hparams["label_column"], hparams["tag_separator"]
    sample_rate, crop = hparams["sample_rate"], hparams["max_seconds"]
    data = {
        row["ID"]: {"wav": row["wav"], "duration": row["duration"], "tags": row[column]}
        for row in rows
    }
    dataset = sb.dataio.dataset.DynamicItemDataset(data)

    @sb.utils.data_pipeline.takes("wav", "duration")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav, duration):
        if train and crop:
            start = random_crop(float(duration), crop)
            return read_segment(wav, start, crop, sample_rate)
        return read_segment(wav, 0.0, None, sample_rate)

    @sb.utils.data_pipeline.takes("tags")
    @sb.utils.data_pipeline.provides("targets")
    def label_pipeline(tags):
        return encode_tags(split_tags(tags, separator), index)

    dataset.add_dynamic_item(audio_pipeline)
    dataset.add_dynamic_item(label_pipeline)
    dataset.set_output_keys(["id", "sig", "targets"])
    if not train:  # less padding; the metrics do not depend on the order
        dataset = dataset.filtered_sorted(sort_key="duration")
    return dataset


def dataio_prepare(hparams: dict) -> tuple[list[str], dict]:
    """Label set (from the training manifest) and the train/valid/test datasets."""
    for key in ("train_csv", "valid_csv", "test_csv"):
        if not hparams[key]:
            raise ManifestError(f"no --{key} given (a SpeechBrain CSV manifest)")
    splits = {
        name: manifest_rows(hparams[f"{name}_csv"], hparams)[0]
        for name in ("train", "valid", "test")
    }
    run_on_main(
        prepare_labels,
        kwargs={
            "rows": splits["train"],
            "column": hparams["label_column"],
            "save_folder": hparams["save_folder"],
            "separator": hparams["tag_separator"],
        },
    )
    labels = load_labels(os.path.join(hparams["save_folder"], LABELS_FILE))
    datasets = {}
    for name, rows in splits.items():
        path = hparams[f"{name}_csv"]
        if name != "train":
            counts = unseen_tags(
                rows, hparams["label_column"], labels, hparams["tag_separator"]
            )
            warn_unseen(path, counts)
        datasets[name] = make_dataset(rows, labels, hparams, train=name == "train")
    return labels, datasets


def add_trainable_modules(hparams: dict, num_tags: int) -> None:
    """Builds the layer sum and the head, and registers them for checkpoints."""
    ssl = hparams["ssl"]
    layer_sum = hparams["layer_sum"](num_layers=ssl.num_layers)
    head = hparams["head"](input_dim=ssl.output_dim, num_tags=num_tags)
    hparams["modules"].update(layer_sum=layer_sum, head=head)
    checkpointer = hparams["checkpointer"]
    checkpointer.add_recoverable("layer_sum", layer_sum)
    checkpointer.add_recoverable("head", head)


def summary_line(brain: TaggingBrain, num_tags: int, results_path: str) -> str:
    """One line with the test metrics, the best valid mAP and the results file."""
    metrics = brain.test_metrics
    best = brain.checkpointer.find_checkpoint(max_key="map")
    valid = f"{best.meta['map']:.3f} (epoch {best.meta['epoch']})" if best else "n/a"
    return (
        f"Music tagging finished: test mAP {metrics['map']:.3f}, ROC-AUC "
        f"{metrics['roc_auc']:.3f} ({metrics['num_scored']}/{num_tags} tags scored, "
        f"{metrics['clips']} clips), best valid mAP "
        f"{valid}; results: {results_path}"
    )


def main(argv: list[str]) -> None:
    """Parses arguments, prepares the data, trains and tests."""
    hparams, run_opts, _ = start_run(argv)
    fill_manifests(hparams, prepare_corpus(hparams))  # --corpus: its preparer
    hparams["random_train_audio"] = bool(hparams["max_seconds"])
    labels, datasets = dataio_prepare(hparams)
    logger.info("%d tags: %s", len(labels), " ".join(labels))
    add_trainable_modules(hparams, len(labels))

    brain = TaggingBrain.from_hparams(hparams, run_opts)
    brain.fit_then_test(datasets, max_key="map")
    metrics = brain.test_metrics
    results_path = os.path.join(hparams["output_folder"], "results.json")
    if if_main_process():
        write_per_tag_table(hparams["output_folder"], labels, metrics)
        write_results(
            results_path,
            {
                "map": metrics["map"],
                "roc_auc": metrics["roc_auc"],
                "num_tags": len(labels),
                "num_scored_tags": metrics["num_scored"],
                "num_clips": metrics["clips"],
                "loss": float(metrics["loss"]),
            },
        )
        print(summary_line(brain, len(labels), results_path), flush=True)
    shutdown_distributed(brain)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ManifestError, LabelError, EncoderDirError) as err:
        sys.exit(f"error: {err}")
