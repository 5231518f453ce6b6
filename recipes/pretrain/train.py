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
from difflib import get_close_matches

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml import YAML, YAMLError
from speechbrain.dataio.sampler import ReproducibleRandomSampler
from speechbrain.utils.distributed import if_main_process, infer_device, run_on_main

from bestrq2_lobes.data.audio import random_crop, read_segment
from bestrq2_lobes.data.demo_corpus import DEMO_DESCRIPTION, make_demo_corpus
from bestrq2_lobes.data.manifest import (
    ManifestError,
    check_manifest_audio,
    prepare_folder,
    read_manifest,
)
from bestrq2_lobes.lobe.convert import ConversionError, init_pretraining, take_init_from
from bestrq2_lobes.lobe.encoder_dir import PRETRAIN_CONFIG, make_config, write_config
from bestrq2_lobes.model.pretraining import masked_prediction_loss
from bestrq2_lobes.model.transformer import compile_blocks
from bestrq2_lobes.training.checkpointing import CheckpointWriteError
from bestrq2_lobes.training.code_usage import CodeUsage
from bestrq2_lobes.training.console import cap_workers, progress_line
from bestrq2_lobes.training.cpu_memory import retain_freed_memory
from bestrq2_lobes.training.optim import parameter_groups
from bestrq2_lobes.training.run import parse_arguments, shutdown_distributed
from bestrq2_lobes.training.run_folder import (
    FINGERPRINT_FILE,
    RunFolderError,
    check_run_folder,
    folder_fingerprint,
    manifest_fingerprint,
    settings_fingerprint,
    write_fingerprint,
)
from bestrq2_lobes.training.seeding import stable_seed
from bestrq2_lobes.training.target_stats import estimate_global_target_norm

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
        """
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


def dataio_prepare(hparams, train_csv, valid_csv, data_root, min_seconds):
    """Datasets with a random crop (train) or the first crop (valid) of each clip."""
    crop = hparams["crop_seconds"]
    sample_rate = hparams["sample_rate"]

    clock = hparams["crop_clock"]
    seed = hparams["seed"]

    def make_pipeline(random):
        @sb.utils.data_pipeline.takes("id", "wav", "duration")
        @sb.utils.data_pipeline.provides("sig")
        def audio_pipeline(uid, wav, duration):
            start = 0.0
            if random:  # a new crop each epoch, replayable after a resume
                key = stable_seed(seed, "crop", clock["epoch"], uid)
                generator = torch.Generator().manual_seed(key)
                start = random_crop(float(duration), crop, generator)
            return read_segment(wav, start, crop, sample_rate)

        return audio_pipeline

    datasets = {}
    for name, csv in (("train", train_csv), ("valid", valid_csv)):
        if csv is None:
            continue
        rows = read_manifest(csv, data_root=data_root)
        dataset = sb.dataio.dataset.DynamicItemDataset.from_csv(
            csv, replacements={"data_root": data_root or ""}
        )
        dataset = dataset.filtered_sorted(key_min_value={"duration": min_seconds})
        dropped = len(rows) - len(dataset)
        if dropped:
            logger.warning(
                "%s: %d clips shorter than %.3f s (one patch) left out",
                csv,
                dropped,
                min_seconds,
            )
        if len(dataset) == 0:
            raise ValueError(f"{csv}: no clip is at least {min_seconds:.3f} s long")
        dataset.add_dynamic_item(make_pipeline(random=name == "train"))
        dataset.set_output_keys(["id", "sig"])
        datasets[name] = dataset
    return datasets.get("train"), datasets.get("valid")


def apply_demo_settings(hparams_file, run_opts, overrides):
    """Reloads the hparams with the demo's shortened settings (user's win).

    The demo also gets its own output folder, ``results/<experiment_name>_demo/
    <seed>``, unless ``--output_folder`` is given: a later run on your own
    audio does not continue it.

    Returns the hparams, the overrides in force, and the list of
    (key, paper value, demo value) changed, ending with ("output_folder", own
    data's folder, demo's folder) when the folder is the default (None when
    data was given).
    """
    try:
        user = YAML().load(overrides) if overrides else {}  # keeps !ref tags
    except YAMLError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        reason = next((ln for ln in lines if "duplicate key" in ln), lines[0])
        message = f"error: cannot read the command-line options: {reason}"
        raise SystemExit(message) from None
    user = user or {}
    hparams = load_hparams(hparams_file, user)
    if hparams["data_folder"] or hparams["train_csv"]:
        return hparams, overrides, None
    changed = []
    demo = {}
    for key, value in hparams["demo_settings"].items():
        if key in user or key in run_opts.overridden_args:
            continue
        demo[key] = value
        changed.append((key, hparams[key], value))
    own_folder = hparams["output_folder"]
    if "output_folder" not in user:
        demo["experiment_name"] = f"{hparams['experiment_name']}_demo"
    hparams = load_hparams(hparams_file, {**user, **demo})
    if "output_folder" not in user:
        changed.append(("output_folder", own_folder, hparams["output_folder"]))
    return hparams, {**user, **demo}, changed


def load_hparams(hparams_file, overrides):
    """Loads the hparams; a misspelt override stops with a one-line error."""
    with open(hparams_file, encoding="utf-8") as fin:
        text = fin.read()
    try:
        return load_hyperpyyaml(text, overrides)
    except KeyError:
        known = load_hyperpyyaml_keys(text)
        names = [k for k in overrides if k not in known]
        if not names:
            raise
        hints = [
            f"--{name}"
            + "".join(
                f" (did you mean --{m}?)" for m in get_close_matches(name, known, 1)
            )
            for name in names
        ]
        raise SystemExit(
            f"error: unknown option {', '.join(hints)}: not a key of {hparams_file}"
        ) from None


def load_hyperpyyaml_keys(text):
    """Top-level keys of a HyperPyYAML text, without building any object."""
    keys = []
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#") and ":" in line:
            keys.append(line.split(":", 1)[0].strip())
    return keys


def announce_demo(hparams, changed):
    """Tells the user, first thing, that this is the demo and what it shortened."""
    folders = [c for c in changed if c[0] == "output_folder"]
    changed = [c for c in changed if c[0] != "output_folder"]
    where = f"Writing to {hparams['output_folder']}"
    if folders:  # the default folder: the demo's own, apart from real runs
        where += f" (runs on your own audio write to {folders[0][1]})"
    lines = [
        "=" * 78,
        "No --data_folder or --train_csv given: running the built-in DEMO.",
        f"Demo corpus: {DEMO_DESCRIPTION}",
        f"  generated (once) in {hparams['demo_folder']}",
        where + ".",
    ]
    if changed:
        lines.append(
            "The model is the paper's; shortened for the demo (paper -> demo):"
        )
        lines += [f"  {key}: {paper} -> {demo}" for key, paper, demo in changed]
    else:
        lines.append("The demo shortens nothing: every demo setting was given.")
    lines += [
        "Override any of them on the command line (e.g. --batch_size 16); "
        "give --data_folder DIR to pretrain on your own audio.",
        "=" * 78,
    ]
    print("\n".join(lines), flush=True)


def manifest_root(hparams):
    """``$data_root`` of the manifests: --data_root, else the train CSV's folder."""
    return hparams["data_root"] or os.path.dirname(
        os.path.abspath(hparams["train_csv"])
    )


def check_arguments(hparams):
    """Checks the data arguments before anything is written (one-line errors).

    A rejected run leaves its output folder (and an earlier run's record in
    it) as it was.
    """
    for key in ("train_csv", "valid_csv"):
        if hparams[key] and not os.path.isfile(hparams[key]):
            raise SystemExit(f"error: --{key} {hparams[key]}: no such file")
    if hparams["train_csv"]:
        for csv in (hparams["train_csv"], hparams["valid_csv"]):
            if csv is not None:  # the columns and rows; audio files come later
                read_manifest(csv, data_root=manifest_root(hparams), check_files=False)
        return
    folder = hparams["data_folder"]
    if folder and not os.path.isdir(folder):
        raise SystemExit(f"error: --data_folder {folder}: no such directory")
    if not 0.0 <= hparams["valid_fraction"] < 1.0:
        raise SystemExit(
            f"error: --valid_fraction {hparams['valid_fraction']}: must be in [0, 1)"
        )


def run_fingerprint(hparams):
    """What this run trains on: its data and the settings a resume must keep."""
    if hparams["train_csv"]:
        data = manifest_fingerprint(hparams["train_csv"], hparams["valid_csv"])
    elif hparams["data_folder"]:
        data = folder_fingerprint(hparams["data_folder"])
        if hparams["valid_csv"]:
            data["digest"] += "+" + manifest_fingerprint(hparams["valid_csv"])["digest"]
    else:
        data = {"kind": "demo", "where": hparams["demo_folder"], "digest": "demo"}
    model = type(hparams["model"]).__name__
    return {"data": data, "settings": settings_fingerprint(hparams, model=model)}


def check_old_demo_folder(hparams, fingerprint):
    """Refuses to continue a demo run made before run records, on other data.

    Until run records, the demo wrote to the default output folder of real runs
    (``results/<experiment_name>/<seed>``): such a folder has no record, but
    holds the demo corpus.
    """
    folder = hparams["output_folder"]
    if (
        fingerprint["data"]["kind"] == "demo"
        or hparams["allow_changed_run"]
        or os.path.exists(os.path.join(folder, FINGERPRINT_FILE))
        or not os.path.isdir(hparams["demo_folder"])
    ):
        return
    raise RunFolderError(
        f"{folder} holds a run of the built-in demo (its demo_corpus is there); "
        "resuming it would mix the two runs. For a new run give another "
        "--output_folder; to continue this one anyway give --allow_changed_run True"
    )


def limit_workers(hparams):
    """Caps the loaders' workers at this process's share of the CPUs.

    Returns the one-line note to log, or None when nothing was capped.
    """
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    note = None
    for key in ("train_dataloader_opts", "valid_dataloader_opts"):
        opts = hparams[key]
        workers, capped = cap_workers(opts.get("num_workers", 0), processes=processes)
        opts["num_workers"] = workers
        note = note or capped
    return note


def prepare_data(hparams, min_seconds):
    """Resolves (train_csv, valid_csv, data_root), scanning a folder if needed."""
    if hparams["train_csv"]:
        data_root = manifest_root(hparams)
        csvs = [hparams["train_csv"], hparams["valid_csv"]]
        if hparams["check_manifest_audio"]:
            csvs = [
                checked_manifest(hparams, csv, data_root, min_seconds) for csv in csvs
            ]
        return csvs[0], csvs[1], data_root
    data_folder = hparams["data_folder"]
    if not data_folder:
        data_folder = os.path.join(hparams["demo_folder"], "audio")
        run_on_main(make_demo_corpus, kwargs={"folder": hparams["demo_folder"]})
    if not os.path.isdir(data_folder):
        raise SystemExit(f"error: --data_folder {data_folder}: no such directory")
    kwargs = {
        "data_folder": data_folder,
        "save_folder": hparams["manifest_folder"],
        "min_seconds": min_seconds,
        "valid_fraction": hparams["valid_fraction"],
        "valid_csv": hparams["valid_csv"],
        "seed": hparams["seed"],
        "progress": if_main_process(),
    }
    run_on_main(prepare_folder, kwargs=kwargs)
    paths = prepare_folder(**{**kwargs, "progress": False, "verbose": False})
    return paths["train_csv"], paths["valid_csv"], paths["data_root"]


def checked_manifest(hparams, csv, data_root, min_seconds):
    """The manifest's usable rows (decoded once, cached); bad ones in skipped_*.csv."""
    if csv is None:
        return None
    stem = os.path.splitext(os.path.basename(csv))[0]
    folder = hparams["manifest_folder"]
    kwargs = {
        "csv_path": csv,
        "save_csv": os.path.join(folder, f"{stem}_checked.csv"),
        "skipped_csv": os.path.join(folder, f"skipped_{stem}.csv"),
        "min_seconds": min_seconds,
        "data_root": data_root,
        "progress": if_main_process(),
    }
    os.makedirs(folder, exist_ok=True)
    run_on_main(check_manifest_audio, kwargs=kwargs)
    return check_manifest_audio(**{**kwargs, "progress": False})


def prepare_target_norm(hparams, train_csv, data_root, min_seconds):
    """``target_norm: global``: estimates the statistics before step 1.

    From the first ``target_norm_clips`` training clips (manifest order, crops
    from the start), on the main process, broadcast to every rank. A run with a
    checkpoint to resume from skips it: the checkpoint restores the buffer.
    """
    if hparams["target_norm"] != "global":
        return
    if hparams["checkpointer"].find_checkpoint() is not None:
        if if_main_process():
            logger.info("target_norm global: statistics restored from the checkpoint")
        return
    frames = estimate_global_target_norm(
        hparams["model"],
        train_csv,
        data_root,
        hparams["target_norm_clips"],
        hparams["crop_seconds"],
        hparams["sample_rate"],
        min_seconds,
    )
    if if_main_process():
        logger.info(
            "target_norm global: per-band statistics estimated on %d frames of "
            "the first %d training clips",
            frames,
            hparams["target_norm_clips"],
        )


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
    argv, init_from = take_init_from(argv)
    hparams_file, run_opts, overrides = parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    if str(run_opts.get("device") or infer_device()).startswith("cpu"):
        retain_freed_memory()  # no page faults on every step's reallocations
    hparams, overrides, demo_changes = apply_demo_settings(
        hparams_file, run_opts, overrides
    )
    given = run_opts.overridden_args
    if "ckpt_interval_steps" in given and "ckpt_interval_minutes" not in given:
        hparams["ckpt_interval_minutes"] = 0  # the two are exclusive in SpeechBrain
    # every check before the first write: a rejected run changes nothing
    check_arguments(hparams)
    if init_from:  # converted weights to start from; this run's checkpoints win
        count = init_pretraining(hparams["model"], init_from)
        if if_main_process():
            print(f"--init_from {init_from}: {count} tensors loaded", flush=True)
    fingerprint = run_fingerprint(hparams)
    check_old_demo_folder(hparams, fingerprint)
    changed_run = check_run_folder(
        hparams["output_folder"], fingerprint, hparams["allow_changed_run"]
    )
    workers_note = limit_workers(hparams)
    if demo_changes is not None and if_main_process():
        announce_demo(hparams, demo_changes)

    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    if changed_run and if_main_process():
        logger.warning(changed_run)
    if workers_note and if_main_process():
        logger.info(workers_note)
    if if_main_process():
        write_config(
            os.path.join(hparams["save_folder"], PRETRAIN_CONFIG),
            make_config(
                hparams["frontend"],
                hparams["encoder"],
                hparams["crop_seconds"],
                {"model": type(hparams["model"]).__name__},
            ),
        )
    min_seconds = hparams["model"].min_seconds
    hparams["crop_clock"] = {"epoch": 0}  # set by the Brain at each epoch start
    train_csv, valid_csv, data_root = prepare_data(hparams, min_seconds)
    train_set, valid_set = dataio_prepare(
        hparams, train_csv, valid_csv, data_root, min_seconds
    )
    if if_main_process():  # the data is usable: this folder is now this run's
        write_fingerprint(hparams["output_folder"], fingerprint)
    prepare_target_norm(hparams, train_csv, data_root, min_seconds)

    brain = PretrainBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.has_valid = valid_set is not None
    brain.epoch = 0
    brain.tensorboard = None
    if hparams["use_tensorboard"] and if_main_process():
        brain.tensorboard = hparams["tensorboard_logger"]()
    # A seeded shuffle, the same permutation with one or many processes (under
    # DDP, SpeechBrain deals it out round-robin): N GPUs see the batches of one.
    sampler = ReproducibleRandomSampler(train_set, seed=hparams["seed"])
    brain.train_sampler = sampler  # SpeechBrain calls its set_epoch
    train_opts = {**hparams["train_dataloader_opts"], "sampler": sampler}
    brain.fit(
        brain.hparams.epoch_counter,
        train_set,
        valid_set,
        train_loader_kwargs=train_opts,
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
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
