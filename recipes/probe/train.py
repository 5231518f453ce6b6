#!/usr/bin/env python3
"""Probe suite (X-ARES protocol) of a frozen BEST-RQ-2 encoder, or of a baseline.

For each task of a task file, every clip is embedded once with the frozen
encoder (last-layer frames mean-pooled over the clip's valid frames; cached in
the output folder, so a rerun skips the encoding), then:

- a linear probe (LayerNorm + one Linear layer, AdamW; the best validation epoch
  is kept when the task has a validation split) and
- a kNN classifier (k=10, cosine similarity)

are scored on the test split with the task metric (accuracy or mAP). The scores
per task, per domain and overall (weighted mean over tasks) are written to
``results.json``, ``results.md`` and ``results.png``.

Score an exported encoder, or one of two baselines with the same code::

    python recipes/probe/train.py hparams/probe.yaml \
        --tasks recipes/probe/tasks_shared.yaml --encoder_dir ENCODER_DIR
    python recipes/probe/train.py hparams/probe.yaml \
        --tasks recipes/probe/tasks_shared.yaml --baseline random
    python recipes/probe/train.py hparams/probe.yaml \
        --tasks recipes/probe/tasks_shared.yaml --baseline logmel

Score it on the public corpora you have (each prepared by its
``bestrq2_lobes.datasets`` preparer first; the others are skipped, one line
each; see ``probe_corpora``)::

    python recipes/probe/train.py hparams/probe.yaml \
        --tasks recipes/probe/tasks_public.yaml --encoder_dir ENCODER_DIR \
        --data_folders esc50=/data/ESC-50-master nsynth=/data/nsynth

``--baseline random``: the same architecture with random weights (the sizes of
the yaml, or those of ``--encoder_dir`` when given); ``--baseline logmel``: the
mean and standard deviation over time of the lobe's log-mel bands, no model.
On several GPUs (``torchrun --nproc_per_node=N ...``) the clips are embedded in
shares and the main process trains the probes and writes the results.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

import logging
import os
import sys
import time

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from probe_corpora import evaluate_folds, resolve_corpora
from probe_embed import EncoderEmbedder, LogMelEmbedder, ensure_embeddings
from probe_eval import (
    encode_labels,
    knn_scores,
    label_classes,
    predict,
    probe_every_layer,
    task_score,
    train_linear_probe,
)
from probe_prepare import prepare_tasks
from probe_report import markdown_table, results_json, summary_line, write_markdown
from probe_tasks import TaskError, load_tasks, make_task
from speechbrain.utils.distributed import if_main_process, infer_device, run_on_main

from bestrq2_lobes import BestRQ2Encoder
from bestrq2_lobes.data.manifest import ManifestError, read_manifest
from bestrq2_lobes.downstream.reporting import describe_encoder, write_results
from bestrq2_lobes.lobe.encoder_dir import EncoderDirError, read_config
from bestrq2_lobes.plots.probe_chart import plot_results
from bestrq2_lobes.training.run import parse_arguments

logger = logging.getLogger(__name__)

BASELINES = (None, "random", "logmel")
PROBE_LAYERS = ("last", "all")
USER_ERRORS = (TaskError, ManifestError, EncoderDirError)


def build_embedder(hparams):
    """The embedder to score, a one-line description and a short label.

    Returns
    -------
    (EncoderEmbedder or LogMelEmbedder, str, str)
    """
    baseline, encoder_dir = hparams["baseline"], hparams["encoder_dir"]
    if baseline not in BASELINES:
        raise TaskError(f"--baseline must be random or logmel, not {baseline!r}")
    layers = hparams.get("probe_layers", "last")
    if layers not in PROBE_LAYERS:
        raise TaskError(f"--probe_layers must be last or all, not {layers!r}")
    all_layers = layers == "all"
    ssl = hparams["ssl"]
    if baseline == "logmel":
        frontend = ssl.frontend
        source = encoder_dir or "the yaml's encoder config"
        return (
            LogMelEmbedder(frontend),
            (
                f"Baseline logmel: mean and std over time of the {frontend.n_mels} "
                f"log-mel bands (hop {frontend.hop_ms:g} ms) of the front end of "
                f"{source}: {2 * frontend.n_mels}-dim embeddings, no model."
            ),
            "log-mel statistics baseline",
        )
    if encoder_dir is None:
        label = f"random encoder (width {ssl.encoder.embed_dim}, depth {ssl.depth})"
        embedder = EncoderEmbedder(ssl, "random", all_layers)
        return embedder, describe_encoder(None, ssl), label
    if baseline == "random":
        torch.manual_seed(hparams["seed"])
        ssl = BestRQ2Encoder(
            None,
            freeze=True,
            config=read_config(encoder_dir),
            frame_readout=hparams.get("frame_readout"),
        )
        return (
            EncoderEmbedder(ssl, "random", all_layers),
            (
                f"Baseline random: the architecture of {encoder_dir} with RANDOM "
                f"weights (seed {hparams['seed']}; width {ssl.encoder.embed_dim}, "
                f"depth {ssl.depth}, frame hop {ssl.hop_ms:g} ms, "
                f"{ssl.frame_readout} read-out)."
            ),
            f"random weights, architecture of {os.path.basename(encoder_dir)}",
        )
    label = f"encoder {os.path.basename(os.path.normpath(encoder_dir))}"
    embedder = EncoderEmbedder(ssl, "encoder", all_layers)
    return embedder, describe_encoder(encoder_dir, ssl), label


def suite_tasks(hparams):
    """The tasks: from ``--tasks``, or one task from ``--train_csv`` etc."""
    if hparams["tasks"]:
        if hparams["train_csv"] or hparams["test_csv"] or hparams["data_root"]:
            raise TaskError(
                "give either --tasks or --train_csv/--test_csv (--data_root is "
                "set per task in a task file)"
            )
        return load_tasks(hparams["tasks"])
    if not (hparams["train_csv"] and hparams["test_csv"]):
        raise TaskError(
            "no tasks: give --tasks TASKS.yaml (e.g. recipes/probe/"
            "tasks_shared.yaml) or --train_csv and --test_csv"
        )
    entry = {
        "name": hparams["task_name"],
        "domain": hparams["task_domain"],
        "train_csv": hparams["train_csv"],
        "valid_csv": hparams["valid_csv"],
        "test_csv": hparams["test_csv"],
        "data_root": hparams["data_root"],
        "label_column": hparams["label_column"],
        "type": hparams["task_type"],
    }
    return [make_task(entry, os.getcwd(), "command line task")]


def split_rows(task, split):
    """Checked rows of a split; the label column must be there."""
    required = ["ID", "duration", "wav"]
    if not task.multilabel:  # a multilabel clip may have no tag
        required.append(task.label_column)
    rows = read_manifest(task.csvs[split], task.root_of(split), required=required)
    if task.label_column not in rows[0]:
        raise ManifestError(
            f"{task.csvs[split]}: missing label column {task.label_column!r} "
            f"of task {task.name!r}"
        )
    return rows


def debug_subset(num_rows, limit):
    """Evenly spread row indices, at most ``limit`` (None: all)."""
    if limit is None or num_rows <= limit:
        return list(range(num_rows))
    return sorted({int(i * num_rows / limit) for i in range(limit)})


def load_split(task, split, path):
    """(embeddings, label strings) of a split, from the embedding cache."""
    cache = torch.load(path, map_location="cpu", weights_only=True)
    label_of = {r["ID"]: r[task.label_column] for r in split_rows(task, split)}
    return cache["embeddings"].float(), [label_of[i] for i in cache["ids"]]


def evaluate_task(task, paths, hparams, probe_opts):
    """Trains and scores the linear probe and the kNN of one task."""
    data = {s: load_split(task, s, paths[s]) for s in task.splits()}
    if task.folds:  # each fold the test set once, the mean over folds
        return evaluate_folds(
            task, data, lambda d, tag: score_task(task, d, hparams, probe_opts, tag)
        )
    return score_task(task, data, hparams, probe_opts)


def score_task(task, data, hparams, probe_opts, tag=""):
    """The probes of one task trained and scored on ``{split: (x, labels)}``."""
    classes = label_classes(data["train"][1], task.multilabel)
    if not classes:
        raise TaskError(f"task {task.name!r}: the training split has no labels")
    targets = {}
    for split, (_, labels) in data.items():
        targets[split], unknown = encode_labels(labels, classes, task.multilabel)
        if unknown:
            logger.warning(
                "%s/%s: %d labels not in the training split (e.g. %r) %s",
                task.name + tag,
                split,
                len(unknown),
                sorted(unknown)[0],
                "are left out" if task.multilabel else "count as misses",
            )
    embeddings = {split: x for split, (x, _) in data.items()}
    every_layer = None
    if embeddings["train"].dim() == 3:  # --probe_layers all: (clips, layers, D)
        every_layer = embeddings
        embeddings = {split: x[:, -1] for split, x in every_layer.items()}
    train = (embeddings["train"], targets["train"])
    valid = (embeddings["valid"], targets["valid"]) if "valid" in data else None

    def log_epoch(epoch, train_stats, valid_stats):
        hparams["train_logger"].log_stats(
            stats_meta={"task": task.name + tag, "epoch": epoch},
            train_stats=train_stats,
            valid_stats=valid_stats,
        )

    probe, info = train_linear_probe(
        train, valid, len(classes), task.multilabel, task.metric, probe_opts, log_epoch
    )
    test_x, test_y = embeddings["test"], targets["test"]
    linear = task_score(task.metric, predict(probe, test_x), test_y)
    layers = None
    if every_layer is not None:  # the headline probe is the last layer's
        layers = probe_every_layer(
            every_layer,
            targets,
            len(classes),
            task.multilabel,
            task.metric,
            probe_opts,
            last=(linear, info["valid_score"]),
        )
    knn = knn_scores(
        train[0], train[1], test_x, hparams["knn_k"], len(classes), task.multilabel
    )
    os.makedirs(hparams["save_folder"], exist_ok=True)
    torch.save(
        {"state_dict": probe.state_dict(), "classes": classes, **info},
        os.path.join(hparams["save_folder"], f"{task.name}{tag}_linear_probe.ckpt"),
    )
    return {
        "name": task.name,
        "domain": task.domain,
        "type": task.type,
        "metric": task.metric,
        "weight": task.weight,
        "num_classes": len(classes),
        "sizes": {s: len(d[1]) for s, d in data.items()},
        "epoch": info["epoch"],
        "valid_linear": None if valid is None else info["valid_score"],
        "linear": linear,
        "knn": task_score(task.metric, knn, test_y),
        **(layers or {}),
    }


def evaluate_suite(tasks, cache_paths, hparams, probe_opts, description, label):
    """Scores every task and writes results.json, results.md and results.png."""
    records = []
    for task in tasks:
        record = evaluate_task(task, cache_paths[task.name], hparams, probe_opts)
        logger.info(
            "%s: linear %.4f, kNN %.4f (%s)",
            task.name,
            record["linear"],
            record["knn"],
            task.metric,
        )
        records.append(record)
    results = results_json(records)
    folder = hparams["output_folder"]
    write_results(os.path.join(folder, "results.json"), results)
    header = [
        "# Probe suite results",
        "",
        description,
        "",
        "Linear probe: LayerNorm + Linear on time-mean-pooled embeddings; kNN: "
        f"k={hparams['knn_k']}, cosine. Scores: accuracy (multiclass) or mAP "
        "(multilabel), 0-1.",
    ]
    if hparams.get("skipped_tasks"):  # corpus tasks without data (probe_corpora)
        header += ["", "Not scored: " + "; ".join(hparams["skipped_tasks"]) + "."]
    write_markdown(
        os.path.join(folder, "results.md"), markdown_table(records, results, header)
    )
    plot_results(results, os.path.join(folder, "results.png"), f"Probe suite: {label}")
    return summary_line(results, len(records), folder)


def embed_suite(tasks, embedder, hparams, run_opts, device):
    """Embeds (or finds cached) every split of every task, on every rank.

    Returns
    -------
    dict
        ``{task: {split: cache path}}``.
    """
    # resolved by parse_arguments: --eval_precision, else --precision, else auto
    precision = run_opts["eval_precision"]
    limit = None
    if run_opts["debug"]:
        limit = run_opts["debug_batches"] * hparams["embed_loader_opts"]["batch_size"]
    cache_paths = {}
    for task in tasks:
        cache_paths[task.name] = {
            split: ensure_embeddings(
                task,
                split,
                embedder,
                hparams["embedding_folder"],
                hparams["max_seconds"],
                hparams["embed_loader_opts"],
                device,
                precision,
                progress=not run_opts["noprogressbar"],
                select=lambda n: debug_subset(n, limit),
            )
            for split in task.splits()
        }
    return cache_paths


def main(argv):
    """Parses arguments, embeds the clips and scores the probes."""
    started = time.time()
    hparams_file, run_opts, overrides = parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    embedder, description, label = build_embedder(hparams)
    if if_main_process():
        print(description, flush=True)
    tasks = resolve_corpora(suite_tasks(hparams), hparams)  # prepares corpora
    tasks = run_on_main(prepare_tasks, args=[tasks, hparams["task_data_folder"]])
    for task in tasks:
        for split in task.splits():
            split_rows(task, split)  # fail early, naming the file and column

    device = run_opts["device"] or infer_device()
    cache_paths = embed_suite(tasks, embedder, hparams, run_opts, device)
    probe_opts = {**hparams["probe_opts"], "device": device}
    if run_opts["debug"]:
        probe_opts["epochs"] = run_opts["debug_epochs"]
    summary = run_on_main(
        evaluate_suite,
        args=[tasks, cache_paths, hparams, probe_opts, description, label],
    )
    if if_main_process():
        print(f"{summary} ({(time.time() - started) / 60:.1f} min)", flush=True)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except USER_ERRORS as err:
        sys.exit(f"error: {err}")
