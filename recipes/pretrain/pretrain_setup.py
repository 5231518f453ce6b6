"""Setting up a pretraining run: the demo's settings, arguments, run folder.

Everything here runs before anything is written: a run with bad arguments, or
one that would resume another run's folder on other data or sizes, stops with
a one-line error and leaves the disk as it was.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

import hashlib
import logging
import os
from difflib import get_close_matches

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from pretrain_data import corpus_manifests, manifest_root
from ruamel.yaml import YAML, YAMLError
from speechbrain.utils.distributed import if_main_process, infer_device

from bestrq2_lobes.data.demo_corpus import DEMO_DESCRIPTION
from bestrq2_lobes.data.manifest import ManifestError, read_manifest
from bestrq2_lobes.data.shards import resolve_shards
from bestrq2_lobes.lobe.convert import init_pretraining, take_init_from
from bestrq2_lobes.lobe.encoder_dir import PRETRAIN_CONFIG, make_config, write_config
from bestrq2_lobes.model.encoder import FRAME_READOUTS
from bestrq2_lobes.training.console import limit_loader_workers
from bestrq2_lobes.training.cpu_memory import retain_freed_memory
from bestrq2_lobes.training.elastic import restart_note
from bestrq2_lobes.training.run import parse_arguments
from bestrq2_lobes.training.run_folder import (
    FINGERPRINT_FILE,
    RunFolderError,
    check_run_folder,
    folder_fingerprint,
    manifest_fingerprint,
    settings_fingerprint,
)

logger = logging.getLogger(__name__)


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
    if hparams["data_folder"] or hparams["train_csv"] or hparams.get("train_shards"):
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


def check_arguments(hparams):
    """Checks the data arguments before anything is written (one-line errors).

    A rejected run leaves its output folder (and an earlier run's record in
    it) as it was.
    """
    readout = hparams.get("frame_readout", "mean")
    if readout not in FRAME_READOUTS:
        raise SystemExit(
            f"error: --frame_readout {readout}: must be one of {list(FRAME_READOUTS)}"
        )
    if hparams.get("train_shards"):
        check_shard_arguments(hparams)
        return
    if hparams.get("valid_shards"):
        raise SystemExit("error: --valid_shards needs --train_shards")
    if hparams.get("corpus") and not hparams["data_folder"]:
        raise SystemExit(
            f"error: --corpus {hparams['corpus']} needs --data_folder, the corpus root"
        )
    if hparams["train_csv"]:
        for csv in (hparams["train_csv"], hparams["valid_csv"]):
            if csv is not None:  # the columns and rows; audio files come later
                read_manifest(csv, data_root=manifest_root(hparams), check_files=False)
        return
    valid_csv = hparams["valid_csv"]
    if valid_csv and not os.path.isfile(valid_csv):
        raise ManifestError(f"valid_csv not found: {valid_csv!r}")
    folder = hparams["data_folder"]
    if folder and not os.path.isdir(folder):
        raise SystemExit(f"error: --data_folder {folder}: no such directory")
    if not 0.0 <= hparams["valid_fraction"] < 1.0:
        raise SystemExit(
            f"error: --valid_fraction {hparams['valid_fraction']}: must be in [0, 1)"
        )


def check_shard_arguments(hparams):
    """``--train_shards``: no other source given, and the sets name shards."""
    others = [
        k for k in ("corpus", "data_folder", "train_csv", "valid_csv") if hparams.get(k)
    ]
    if others:
        raise SystemExit(
            f"error: --train_shards and --{others[0]}: give one source of data "
            "(use --valid_shards for validation shards)"
        )
    for key in ("train_shards", "valid_shards"):
        if hparams[key]:
            resolve_shards(hparams[key])  # one-line ShardError when unusable


def shards_fingerprint(train_spec, valid_spec):
    """The data of a shard run: each shard's name and size (and its index)."""
    lines, where, clips = [], [], 0
    for spec in (train_spec, valid_spec):
        if not spec:
            lines.append("-")
            continue
        shards, _ = resolve_shards(spec)
        where.append(spec)
        clips += sum(s.clips for s in shards)
        lines += [
            f"{os.path.basename(s.path)}\t{os.path.getsize(s.path)}" for s in shards
        ]
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
    return {"kind": "shards", "where": where, "files": clips, "digest": digest}


def run_fingerprint(hparams):
    """What this run trains on: its data and the settings a resume must keep."""
    if hparams.get("train_shards"):
        data = shards_fingerprint(hparams["train_shards"], hparams["valid_shards"])
    elif hparams["train_csv"]:
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


def start_pretraining(argv):
    """Parses and checks everything, then creates the run's folder.

    Every check comes before the first write, so a rejected run changes
    nothing on disk. Also applies the demo's settings, ``--init_from`` and the
    loaders' worker cap, and writes the pretraining config beside the
    checkpoints.

    Returns
    -------
    (dict, RunOptions, dict)
        The hparams, the run options and the run's fingerprint (written once
        the data is known to be usable).
    """
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
    corpus_manifests(hparams)  # --corpus: the prepared CSVs are the run's data
    if init_from:  # converted weights to start from; this run's checkpoints win
        count = init_pretraining(hparams["model"], init_from)
        if if_main_process():
            print(f"--init_from {init_from}: {count} tensors loaded", flush=True)
    fingerprint = run_fingerprint(hparams)
    check_old_demo_folder(hparams, fingerprint)
    changed_run = check_run_folder(
        hparams["output_folder"], fingerprint, hparams["allow_changed_run"]
    )
    workers_note = limit_loader_workers(hparams)
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
    if restart_note() and if_main_process():
        logger.warning(restart_note())
    return hparams, run_opts, fingerprint


def write_encoder_config(hparams) -> None:
    """Writes ``save/encoder_config.json``, what ``export`` builds the encoder from.

    Called once the front end's input statistics are known (``input_norm``).
    """
    if if_main_process():
        write_config(
            os.path.join(hparams["save_folder"], PRETRAIN_CONFIG),
            make_config(
                hparams["frontend"],
                hparams["encoder"],
                hparams["crop_seconds"],
                {"model": type(hparams["model"]).__name__},
                hparams.get("frame_readout", "mean"),
            ),
        )
