"""The SentencePiece vocabulary of the CTC ASR recipe, trained on the transcripts.

The vocabulary is what the output layer is sized from: its size is what the
text gives (a ``vocab_size`` too large for a small corpus is capped), and the
settings it was trained with are stored beside it, so that a rerun with other
settings retrains it, or stops if checkpoints were trained with the old one.
SentencePiece id ``i`` is CTC output ``i + 1`` (0 is the blank).

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
from collections.abc import Sequence

import sentencepiece as spm
from speechbrain.utils.distributed import if_main_process, run_on_main

from bestrq2_lobes.data.files import atomic_open

logger = logging.getLogger(__name__)

BLANK_INDEX = 0  # CTC output 0; SentencePiece id i is output i + 1
TOKEN_TYPES = ("unigram", "bpe", "char")
TOKENIZER_MODEL = "tokenizer.model"
TOKENIZER_SETTINGS = "tokenizer.json"  # the settings the model was trained with


def read_transcripts(train_csv: str) -> list[str]:
    """The ``wrd`` column of a manifest: the text the tokenizer is trained on.

    Example
    -------
    >>> path = getfixture("tmpdir") / "train.csv"
    >>> _ = path.write("ID,duration,wav,wrd\\na,1.0,a.wav,ONE TWO\\n")
    >>> read_transcripts(str(path))
    ['ONE TWO']
    """
    with open(train_csv, newline="", encoding="utf-8") as fin:
        return [row["wrd"] or "" for row in csv.DictReader(fin)]


def tokenizer_settings(
    texts: Sequence[str],
    vocab_size: int,
    token_type: str,
    character_coverage: float = 1.0,
    exact_vocab_size: bool = False,
) -> dict:
    """What a tokenizer is trained from, as stored beside it and compared on reruns.

    ``vocab_size`` and ``exact_vocab_size`` mean nothing for ``char`` (one
    piece per symbol) and are stored as None; the training text is stored as
    its SHA-256.

    Example
    -------
    >>> tokenizer_settings(["ONE"], 64, "char")["vocab_size"] is None
    True
    >>> tokenizer_settings(["ONE"], 64, "bpe")["vocab_size"]
    64
    """
    per_piece = token_type != "char"
    text = "\n".join(texts).encode("utf-8")
    return {
        "token_type": token_type,
        "vocab_size": int(vocab_size) if per_piece else None,
        "exact_vocab_size": bool(exact_vocab_size) if per_piece else None,
        "character_coverage": float(character_coverage),
        "train_text_sha256": hashlib.sha256(text).hexdigest(),
    }


def settings_change(stored: dict, wanted: dict) -> str:
    """What differs between stored and wanted tokenizer settings ("" if nothing).

    Example
    -------
    >>> old = tokenizer_settings(["ONE"], 64, "unigram")
    >>> settings_change(old, tokenizer_settings(["ONE"], 64, "char"))
    'token_type unigram -> char, vocab_size 64 -> None, exact_vocab_size False -> None'
    >>> settings_change(old, tokenizer_settings(["TWO"], 64, "unigram"))
    'other train transcripts'
    >>> settings_change(old, old)
    ''
    """
    changes = []
    for key, value in wanted.items():
        if stored.get(key) == value:
            continue
        if key == "train_text_sha256":
            changes.append("other train transcripts")
        else:
            changes.append(f"{key} {stored.get(key)} -> {value}")
    return ", ".join(changes)


def _train_error(err: Exception, token_type: str, vocab_size: int, train_csv: str):
    """SentencePiece's failure as a one-line SystemExit with a hint."""
    text = str(err).strip() or repr(err)
    first = text.splitlines()[-1].split("] ", 1)[-1].rstrip(".")
    if "too high" in first:
        hint = (
            "Try a smaller --vocab_size, --exact_vocab_size=False (the size is "
            "then capped to what the text allows) or --token_type=char."
        )
    elif "smaller than required_chars" in first:
        hint = "Try a larger --vocab_size or --token_type=char."
    else:
        hint = "Try another --vocab_size or --token_type=char."
    return SystemExit(
        f"error: could not train the SentencePiece tokenizer ({token_type}, "
        f"vocab_size={vocab_size}) on {train_csv}: {first}. {hint}"
    )


def _train_model(folder: str, texts: Sequence[str], settings: dict, info: dict):
    """Trains the SentencePiece model into ``folder``, then writes its settings."""
    kwargs = {}
    if settings["token_type"] != "char":
        kwargs = {
            "vocab_size": settings["vocab_size"],
            "hard_vocab_limit": settings["exact_vocab_size"],
        }
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        model_type=settings["token_type"],
        character_coverage=settings["character_coverage"],
        bos_id=-1,
        eos_id=-1,
        pad_id=-1,
        unk_id=0,
        max_sentencepiece_length=10,
        minloglevel=2,  # errors only (they are raised too)
        **kwargs,
    )
    settings_path = os.path.join(folder, TOKENIZER_SETTINGS)
    with contextlib.suppress(FileNotFoundError):
        os.remove(settings_path)  # no stale settings beside a new model
    with atomic_open(os.path.join(folder, TOKENIZER_MODEL), "wb") as fout:
        fout.write(model.getvalue())
    with atomic_open(settings_path) as fout:
        json.dump({**settings, **info}, fout, indent=1)


def _stored_settings(folder: str) -> dict | None:
    """The settings beside the model in ``folder``; None without model or file."""
    settings_path = os.path.join(folder, TOKENIZER_SETTINGS)
    if not os.path.isfile(os.path.join(folder, TOKENIZER_MODEL)):
        return None
    try:
        with open(settings_path, encoding="utf-8") as fin:
            stored = json.load(fin)
    except (OSError, ValueError):
        return None
    return stored if isinstance(stored, dict) else None


def train_tokenizer(
    folder: str,
    train_csv: str,
    vocab_size: int,
    token_type: str,
    character_coverage: float = 1.0,
    exact_vocab_size: bool = False,
    checkpointed: str | None = None,
) -> spm.SentencePieceProcessor:
    """Trains (main process) or reuses the SentencePiece vocabulary of a run.

    The model is ``<folder>/tokenizer.model``, with the settings it was
    trained with in ``<folder>/tokenizer.json``. A rerun reuses it when the
    settings and the train transcripts are the same, and retrains it
    otherwise, unless ``checkpointed`` says that checkpoints were trained with
    it: then the run stops with a one-line error instead of pairing those
    checkpoints with another vocabulary.

    For ``unigram`` and ``bpe``, a ``vocab_size`` larger than the text allows
    is capped to what it allows (one warning says so), unless
    ``exact_vocab_size``: then SentencePiece's limit stops the run (one-line
    error). ``char`` has one piece per symbol whatever ``vocab_size`` is.

    Arguments
    ---------
    folder : str
        Where the tokenizer model and its settings are written.
    train_csv : str
        Manifest whose ``wrd`` column is the training text.
    vocab_size : int
        Number of pieces asked for (unigram/bpe; ignored by ``char``).
    token_type : str
        ``unigram``, ``bpe`` or ``char``.
    character_coverage : float
        SentencePiece character coverage.
    exact_vocab_size : bool
        Stop, rather than cap, when ``vocab_size`` is too high for the text.
    checkpointed : str, optional
        The folder of checkpoints trained with the tokenizer in ``folder``
        (None: there are none).

    Returns
    -------
    sentencepiece.SentencePieceProcessor
        Its ``vocab_size()`` is the number of pieces actually trained.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "train.csv").write("ID,duration,wav,wrd\\na,1,a.wav,ONE TWO\\n")
    >>> sp = train_tokenizer(str(tmp / "tok"), str(tmp / "train.csv"), 8, "char")
    >>> sp.vocab_size()  # <unk>, the word boundary and 5 letters
    7
    >>> train_tokenizer(
    ...     str(tmp / "tok"), str(tmp / "train.csv"), 8, "bpe", checkpointed="save"
    ... )
    Traceback (most recent call last):
    ...
    SystemExit: error: the checkpoints in save were trained with the tokenizer in ...
    """
    if token_type not in TOKEN_TYPES:
        raise SystemExit(
            f"error: token_type must be unigram, bpe or char, not {token_type!r}"
        )
    texts = read_transcripts(train_csv)
    wanted = tokenizer_settings(
        texts, vocab_size, token_type, character_coverage, exact_vocab_size
    )
    stored = _stored_settings(folder)
    change = None if stored is None else settings_change(stored, wanted)
    if change != "":
        if checkpointed is not None:
            why = (
                "made with other settings (" + change + ")"
                if stored is not None
                else f"whose settings ({TOKENIZER_SETTINGS}) are missing"
            )
            raise SystemExit(
                f"error: the checkpoints in {checkpointed} were trained with the "
                f"tokenizer in {folder}, {why}: use a new --output_folder, or "
                f"delete the CKPT+* folders in {checkpointed} to start over"
            )
        if stored is not None and if_main_process():
            logger.info("tokenizer in %s: retraining it (%s)", folder, change)
        os.makedirs(folder, exist_ok=True)
        info = {"train_csv": os.path.abspath(train_csv)}
        try:
            run_on_main(_train_model, args=[folder, texts, wanted, info])
        except (RuntimeError, ValueError, OSError) as err:
            raise _train_error(err, token_type, vocab_size, train_csv) from None
    sp = spm.SentencePieceProcessor(model_file=os.path.join(folder, TOKENIZER_MODEL))
    if (
        token_type != "char"
        and not exact_vocab_size
        and sp.vocab_size() < int(vocab_size)
        and if_main_process()
    ):
        logger.warning(
            "tokenizer: the train transcripts allow only %d %s pieces, fewer than "
            "vocab_size=%d: using %d (--exact_vocab_size=True stops instead)",
            sp.vocab_size(),
            token_type,
            int(vocab_size),
            sp.vocab_size(),
        )
    return sp


def encode(sp, text: str) -> list[int]:
    """CTC targets of a transcript (SentencePiece ids shifted past the blank).

    Example
    -------
    >>> class Fake:
    ...     def encode_as_ids(self, text):
    ...         return [0, 3]
    >>> encode(Fake(), "A B")
    [1, 4]
    """
    return [i + 1 for i in sp.encode_as_ids(text)]


def decode(sp, outputs: Sequence[int]) -> str:
    """Text of a sequence of CTC outputs (blanks and repeats already removed).

    Example
    -------
    >>> class Fake:
    ...     def decode_ids(self, ids):
    ...         return " ".join(map(str, ids))
    >>> decode(Fake(), [1, 4, 0, 5])
    '0 3 4'
    """
    return sp.decode_ids([int(i) - 1 for i in outputs if int(i) != BLANK_INDEX])


def vocabulary(sp) -> list[str]:
    """Labels of the CTC outputs: the blank, then the SentencePiece pieces."""
    return ["<blank>"] + [sp.id_to_piece(i) for i in range(sp.vocab_size())]
