"""The authors' encoder state dict mapped onto ours (timm-style ViT -> ViTEncoder).

What the conversion maps:

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

The front end is the authors' (``LogMel(normalized=True)``, the paper preset),
with any spectrogram settings of their hub ``config.json``.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import math

import torch

from bestrq2_lobes.lobe.authors_source import (
    ConversionError,
    block_depth,
    find_in_config,
    find_prefixes,
    patch_prefix,
    tensor_shape,
)
from bestrq2_lobes.lobe.encoder_dir import validate_config
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
POSITION_TOLERANCE = 1e-4
MAX_TENSORS = 100_000
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


def map_stack(state: dict, src: str, dst: str, depth: int, used: set) -> dict:
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
    bestrq2_lobes.lobe.authors_source.ConversionError: pos_embed is not the fixed ...
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
    spec = find_in_config(hub_config, "spectrogram_kwargs") or find_in_config(
        hub_config, "spectrogram"
    )
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
    patch = patch_prefix(state, root, prefix)
    dim, chans, patch_freq, patch_time = tensor_shape(state, patch + "weight", 4)
    if chans != 1:
        raise ConversionError(f"{patch}weight has {chans} input channels, expected 1")
    depth = block_depth(state, prefix)
    hidden = tensor_shape(state, prefix + "blocks.0.mlp.fc1.weight", 2)[0]
    enc_kwargs = find_in_config(hub_config, "encoder_kwargs")
    patch_kwargs = find_in_config(hub_config, "patch_embed_kwargs")
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
    tensor_shape(state, pos_key, 3)
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
        **map_stack(state, prefix, "blocks.", depth, used),
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
