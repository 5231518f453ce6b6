"""The authors' pretraining state mapped onto the recipe model's.

With ``--pretraining`` the converter also takes the predictor (or the one-stage
head), the mask token, the output head and the frozen quantizer. That is
possible only for their random-projection quantizer (``quantizer.P``,
``quantizer.CB``); for the other quantizers the encoder is converted and the
pretraining state is not. :mod:`bestrq2_lobes.lobe.pretraining_init` writes the
result and loads it into the recipe model.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

from bestrq2_lobes.lobe.authors_encoder import check_positions, map_stack
from bestrq2_lobes.lobe.authors_source import (
    QKV_SUFFIX,
    ConversionError,
    block_depth,
    find_in_config,
    tensor_shape,
)


def quantizer_kind(state: dict, root: str, hub_config: dict | None = None) -> str:
    """``"random"`` for the random-projection codebook, else what was found.

    Example
    -------
    >>> quantizer_kind({"quantizer.P": 0, "quantizer.CB": 0}, "")
    'random'
    >>> quantizer_kind({"quantizer.centroids": 0}, "")
    'other (quantizer.centroids)'
    """
    named = find_in_config(hub_config or {}, "quantizer")
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
        depth = block_depth(state, pred)
        dim = tensor_shape(state, pred + "blocks.0.attn.qkv.weight", 2)[1]
        hidden = tensor_shape(state, pred + "blocks.0.mlp.fc1.weight", 2)[0]
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
        ours.update(map_stack(state, pred, "predictor.blocks.", depth, set()))
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
