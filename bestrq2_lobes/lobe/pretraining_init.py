"""The pretraining init folder: written by the converter, read by the recipe.

``ENCODER_DIR/pretraining`` holds ``config.json`` (format
``bestrq2-pretraining``: front end, encoder, the predictor or head, the
quantizer) and ``model.safetensors`` (the recipe model's tensors, encoder
included), from which ``recipes/pretrain/train.py ... --init_from DIR``
continues pretraining with the authors' targets.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import json
import math
import os

import torch

from bestrq2_lobes.data.files import atomic_path
from bestrq2_lobes.lobe.authors_source import ConversionError, read_safetensors
from bestrq2_lobes.lobe.encoder_dir import CONFIG_FILE, write_config

PRETRAIN_SUBDIR = "pretraining"
PRETRAIN_FORMAT = "bestrq2-pretraining"
PRETRAIN_WEIGHTS = "model.safetensors"


def write_pretraining(directory: str, config: dict, state: dict) -> str:
    """Writes ``config.json`` + ``model.safetensors`` of a pretraining init."""
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(os.path.join(directory, PRETRAIN_WEIGHTS)) as part:
        save_file(tensors, part)
    write_config(os.path.join(directory, CONFIG_FILE), config)
    return directory


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
