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

Reading the sources is :mod:`~bestrq2_lobes.lobe.authors_source`, the encoder
mapping (and what it maps) :mod:`~bestrq2_lobes.lobe.authors_encoder`. The front
end is the authors' (``LogMel(normalized=True)``, the paper preset). With
``--pretraining`` the predictor (or the one-stage head), the mask token, the
output head and the frozen quantizer are also converted
(:mod:`~bestrq2_lobes.lobe.authors_pretraining`) and written to
``ENCODER_DIR/pretraining`` (:mod:`~bestrq2_lobes.lobe.pretraining_init`), from
which ``recipes/pretrain/train.py ... --init_from DIR`` continues pretraining
with the authors' targets. That is possible only for their random-projection
quantizer (``quantizer.P``, ``quantizer.CB``); for the other quantizers the
encoder is converted and the pretraining state is not.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

import torch

from bestrq2_lobes.lobe.authors_encoder import (
    AUTHORS_FRONTEND,
    check_positions,
    convert_encoder,
)
from bestrq2_lobes.lobe.authors_pretraining import convert_pretraining, quantizer_kind
from bestrq2_lobes.lobe.authors_source import (
    ConversionError,
    PretrainingStateError,
    find_prefixes,
    read_source,
)
from bestrq2_lobes.lobe.encoder_dir import EncoderDirError, write_encoder_dir
from bestrq2_lobes.lobe.pretraining_init import (
    PRETRAIN_FORMAT,
    PRETRAIN_SUBDIR,
    init_pretraining,
    load_pretraining_init,
    take_init_from,
    write_pretraining,
)
from bestrq2_lobes.model.encoder import ViTEncoder
from bestrq2_lobes.model.frontend import LogMel

__all__ = [
    "AUTHORS_FRONTEND",
    "CONVERTER_VERSION",
    "ConversionError",
    "PretrainingStateError",
    "check_positions",
    "convert",
    "convert_encoder",
    "convert_pretraining",
    "find_prefixes",
    "init_pretraining",
    "load_pretraining_init",
    "main",
    "quantizer_kind",
    "read_source",
    "take_init_from",
    "write_pretraining",
]

CONVERTER_VERSION = 1  # cached conversions of another version are redone


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
