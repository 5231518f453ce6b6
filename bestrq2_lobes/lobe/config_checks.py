"""Checks of an encoder config and its weights before any module is built.

``encoder_dir`` runs them when it reads a config and loads weights, so that a
broken or hostile encoder directory stops with one line instead of a
``ZeroDivisionError`` or an out-of-memory crash:

* every size of ``config["frontend"]`` and ``config["encoder"]`` has the right
  type (an integer is not a bool or a float) and lies in sane bounds (``BOUNDS``),
  and the sizes agree with each other (``win_length <= n_fft``, the encoder's
  ``n_mels`` is the front end's and a multiple of ``patch_freq``, ``embed_dim`` a
  multiple of ``num_heads`` and of 4 for the 2-D sin-cos positions, ...);
* the weights hold exactly the tensors the config implies, with the same shapes
  (the expected shapes come from a model built on the ``meta`` device, which
  allocates nothing), and every floating-point tensor is finite.

The functions raise ``ValueError`` with a one-line message; ``encoder_dir`` adds
the file name and raises its ``EncoderDirError``.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import inspect
import math

import torch

from bestrq2_lobes.model.encoder import FRAME_READOUTS, ViTEncoder
from bestrq2_lobes.model.frontend import LogMel

# (integer?, lowest, highest, lowest excluded?) of each size, or (bool,) for a
# flag; None is refused unless OPTIONAL. Settings not listed are not bounded.
BOUNDS = {
    "frontend": {
        "sample_rate": (True, 1000, 384000, False),
        "n_fft": (True, 2, 65536, False),
        "win_length": (True, 1, 65536, False),
        "hop_length": (True, 1, 65536, False),
        "n_mels": (True, 1, 1024, False),
        "f_min": (False, 0.0, 192000.0, False),
        "f_max": (False, 0.0, 192000.0, True),
        "floor": (False, 0.0, 1.0, True),
        "norm_mean": (False, -1e4, 1e4, False),
        "norm_std": (False, 0.0, 1e4, True),
        "normalized": (bool,),
    },
    "encoder": {
        "n_mels": (True, 1, 1024, False),
        "patch_freq": (True, 1, 1024, False),
        "patch_time": (True, 1, 1024, False),
        "embed_dim": (True, 4, 16384, False),
        "depth": (True, 1, 256, False),
        "num_heads": (True, 1, 1024, False),
        "mlp_ratio": (False, 0.0, 64.0, True),
        "drop_path": (False, 0.0, 1.0, False),
        "norm_eps": (False, 0.0, 1.0, True),
    },
}
OPTIONAL = {("frontend", "f_max"), ("frontend", "norm_mean"), ("frontend", "norm_std")}
PER_BAND = {("frontend", "norm_mean"), ("frontend", "norm_std")}  # or one number
MAX_CROP_SECONDS = 3600.0
MAX_CROP_TOKENS = 16384


def check_config(config: dict) -> None:
    """Raises ``ValueError`` (one line) unless the config's sizes are sane.

    Arguments
    ---------
    config : dict
        ``{"frontend": ..., "encoder": ..., "crop_seconds": ...}``.

    Example
    -------
    >>> from bestrq2_lobes.lobe.encoder_dir import encoder_config
    >>> check_config(encoder_config())
    >>> check_config(encoder_config(hop_length=0))
    Traceback (most recent call last):
    ...
    ValueError: frontend.hop_length must be an integer in [1, 65536], got 0
    >>> check_config(encoder_config(depth=100000))
    Traceback (most recent call last):
    ...
    ValueError: encoder.depth must be an integer in [1, 256], got 100000
    >>> check_config(encoder_config(n_mels=16, patch_freq=16, norm_std=[1.0] * 15))
    Traceback (most recent call last):
    ...
    ValueError: frontend.norm_std must be one number or 16 (one per mel band), ...
    >>> check_config({**encoder_config(), "frame_readout": "max"})
    Traceback (most recent call last):
    ...
    ValueError: frame_readout must be one of ['mean', 'concat'], got 'max'
    """
    if not isinstance(config, dict):
        raise ValueError(f"expected the config as a dict, got {type(config).__name__}")
    for part, module_class in (("frontend", LogMel), ("encoder", ViTEncoder)):
        sizes = config.get(part)
        if not isinstance(sizes, dict):
            raise ValueError(f"{part!r} must be a dict of sizes, got {sizes!r}")
        known = _with_defaults(module_class, {})
        for key, value in sizes.items():
            if key not in known:
                raise ValueError(
                    f"{part}.{key} is not a setting (known: {sorted(known)})"
                )
            if value is None and (part, key) in OPTIONAL:
                continue
            if isinstance(value, list) and (part, key) in PER_BAND:
                _check_bands(f"{part}.{key}", value, sizes, known, BOUNDS[part][key])
                continue
            if key in BOUNDS[part]:
                _check_number(f"{part}.{key}", value, *BOUNDS[part][key])
    crop = config.get("crop_seconds")
    _check_number("crop_seconds", crop, False, 0.0, MAX_CROP_SECONDS, True)
    readout = config.get("frame_readout", "mean")  # absent in older directories
    if readout not in FRAME_READOUTS:
        raise ValueError(
            f"frame_readout must be one of {list(FRAME_READOUTS)}, got {readout!r}"
        )
    _check_relations(config)


def _check_number(name, value, integer, low=None, high=None, low_open=False) -> None:
    """One size: type and bounds (``integer`` is ``bool`` for a flag)."""
    if integer is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return
    kind = "an integer" if integer else "a number"
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
    if integer:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        raise ValueError(f"{name} must be {kind} in {interval}, got {value!r}")


def _check_bands(name, values, sizes, known, bounds) -> None:
    """A per-band list: one number per mel band, each within ``bounds``."""
    n_mels = sizes.get("n_mels", known["n_mels"])
    if len(values) != n_mels:
        raise ValueError(
            f"{name} must be one number or {n_mels} (one per mel band), "
            f"got a list of {len(values)}"
        )
    for index, value in enumerate(values):
        _check_number(f"{name}[{index}]", value, *bounds)


def _with_defaults(module_class, sizes: dict) -> dict:
    """The sizes, with the constructor's defaults for the absent keys."""
    params = inspect.signature(module_class).parameters.values()
    full = {p.name: p.default for p in params if p.default is not p.empty}
    return {**full, **sizes}


def _check_relations(config: dict) -> None:
    """Sizes that must agree with each other."""
    frontend = _with_defaults(LogMel, config["frontend"])
    encoder = _with_defaults(ViTEncoder, config["encoder"])
    n_fft, win_length = frontend["n_fft"], frontend["win_length"]
    if win_length > n_fft:
        raise ValueError(
            f"frontend.win_length ({win_length}) must not exceed n_fft ({n_fft})"
        )
    nyquist = frontend["sample_rate"] / 2
    f_min = frontend["f_min"]
    f_max = nyquist if frontend["f_max"] is None else frontend["f_max"]
    if not f_min < f_max <= nyquist:
        raise ValueError(
            f"expected 0 <= frontend.f_min < f_max <= sample_rate / 2 = {nyquist:g}, "
            f"got f_min {f_min:g}, f_max {f_max:g}"
        )
    mels, enc_mels = frontend["n_mels"], encoder["n_mels"]
    if enc_mels != mels:
        raise ValueError(
            f"encoder.n_mels ({enc_mels}) must equal frontend.n_mels ({mels})"
        )
    patch_freq = encoder["patch_freq"]
    if enc_mels % patch_freq:
        raise ValueError(
            f"encoder.n_mels ({enc_mels}) must be a multiple of patch_freq "
            f"({patch_freq})"
        )
    dim, heads = encoder["embed_dim"], encoder["num_heads"]
    if dim % heads:
        raise ValueError(
            f"encoder.embed_dim ({dim}) must be a multiple of num_heads ({heads})"
        )
    if dim % 4:
        raise ValueError(
            f"encoder.embed_dim ({dim}) must be a multiple of 4 (2-D sin-cos positions)"
        )
    if int(dim * encoder["mlp_ratio"]) < 1:
        raise ValueError(
            f"encoder.mlp_ratio ({encoder['mlp_ratio']}) leaves no MLP width"
        )
    # the lobe encodes crop-long chunks, and attention is quadratic in tokens
    frames = int(config["crop_seconds"] * frontend["sample_rate"])
    frames //= frontend["hop_length"]
    tokens = (frames // encoder["patch_time"]) * (enc_mels // patch_freq)
    if tokens > MAX_CROP_TOKENS:
        raise ValueError(
            f"a crop of {config['crop_seconds']:g} s makes {tokens} tokens, at most "
            f"{MAX_CROP_TOKENS} are allowed (attention is quadratic in tokens)"
        )


def expected_shapes(encoder_config: dict) -> dict[str, torch.Size]:
    """Shapes of the encoder's ``state_dict`` entries, allocating no memory.

    Example
    -------
    >>> shapes = expected_shapes(dict(n_mels=32, embed_dim=32, depth=1, num_heads=4))
    >>> shapes["patch_embed.proj.weight"]
    torch.Size([32, 1, 16, 16])
    """
    with torch.device("meta"):
        encoder = ViTEncoder(**encoder_config)
    return {key: value.shape for key, value in encoder.state_dict().items()}


def check_state_shapes(expected: dict, state: dict) -> None:
    """Raises ``ValueError`` unless ``state`` has exactly the expected tensors.

    Example
    -------
    >>> check_state_shapes({"w": torch.Size([2])}, {"w": torch.zeros(3)})
    Traceback (most recent call last):
    ...
    ValueError: w has shape (3,), the config expects (2,)
    """
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"does not match the config: missing keys {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected keys "
            f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{key} is a {type(value).__name__}, not a tensor")
        if value.shape != expected[key]:
            raise ValueError(
                f"{key} has shape {tuple(value.shape)}, the config "
                f"expects {tuple(expected[key])}"
            )


def check_finite_state(state: dict) -> None:
    """Raises ``ValueError`` naming the first tensor with a NaN or infinity.

    Example
    -------
    >>> check_finite_state({"a": torch.ones(2), "b": torch.tensor([1.0, float("nan")])})
    Traceback (most recent call last):
    ...
    ValueError: tensor b holds 1 non-finite values (NaN or Inf) of 2: refused
    """
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise ValueError(
                    f"tensor {key} holds {bad} non-finite values (NaN or Inf) of "
                    f"{value.numel()}: refused"
                )
