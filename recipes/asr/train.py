#!/usr/bin/env python3
"""Recipe for CTC speech recognition on a frozen BEST-RQ-2 encoder.

The encoder gives all its hidden layers (one frame per patch column: 40 ms for
a speech-resolution encoder); a learnable softmax-weighted sum combines them, a
small trainable head and a linear layer map each frame to a SentencePiece
vocabulary (trained here on the train transcripts) plus the CTC blank; that
layer is sized from the trained vocabulary. The validation set is decoded
greedily, the test set with a CTC beam search without language model; WER and
CER are reported.

To run it on an exported encoder::

    python recipes/asr/train.py hparams/asr_ctc.yaml --encoder_dir ENCODER_DIR \
        --train_csv train.csv --valid_csv valid.csv --test_csv test.csv

Without ``--encoder_dir`` a randomly initialised encoder of the "speech"
configuration is used (a random-encoder baseline). ``--freeze_encoder False``
fine-tunes the encoder too, with its own optimiser (``--lr_encoder``). On
several GPUs::

    torchrun --nproc_per_node=4 recipes/asr/train.py hparams/asr_ctc.yaml ...

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import logging
import sys
import time

import speechbrain as sb
import torch
from asr_prepare import (
    REQUIRED_COLUMNS,
    check_manifests,
    count_unalignable,
    unalignable_message,
)
from asr_tokenizer import decode, encode, train_tokenizer, vocabulary
from speechbrain.decoders import ctc_greedy_decode
from speechbrain.utils.distributed import if_main_process

from bestrq2_lobes.data.datasets import audio_dataset
from bestrq2_lobes.data.manifest import ManifestError
from bestrq2_lobes.datasets.recipe_data import fill_manifests, prepare_corpus
from bestrq2_lobes.downstream.brain import (
    FrozenEncoderBrain,
    relative_lengths,
    start_run,
)
from bestrq2_lobes.downstream.reporting import write_results
from bestrq2_lobes.training.run import shutdown_distributed

logger = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")


def first_output(output):
    """The output tensor of a head (an RNN returns ``(output, hidden)``).

    Example
    -------
    >>> x = torch.zeros(2)
    >>> first_output((x, None)) is x, first_output(x) is x
    (True, True)
    """
    return output[0] if isinstance(output, tuple) else output


class ASRBrain(FrozenEncoderBrain):
    """CTC training of a head on the weighted sum of the encoder's layers."""

    def forward_head(self, feats, counts, stage):
        """CTC log-probabilities (batch, frames, outputs)."""
        logits = self.modules.ctc_lin(first_output(self.modules.head(feats)))
        return self.hparams.log_softmax(logits.float())

    def compute_objectives(self, predictions, batch, stage):
        """CTC loss; on valid/test also decodes and scores the batch."""
        log_probs, counts = predictions
        lens = relative_lengths(counts, log_probs.shape[1])
        tokens, token_lens = batch.tokens
        loss = sb.nnet.losses.ctc_loss(
            log_probs, tokens, lens, token_lens, self.hparams.blank_index
        )
        if stage != sb.Stage.TRAIN:
            texts = self.transcribe(log_probs, lens, stage)
            predicted = [text.split() for text in texts]
            targets = [text.split() for text in batch.wrd]
            self.wer_metric.append(batch.id, predicted, targets)
            self.cer_metric.append(batch.id, predicted, targets)
        return loss

    def transcribe(self, log_probs, lens, stage):
        """Greedy decoding (valid) or CTC beam search (test) to text."""
        if stage == sb.Stage.VALID:
            outputs = ctc_greedy_decode(log_probs, lens, self.hparams.blank_index)
            return [decode(self.tokenizer, out) for out in outputs]
        frames = torch.round(lens * log_probs.shape[1]).long().tolist()
        texts = []
        for item, length in zip(log_probs.detach().cpu(), frames, strict=True):
            if length == 0:  # shorter than one frame
                texts.append("")
                continue
            hyps = self.searcher(item[:length].unsqueeze(0))
            texts.append(hyps[0][0].text if hyps[0] else "")
        return texts

    def on_stage_start(self, stage, epoch=None):
        """Fresh WER/CER trackers for valid and test."""
        if stage != sb.Stage.TRAIN:
            self.wer_metric = self.hparams.wer_computer()
            self.cer_metric = self.hparams.cer_computer()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs, anneals the learning rates, checkpoints, writes test reports."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss}
            return
        stats = {
            "loss": stage_loss,
            "WER": self.wer_metric.summarize("error_rate"),
            "CER": self.cer_metric.summarize("error_rate"),
        }
        if stage == sb.Stage.VALID:
            self.valid_stats = stats
            meta = {"epoch": epoch, **self.anneal(stage_loss)}
            self.hparams.train_logger.log_stats(
                stats_meta=meta,
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={"WER": stats["WER"]},
                min_keys=["WER"],
                num_to_keep=self.hparams.keep_checkpoints,
            )
            return
        self.test_stats = stats
        weights = self.hparams.layer_sum.weights().tolist()
        self.hparams.train_logger.log_stats(
            stats_meta={
                "Epoch loaded": self.hparams.epoch_counter.current,
                "layer weights": " ".join(f"{w:.3f}" for w in weights),
            },
            test_stats=stats,
        )
        if if_main_process():
            for path, metric in (
                (self.hparams.wer_file, self.wer_metric),
                (self.hparams.cer_file, self.cer_metric),
            ):
                with open(path, "w", encoding="utf-8") as fout:
                    metric.write_stats(fout)

    def anneal(self, valid_loss):
        """NewBob steps of the learning rates; returns them for the log."""
        old, new = self.hparams.lr_annealing(valid_loss)
        sb.nnet.schedulers.update_learning_rate(self.optimizer, new)
        meta = {"lr": old}
        if not self.hparams.freeze_encoder:
            old_enc, new_enc = self.hparams.lr_annealing_encoder(valid_loss)
            sb.nnet.schedulers.update_learning_rate(self.encoder_optimizer, new_enc)
            meta["lr_encoder"] = old_enc
        return meta


def dataio_prepare(hparams, csvs, sp):
    """Datasets with ``sig`` (waveform), ``wrd`` (text) and ``tokens`` (targets).

    Arguments
    ---------
    hparams : dict
        The loaded hyperparameters.
    csvs : dict
        ``{"train": path, "valid": path, "test": path}``.
    sp : sentencepiece.SentencePieceProcessor
        The trained tokenizer.

    Returns
    -------
    dict
        A DynamicItemDataset per split; train sorted as ``sorting`` says,
        valid and test by increasing duration (less padding).
    """

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("wrd", "tokens")
    def text_pipeline(wrd):
        yield wrd
        yield torch.LongTensor(encode(sp, wrd))

    datasets = {}
    for name, csv in csvs.items():
        try:
            dataset = audio_dataset(
                csv,
                hparams["data_root"],
                hparams["sample_rate"],
                required=REQUIRED_COLUMNS,
            )
        except ManifestError as err:
            raise SystemExit(f"error: {err}") from None
        dataset.add_dynamic_item(text_pipeline)
        dataset.set_output_keys(["id", "sig", "wrd", "tokens"])
        sorting = hparams["sorting"] if name == "train" else "ascending"
        if sorting in ("ascending", "descending"):
            dataset = dataset.filtered_sorted(
                sort_key="duration", reverse=sorting == "descending"
            )
        elif sorting != "random":
            raise SystemExit(
                f"error: sorting must be random, ascending or descending, "
                f"not {sorting!r}"
            )
        datasets[name] = dataset
    return datasets


def check_alignability(rows, sp, ssl):
    """Warns, per split, about transcripts longer than the encoder's frames."""
    counts = {}
    for split, split_rows in rows.items():
        bad, worst = count_unalignable(
            split_rows, sp, ssl.num_output_frames, ssl.sample_rate
        )
        counts[split] = bad
        if bad and if_main_process():
            logger.warning(
                unalignable_message(split, bad, len(split_rows), worst, ssl.hop_ms)
            )
    return counts


def build_tokenizer(hparams, train_csv):
    """Trains or reuses the run's tokenizer (never one other checkpoints used)."""
    checkpointer = hparams["checkpointer"]
    checkpointed = None
    if checkpointer.list_checkpoints():
        checkpointed = str(checkpointer.checkpoints_dir)
    return train_tokenizer(
        hparams["tokenizer_folder"],
        train_csv,
        hparams["vocab_size"],
        hparams["token_type"],
        hparams["character_coverage"],
        exact_vocab_size=hparams["exact_vocab_size"],
        checkpointed=checkpointed,
    )


def build_output_layer(hparams, sp):
    """The CTC output layer: the blank plus one output per piece of ``sp``.

    ``hparams["ctc_lin"]`` is the layer's class with its input width; the
    layer is added to ``modules`` and to the checkpointer as ``ctc_lin``.

    Example
    -------
    >>> class Tokenizer:
    ...     def vocab_size(self):
    ...         return 5
    >>> from speechbrain.utils.checkpoints import Checkpointer
    >>> from functools import partial
    >>> hparams = {
    ...     "ctc_lin": partial(torch.nn.Linear, in_features=8),
    ...     "modules": {},
    ...     "checkpointer": Checkpointer(getfixture("tmpdir")),
    ... }
    >>> build_output_layer(hparams, Tokenizer())
    Linear(in_features=8, out_features=6, bias=True)
    >>> hparams["modules"]["ctc_lin"] is hparams["checkpointer"].recoverables["ctc_lin"]
    True
    """
    ctc_lin = hparams["ctc_lin"](out_features=sp.vocab_size() + 1)
    hparams["modules"]["ctc_lin"] = ctc_lin
    hparams["checkpointer"].add_recoverable("ctc_lin", ctc_lin)
    return ctc_lin


def summary_line(brain, hparams, started):
    """One line with the final metrics and where the outputs are."""
    test, valid = brain.test_stats, getattr(brain, "valid_stats", {})
    parts = [
        f"ASR finished: test WER {test['WER']:.2f}% CER {test['CER']:.2f}% "
        f"(beam {hparams['beam_size']}, no LM, checkpoint of epoch "
        f"{hparams['epoch_counter'].current})",
    ]
    if valid:
        parts.append(f"last valid WER {valid['WER']:.2f}% (greedy)")
    parts.append(f"{(time.time() - started) / 60:.1f} min")
    parts.append(f"results: {hparams['results_file']}")
    return ", ".join(parts)


def check_inputs(hparams):
    """Prepares ``--corpus`` (if set), checks the encoder's rate and the manifests.

    Returns the manifest rows.
    """
    try:  # the corpus's preparer, on the main process, before the data is read
        fill_manifests(hparams, prepare_corpus(hparams))
    except ManifestError as err:
        raise SystemExit(f"error: {err}") from None
    ssl = hparams["ssl"]
    if ssl.sample_rate != hparams["sample_rate"]:
        raise SystemExit(
            f"error: the encoder reads {ssl.sample_rate} Hz audio, "
            f"sample_rate is {hparams['sample_rate']}"
        )
    csvs = {split: hparams[f"{split}_csv"] for split in SPLITS}
    for split, path in csvs.items():
        if not path:
            raise SystemExit(f"error: --{split}_csv is required")
    return check_manifests(csvs, hparams["data_root"])


def main(argv):
    """Parses arguments, prepares data and tokenizer, trains and tests."""
    started = time.time()
    hparams, run_opts, rows = start_run(argv, check=check_inputs)
    ssl = hparams["ssl"]
    csvs = {split: hparams[f"{split}_csv"] for split in SPLITS}
    sp = build_tokenizer(hparams, csvs["train"])
    build_output_layer(hparams, sp)
    unalignable = check_alignability(rows, sp, ssl)
    datasets = dataio_prepare(hparams, csvs, sp)

    brain = ASRBrain.from_hparams(hparams, run_opts)
    brain.tokenizer = sp
    brain.searcher = hparams["test_searcher"](vocab_list=vocabulary(sp))
    train_opts = dict(hparams["train_dataloader_opts"])
    train_opts["shuffle"] = hparams["sorting"] == "random"
    brain.fit_then_test(datasets, train_opts, min_key="WER")
    test = brain.test_stats
    if if_main_process():
        write_results(
            hparams["results_file"],
            {
                "wer": test["WER"],
                "cer": test["CER"],
                "test_loss": float(test["loss"]),
                "num_test": len(datasets["test"]),
                "unalignable_test": unalignable["test"],
                "unalignable_train": unalignable["train"],
                "frame_hop_ms": ssl.hop_ms,
                "vocab_size": sp.vocab_size(),
            },
        )
        print(summary_line(brain, hparams, started), flush=True)
    shutdown_distributed(brain)


if __name__ == "__main__":
    main(sys.argv[1:])
