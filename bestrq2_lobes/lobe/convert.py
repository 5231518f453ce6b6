"""Convert the authors' released BEST-RQ-2 encoders into encoder directories.

Usage::

    python -m bestrq2_lobes.lobe.convert SRC ENCODER_DIR [--pretraining]

``SRC`` is one of the authors' weight files: a ``.safetensors`` state dict (their
training writes one beside each Lightning checkpoint), a Lightning ``.ckpt`` (read
with ``torch.load(weights_only=True)``: no pickled code runs; a checkpoint that
cannot be read that way is refused with a one-line error), or a downloaded hub
model folder (``config.json`` and ``*.safetensors``; the remote code is never
read). ``ENCODER_DIR`` receives a standard encoder directory (``config.json``,
``encoder.safetensors``, ``hyperparams.yaml``, ``README.md``) that
:class:`~bestrq2_lobes.BestRQ2Encoder`, the pretrained interface and the X-ARES
adapters load.

What the conversion maps (the authors' timm-style ViT onto ours):

* ``patch_embed.patch_embed.proj`` -> ``patch_embed.proj`` (the same ``Conv2d``
  kernel; a patch is flattened mel-major in both);
* ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2}`` -> the same names under
  ``blocks.blocks.{i}``; the fused qkv has the same (3, heads, head_dim) row
  layout in both; ``mlp.fc1``/``mlp.fc2`` -> ``mlp.0``/``mlp.2``; final ``norm``
  -> ``blocks.norm``;
* ``pos_embed``: the authors' fixed 2-D sin-cos table, flattened frequency-major,
  is checked against ours at each token's true (freq row, time column) and then
  dropped (ours is computed, not stored). Our tokens are time-major; nothing in
  the weights depends on the token order, so the outputs are the same tokens,
  reordered. Below 10 s the authors slice the table, ``pos_embed[:, :N]``, which
  in a frequency-major grid gives most tokens another cell's position; ours
  places every token at its cell, so features below 10 s differ by design.

The front end is the authors' (``LogMel(normalized=True)``, the paper preset).
With ``--pretraining`` the predictor (or the one-stage head), the mask token, the
output head and the frozen quantizer are also written, to ``ENCODER_DIR/
pretraining``, from which ``recipes/pretrain/train.py ... --init_from DIR``
continues pretraining with the authors' targets. That is possible only for their
random-projection quantizer (``quantizer.P``, ``quantizer.CB``); for the other
quantizers the encoder is converted and the pretraining state is not.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pickle
import re
import sys

import torch

from bestrq2_lobes.data.files import atomic_path
from bestrq2_lobes.lobe.encoder_dir import (
    CONFIG_FILE,
    EncoderDirError,
    validate_config,
    write_config,
    write_encoder_dir,
)
from bestrq2_lobes.model.encoder import ViTEncoder
from bestrq2_lobes.model.frontend import LogMel
from bestrq2_lobes.model.position import sincos_2d

AUTHORS_FRONTEND = dict(
    sample_rate=16000,
    n_fft=2048,
    win_length=2048,
    hop_length=625,
    n_mels=128,
    f_min=0.0,
    f_max=8000.0,
    floor=1e-10,
    norm_mean=None,
    norm_std=None,
    normalized=True,
)
CONVERTER_VERSION = 1  # cached conversions of another version are redone
PRETRAIN_SUBDIR = "pretraining"
PRETRAIN_FORMAT = "bestrq2-pretraining"
PRETRAIN_WEIGHTS = "model.safetensors"
POSITION_TOLERANCE = 1e-4
MAX_TENSORS = 100_000
QKV_SUFFIX = "blocks.0.attn.qkv.weight"
_BLOCK_PARTS = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "attn.qkv.weight": "attn.qkv.weight",
    "attn.qkv.bias": "attn.qkv.bias",
    "attn.proj.weight": "attn.proj.weight",
    "attn.proj.bias": "attn.proj.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "mlp.fc1.weight": "mlp.0.weight",
    "mlp.fc1.bias": "mlp.0.bias",
    "mlp.fc2.weight": "mlp.2.weight",
    "mlp.fc2.bias": "mlp.2.bias",
}


class ConversionError(EncoderDirError):
    """The authors' weights cannot be converted (one-line message)."""


class PretrainingStateError(ConversionError):
    """The encoder was converted, its pretraining state was not (one line)."""


# ---------------------------------------------------------------- reading


def read_source(src: str | os.PathLike) -> tuple[dict, dict]:
    """Tensors and the hub ``config.json`` (``{}`` if none) of an authors' source.

    Arguments
    ---------
    src : str or PathLike
        A ``.safetensors`` file, a Lightning ``.ckpt``, or a hub model folder.

    Returns
    -------
    (dict, dict)
        The state dict (name -> tensor) and the hub config.

    Example
    -------
    >>> read_source("/no/such/file.safetensors")
    Traceback (most recent call last):
    ...
    bestrq2_lobes.lobe.convert.ConversionError: /no/such/file.safetensors: no such ...
    """
    src = os.fspath(src)
    if os.path.isdir(src):
        return _read_folder(src)
    if not os.path.isfile(src):
        raise ConversionError(f"{src}: no such file or directory")
    if src.endswith(".safetensors"):
        return read_safetensors(src), {}
    return _read_lightning(src), {}


def read_safetensors(path: str) -> dict:
    """All tensors of a safetensors file (a format that cannot hold code)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err)
        raise ConversionError(
            f"{path}: not a readable safetensors file ({first})"
        ) from None
    return state


def _read_lightning(path: str) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0]
        beside = os.path.splitext(path)[0] + ".safetensors"
        hint = (
            f"convert {beside} instead"
            if os.path.isfile(beside)
            else "convert the .safetensors file the authors' training writes beside "
            "each .ckpt (same name), or their hub model"
        )
        raise ConversionError(
            f"{path}: refused, reading it would run pickled code ({first[:120]}); "
            f"{hint}"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        first = str(err).strip().splitlines()[0]
        raise ConversionError(f"{path}: unreadable checkpoint ({first})") from None
    if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
        ckpt = ckpt["state_dict"]
    if not isinstance(ckpt, dict):
        raise ConversionError(f"{path}: expected a state dict, got {type(ckpt)}")
    return {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}


def _read_folder(folder: str) -> tuple[dict, dict]:
    config = {}
    config_path = os.path.join(folder, CONFIG_FILE)
    if os.path.isfile(config_path):
        try:
            with open(config_path, encoding="utf-8") as fin:
                config = json.load(fin)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConversionError(f"{config_path}: not plain JSON ({err})") from None
        if not isinstance(config, dict):
            raise ConversionError(f"{config_path}: expected a JSON object")
    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    if not files:
        raise ConversionError(f"{folder}: no .safetensors file (the only format read)")
    if "model.safetensors" in files:
        files = ["model.safetensors"]
    state = {}
    for name in files:  # one file, or the shards of one model
        part = read_safetensors(os.path.join(folder, name))
        clash = set(part) & set(state)
        if clash:
            raise ConversionError(f"{folder}: {name} repeats tensor {sorted(clash)[0]}")
        state.update(part)
    return state, config


# ---------------------------------------------------------------- layout


def find_prefixes(state: dict) -> tuple[str, str]:
    """(root, encoder prefix) of the authors' keys, found from the first qkv.

    The encoder is the ViT with a patch embedding beside it; the predictor (a
    second ViT) is told apart by its name.

    Example
    -------
    >>> keys = ["model.encoder.blocks.0.attn.qkv.weight",
    ...         "model.predictor.blocks.0.attn.qkv.weight",
    ...         "model.patch_embed.patch_embed.proj.weight"]
    >>> find_prefixes(dict.fromkeys(keys))
    ('model.', 'model.encoder.')
    """
    stacks = [k[: -len(QKV_SUFFIX)] for k in state if k.endswith(QKV_SUFFIX)]
    encoders = [p for p in stacks if "predictor" not in p]
    if len(encoders) != 1:
        raise ConversionError(
            f"cannot tell the encoder in the weights: {len(encoders)} transformer "
            f"stacks end in {QKV_SUFFIX!r} outside a predictor ({encoders[:3]})"
        )
    encoder = encoders[0]
    root = encoder[: -len("encoder.")] if encoder.endswith("encoder.") else encoder
    return root, encoder


def _patch_key(state: dict, root: str, encoder: str) -> str:
    for key in (
        root + "patch_embed.patch_embed.proj.weight",
        encoder + "patch_embed.patch_embed.proj.weight",
        root + "patch_embed.proj.weight",
        encoder + "patch_embed.proj.weight",
    ):
        if key in state:
            return key[: -len("weight")]
    found = [k for k in state if k.endswith("patch_embed.proj.weight")]
    if len(found) == 1:
        return found[0][: -len("weight")]
    raise ConversionError(
        f"no patch embedding (a key ending in 'patch_embed.proj.weight') next to "
        f"{encoder!r}: found {found[:3]}"
    )


def _find(config, name: str):
    """First value of key ``name`` anywhere in a nested JSON config."""
    if isinstance(config, dict):
        if name in config:
            return config[name]
        for value in config.values():
            found = _find(value, name)
            if found is not None:
                return found
    return None


def _shape(state: dict, key: str, ndim: int) -> tuple:
    if key not in state:
        raise ConversionError(f"missing tensor {key!r}")
    value = state[key]
    if value.dim() != ndim:
        raise ConversionError(
            f"{key} has shape {tuple(value.shape)}: expected {ndim}-D"
        )
    return tuple(value.shape)


def _depth(state: dict, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"blocks\.(\d+)\.")
    indices = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    depth = len(indices)
    if depth == 0 or indices != set(range(depth)):
        raise ConversionError(f"{prefix}blocks: block indices {sorted(indices)[:8]}")
    return depth


def _map_stack(state: dict, src: str, dst: str, depth: int, used: set) -> dict:
    """Maps a timm-style stack (``blocks.{i}``, ``norm``) onto a TransformerStack."""
    out = {}
    for i in range(depth):
        for theirs, ours in _BLOCK_PARTS.items():
            key = f"{src}blocks.{i}.{theirs}"
            if key not in state:
                raise ConversionError(f"missing tensor {key!r} (a block without it?)")
            out[f"{dst}blocks.{i}.{ours}"] = state[key]
            used.add(key)
    for part in ("weight", "bias"):
        key = f"{src}norm.{part}"
        if key not in state:
            raise ConversionError(f"missing tensor {key!r} (final LayerNorm)")
        out[f"{dst}norm.{part}"] = state[key]
        used.add(key)
    leftover = sorted(
        k for k in state if k.startswith(src + "blocks.") and k not in used
    )
    if leftover:
        raise ConversionError(
            f"unsupported tensors in the transformer: {leftover[:4]} "
            "(only plain pre-norm ViT blocks convert)"
        )
    return out


def check_positions(table: torch.Tensor, rows: int, key: str) -> None:
    """The authors' table is the fixed sin-cos of frequency-major (row, col) cells.

    Example
    -------
    >>> idx = torch.arange(16)
    >>> table = sincos_2d(torch.stack([idx // 8, idx % 8], -1), 8)[None]
    >>> check_positions(table, 2, "pos_embed")
    >>> check_positions(table.flip(1), 2, "pos_embed")
    Traceback (most recent call last):
    ...
    bestrq2_lobes.lobe.convert.ConversionError: pos_embed is not the fixed 2-D ...
    """
    _, num, dim = table.shape
    if num % rows:
        raise ConversionError(f"{key} has {num} cells, not a multiple of {rows} rows")
    cols = num // rows
    idx = torch.arange(num)
    ours = sincos_2d(torch.stack([idx // cols, idx % cols], dim=-1), dim)
    diff = float((table[0].float() - ours).abs().max())
    if not diff <= POSITION_TOLERANCE:
        raise ConversionError(
            f"{key} is not the fixed 2-D sin-cos table of a {rows}x{cols} grid "
            f"(max difference {diff:.3g}); learned or rotary positions do not convert"
        )


def _frontend_config(hub_config: dict) -> dict:
    """The authors' front end, with any spectrogram settings of a hub config."""
    config = dict(AUTHORS_FRONTEND)
    spec = _find(hub_config, "spectrogram_kwargs") or _find(hub_config, "spectrogram")
    if not isinstance(spec, dict):
        return config
    rate = int(spec.get("sample_rate", config["sample_rate"]))
    config["sample_rate"] = rate
    for name in ("n_fft", "n_mels"):
        if spec.get(name) is not None:
            config[name] = int(spec[name])
    for name in ("f_min", "f_max"):
        if spec.get(name) is not None:
            config[name] = float(spec[name])
    for name in ("win_length", "hop_length"):
        if spec.get(name) is not None:
            config[name] = int(spec[name])
        elif spec.get(name + "_ms") is not None:
            config[name] = int(rate * float(spec[name + "_ms"]) / 1000)
    if float(spec.get("power", 2.0)) != 2.0:
        raise ConversionError(f"spectrogram power {spec['power']}: only 2 converts")
    return config


def _check_agrees(kwargs, name: str, value, what: str) -> None:
    if isinstance(kwargs, dict) and kwargs.get(name) is not None:
        given = kwargs[name]
        if isinstance(value, tuple):
            given = tuple(given) if isinstance(given, (list, tuple)) else (given,) * 2
        if given != value and not (
            isinstance(value, float) and math.isclose(float(given), value)
        ):
            raise ConversionError(
                f"config.json {what}.{name} = {given!r} but the weights give {value!r}"
            )


def convert_encoder(state: dict, hub_config: dict | None = None) -> tuple:
    """Our encoder config and state dict from the authors' tensors.

    Arguments
    ---------
    state : dict
        The authors' state dict (any key prefix).
    hub_config : dict, optional
        Their hub ``config.json`` (``encoder_kwargs``, ``patch_embed_kwargs``):
        only the head count is taken from it; the sizes it gives must agree
        with the weights.

    Returns
    -------
    (dict, dict, dict)
        The encoder directory config (``frontend``, ``encoder``,
        ``crop_seconds``), our encoder state dict, and facts for ``info``.
    """
    hub_config = hub_config or {}
    if len(state) > MAX_TENSORS:
        raise ConversionError(f"{len(state)} tensors: not an encoder")
    root, prefix = find_prefixes(state)
    patch = _patch_key(state, root, prefix)
    dim, chans, patch_freq, patch_time = _shape(state, patch + "weight", 4)
    if chans != 1:
        raise ConversionError(f"{patch}weight has {chans} input channels, expected 1")
    depth = _depth(state, prefix)
    hidden = _shape(state, prefix + "blocks.0.mlp.fc1.weight", 2)[0]
    enc_kwargs = _find(hub_config, "encoder_kwargs")
    patch_kwargs = _find(hub_config, "patch_embed_kwargs")
    heads = enc_kwargs.get("num_heads") if isinstance(enc_kwargs, dict) else None
    if heads is not None and (
        isinstance(heads, bool) or not isinstance(heads, int) or not 0 < heads <= dim
    ):
        raise ConversionError(f"config.json encoder_kwargs.num_heads is {heads!r}")
    heads_from = "config.json" if heads else "default (head width 64)"
    heads = int(heads or max(1, dim // 64))
    if dim % heads or dim % 4:
        raise ConversionError(f"width {dim} does not split into {heads} heads")
    mlp_ratio = hidden / dim
    _check_agrees(enc_kwargs, "embed_dim", dim, "encoder_kwargs")
    _check_agrees(enc_kwargs, "depth", depth, "encoder_kwargs")
    _check_agrees(enc_kwargs, "mlp_ratio", float(mlp_ratio), "encoder_kwargs")
    _check_agrees(patch_kwargs, "embed_dim", dim, "patch_embed_kwargs")
    _check_agrees(
        patch_kwargs, "patch_size", (patch_freq, patch_time), "patch_embed_kwargs"
    )
    if isinstance(enc_kwargs, dict) and enc_kwargs.get("qkv_bias") is False:
        raise ConversionError("encoder_kwargs.qkv_bias is false: only qkv with bias")
    try:
        frontend = _frontend_config(hub_config)
    except (TypeError, ValueError) as err:
        raise ConversionError(f"config.json spectrogram settings: {err}") from None
    img_size = patch_kwargs.get("img_size") if isinstance(patch_kwargs, dict) else None
    if img_size is not None:
        if not isinstance(img_size, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in img_size[:1]
        ):
            raise ConversionError(
                f"config.json patch_embed_kwargs.img_size {img_size!r}"
            )
        frontend["n_mels"] = img_size[0] if img_size else frontend["n_mels"]
    n_mels = frontend["n_mels"]
    if n_mels % patch_freq:
        raise ConversionError(f"{n_mels} mels do not split into {patch_freq}-mel rows")
    rows = n_mels // patch_freq
    pos_key = prefix + "pos_embed"
    if pos_key not in state:
        raise ConversionError(
            f"no {pos_key!r}: only the ViT with fixed sin-cos positions converts"
        )
    _shape(state, pos_key, 3)
    if state[pos_key].shape[1] % rows:
        raise ConversionError(f"{pos_key} cells are not a multiple of {rows} rows")
    cols = state[pos_key].shape[1] // rows
    drop_path = (
        enc_kwargs.get("drop_path_rate") if isinstance(enc_kwargs, dict) else None
    )
    encoder = dict(
        n_mels=n_mels,
        patch_freq=patch_freq,
        patch_time=patch_time,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        mlp_ratio=mlp_ratio,
        drop_path=0.1 if not isinstance(drop_path, (int, float)) else drop_path,
        norm_eps=1e-5,
    )
    used = {patch + "weight", patch + "bias", pos_key}
    if patch + "bias" not in state:
        raise ConversionError(f"missing tensor {patch + 'bias'!r}")
    ours = {
        "patch_embed.proj.weight": state[patch + "weight"],
        "patch_embed.proj.bias": state[patch + "bias"],
        **_map_stack(state, prefix, "blocks.", depth, used),
    }
    crop = cols * patch_time * frontend["hop_length"] / frontend["sample_rate"]
    config = {"frontend": frontend, "encoder": encoder, "crop_seconds": crop}
    info = {
        "converted_from": "authors' BEST-RQ-2 ViT (LudovicTuncay/audio-embeddings)",
        "key_prefix": prefix,
        "num_heads_from": heads_from,
        "authors_grid": [rows, cols],
    }
    validate_config(config, "converted config")  # bounds, before building anything
    check_positions(state[pos_key], rows, pos_key)
    _check_frontend_buffers(state, root, frontend)
    return config, ours, info


def _check_frontend_buffers(state: dict, root: str, frontend: dict) -> None:
    """When the weights carry the mel filterbank, it must be ours."""
    key = root + "spectrogram.mel_spec.mel_scale.fb"
    if key not in state:
        return
    fb = LogMel(**frontend).melspec.mel_scale.fb
    theirs = state[key]
    if theirs.shape != fb.shape or not torch.allclose(theirs.float(), fb, atol=1e-6):
        raise ConversionError(
            f"{key} differs from the front end's mel filterbank: another front end"
        )


# ---------------------------------------------------------------- pretraining


def quantizer_kind(state: dict, root: str, hub_config: dict | None = None) -> str:
    """``"random"`` for the random-projection codebook, else what was found.

    Example
    -------
    >>> quantizer_kind({"quantizer.P": 0, "quantizer.CB": 0}, "")
    'random'
    >>> quantizer_kind({"quantizer.centroids": 0}, "")
    'other (quantizer.centroids)'
    """
    named = _find(hub_config or {}, "quantizer")
    if isinstance(named, dict) and named.get("type") not in (None, "random"):
        return f"{named['type']} (config.json)"
    keys = [k[len(root) :] for k in state if k.startswith(root)]
    quant = sorted(k for k in keys if k.startswith(("quantizer.", "rvq")))
    if quant == ["quantizer.CB", "quantizer.P"]:
        return "random"
    if not quant:
        return "absent (the weights hold only the encoder)"
    return f"other ({', '.join(quant[:3])})"


def convert_pretraining(state: dict, root: str, config: dict) -> tuple[dict, dict]:
    """Our pretraining config and model state dict (encoder excluded).

    Returns
    -------
    (dict, dict)
        ``{"model": "BestRQ2" or "OneStageBestRQ", "predictor"/"head": ...,
        "quantizer": ...}`` and the state dict in the recipe model's names
        (``predictor.*`` or ``head.*``, ``quantizer.*``).
    """
    kind = quantizer_kind(state, root)
    if kind != "random":
        raise ConversionError(
            f"quantizer is {kind}, not the random-projection codebook: the encoder "
            "was converted, the pretraining state (targets) was not"
        )
    proj = state[root + "quantizer.P"]
    codes = state[root + "quantizer.CB"]
    if proj.dim() != 2 or codes.dim() != 2 or proj.shape[1] != codes.shape[1]:
        raise ConversionError(
            f"quantizer.P {tuple(proj.shape)} and quantizer.CB {tuple(codes.shape)} "
            "do not fit together"
        )
    enc = config["encoder"]
    if proj.shape[0] != enc["patch_freq"] * enc["patch_time"]:
        raise ConversionError(
            f"quantizer.P {tuple(proj.shape)}: not a patch projection"
        )
    quantizer = dict(
        input_dim=int(proj.shape[0]),
        codebook_dim=int(proj.shape[1]),
        codebook_size=int(codes.shape[0]),
        num_codebooks=1,
    )
    ours = {
        "quantizer.projection": proj[None].float().contiguous(),
        "quantizer.codebooks": codes[None].float().contiguous(),
    }
    pred = root + "predictor."
    if pred + QKV_SUFFIX in state:
        depth = _depth(state, pred)
        dim = _shape(state, pred + "blocks.0.attn.qkv.weight", 2)[1]
        hidden = _shape(state, pred + "blocks.0.mlp.fc1.weight", 2)[0]
        heads = enc["num_heads"] if dim == enc["embed_dim"] else max(1, dim // 64)
        check_positions(
            state[pred + "pos_embed"],
            enc["n_mels"] // enc["patch_freq"],
            pred + "pos_embed",
        )
        for key, theirs in (
            ("predictor.input_proj.weight", "predictor_input_proj.weight"),
            ("predictor.input_proj.bias", "predictor_input_proj.bias"),
            ("predictor.mask_token", "mask_token"),
            ("predictor.heads.heads.0.weight", "rq_proj.weight"),
            ("predictor.heads.heads.0.bias", "rq_proj.bias"),
        ):
            if root + theirs not in state:
                raise ConversionError(f"missing tensor {root + theirs!r}")
            ours[key] = state[root + theirs]
        ours.update(_map_stack(state, pred, "predictor.blocks.", depth, set()))
        part = dict(
            encoder_dim=enc["embed_dim"],
            dim=int(dim),
            depth=depth,
            num_heads=heads,
            freq_rows=enc["n_mels"] // enc["patch_freq"],
            codebook_size=quantizer["codebook_size"],
            num_codebooks=1,
            mlp_ratio=hidden / dim,
            norm_eps=1e-5,
        )
        return {"model": "BestRQ2", "predictor": part, "quantizer": quantizer}, ours
    if root + "output_proj.weight" in state and root + "mask_token" in state:
        ours["head.mask_token"] = state[root + "mask_token"]
        ours["head.heads.heads.0.weight"] = state[root + "output_proj.weight"]
        ours["head.heads.heads.0.bias"] = state[root + "output_proj.bias"]
        part = dict(dim=enc["embed_dim"], codebook_size=quantizer["codebook_size"])
        return {"model": "OneStageBestRQ", "head": part, "quantizer": quantizer}, ours
    raise ConversionError(
        "the weights hold no predictor (predictor.*) or one-stage head (output_proj): "
        "no pretraining state to convert"
    )


def write_pretraining(directory: str, config: dict, state: dict) -> str:
    """Writes ``config.json`` + ``model.safetensors`` of a pretraining init."""
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(os.path.join(directory, PRETRAIN_WEIGHTS)) as part:
        save_file(tensors, part)
    write_config(os.path.join(directory, CONFIG_FILE), config)
    return directory


# ---------------------------------------------------------------- the command


def convert(
    src: str | os.PathLike,
    encoder_dir: str | os.PathLike,
    pretraining: bool = False,
) -> dict:
    """Converts an authors' source into an encoder directory (see module doc).

    Arguments
    ---------
    src : str or PathLike
        Safetensors file, Lightning ``.ckpt`` or hub model folder.
    encoder_dir : str or PathLike
        The encoder directory to write.
    pretraining : bool
        Also write ``encoder_dir/pretraining`` (raises ``ConversionError``,
        after writing the encoder, when the source has no usable state).

    Returns
    -------
    dict
        ``encoder_dir``, ``pretraining_dir`` (or None), ``quantizer`` (kind)
        and ``config``.
    """
    from bestrq2_lobes.lobe.export import HPARAMS_TEMPLATE

    state, hub_config = read_source(src)
    config, ours, info = convert_encoder(state, hub_config)
    root, _ = find_prefixes(state)
    frontend = LogMel(**config["frontend"])
    with torch.device("meta"):
        expected = ViTEncoder(**config["encoder"]).state_dict()
    for key, value in ours.items():
        if tuple(expected[key].shape) != tuple(value.shape):
            raise ConversionError(
                f"{key}: shape {tuple(value.shape)} does not fit the encoder "
                f"({tuple(expected[key].shape)})"
            )
    encoder = ViTEncoder(**config["encoder"])
    encoder.load_state_dict({k: v.float() for k, v in ours.items()}, strict=True)
    kind = quantizer_kind(state, root, hub_config)
    info.update(
        source=os.path.abspath(os.fspath(src)),
        quantizer=kind,
        converter_version=CONVERTER_VERSION,
        converted=datetime.datetime.now(datetime.timezone.utc).isoformat(),
    )
    directory = os.fspath(encoder_dir)
    write_encoder_dir(directory, frontend, encoder, config["crop_seconds"], info)
    with open(os.path.join(directory, "hyperparams.yaml"), "w", encoding="utf-8") as f:
        f.write(HPARAMS_TEMPLATE.format(sample_rate=frontend.sample_rate))
    with open(os.path.join(directory, "README.md"), "w", encoding="utf-8") as f:
        f.write(_readme(src, config, info))
    result = {
        "encoder_dir": directory,
        "pretraining_dir": None,
        "quantizer": kind,
        "config": config,
    }
    if pretraining:
        try:
            pre_config, pre_state = convert_pretraining(state, root, config)
        except ConversionError as err:
            raise PretrainingStateError(str(err)) from None
        pre_state = {k: v.float() for k, v in pre_state.items()}
        pre_config = {
            "format": PRETRAIN_FORMAT,
            "frontend": frontend.config,
            "encoder": encoder.config,
            "crop_seconds": config["crop_seconds"],
            **pre_config,
            "info": info,
        }
        pre_state.update({f"encoder.{k}": v for k, v in encoder.state_dict().items()})
        target = os.path.join(directory, PRETRAIN_SUBDIR)
        result["pretraining_dir"] = write_pretraining(target, pre_config, pre_state)
    return result


def _readme(src, config, info) -> str:
    enc, fe = config["encoder"], config["frontend"]
    return (
        "# BEST-RQ-2 encoder converted from the authors' release\n\n"
        f"Converted by `python -m bestrq2_lobes.lobe.convert` on "
        f"{info['converted'][:10]} from `{src}`.\n\n"
        f"ViT width {enc['embed_dim']}, depth {enc['depth']}, {enc['num_heads']} "
        f"heads (from {info['num_heads_from']}), {enc['patch_freq']}x"
        f"{enc['patch_time']} patches; front end {fe['sample_rate']} Hz, "
        f"{fe['n_mels']} mels, hop {fe['hop_length']}, normalized STFT (the "
        f"authors'); quantizer: {info['quantizer']}.\n\n"
        "Clips of 10 s give the authors' features (tokens reordered time-major); "
        "shorter clips differ: here every token keeps its cell's position, while "
        "the authors' code slices its frequency-major table.\n"
    )


def load_pretraining_init(directory: str | os.PathLike) -> tuple[dict, dict]:
    """Config and tensors of a converted pretraining init (``--init_from``).

    ``directory`` is the ``pretraining`` folder or the encoder directory that
    holds it.
    """
    directory = os.fspath(directory)
    if os.path.isdir(os.path.join(directory, PRETRAIN_SUBDIR)):
        directory = os.path.join(directory, PRETRAIN_SUBDIR)
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ConversionError(
            f"{directory}: no pretraining init (convert with "
            "`python -m bestrq2_lobes.lobe.convert SRC ENCODER_DIR --pretraining`)"
        )
    with open(path, encoding="utf-8") as fin:
        try:
            config = json.load(fin)
        except json.JSONDecodeError as err:
            raise ConversionError(f"{path}: not plain JSON ({err})") from None
    if not isinstance(config, dict) or config.get("format") != PRETRAIN_FORMAT:
        raise ConversionError(f"{path}: not a {PRETRAIN_FORMAT} config")
    weights = os.path.join(directory, PRETRAIN_WEIGHTS)
    if not os.path.isfile(weights):
        raise ConversionError(f"{weights}: missing weights file")
    return config, read_safetensors(weights)


def init_pretraining(model: torch.nn.Module, directory: str | os.PathLike) -> int:
    """Loads a converted pretraining init into a recipe model, strictly.

    The model (``BestRQ2`` or ``OneStageBestRQ`` of the hparams) must have the
    init's front end (else its targets would not be the authors') and sizes.
    Every parameter and buffer except the front end's and the target
    normalisation's (``target_norm: global`` estimates its own) is replaced.

    Returns
    -------
    int
        The number of tensors loaded.
    """
    config, state = load_pretraining_init(directory)
    kind = type(model).__name__
    if config.get("model") != kind:
        raise ConversionError(
            f"{directory}: a {config.get('model')} init, the hparams build a {kind}"
        )
    norm = getattr(model, "target_norm", None)
    if getattr(norm, "mode", "none") != "none":
        raise ConversionError(
            f"{directory}: the authors' targets quantize the raw patches, the hparams "
            f"normalise them (target_norm {norm.mode!r}): use --target_norm none"
        )
    ours = dict(model.frontend.config)
    for key, value in config["frontend"].items():
        mine = ours.get(key)
        same = mine == value or (
            isinstance(mine, (int, float))
            and isinstance(value, (int, float))
            and math.isclose(float(mine), float(value))
        )
        if not same:
            raise ConversionError(
                f"{directory}: front end {key} is {value!r} there, {mine!r} in the "
                "hparams (the targets would differ; set it in the yaml)"
            )
    # the front end has no weights; the target statistics are this run's own
    skip = ("frontend.", "target_norm.")
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(skip)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ConversionError(
            f"{directory}: does not match the hparams model: missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}"
        )
    for key, value in state.items():
        if tuple(own[key].shape) != tuple(value.shape):
            raise ConversionError(
                f"{directory}: {key} has shape {tuple(value.shape)}, the hparams "
                f"model {tuple(own[key].shape)}"
            )
    model.load_state_dict(state, strict=False)
    return len(state)


def take_init_from(argv: list[str]) -> tuple[list[str], str | None]:
    """Removes ``--init_from DIR`` (or ``--init_from=DIR``) from a recipe's argv.

    Example
    -------
    >>> take_init_from(["h.yaml", "--init_from", "enc", "--seed", "1"])
    (['h.yaml', '--seed', '1'], 'enc')
    >>> take_init_from(["h.yaml"])
    (['h.yaml'], None)
    """
    rest, value, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--init_from" and i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--init_from="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return rest, value


def main(argv=None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bestrq2_lobes.lobe.convert",
        description="Convert the authors' released BEST-RQ-2 weights into an "
        "encoder directory.",
    )
    parser.add_argument("src", help=".safetensors file, Lightning .ckpt or hub folder")
    parser.add_argument("encoder_dir", help="where to write the encoder directory")
    parser.add_argument(
        "--pretraining",
        action="store_true",
        help="also write ENCODER_DIR/pretraining (predictor, mask token, head, "
        "quantizer) for `recipes/pretrain/train.py ... --init_from ENCODER_DIR`",
    )
    args = parser.parse_args(argv)
    try:
        result = convert(args.src, args.encoder_dir, pretraining=args.pretraining)
    except PretrainingStateError as err:
        print(f"Converted the encoder of {args.src} to {args.encoder_dir}")
        print(f"error: pretraining state not written: {err}", file=sys.stderr)
        return 2
    except EncoderDirError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"Converted the encoder of {args.src} to {result['encoder_dir']} "
        f"(quantizer: {result['quantizer']})"
    )
    if result["pretraining_dir"]:
        print(
            f"Pretraining state written to {result['pretraining_dir']}: continue "
            f"with `python recipes/pretrain/train.py hparams/bestrq2_vit.yaml "
            f"--data_folder DIR --init_from {result['pretraining_dir']}`"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
