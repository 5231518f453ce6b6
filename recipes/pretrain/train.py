#!/usr/bin/env python3
"""Recipe for self-supervised pretraining of BEST-RQ-2 or the one-stage baseline.

The hparams file chooses the model (``hparams/bestrq2_vit.yaml``: two-step
BEST-RQ-2; ``hparams/bestrq_vit_onestage.yaml``: one-stage BEST-RQ with a ViT;
``hparams/bestrq2_vit_speech.yaml``: 40 ms tokens for ASR encoders). One Brain
trains all of them: they share the interface of ``bestrq2_lobes.model.pretraining``.

To run the built-in demo (no data needed)::

    python recipes/pretrain/train.py hparams/bestrq2_vit.yaml

It writes to ``results/bestrq2_vit_demo/<seed>`` (``<experiment_name>_demo``),
apart from the runs on your own audio. On your own audio, or on manifests, on
several GPUs::

    python recipes/pretrain/train.py hparams/bestrq2_vit.yaml --data_folder DIR
    torchrun --nproc_per_node=8 recipes/pretrain/train.py hparams/bestrq2_vit.yaml \
        --train_csv train.csv --valid_csv valid.csv --data_root /data

On a public corpus in its official layout, its preparer
(``bestrq2_lobes.datasets``, see ``docs/datasets.md``) writes the manifests
first, on the main process::

    python recipes/pretrain/train.py hparams/bestrq2_vit.yaml --corpus audioset \
        --data_folder /data/audioset [--corpus_options "{check: header}"]

At corpus scale, write tar shards once (``python -m bestrq2_lobes.shards write
DIR_OR_CSV OUT``) and stream them: ``--train_shards OUT`` (a folder, its
``index.json`` or ``'OUT/shard-{000000..000999}.tar'``), ``--valid_shards``.

Stop it at any time and rerun the same command: it resumes from the last
checkpoint (``--ckpt_interval_steps N`` or ``--ckpt_interval_minutes M`` for saves
within an epoch). The output folder records what the run was trained on
(``run_fingerprint.json``: data and model settings); a rerun on other data or
sizes stops before writing anything, unless given another ``--output_folder``
(a new run) or ``--allow_changed_run True``.

To continue the authors' pretraining on your own audio, with their targets, start
from a converted release (``python -m bestrq2_lobes.lobe.convert SRC ENC
--pretraining``)::

    python recipes/pretrain/train.py hparams/bestrq2_vit.yaml --data_folder DIR \
        --init_from ENC/pretraining

``--init_from`` loads the encoder, predictor (or one-stage head), mask token and
quantizer before training; the front end and sizes of the hparams must be the
init's. A rerun resumes from the run's own checkpoints, which take precedence.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

import json
import logging
import os
import sys
import time

import speechbrain as sb
import torch
from pretrain_data import data_source, prepare_input_norm, prepare_target_norm
from pretrain_setup import start_pretraining, write_encoder_config
from speechbrain.utils.distributed import if_main_process

from bestrq2_lobes.data.manifest import ManifestError
from bestrq2_lobes.lobe.convert import ConversionError
from bestrq2_lobes.model.pretraining import masked_prediction_loss
from bestrq2_lobes.model.transformer import compile_blocks
from bestrq2_lobes.training.checkpointing import CheckpointWriteError
from bestrq2_lobes.training.code_usage import CodeUsage
from bestrq2_lobes.training.console import progress_line
from bestrq2_lobes.training.optim import parameter_groups
from bestrq2_lobes.training.precision import can_compile
from bestrq2_lobes.training.run import shutdown_distributed
from bestrq2_lobes.training.run_folder import (
    RunFolderError,
    write_fingerprint,
)
from bestrq2_lobes.training.seeding import stable_seed

logger = logging.getLogger(__name__)


class NonFiniteTrainingError(RuntimeError):
    """Too many non-finite updates in a row."""


class PretrainBrain(sb.core.Brain):
    """Masked-prediction pretraining of any model in ``model.pretraining``."""

    def compute_forward(self, batch, stage):
        """Log-mel, masks, targets and logits of a batch of waveforms."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        train = stage == sb.Stage.TRAIN
        generator = self.mask_generator if train else self.eval_generator
        return self.modules.model(wavs, wav_lens, generator=generator)

    def compute_objectives(self, predictions, batch, stage):
        """Cross-entropy over masked cells; keeps diagnostics for the logs."""
        loss, stats = masked_prediction_loss(predictions)
        tracker = self.trackers[stage]
        tracker["loss"] += loss.detach().float()
        tracker["accuracy"] += stats["accuracy"]
        tracker["perplexity"] += stats["perplexity"]
        self.code_usage[stage].update(predictions.targets, predictions.target_mask)
        tracker["batches"] += 1
        tracker["audio_seconds"] += predictions.audio_seconds
        tracker["tokens"] += int(predictions.valid_tokens.sum())
        return loss

    def _compile(self):
        """``--compile``: one ``torch.compile`` graph per transformer stack.

        SpeechBrain would compile whole modules; here the masking, gathers and
        quantizer around the stacks depend on each batch's lengths and stay
        eager (``bestrq2_lobes.model.transformer.compile_blocks``). Shapes are dynamic
        unless told otherwise. ``--compile_module_keys`` keeps SpeechBrain's way.
        On a CPU without a C++ compiler the run stays eager, said in one line.
        """
        if self.compile and not can_compile(self.device):
            self.compile = False  # inductor would fail on the first step
        if self.compile and self.compile_module_keys is None:
            count = compile_blocks(
                self.modules.model,
                mode=self.compile_mode,
                fullgraph=self.compile_using_fullgraph,
                dynamic=True if self.compile_using_dynamic_shape_tracing else None,
            )
            logger.info(
                "--compile: %d transformer blocks compiled (torch.compile, mode %s)",
                count,
                self.compile_mode,
            )
            self.compile = False
        super()._compile()

    def init_optimizers(self):
        """AdamW over explicit parameter groups (norms/biases optionally exempt)."""
        groups = parameter_groups(
            self.modules,
            self.hparams.weight_decay,
            self.hparams.exempt_norms_and_biases,
        )
        self.optimizer = self.opt_class(groups)
        self.optimizers_dict = {"opt_class": self.optimizer}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer", self.optimizer)

    def on_fit_start(self):
        """Builds the optimiser, resumes, and sets the learning rate of the step."""
        super().on_fit_start()
        self.hparams.lr_scheduler.set_lr(self.optimizer, self.optimizer_step)
        self.nonfinite_in_a_row = 0
        self.last_log_time = time.time()
        self.fit_start_time = time.time()
        self.first_step = self.optimizer_step
        limits = (self.hparams.total_steps, self.optimizer_step_limit)
        self.run_steps = min(int(n) for n in limits if n)
        self.last_stats = {}

    def check_loss_isfinite(self, loss):
        """Non-finite losses are handled in ``optimizers_step`` (in a row)."""

    def optimizers_step(self):
        """Clips over ALL parameters and skips non-finite updates.

        SpeechBrain's default clips only the first parameter group.
        """
        self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        max_norm = self.max_grad_norm if self.max_grad_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        self.trackers[sb.Stage.TRAIN]["grad_norm"] += grad_norm.detach().float()
        self.trackers[sb.Stage.TRAIN]["steps"] += 1
        if not self.scaler.is_enabled() and not torch.isfinite(grad_norm):
            self.nonfinite_in_a_row += 1
            self.trackers[sb.Stage.TRAIN]["skipped_updates"] += 1
            logger.warning(
                "Non-finite gradient norm at step %d: update skipped (%d in a row)",
                self.optimizer_step,
                self.nonfinite_in_a_row,
            )
            self.optimizer.zero_grad(set_to_none=True)
            if self.nonfinite_in_a_row >= self.nonfinite_patience:
                raise NonFiniteTrainingError(
                    f"{self.nonfinite_in_a_row} non-finite updates in a row "
                    f"(nonfinite_patience={self.nonfinite_patience}); "
                    "stopping. The last checkpoint is intact."
                )
            return
        self.nonfinite_in_a_row = 0
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer_step += 1

    def on_fit_batch_start(self, batch, should_step):
        """Seeds this batch's draws from the run's position (epoch, batch).

        A run resumed from a checkpoint replays exactly the draws of the
        uninterrupted run. In the paper's mode (one mask per batch) every DDP
        rank draws the same mask: one mask for the global batch, as with one
        GPU. Drop-path and per-clip masks differ between ranks.
        """
        seed, epoch, step = self.hparams.seed, self.epoch, self.step
        rank = int(os.environ.get("RANK", 0))
        torch.manual_seed(stable_seed(seed, "batch", epoch, step, rank))
        mask_rank = () if self.hparams.shared_mask else (rank,)
        self.mask_generator = torch.Generator().manual_seed(
            stable_seed(seed, "mask", epoch, step, *mask_rank)
        )

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Advances the LR schedule and logs every ``log_interval`` steps."""
        if not should_step:
            return
        lr = self.hparams.lr_scheduler.set_lr(self.optimizer, self.optimizer_step)
        if self.optimizer_step % self.hparams.log_interval == 0:
            self.log_train_stats(lr)
            if if_main_process():
                elapsed = time.time() - self.fit_start_time
                logger.info(
                    progress_line(
                        self.optimizer_step, self.run_steps, self.first_step, elapsed
                    )
                )

    def log_train_stats(self, lr):
        """Writes averaged train statistics since the last log line."""
        stats = self.pop_tracker(sb.Stage.TRAIN)
        if not stats:
            return
        elapsed = max(time.time() - self.last_log_time, 1e-9)
        self.last_log_time = time.time()
        world = torch.distributed.get_world_size() if self.distributed_launch else 1
        stats["audio_sec_per_sec"] = stats.pop("audio_seconds") * world / elapsed
        stats["tokens_per_sec"] = stats.pop("tokens") * world / elapsed
        stats["lr"] = lr
        # codes used / dead codes of the last code_usage_window log lines
        stats.update(self.code_usage[sb.Stage.TRAIN].end_interval())
        self.last_stats = dict(stats)
        self.write_metrics("train", stats)
        # main-process-only inside, with a broadcast: every rank must call it
        self.hparams.train_logger.log_stats(
            stats_meta={"step": self.optimizer_step}, train_stats=stats
        )

    def write_metrics(self, stage, stats):
        """Appends one JSON line per log to ``metrics_log`` (and TensorBoard)."""
        if not if_main_process():
            return
        record = {"stage": stage, "step": self.optimizer_step, **stats}
        with open(self.hparams.metrics_log, "a", encoding="utf-8") as fout:
            fout.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            self.tensorboard.log_stats(
                stats_meta={"step": self.optimizer_step},
                **{f"{stage}_stats": stats},
            )

    def pop_tracker(self, stage):
        """Averages and resets the running statistics of a stage."""
        tracker, self.trackers[stage] = self.trackers[stage], new_tracker()
        batches = tracker.pop("batches")
        steps = max(1, tracker.pop("steps"))
        if batches == 0:
            return {}
        stats = {}
        for key, value in tracker.items():
            value = float(value)
            if key in ("audio_seconds", "tokens", "skipped_updates"):
                stats[key] = value
            elif key == "grad_norm":
                stats[key] = value / steps
            else:
                stats[key] = value / batches
        return stats

    def on_stage_start(self, stage, epoch=None):
        """Resets statistics; evaluation masks are drawn from a fixed seed."""
        self.epoch = epoch
        if stage == sb.Stage.TRAIN:
            self.hparams.crop_clock["epoch"] = epoch
        if not hasattr(self, "trackers"):
            self.trackers = {s: new_tracker() for s in sb.Stage}
        if stage != sb.Stage.TRAIN:  # train stats run on across epochs
            self.trackers[stage] = new_tracker()
        if not hasattr(self, "code_usage"):
            self.code_usage = {}
        if stage != sb.Stage.TRAIN or stage not in self.code_usage:
            window = self.hparams.code_usage_window if stage == sb.Stage.TRAIN else 1
            quantizer = self.hparams.quantizer
            self.code_usage[stage] = CodeUsage(
                quantizer.num_codebooks, quantizer.codebook_size, window
            )
        self.eval_generator = torch.Generator().manual_seed(self.hparams.seed)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs the validation loss and saves a checkpoint at the end of epochs."""
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            self.log_train_stats(self.optimizer.param_groups[0]["lr"])
            if self.has_valid:
                return
            stats = {"loss": stage_loss}
        else:
            stats = self.pop_tracker(stage)
            for key in ("audio_seconds", "tokens", "grad_norm", "skipped_updates"):
                stats.pop(key, None)
            stats.update(self.code_usage[stage].end_interval())  # the whole pass
            self.valid_stats = stats
            self.write_metrics("valid", stats)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "step": self.optimizer_step},
                train_stats={"loss": self.train_loss},
                valid_stats=stats,
            )
        self.checkpointer.save_and_keep_only(
            meta={"loss": stats["loss"], "step": self.optimizer_step},
            num_to_keep=self.hparams.keep_checkpoints,
        )


def new_tracker():
    """Running sums of the logged statistics."""
    keys = ("loss", "accuracy", "perplexity", "grad_norm", "audio_seconds")
    counts = ("tokens", "batches", "steps", "skipped_updates")
    return {**dict.fromkeys(keys, 0.0), **dict.fromkeys(counts, 0)}


def summary_line(brain, hparams, started):
    """One line telling what the run did and where its outputs are."""
    ckpt = brain.checkpointer.find_checkpoint()
    valid = getattr(brain, "valid_stats", {})
    train = brain.last_stats
    parts = [
        f"Pretraining finished: {brain.optimizer_step} optimiser steps",
        f"train loss {train.get('loss', float('nan')):.3f}",
        f"acc {train.get('accuracy', float('nan')):.3f}",
    ]
    if valid:
        parts.append(f"valid loss {valid['loss']:.3f} acc {valid['accuracy']:.3f}")
    parts.append(f"{(time.time() - started) / 60:.1f} min")
    if ckpt is not None:
        parts.append(f"encoder: {ckpt.path / 'encoder.ckpt'}")
    return ", ".join(parts)


def main(argv):
    """Parses arguments, prepares data and runs the pretraining."""
    started = time.time()
    hparams, run_opts, fingerprint = start_pretraining(argv)
    min_seconds = hparams["model"].min_seconds
    hparams["crop_clock"] = {"epoch": 0}  # set by the Brain at each epoch start
    source = data_source(hparams, min_seconds)  # manifests, a folder or shards
    if if_main_process():  # the data is usable: this folder is now this run's
        write_fingerprint(hparams["output_folder"], fingerprint)
    for key, recoverable in source.recoverables.items():
        hparams["checkpointer"].add_recoverable(key, recoverable)
    prepare_input_norm(hparams, source)
    write_encoder_config(hparams)
    prepare_target_norm(hparams, source)

    brain = PretrainBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.has_valid = source.valid is not None
    brain.epoch = 0
    brain.tensorboard = None
    if hparams["use_tensorboard"] and if_main_process():
        brain.tensorboard = hparams["tensorboard_logger"]()
    brain.train_sampler = source.sampler  # SpeechBrain calls its set_epoch
    brain.fit(
        brain.hparams.epoch_counter,
        source.train,
        source.valid,
        train_loader_kwargs=source.train_kwargs,
        valid_loader_kwargs=source.valid_kwargs,
    )
    if if_main_process():
        print(summary_line(brain, hparams, started), flush=True)
    shutdown_distributed(brain)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (
        ManifestError,
        RunFolderError,
        CheckpointWriteError,
        NonFiniteTrainingError,
        ConversionError,
    ) as err:
        sys.exit(f"error: {err}")
