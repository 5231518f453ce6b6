"""Reading the authors' released BEST-RQ-2 weights, and where their keys are.

Three kinds of source are read, none of which can run code: a ``.safetensors``
state dict, a Lightning ``.ckpt`` (``torch.load(weights_only=True)`` only; one
that needs pickled code is refused in one line, pointing at the safetensors file
beside it), and a hub model folder (its ``config.json`` and ``*.safetensors``,
never its remote code). The layout helpers find the key prefix of the encoder,
its patch embedding and its depth, whatever wrapper (``model.``,
``model.encoder.``, none) their training put in front of them. The errors of the
whole conversion (:mod:`bestrq2_lobes.lobe.convert`) are defined here.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import json
import os
import pickle
import re

import torch

from bestrq2_lobes.lobe.encoder_dir import CONFIG_FILE, EncoderDirError

QKV_SUFFIX = "blocks.0.attn.qkv.weight"


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
    bestrq2_lobes.lobe.authors_source.ConversionError: /no/such/file.safetensors: ...
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


def patch_prefix(state: dict, root: str, encoder: str) -> str:
    """Key prefix of the patch embedding's conv (``...proj.``) beside the encoder."""
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


def find_in_config(config, name: str):
    """First value of key ``name`` anywhere in a nested JSON config."""
    if isinstance(config, dict):
        if name in config:
            return config[name]
        for value in config.values():
            found = find_in_config(value, name)
            if found is not None:
                return found
    return None


def tensor_shape(state: dict, key: str, ndim: int) -> tuple:
    """Shape of tensor ``key``, which must be there and ``ndim``-D."""
    if key not in state:
        raise ConversionError(f"missing tensor {key!r}")
    value = state[key]
    if value.dim() != ndim:
        raise ConversionError(
            f"{key} has shape {tuple(value.shape)}: expected {ndim}-D"
        )
    return tuple(value.shape)


def block_depth(state: dict, prefix: str) -> int:
    """Number of blocks ``{prefix}blocks.{i}``, numbered 0, 1, ... without gaps."""
    pattern = re.compile(re.escape(prefix) + r"blocks\.(\d+)\.")
    indices = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    depth = len(indices)
    if depth == 0 or indices != set(range(depth)):
        raise ConversionError(f"{prefix}blocks: block indices {sorted(indices)[:8]}")
    return depth
