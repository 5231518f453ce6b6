"""Data preparation of the CTC ASR recipe: manifests and the alignment check.

The manifests are SpeechBrain CSV files with an ``ID,duration,wav,wrd`` header
(``wrd``: the transcript). This module checks them (one-line errors naming the
file, row and column) and counts the transcripts that CTC cannot align because
they need more frames than the encoder gives for their audio. The vocabulary
is trained by ``asr_tokenizer``.

CTC outputs are shifted by one: index 0 is the CTC blank and SentencePiece id
``i`` is output ``i + 1`` (so the tokenizer's ``<unk>``, id 0, never collides
with the blank).

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import torch
from asr_tokenizer import encode

from bestrq2_lobes.data.manifest import ManifestError, read_manifest

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("ID", "duration", "wav", "wrd")
COARSE_HOP_MS = 100.0  # frame hops above this are too coarse for CTC on text


def check_manifests(
    csvs: dict[str, str | None], data_root: str | None
) -> dict[str, list[dict]]:
    """Validates the train/valid/test manifests; exits with a one-line error.

    Arguments
    ---------
    csvs : dict
        ``{"train": path, "valid": path, "test": path}``; None entries are
        skipped (only ``train`` is mandatory).
    data_root : str, optional
        Replacement of ``$data_root``; None: each manifest's own folder.

    Returns
    -------
    dict
        The checked rows of each given manifest.

    Example
    -------
    >>> check_manifests({"train": "/no/such.csv"}, None)
    Traceback (most recent call last):
    ...
    SystemExit: error: manifest not found: '/no/such.csv'
    """
    if not csvs.get("train"):
        raise SystemExit("error: no --train_csv given")
    rows = {}
    for name, path in csvs.items():
        if not path:
            continue
        root = data_root or os.path.dirname(os.path.abspath(path))
        try:
            rows[name] = read_manifest(path, data_root=root, required=REQUIRED_COLUMNS)
        except ManifestError as err:
            raise SystemExit(f"error: {err}") from None
        if not rows[name]:
            raise SystemExit(f"error: {path}: no rows")
    return rows


def ctc_min_frames(tokens: Sequence[int]) -> int:
    """Fewest frames CTC needs for a target: one per token, plus one blank
    between each pair of equal neighbours.

    Example
    -------
    >>> ctc_min_frames([5, 5, 6, 5]), ctc_min_frames([]), ctc_min_frames([2, 2, 2])
    (5, 0, 5)
    """
    repeats = sum(1 for a, b in zip(tokens[:-1], tokens[1:], strict=True) if a == b)
    return len(tokens) + repeats


def count_unalignable(
    rows: list[dict],
    sp,
    num_output_frames: Callable[[torch.Tensor], torch.Tensor],
    sample_rate: int,
) -> tuple[int, int]:
    """Counts transcripts that need more CTC frames than the encoder gives.

    Arguments
    ---------
    rows : list of dict
        Checked manifest rows (``duration`` in seconds, ``wrd``).
    sp : sentencepiece.SentencePieceProcessor
        The tokenizer.
    num_output_frames : callable
        Frames of the encoder for clip lengths in samples
        (``BestRQ2Encoder.num_output_frames``).
    sample_rate : int
        Sampling rate the encoder reads.

    Returns
    -------
    (int, int)
        Number of unalignable transcripts, and the largest shortfall in frames.

    Example
    -------
    >>> class Fake:
    ...     def encode_as_ids(self, text):
    ...         return [ord(c) for c in text]
    >>> rows = [{"duration": 1.0, "wrd": "AB"}, {"duration": 1.0, "wrd": "AAAB"}]
    >>> count_unalignable(rows, Fake(), lambda n: n // 4000, 16000)
    (1, 2)
    """
    samples = torch.tensor([round(float(r["duration"]) * sample_rate) for r in rows])
    frames = num_output_frames(samples).tolist()
    bad, worst = 0, 0
    for row, available in zip(rows, frames, strict=True):
        needed = ctc_min_frames(encode(sp, row["wrd"]))
        if needed > available:
            bad += 1
            worst = max(worst, needed - int(available))
    return bad, worst


def unalignable_message(
    split: str, bad: int, total: int, worst: int, hop_ms: float
) -> str:
    """The warning about transcripts CTC cannot align (one line).

    Example
    -------
    >>> unalignable_message("train", 3, 10, 2, 625.0)[:60]
    'train: 3 of 10 transcripts need more CTC frames than the enc'
    """
    message = (
        f"{split}: {bad} of {total} transcripts need more CTC frames than the "
        f"encoder gives for their audio (frame hop {hop_ms:g} ms; worst shortfall "
        f"{worst} frames): CTC cannot align them, they give no gradient (zero "
        "loss) and cannot be recognised in full."
    )
    if hop_ms > COARSE_HOP_MS:
        message += (
            f" The encoder's frame hop ({hop_ms:g} ms) is too coarse for CTC: use "
            "a speech-resolution encoder (40 ms frames, pretrained with "
            "hparams/bestrq2_vit_speech.yaml)."
        )
    else:
        message += (
            " Check those transcripts, or use a larger --vocab_size (longer "
            "pieces, fewer tokens)."
        )
    return message
