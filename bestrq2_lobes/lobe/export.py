"""Export the encoder of a pretraining run as a self-contained encoder directory.

Usage::

    python -m bestrq2_lobes.lobe.export PRETRAIN_OUTPUT_OR_CKPT_DIR ENCODER_DIR
    python -m bestrq2_lobes.lobe.export RUN ENCODER_DIR --frame_readout concat

``PRETRAIN_OUTPUT_OR_CKPT_DIR`` is a pretraining output folder (the latest
checkpoint of its ``save/`` folder is taken), its ``save/`` folder, or one
``CKPT+...`` folder. The predictor, heads, quantizer and optimiser are dropped.
``ENCODER_DIR`` receives ``config.json``, ``encoder.safetensors`` (tensors only),
``hyperparams.yaml`` (SpeechBrain's pretrained-interface convention) and a
``README.md``. Runs of the one-stage baseline export the same way. The lobe's
default frame read-out is the run's ``frame_readout``; ``--frame_readout``
changes it (it does not depend on the weights: the same run can be exported
both ways).

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import yaml

from bestrq2_lobes.lobe.encoder_dir import (
    PRETRAIN_CONFIG,
    WEIGHTS_FILE,
    EncoderDirError,
    build_modules,
    load_state_dict,
    load_strict,
    read_config_file,
    validate_config,
    write_encoder_dir,
)
from bestrq2_lobes.model.encoder import FRAME_READOUTS

HPARAMS_TEMPLATE = """\
# SpeechBrain pretrained-interface file of an exported BEST-RQ-2 encoder.
#   from bestrq2_lobes.lobe.interface import BestRQ2EncoderInterface
#   model = BestRQ2EncoderInterface.from_hparams(source="<this directory>")
# `source` is filled in by from_hparams with this directory's path.
source: !PLACEHOLDER
sample_rate: {sample_rate}

encoder: !new:bestrq2_lobes.BestRQ2Encoder
    source: !ref <source>
    freeze: True

modules:
    encoder: !ref <encoder>

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
"""

README_TEMPLATE = """\
# BEST-RQ-2 encoder

Exported by `python -m bestrq2_lobes.lobe.export` on {date} from `{source}`.

| | |
|---|---|
| pretraining model | {model} |
| training steps | {steps} |
| architecture | ViT, width {embed_dim}, depth {depth}, {num_heads} heads |
| patches | {patch_freq} mels x {patch_time} frames |
| front end | {sample_rate} Hz, {n_mels} mels, hop {hop_length} samples |
| frame hop | {hop_ms} ms (one frame per patch column) |
| frame read-out | {frame_readout} ({output_dim} features per frame) |
| chunk length for long audio | {crop_seconds} s |

Files: `config.json` (plain JSON), `encoder.safetensors` (tensors only; the
format cannot hold code), `hyperparams.yaml`.

```python
from bestrq2_lobes import BestRQ2Encoder
ssl = BestRQ2Encoder(source="{directory}", freeze=True)
frames = ssl(wavs, wav_lens)   # (batch, frames, {output_dim})
```
"""


def find_checkpoint(src: str | os.PathLike) -> Path:
    """The checkpoint folder to export from ``src`` (see module docstring)."""
    src = Path(src)
    if not src.exists():
        raise EncoderDirError(f"{src}: no such file or directory")
    if (src / WEIGHTS_FILE).is_file():
        return src
    save = src / "save" if (src / "save").is_dir() else src
    ckpts = [p for p in save.glob("CKPT+*") if (p / WEIGHTS_FILE).is_file()]
    if not ckpts:
        raise EncoderDirError(f"{src}: no checkpoint with {WEIGHTS_FILE} found")
    return max(ckpts, key=_checkpoint_time)


def _checkpoint_time(ckpt: Path) -> float:
    meta = _read_meta(ckpt)
    return float(meta.get("unixtime", ckpt.stat().st_mtime))


def _read_meta(ckpt: Path) -> dict:
    path = ckpt / "CKPT.yaml"
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as fin:
        meta = yaml.safe_load(fin)
    return meta if isinstance(meta, dict) else {}


def export(
    src: str | os.PathLike,
    directory: str | os.PathLike,
    frame_readout: str | None = None,
) -> Path:
    """Exports the encoder of a pretraining checkpoint to ``directory``.

    Arguments
    ---------
    src : str or Path
        Pretraining output folder, its ``save/`` folder, or a ``CKPT+...`` folder.
    directory : str or Path
        The encoder directory to write.
    frame_readout : str, optional
        The lobe's default read-out, ``"mean"`` or ``"concat"`` (see
        ``BestRQ2Encoder``); None: the run's (``"mean"`` for older runs).

    Returns
    -------
    Path
        The encoder directory.
    """
    ckpt = find_checkpoint(src)
    config_path = ckpt.parent / PRETRAIN_CONFIG
    config = read_config_file(config_path)
    if frame_readout is not None:
        config["frame_readout"] = frame_readout
        validate_config(config, "--frame_readout")
    readout = config.get("frame_readout", "mean")
    frontend, encoder = build_modules(config)
    weights = ckpt / WEIGHTS_FILE
    load_strict(encoder, load_state_dict(weights), str(weights))
    info = dict(config.get("info", {}))
    info.update(
        steps=_read_meta(ckpt).get("step", "unknown"),
        source_checkpoint=str(ckpt.resolve()),
        exported=datetime.datetime.now(datetime.timezone.utc).isoformat(),
    )
    directory = Path(directory)
    write_encoder_dir(
        directory, frontend, encoder, config["crop_seconds"], info, readout
    )
    (directory / "hyperparams.yaml").write_text(
        HPARAMS_TEMPLATE.format(sample_rate=frontend.sample_rate), encoding="utf-8"
    )
    (directory / "README.md").write_text(
        README_TEMPLATE.format(
            date=info["exported"][:10],
            source=ckpt,
            model=info.get("model", "unknown"),
            steps=info["steps"],
            hop_ms=frontend.hop_ms * encoder.grid.patch_time,
            crop_seconds=config["crop_seconds"],
            directory=directory,
            frame_readout=readout,
            output_dim=encoder.embed_dim
            * (encoder.grid.freq_rows if readout == "concat" else 1),
            **config["encoder"],
            **{k: v for k, v in config["frontend"].items() if k != "n_mels"},
        ),
        encoding="utf-8",
    )
    return directory


def main(argv=None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bestrq2_lobes.lobe.export",
        description="Export the encoder of a BEST-RQ-2 (or one-stage) pretraining run.",
    )
    parser.add_argument("src", help="pretraining output folder or CKPT+... folder")
    parser.add_argument("encoder_dir", help="where to write the encoder directory")
    parser.add_argument(
        "--frame_readout",
        choices=list(FRAME_READOUTS),
        default=None,
        help="the lobe's default frame read-out (default: the run's)",
    )
    args = parser.parse_args(argv)
    try:
        directory = export(args.src, args.encoder_dir, args.frame_readout)
    except EncoderDirError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Exported encoder to {directory} (from {find_checkpoint(args.src)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
