"""The exported encoder directory: plain config, weights, safe and strict loading.

An encoder directory holds ``config.json`` (front end and encoder settings, the
pretraining crop length and a few facts about the run; plain JSON, no executable
tags) and ``encoder.safetensors`` (the encoder's ``state_dict``; a format that
cannot hold code). Directories written before hold ``encoder.ckpt`` instead, read
with ``torch.load(weights_only=True)``, which refuses pickled code. Loading is strict:
a missing file, a missing key or a tensor of the wrong shape stops with a one-line
error naming it. The config's sizes are checked for type, bounds and agreement, and
the weights' names and shapes against the config, before any module is allocated;
a tensor holding a NaN or an infinity is refused (``config_checks``).

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import pickle

import torch

from bestrq2_lobes.data.files import atomic_open, atomic_path
from bestrq2_lobes.lobe import config_checks
from bestrq2_lobes.model.encoder import ViTEncoder
from bestrq2_lobes.model.frontend import LogMel

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "encoder.ckpt"  # older encoder directories, and recipe checkpoints
SAFE_WEIGHTS_FILE = "encoder.safetensors"  # what write_encoder_dir writes
PRETRAIN_CONFIG = "encoder_config.json"  # written by the pretraining recipe
FORMAT = "bestrq2-encoder"


def defaults(module_class) -> dict:
    """The constructor defaults of a module: the paper's sizes, in one place.

    Example
    -------
    >>> defaults(ViTEncoder)["embed_dim"], defaults(LogMel)["hop_length"]
    (768, 625)
    """
    return {
        name: param.default
        for name, param in inspect.signature(module_class).parameters.items()
        if param.default is not inspect.Parameter.empty
    }


# The paper's configuration is the modules' defaults; the speech one changes
# the front end's resolution and the patch shape.
PRESETS = {
    "paper": {
        # the authors' front end (normalized STFT): their weights and targets
        "frontend": {**defaults(LogMel), "normalized": True},
        "encoder": defaults(ViTEncoder),
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
        both, and the patch height too when patches are full-band), or
        ``crop_seconds``, or ``frame_readout`` (how the lobe turns a patch
        column into a frame: ``"mean"``, the default, or ``"concat"``).

    Returns
    -------
    dict
        ``{"frontend": ..., "encoder": ..., "crop_seconds": ...}``, and
        ``frame_readout`` when it was given.

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
        if key == "frame_readout":
            config["frame_readout"] = value
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
    """Front end and (randomly initialised) encoder of a config.

    The config is checked first (``validate_config``), so a bad size fails in
    one line before anything is allocated.

    Example
    -------
    >>> build_modules(encoder_config(embed_dim=30, num_heads=3))
    Traceback (most recent call last):
    ...
    bestrq2_lobes.lobe.encoder_dir.EncoderDirError: invalid encoder config: ...
    """
    validate_config(config)
    try:
        return LogMel(**config["frontend"]), ViTEncoder(**config["encoder"])
    except (KeyError, TypeError) as err:
        raise EncoderDirError(f"invalid encoder config: {err}") from None


def validate_config(config: dict, where: str = "invalid encoder config") -> None:
    """Types, bounds and agreement of the sizes (``config_checks.check_config``).

    Arguments
    ---------
    config : dict
        ``{"frontend": ..., "encoder": ..., "crop_seconds": ...}``.
    where : str
        What the one-line ``EncoderDirError`` starts with (the file name).

    Example
    -------
    >>> validate_config(encoder_config(hop_length=0), "config.json")
    Traceback (most recent call last):
    ...
    bestrq2_lobes.lobe.encoder_dir.EncoderDirError: config.json: frontend.hop_length ...
    """
    try:
        config_checks.check_config(config)
    except ValueError as err:
        raise EncoderDirError(f"{where}: {err}") from None


def check_weights(config: dict, state: dict, path: str) -> None:
    """Checks tensor names and shapes against the config without building it.

    The expected shapes come from an encoder built on the ``meta`` device (no
    memory), so a config whose sizes disagree with the weights stops here,
    before the real modules are allocated.
    """
    try:
        expected = config_checks.expected_shapes(config["encoder"])
        config_checks.check_state_shapes(expected, state)
    except (ValueError, TypeError) as err:
        raise EncoderDirError(f"{path}: {err}") from None


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
    validate_config(config, path)
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


def load_safetensors(path: str | os.PathLike) -> dict:
    """Loads a safetensors file (tensors only; the format cannot hold code)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise EncoderDirError(f"{path}: missing weights file")
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        lines = str(err).strip().splitlines() or [type(err).__name__]
        raise EncoderDirError(f"{path}: unreadable weights ({lines[0]})") from None


def weights_path(directory: str | os.PathLike) -> str:
    """``encoder.safetensors`` of a directory, or ``encoder.ckpt`` if only that."""
    directory = os.fspath(directory)
    safe = os.path.join(directory, SAFE_WEIGHTS_FILE)
    legacy = os.path.join(directory, WEIGHTS_FILE)
    return legacy if os.path.isfile(legacy) and not os.path.isfile(safe) else safe


def load_weights(path: str | os.PathLike) -> dict:
    """``load_safetensors`` or ``load_state_dict``, by the file's extension."""
    if os.fspath(path).endswith(".safetensors"):
        return load_safetensors(path)
    return load_state_dict(path)


def load_strict(module: torch.nn.Module, state: dict, path: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming the keys.

    A tensor holding a NaN or an infinity is refused, naming it.
    """
    expected = {key: value.shape for key, value in module.state_dict().items()}
    try:
        config_checks.check_state_shapes(expected, state)
        config_checks.check_finite_state(state)
    except ValueError as err:
        raise EncoderDirError(f"{path}: {err}") from None
    module.load_state_dict(state, strict=True)


def load_encoder_dir(directory: str | os.PathLike):
    """Builds the front end and encoder of a directory and loads its weights.

    Returns
    -------
    (LogMel, ViTEncoder, dict)
        Front end, encoder with the exported weights, and the config.
    """
    config = read_config(directory)
    path = weights_path(directory)
    state = load_weights(path)
    check_weights(config, state, path)  # before the modules are allocated
    frontend, encoder = build_modules(config)
    load_strict(encoder, state, path)
    return frontend, encoder, config


def write_encoder_dir(
    directory: str | os.PathLike,
    frontend: LogMel,
    encoder: ViTEncoder,
    crop_seconds: float,
    info: dict | None = None,
    frame_readout: str = "mean",
) -> str:
    """Writes ``config.json`` and ``encoder.safetensors`` (the loader's counterpart).

    ``frame_readout`` is the lobe's default read-out of the directory (see
    ``make_config``).

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
    from safetensors.torch import save_file

    with atomic_path(os.path.join(directory, SAFE_WEIGHTS_FILE)) as part:
        save_file(state, part)
    config = make_config(frontend, encoder, crop_seconds, info, frame_readout)
    write_config(os.path.join(directory, CONFIG_FILE), config)
    return directory


def make_config(
    frontend: LogMel,
    encoder: ViTEncoder,
    crop_seconds: float,
    info: dict | None = None,
    frame_readout: str = "mean",
) -> dict:
    """The plain-JSON description of a front end and encoder.

    ``frame_readout`` is how ``BestRQ2Encoder`` turns each patch column into a
    frame unless told otherwise: ``"mean"`` over the frequency rows (the
    authors' X-ARES read-out) or ``"concat"`` of the rows (``freq_rows`` times
    wider). A directory without the key reads ``"mean"``.

    Example
    -------
    >>> enc = ViTEncoder(n_mels=32, embed_dim=32, depth=1, num_heads=4)
    >>> cfg = make_config(LogMel(n_mels=32), enc, 10.0)
    >>> cfg["hop_ms"], cfg["frame_readout"]
    (625.0, 'mean')
    """
    return {
        "format": FORMAT,
        "version": 1,
        "frontend": frontend.config,
        "encoder": encoder.config,
        "crop_seconds": float(crop_seconds),
        "hop_ms": frontend.hop_ms * encoder.grid.patch_time,
        "frame_readout": frame_readout,
        "info": info or {},
    }


def write_config(path: str | os.PathLike, config: dict) -> None:
    """Writes a config as JSON, atomically (temporary name, then rename)."""
    with atomic_open(path) as fout:
        json.dump(config, fout, indent=2)
