"""Data of a pretraining run: manifests (or a scanned folder) or tar shards.

``data_source`` is the one entry point: it gives the train and valid data of
either kind of source (``DataSource``); another kind of source is one more
branch there. Manifests: each time a clip is drawn, a random ``crop_seconds``
window is read; the crop is seeded by the run's position, so a resumed run
reads what the uninterrupted one read. Shards (``--train_shards``): a stream
(``bestrq2_lobes.data.shard_stream``) whose position is checkpointed, so a
resumed run reads what the uninterrupted one read too. Also the estimation of
the input and ``global`` target statistics before step 1.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import speechbrain as sb
import torch
from speechbrain.dataio.sampler import ReproducibleRandomSampler
from speechbrain.utils.distributed import if_main_process, run_on_main

from bestrq2_lobes.data.audio import random_crop, read_segment
from bestrq2_lobes.data.demo_corpus import make_demo_corpus
from bestrq2_lobes.data.folder_scan import prepare_folder
from bestrq2_lobes.data.manifest import read_manifest
from bestrq2_lobes.data.manifest_audio import check_manifest_audio
from bestrq2_lobes.data.shard_loader import ShardLoader, distributed_position
from bestrq2_lobes.data.shard_stream import ShardStream, first_shard_clips
from bestrq2_lobes.data.shards import check_shard_set, resolve_shards
from bestrq2_lobes.datasets.preparation import PrepareError
from bestrq2_lobes.datasets.recipe_data import fill_manifests, prepare_corpus
from bestrq2_lobes.lobe.encoder_dir import PRETRAIN_CONFIG, read_config_file
from bestrq2_lobes.training.seeding import stable_seed
from bestrq2_lobes.training.target_stats import (
    estimate_global_target_norm,
    estimate_input_norm,
    first_clips,
)

logger = logging.getLogger(__name__)


@dataclass
class DataSource:
    """What ``Brain.fit`` is given, whatever the kind of source.

    ``train``/``valid``: datasets (with ``train_kwargs``/``valid_kwargs`` for
    SpeechBrain's loaders) or ready loaders; ``sampler``: what SpeechBrain calls
    ``set_epoch`` on; ``first_clips(n)``: the first n training clips, from
    their start, for the statistics estimated before step 1;
    ``recoverables``: more state for the checkpointer.
    """

    train: object
    valid: object
    train_kwargs: dict
    valid_kwargs: dict
    sampler: object
    first_clips: Callable[[int], Iterator[torch.Tensor]]
    recoverables: dict = field(default_factory=dict)


def data_source(hparams, min_seconds) -> DataSource:
    """The run's train and valid data: tar shards, or manifests / a folder."""
    if hparams.get("train_shards"):
        return shard_source(hparams, min_seconds)
    return manifest_source(hparams, min_seconds)


def manifest_source(hparams, min_seconds) -> DataSource:
    """Manifests (or a scanned folder): datasets and a seeded, epoch-based shuffle.

    The same permutation with one or many processes (under DDP, SpeechBrain
    deals it out round-robin): N GPUs see the batches of one.
    """
    train_csv, valid_csv, data_root = prepare_data(hparams, min_seconds)
    train_set, valid_set = dataio_prepare(
        hparams, train_csv, valid_csv, data_root, min_seconds
    )
    sampler = ReproducibleRandomSampler(train_set, seed=hparams["seed"])
    crop, rate = hparams["crop_seconds"], hparams["sample_rate"]
    return DataSource(
        train=train_set,
        valid=valid_set,
        train_kwargs={**hparams["train_dataloader_opts"], "sampler": sampler},
        valid_kwargs=hparams["valid_dataloader_opts"],
        sampler=sampler,
        first_clips=lambda n: first_clips(
            train_csv, data_root, n, crop, rate, min_seconds
        ),
    )


def shard_source(hparams, min_seconds) -> DataSource:
    """Tar shards: streaming loaders; the train one is checkpointed (exact resume)."""
    rank, world = distributed_position()
    crop, rate = hparams["crop_seconds"], hparams["sample_rate"]
    loaders = {}
    first = None
    for name in ("train", "valid"):
        spec = hparams[f"{name}_shards"]
        if not spec:
            loaders[name] = None
            continue
        shards, index = resolve_shards(spec)
        check_shard_set(spec, shards, index, rate, min_seconds)  # one-line errors
        opts = dict(hparams[f"{name}_dataloader_opts"])
        for key in ("shuffle", "sampler", "drop_last"):
            opts.pop(key, None)
        stream = ShardStream(
            shards,
            index.get("format", "pcm"),
            opts.pop("batch_size"),
            crop,
            rate,
            seed=hparams["seed"],
            train=name == "train",
            shuffle_buffer=hparams["shard_shuffle_buffer"],
            epoch_steps=hparams["shard_epoch_steps"],
            num_workers=opts.pop("num_workers", 0),
            rank=rank,
            world_size=world,
        )
        loaders[name] = ShardLoader(stream, **opts)
        if name == "train":
            first = (shards, index.get("format", "pcm"))
            if if_main_process():
                logger.info(
                    "%s: %d shards, %d clips, %.1f h; %d steps per epoch",
                    spec,
                    len(shards),
                    sum(s.clips for s in shards),
                    sum(s.seconds for s in shards) / 3600,
                    len(stream),
                )
    return DataSource(
        train=loaders["train"],
        valid=loaders["valid"],
        train_kwargs={},
        valid_kwargs={},
        sampler=loaders["train"],
        first_clips=lambda n: first_shard_clips(*first, n, crop, rate),
        recoverables={"shard_loader": loaders["train"]},
    )


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


def manifest_root(hparams):
    """``$data_root`` of the manifests: --data_root, else the train CSV's folder."""
    return hparams["data_root"] or os.path.dirname(
        os.path.abspath(hparams["train_csv"])
    )


def corpus_manifests(hparams):
    """``--corpus NAME --data_folder ROOT``: the corpus's preparer writes the CSVs.

    Runs ``prepare_<corpus>`` (``bestrq2_lobes.datasets``) on the main process
    (the others wait), then sets ``train_csv``, ``valid_csv`` and ``data_root``
    to its ``train.csv``/``valid.csv`` where the command line gave none. Called
    before the run's fingerprint, so the run records the prepared CSVs as its
    data; a rerun with the same options on unchanged files prepares nothing.
    Returns the preparer's outputs (None without ``--corpus``).
    """
    corpus = hparams.get("corpus")
    if not corpus or hparams.get("prepared_corpus") is not None:
        return hparams.get("prepared_corpus")
    options = hparams.get("corpus_options") or {}
    if options.get("check") == "none":
        raise PrepareError(
            f"--corpus {corpus}: corpus_options check none writes no durations, "
            "which the random crops need: use check decode or header"
        )
    outputs = prepare_corpus(hparams)
    if not outputs.get("train_csv") and not hparams["train_csv"]:
        splits = [k[:-4] for k in outputs if k.endswith("_csv") and k != "skipped_csv"]
        raise PrepareError(
            f"--corpus {corpus}: the preparation wrote no train split "
            f"(splits: {', '.join(splits) or 'none'}); check corpus_options"
        )
    fill_manifests(hparams, outputs, ("train", "valid"))
    hparams["prepared_corpus"] = outputs
    return outputs


def decoded_by_preparer(hparams, csv):
    """True for a CSV a corpus preparer wrote after decoding every clip."""
    outputs = hparams.get("prepared_corpus") or {}
    options = hparams.get("corpus_options") or {}
    return options.get("check", "decode") == "decode" and csv in outputs.values()


def prepare_data(hparams, min_seconds):
    """Resolves (train_csv, valid_csv, data_root), scanning a folder if needed.

    With ``--corpus`` the preparer's CSVs are read; their clips were decoded
    by it (its default ``check: decode``), so ``check_manifest_audio`` does
    not decode them again (it does after ``check: header``).
    """
    corpus_manifests(hparams)
    if hparams["train_csv"]:
        data_root = manifest_root(hparams)
        csvs = [hparams["train_csv"], hparams["valid_csv"]]
        if hparams["check_manifest_audio"]:
            csvs = [
                csv
                if decoded_by_preparer(hparams, csv)
                else checked_manifest(hparams, csv, data_root, min_seconds)
                for csv in csvs
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


def first_clips_of(hparams, source: DataSource, count_key: str) -> dict:
    """The estimators' clip arguments: the source's first ``hparams[count_key]``.

    The clips come from the source (manifests or shards), read lazily on the
    main process only; the manifest arguments are then unused.
    """
    count = hparams[count_key]
    return {
        "manifest": None,
        "data_root": None,
        "max_clips": count,
        "seconds": hparams["crop_seconds"],
        "sample_rate": hparams["sample_rate"],
        "clips": source.first_clips(count),
    }


def resuming(hparams, *files: str) -> bool:
    """Whether the run resumes from a checkpoint (and ``files`` exist).

    As the main process sees the shared output folder, the same answer on
    every rank (every rank must call it): a node whose view of the folder
    lags would otherwise skip, or run, a broadcast the others do not.
    """

    def found():
        checkpoint = hparams["checkpointer"].find_checkpoint()
        return checkpoint is not None and all(os.path.isfile(f) for f in files)

    return run_on_main(found)


def prepare_input_norm(hparams, source: DataSource):
    """``input_norm: global | band``: the encoder's input statistics, before step 1.

    Estimated from the first ``input_norm_clips`` training clips (manifest or
    shard order, crops from the start) on the main process and broadcast; a run
    with a checkpoint to resume from reads them back from its
    ``encoder_config.json``.
    """
    mode = hparams.get("input_norm", "none")
    if mode == "none":
        return
    frontend = hparams["model"].frontend
    saved = os.path.join(hparams["save_folder"], PRETRAIN_CONFIG)
    if resuming(hparams, saved):
        config = read_config_file(saved)["frontend"]
        frontend.set_normalization(config["norm_mean"], config["norm_std"])
        if if_main_process():
            logger.info("input_norm %s: statistics read back from %s", mode, saved)
        return
    frames = estimate_input_norm(
        hparams["model"], mode, **first_clips_of(hparams, source, "input_norm_clips")
    )
    if if_main_process():
        logger.info(
            "input_norm %s: statistics estimated on %d frames of the first %d "
            "training clips",
            mode,
            frames,
            hparams["input_norm_clips"],
        )


def prepare_target_norm(hparams, source: DataSource):
    """``target_norm: global``: estimates the statistics before step 1.

    From the first ``target_norm_clips`` training clips (manifest or shard
    order, crops from the start), on the main process, broadcast to every rank.
    A run with a checkpoint to resume from skips it: the checkpoint restores
    the buffer.
    """
    if hparams["target_norm"] != "global":
        return
    if resuming(hparams):
        if if_main_process():
            logger.info("target_norm global: statistics restored from the checkpoint")
        return
    frames = estimate_global_target_norm(
        hparams["model"], **first_clips_of(hparams, source, "target_norm_clips")
    )
    if if_main_process():
        logger.info(
            "target_norm global: per-band statistics estimated on %d frames of "
            "the first %d training clips",
            frames,
            hparams["target_norm_clips"],
        )
