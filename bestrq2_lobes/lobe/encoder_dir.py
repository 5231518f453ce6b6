"""The exported encoder directory: plain config, weights, safe and strict loading.

An encoder directory holds ``config.json`` (front end and encoder settings, the
pretraining crop length and a few facts about the run; plain JSON, no executable
tags) and ``encoder.ckpt`` (the encoder's ``state_dict``, read with
``torch.load(weights_only=True)``, which refuses pickled code). Loading is strict:
a missing file, a missing key or a tensor of the wrong shape stops with a one-line
error naming it.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import copy
import json
import os
import pickle

import torch

from bestrq2_lobes.data.files import atomic_open, atomic_path
from bestrq2_lobes.model.encoder import ViTEncoder
from bestrq2_lobes.model.frontend import LogMel

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "encoder.ckpt"
PRETRAIN_CONFIG = "encoder_config.json"  # written by the pretraining recipe
FORMAT = "bestrq2-encoder"

PRESETS = {
    "paper": {
        "frontend": LogMel().config,
        "encoder": dict(
            n_mels=128,
            patch_freq=16,
            patch_time=16,
            embed_dim=768,
            depth=12,
            num_heads=12,
            mlp_ratio=4.0,
            drop_path=0.1,
            norm_eps=1e-5,
        ),
        "crop_seconds": 10.0,
    },
}
PRESETS["speech"] = {
    "frontend": {
        **PRESETS["paper"]["frontend"],
        "n_fft": 400,
        "win_length": 400,
        "hop_length": 160,
        "n_mels": 80,
    },
    "encoder": {
        **PRESETS["paper"]["encoder"],
        "n_mels": 80,
        "patch_freq": 80,
        "patch_time": 4,
    },
    "crop_seconds": 10.0,
}


class EncoderDirError(ValueError):
    """An encoder directory is missing, incomplete or unsafe (one-line message)."""


def encoder_config(preset: str = "paper", **sizes) -> dict:
    """A config of a preset with some sizes changed (for a random encoder).

    Arguments
    ---------
    preset : str
        ``"paper"`` (128 mels, 16x16 patches, 625 ms frames) or ``"speech"``
        (80 mels, 10 ms hop, full-band 80x4 patches, 40 ms frames).
    **sizes
        Keys of the front end or encoder config to change (``n_mels`` changes
        both, and the patch height too when patches are full-band).

    Returns
    -------
    dict
        ``{"frontend": ..., "encoder": ..., "crop_seconds": ...}``

    Example
    -------
    >>> cfg = encoder_config("speech", embed_dim=32, depth=1, num_heads=4, n_mels=40)
    >>> cfg["encoder"]["patch_freq"], cfg["frontend"]["n_mels"]
    (40, 40)
    >>> from bestrq2_lobes import BestRQ2Encoder
    >>> BestRQ2Encoder(config=cfg).hop_ms
    40.0
    """
    if preset not in PRESETS:
        raise EncoderDirError(f"unknown preset {preset!r}: use one of {list(PRESETS)}")
    config = copy.deepcopy(PRESETS[preset])
    full_band = config["encoder"]["patch_freq"] == config["encoder"]["n_mels"]
    for key, value in sizes.items():
        if value is None:
            continue
        if key == "crop_seconds":
            config["crop_seconds"] = float(value)
            continue
        known = False
        for part in ("frontend", "encoder"):
            if key in config[part]:
                config[part][key] = value
                known = True
        if not known:
            raise EncoderDirError(f"unknown encoder setting {key!r}")
    if full_band and "patch_freq" not in sizes:
        config["encoder"]["patch_freq"] = config["encoder"]["n_mels"]
    return config


def build_modules(config: dict) -> tuple[LogMel, ViTEncoder]:
    """Front end and (randomly initialised) encoder of a config."""
    try:
        return LogMel(**config["frontend"]), ViTEncoder(**config["encoder"])
    except (KeyError, TypeError) as err:
        raise EncoderDirError(f"invalid encoder config: {err}") from None


def read_config(directory: str | os.PathLike) -> dict:
    """Reads ``config.json`` of an encoder directory, checking its format.

    Example
    -------
    >>> read_config("/no/such/dir")
    Traceback (most recent call last):
    ...
    bestrq2_lobes.lobe.encoder_dir.EncoderDirError: /no/such/dir: not a directory ...
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise EncoderDirError(
            f"{directory}: not a directory (export one with "
            "`python -m bestrq2_lobes.lobe.export PRETRAIN_OUTPUT ENCODER_DIR`)"
        )
    return read_config_file(os.path.join(directory, CONFIG_FILE))


def read_config_file(path: str | os.PathLike) -> dict:
    """Reads and checks one JSON config file (see ``read_config``)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise EncoderDirError(f"{path}: missing config file")
    try:
        with open(path, encoding="utf-8") as fin:
            config = json.load(fin)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EncoderDirError(f"{path}: not plain JSON ({err})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise EncoderDirError(f"{path}: not a {FORMAT} config (no 'format' key)")
    for key in ("frontend", "encoder", "crop_seconds"):
        if key not in config:
            raise EncoderDirError(f"{path}: missing key {key!r}")
    return config


def load_state_dict(path: str | os.PathLike) -> dict:
    """Loads tensors only: a file whose unpickling would run code is refused."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise EncoderDirError(f"{path}: missing weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0]
        raise EncoderDirError(
            f"{path}: refused, it is not a plain tensor file ({first})"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        first = str(err).strip().splitlines()[0]
        raise EncoderDirError(f"{path}: unreadable weights ({first})") from None
    if not isinstance(state, dict):
        raise EncoderDirError(f"{path}: expected a state_dict, got {type(state)}")
    return state


def load_strict(module: torch.nn.Module, state: dict, path: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming the keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise EncoderDirError(
            f"{path}: does not match the config: missing keys {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected keys "
            f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise EncoderDirError(
                f"{path}: {key} has shape {tuple(value.shape)}, the config "
                f"expects {tuple(own[key].shape)}"
            )
    module.load_state_dict(state, strict=True)


def load_encoder_dir(directory: str | os.PathLike):
    """Builds the front end and encoder of a directory and loads its weights.

    Returns
    -------
    (LogMel, ViTEncoder, dict)
        Front end, encoder with the exported weights, and the config.
    """
    config = read_config(directory)
    frontend, encoder = build_modules(config)
    path = os.path.join(os.fspath(directory), WEIGHTS_FILE)
    load_strict(encoder, load_state_dict(path), path)
    return frontend, encoder, config


def write_encoder_dir(
    directory: str | os.PathLike,
    frontend: LogMel,
    encoder: ViTEncoder,
    crop_seconds: float,
    info: dict | None = None,
) -> str:
    """Writes ``config.json`` and ``encoder.ckpt`` (the loader's counterpart).

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> enc = ViTEncoder(n_mels=32, embed_dim=32, depth=1, num_heads=4)
    >>> path = write_encoder_dir(tmp / "enc", LogMel(n_mels=32), enc, 10.0)
    >>> _, loaded, cfg = load_encoder_dir(path)
    >>> torch.equal(loaded.patch_embed.proj.weight, enc.patch_embed.proj.weight)
    True
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    with atomic_path(os.path.join(directory, WEIGHTS_FILE)) as part:
        torch.save(state, part)
    config = make_config(frontend, encoder, crop_seconds, info)
    write_config(os.path.join(directory, CONFIG_FILE), config)
    return directory


def make_config(
    frontend: LogMel, encoder: ViTEncoder, crop_seconds: float, info: dict | None = None
) -> dict:
    """The plain-JSON description of a front end and encoder.

    Example
    -------
    >>> enc = ViTEncoder(n_mels=32, embed_dim=32, depth=1, num_heads=4)
    >>> make_config(LogMel(n_mels=32), enc, 10.0)["hop_ms"]
    625.0
    """
    return {
        "format": FORMAT,
        "version": 1,
        "frontend": frontend.config,
        "encoder": encoder.config,
        "crop_seconds": float(crop_seconds),
        "hop_ms": frontend.hop_ms * encoder.grid.patch_time,
        "info": info or {},
    }


def write_config(path: str | os.PathLike, config: dict) -> None:
    """Writes a config as JSON, atomically (temporary name, then rename)."""
    with atomic_open(path) as fout:
        json.dump(config, fout, indent=2)
