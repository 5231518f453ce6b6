"""Data of a pretraining run: manifests (or a scanned folder) and datasets.

Each time a clip is drawn, a random ``crop_seconds`` window is read; the crop is
seeded by the run's position, so a resumed run reads what the uninterrupted one
read. Also the estimation of the ``global`` target statistics before step 1.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

import logging
import os

import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process, run_on_main

from bestrq2_lobes.data.audio import random_crop, read_segment
from bestrq2_lobes.data.demo_corpus import make_demo_corpus
from bestrq2_lobes.data.folder_scan import prepare_folder
from bestrq2_lobes.data.manifest import read_manifest
from bestrq2_lobes.data.manifest_audio import check_manifest_audio
from bestrq2_lobes.lobe.encoder_dir import PRETRAIN_CONFIG, read_config_file
from bestrq2_lobes.training.seeding import stable_seed
from bestrq2_lobes.training.target_stats import (
    estimate_global_target_norm,
    estimate_input_norm,
)

logger = logging.getLogger(__name__)


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


def prepare_input_norm(hparams, train_csv, data_root, min_seconds):
    """``input_norm: global | band``: the encoder's input statistics, before step 1.

    Estimated from the first ``input_norm_clips`` training clips (manifest order,
    crops from the start) on the main process and broadcast; a run with a
    checkpoint to resume from reads them back from its ``encoder_config.json``.
    """
    mode = hparams.get("input_norm", "none")
    if mode == "none":
        return
    frontend = hparams["model"].frontend
    saved = os.path.join(hparams["save_folder"], PRETRAIN_CONFIG)
    if hparams["checkpointer"].find_checkpoint() is not None and os.path.isfile(saved):
        config = read_config_file(saved)["frontend"]
        frontend.set_normalization(config["norm_mean"], config["norm_std"])
        if if_main_process():
            logger.info("input_norm %s: statistics read back from %s", mode, saved)
        return
    frames = estimate_input_norm(
        hparams["model"],
        mode,
        train_csv,
        data_root,
        hparams["input_norm_clips"],
        hparams["crop_seconds"],
        hparams["sample_rate"],
        min_seconds,
    )
    if if_main_process():
        logger.info(
            "input_norm %s: statistics estimated on %d frames of the first %d "
            "training clips",
            mode,
            frames,
            hparams["input_norm_clips"],
        )


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
