"""The Brain every downstream recipe subclasses: encoder, layer sum, head.

``FrozenEncoderBrain`` runs the SSL lobe (``modules.ssl``) with all its hidden
states, mixes them with ``modules.layer_sum`` and hands the frames with their
valid counts to the recipe's head (``forward_head``). It owns what the recipes
share:

* **one lengths contract**: the lobe's ``frame_counts`` (valid frames per
  clip) go to the head and the objectives; relative lengths are derived from
  them where a SpeechBrain function wants them;
* **one optimiser layout**: every module except ``ssl`` is trained by
  ``opt_class`` (checkpoint key ``optimizer_head``); with
  ``freeze_encoder: False`` the encoder gets ``encoder_opt_class``
  (``optimizer_encoder``) and is checkpointed as ``ssl``;
* **cached features**: with a frozen encoder, a stage whose audio is the same
  every epoch (valid and test always; training unless clips are randomly
  cropped) is encoded once and served from a ``FeatureCache`` afterwards.

``start_run`` is the one way the recipes parse arguments, load their hparams
and create the experiment folder.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import logging

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import if_main_process

from bestrq2_lobes.downstream.feature_cache import FeatureCache
from bestrq2_lobes.downstream.reporting import describe_encoder
from bestrq2_lobes.lobe.encoder_dir import EncoderDirError
from bestrq2_lobes.model.tokens import sample_counts
from bestrq2_lobes.training.console import limit_loader_workers
from bestrq2_lobes.training.run import parse_arguments

logger = logging.getLogger(__name__)
MiB = 1024 * 1024


class FrozenEncoderBrain(sb.core.Brain):
    """Encoder, layer sum and a recipe's head, with one lengths contract.

    Subclasses implement ``forward_head(feats, counts, stage)`` and the usual
    ``compute_objectives`` / ``on_stage_end``. ``compute_forward`` returns
    ``(forward_head(...), counts)``, counts on the Brain's device.

    Hparams read: ``ssl`` (the lobe), ``freeze_encoder``, ``encoder_opt_class``
    (when fine-tuning) and, optionally, ``feature_cache_mb`` (default 4096;
    0 turns the cache off) and ``random_train_audio`` (True when training
    clips are cropped at random, which keeps the training stage uncached).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.feature_cache = None
        limit = getattr(self.hparams, "feature_cache_mb", 4096)
        if self.hparams.freeze_encoder and limit:
            self.feature_cache = FeatureCache(limit * MiB)
        if not self.hparams.freeze_encoder and self.checkpointer is not None:
            self.checkpointer.add_recoverable("ssl", self.hparams.ssl)

    @classmethod
    def from_hparams(cls, hparams: dict, run_opts, modules: dict | None = None):
        """The Brain of a recipe's loaded hparams (``modules`` defaults to theirs)."""
        return cls(
            modules=hparams["modules"] if modules is None else modules,
            opt_class=hparams["opt_class"],
            hparams=hparams,
            run_opts=run_opts,
            checkpointer=hparams["checkpointer"],
        )

    def fit_then_test(
        self, datasets: dict, train_loader_kwargs: dict | None = None, **best
    ) -> None:
        """Trains on ``train`` (validating on ``valid`` if given), then tests.

        ``best`` picks the tested checkpoint (``max_key="map"``,
        ``min_key="WER"``); without it, the latest. Loader options come from the
        hparams' ``{train,valid,test}_dataloader_opts``.
        """
        hp = self.hparams
        self.fit(
            hp.epoch_counter,
            datasets["train"],
            datasets.get("valid"),
            train_loader_kwargs=train_loader_kwargs or hp.train_dataloader_opts,
            valid_loader_kwargs=hp.valid_dataloader_opts,
        )
        self.evaluate(
            datasets["test"], test_loader_kwargs=hp.test_dataloader_opts, **best
        )

    def forward_head(self, feats, counts, stage):
        """The recipe's output for frames (batch, T, D) with valid ``counts``."""
        raise NotImplementedError

    def compute_forward(self, batch, stage):
        """Encodes the batch (or reads its cache) and applies the head."""
        batch = batch.to(self.device)
        hiddens, counts = self.encode(batch, stage)
        feats = self.modules.layer_sum(hiddens)
        counts = counts.to(self.device)
        return self.forward_head(feats, counts, stage), counts

    def encode(self, batch, stage):
        """All hidden states (layers, batch, T, D) and the frame counts (CPU)."""
        wavs, wav_lens = batch.sig
        ssl = self.hparams.ssl
        counts = ssl.frame_counts(wav_lens, wavs.shape[1])
        cache = self.feature_cache if self._cacheable(stage) else None
        if cache is None:
            return self.modules.ssl(wavs, wav_lens), counts
        samples = sample_counts(wav_lens, wavs.shape[0], wavs.shape[1]).tolist()
        keys = [
            f"{stage.name}/{uid}" for uid in batch.id
        ]  # IDs may repeat across splits
        hiddens = cache.get(keys, samples)
        if hiddens is None:
            hiddens = self.modules.ssl(wavs, wav_lens)
            cache.put(keys, counts.tolist(), hiddens, samples)
        return hiddens.to(self.device), counts

    def _cacheable(self, stage) -> bool:
        if self.feature_cache is None:
            return False
        return stage != sb.Stage.TRAIN or not getattr(
            self.hparams, "random_train_audio", False
        )

    def init_optimizers(self):
        """``optimizer_head`` for every module but ``ssl``; ``optimizer_encoder``."""
        params = [
            p
            for name, module in self.modules.items()
            if name != "ssl"
            for p in module.parameters()
        ]
        self.optimizer = self.opt_class(params)
        self.optimizers_dict = {"optimizer_head": self.optimizer}
        if not self.hparams.freeze_encoder:
            self.encoder_optimizer = self.hparams.encoder_opt_class(
                self.modules.ssl.parameters()
            )
            self.optimizers_dict["optimizer_encoder"] = self.encoder_optimizer
        if self.checkpointer is not None:
            for name, optimizer in self.optimizers_dict.items():
                self.checkpointer.add_recoverable(name, optimizer)


def relative_lengths(counts: torch.Tensor, frames: int) -> torch.Tensor:
    """SpeechBrain relative lengths of ``counts`` valid frames out of ``frames``.

    Example
    -------
    >>> relative_lengths(torch.tensor([4, 2]), 4)
    tensor([1.0000, 0.5000])
    """
    return counts.float() / max(int(frames), 1)


def start_run(argv: list[str], check=None):
    """Parses arguments, loads the hparams, prints the encoder line, makes folders.

    Arguments
    ---------
    argv : list of str
        ``sys.argv[1:]``: the hparams file, run options and overrides.
    check : callable, optional
        ``check(hparams)`` validates the recipe's inputs (manifests, options)
        *before* the output folder is created or written, so a rejected run
        leaves the disk as it was; what it returns is returned.

    Returns
    -------
    (dict, RunOptions, object)
        The loaded hparams, the run options and what ``check`` returned.
        A bad ``--encoder_dir`` stops with a one-line error.
    """
    hparams_file, run_opts, overrides = parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    try:
        with open(hparams_file, encoding="utf-8") as fin:
            hparams = load_hyperpyyaml(fin, overrides)
    except EncoderDirError as err:
        raise SystemExit(f"error: --encoder_dir: {err}") from None
    if if_main_process():
        print(describe_encoder(hparams.get("encoder_dir"), hparams["ssl"]), flush=True)
    checked = check(hparams) if check is not None else None
    note = limit_loader_workers(hparams)
    if note and if_main_process():
        logger.info(note)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    return hparams, run_opts, checked
