"""Clip embeddings of the probe suite: frozen encoder or log-mel statistics, cached.

Every clip is embedded once per split and the result is cached in
``<embedding_folder>/<task>/<split>.pt``. The cache carries a fingerprint of the
embedder (a hash of its weights and config), of the clips (IDs, audio paths,
sizes and modification times) and of ``max_seconds``: a rerun with the same
inputs loads it, anything else recomputes it. Under DDP each rank embeds a
share of the clips and the main process merges the shares.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os

import speechbrain as sb
import torch
from speechbrain.utils.distributed import ddp_barrier, if_main_process, run_on_main
from tqdm import tqdm

from bestrq2_lobes.data.datasets import audio_dataset
from bestrq2_lobes.data.files import atomic_path
from bestrq2_lobes.data.manifest import read_manifest
from bestrq2_lobes.downstream.frames import masked_mean
from bestrq2_lobes.model.tokens import sample_counts

logger = logging.getLogger(__name__)


class EncoderEmbedder:
    """Mean of a frozen encoder's frames over the clip's valid frames.

    Arguments
    ---------
    ssl : BestRQ2Encoder
        The frozen lobe (``output_all_hiddens=False``).
    name : str
        What it is (``encoder`` or ``random``), for the reports.
    all_layers : bool
        Embed every hidden state (``ssl.num_layers`` of them, the last being
        the last-layer output), giving (batch, layers, D); False: the last only.

    Example
    -------
    >>> from bestrq2_lobes import BestRQ2Encoder
    >>> from bestrq2_lobes.lobe.encoder_dir import encoder_config
    >>> cfg = encoder_config(embed_dim=32, depth=1, num_heads=4, n_mels=32)
    >>> emb = EncoderEmbedder(BestRQ2Encoder(None, config=cfg), "random")
    >>> wav = torch.randn(2, 32000)
    >>> out = emb(wav, torch.tensor([32000, 12000]))
    >>> out.shape, emb.dim
    (torch.Size([2, 32]), 32)
    >>> torch.allclose(out[1], emb(wav[1:, :12000], torch.tensor([12000]))[0],
    ...                atol=1e-5)
    True
    >>> every = EncoderEmbedder(emb.ssl, "random", all_layers=True)
    >>> layers = every(wav, torch.tensor([32000, 12000]))
    >>> layers.shape, torch.allclose(layers[:, -1], out, atol=1e-5)
    (torch.Size([2, 2, 32]), True)
    """

    def __init__(self, ssl, name: str = "encoder", all_layers: bool = False):
        if ssl.output_all_hiddens:
            raise ValueError("the probe needs ssl with output_all_hiddens=False")
        self.ssl = ssl
        self.name = name
        self.all_layers = all_layers
        self.dim = ssl.output_dim
        self.shape = (ssl.num_layers, self.dim) if all_layers else (self.dim,)
        self.sample_rate = ssl.sample_rate
        # one whole frame, and enough for the front end's reflect padding
        self.min_samples = max(ssl.samples_per_frame, ssl.frontend.min_samples)
        self._fingerprint = None

    def to(self, device) -> EncoderEmbedder:
        """Moves the lobe to a device."""
        self.ssl.to(device)
        return self

    def fingerprint(self) -> str:
        """Hash of the lobe's config and weights (computed once)."""
        if self._fingerprint is None:
            config = {"kind": self.name, "config": self.ssl.config}
            if self.all_layers:
                config["layers"] = "all"
            self._fingerprint = _hash_module(self.ssl, config)
        return self._fingerprint

    def __call__(self, wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(batch, D), or (batch, layers, D), embeddings of (batch, samples) audio."""
        rel_lens = lengths.float() / wavs.shape[1]
        frames = self.ssl.num_output_frames(lengths.cpu())
        if not self.all_layers:
            feats = self.ssl(wavs, rel_lens)
            return masked_mean(feats.float(), frames.to(feats.device))
        self.ssl.output_all_hiddens = True
        try:
            hiddens = self.ssl(wavs, rel_lens)
        finally:
            self.ssl.output_all_hiddens = False
        frames = frames.to(hiddens.device)
        return torch.stack([masked_mean(h.float(), frames) for h in hiddens], dim=1)


class LogMelEmbedder:
    """Mean and standard deviation over time of each log-mel band (no model).

    The statistics are of the raw dB log-mel: input statistics of the front end
    (``norm_mean``/``norm_std``, an encoder's ``input_norm``) are left out, so
    the baseline is the same for every encoder of one front end.

    Arguments
    ---------
    frontend : LogMel
        The front end (the lobe's, so the baseline sees the same features).

    Example
    -------
    >>> from bestrq2_lobes.model.frontend import LogMel
    >>> emb = LogMelEmbedder(LogMel(n_mels=32))
    >>> wav, lengths = torch.randn(2, 16000), torch.tensor([16000, 8000])
    >>> emb(wav, lengths).shape
    torch.Size([2, 64])
    >>> normed = LogMelEmbedder(LogMel(n_mels=32, norm_mean=-50.0, norm_std=9.0))
    >>> torch.equal(normed(wav, lengths), emb(wav, lengths))
    True
    """

    name = "logmel"

    def __init__(self, frontend):
        frontend = copy.deepcopy(frontend)
        frontend.set_normalization(None, None)
        self.frontend = frontend
        self.dim = 2 * frontend.config["n_mels"]
        self.shape = (self.dim,)
        self.sample_rate = frontend.sample_rate
        self.min_samples = frontend.min_samples  # for the reflect padding

    def to(self, device) -> LogMelEmbedder:
        """Moves the front end to a device."""
        self.frontend.to(device)
        return self

    def fingerprint(self) -> str:
        """Hash of the front end config."""
        return _hash_module(self.frontend, {"kind": "logmel", **self.frontend.config})

    def __call__(self, wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(batch, 2 * n_mels) statistics of (batch, samples) waveforms."""
        feats = self.frontend(wavs, lengths.to(wavs.device)).transpose(1, 2)
        frames = self.frontend.num_frames(lengths).to(feats.device)
        mean = masked_mean(feats, frames)
        var = masked_mean((feats - mean.unsqueeze(1)) ** 2, frames)
        return torch.cat([mean, var.sqrt()], dim=-1)


def _hash_module(module: torch.nn.Module, config: dict) -> str:
    digest = hashlib.sha1(json.dumps(config, sort_keys=True).encode())
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def clips_fingerprint(rows: list[dict]) -> str:
    """Hash of the clips of a split: IDs, audio paths, sizes and mtimes."""
    digest = hashlib.sha1()
    for row in rows:
        stat = os.stat(row["wav"])
        digest.update(
            f"{row['ID']}|{row['wav']}|{stat.st_size}|{stat.st_mtime_ns}\n".encode()
        )
    return digest.hexdigest()


def load_cache(path: str, fingerprint: dict) -> dict | None:
    """The cached embeddings if the file exists and its fingerprint matches."""
    if not os.path.isfile(path):
        return None
    try:
        cache = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a broken cache is recomputed, not fatal
        logger.warning("%s: unreadable embedding cache (%s), recomputing", path, err)
        return None
    if cache.get("fingerprint") != fingerprint:
        return None
    return cache


def ensure_embeddings(
    task,
    split: str,
    embedder,
    folder: str,
    max_seconds: float | None,
    loader_opts: dict,
    device: str,
    precision: str = "fp32",
    progress: bool = True,
    select=None,
) -> str:
    """Embeds every clip of a split once (cached) and returns the cache path.

    Call it on every rank: each embeds its share, the main process merges.

    Arguments
    ---------
    task : Task
        The task.
    split : str
        ``train``, ``valid`` or ``test``.
    embedder : EncoderEmbedder or LogMelEmbedder
        What turns waveforms into one vector per clip.
    folder : str
        Embedding folder; the cache is ``<folder>/<task>/<split>.pt``.
    max_seconds : float, optional
        Read at most this much of each clip.
    loader_opts : dict
        ``batch_size`` and ``num_workers`` of the embedding loader.
    device : str
        Where the embedder runs.
    precision : str
        ``fp32``, ``bf16`` or ``fp16`` (autocast; the front end stays fp32).
    progress : bool
        Show a progress bar on the main process.
    select : callable, optional
        ``select(num_rows)`` gives the row indices to embed (``--debug``
        subsets); None: all.

    Returns
    -------
    str
        Path of the cache file: ``{"ids", "embeddings", "fingerprint"}``.
    """
    csv_path, root = task.csvs[split], task.root_of(split)
    rows = read_manifest(csv_path, data_root=root)
    chosen = select(len(rows)) if select is not None else range(len(rows))
    rows = {i: rows[i] for i in chosen}
    fingerprint = {
        "embedder": embedder.fingerprint(),
        "clips": clips_fingerprint(list(rows.values())),
        "max_seconds": -1.0 if max_seconds is None else float(max_seconds),
    }
    path = os.path.join(folder, task.name, f"{split}.pt")
    if load_cache(path, fingerprint) is not None:
        logger.info("%s/%s: embeddings loaded from %s", task.name, split, path)
        return path
    rank, world = _rank_world()
    order = sorted(rows, key=lambda i: (-rows[i]["duration"], i))
    mine = order[rank::world]
    dataset = audio_dataset(
        csv_path, root, embedder.sample_rate, max_seconds, ("ID", "duration", "wav")
    )
    embedder.to(device)
    shard_ids, embeddings = embed_clips(
        dataset,
        mine,
        embedder,
        loader_opts,
        device,
        precision,
        progress and if_main_process(),
        f"Embedding {task.name}/{split}",
    )
    part = f"{path}.part{rank}"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"ids": shard_ids, "embeddings": embeddings}, part)
    ddp_barrier()
    ids = [row["ID"] for row in rows.values()]
    run_on_main(merge_parts, args=[path, world, ids, fingerprint])
    return path


def embed_clips(
    dataset, indices, embedder, loader_opts, device, precision, progress, desc
):
    """Embeds the clips ``indices`` of a dataset; returns (ids, (n, D) tensor)."""
    subset = torch.utils.data.Subset(dataset, indices)
    loader = torch.utils.data.DataLoader(
        subset,
        batch_size=loader_opts["batch_size"],
        num_workers=loader_opts["num_workers"],
        collate_fn=sb.dataio.batch.PaddedBatch,
    )
    ids, chunks = [], []
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    device_type = torch.device(device).type
    with torch.inference_mode():
        for batch in tqdm(loader, desc=desc, disable=not progress, dynamic_ncols=True):
            wavs, lengths = padded_to_minimum(*batch.sig, embedder.min_samples)
            with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
                out = embedder(wavs.to(device), lengths)
            chunks.append(out.float().cpu())
            ids.extend(batch.id)
    return ids, torch.cat(chunks) if chunks else torch.zeros(0, *embedder.shape)


def padded_to_minimum(wavs: torch.Tensor, rel_lens: torch.Tensor, min_samples: int):
    """Absolute lengths; clips shorter than ``min_samples`` are zero-padded to it.

    Example
    -------
    >>> wavs, lengths = padded_to_minimum(torch.ones(2, 4), torch.tensor([1.0, 0.5]), 6)
    >>> wavs.shape, lengths.tolist()
    (torch.Size([2, 6]), [6, 6])
    """
    lengths = sample_counts(rel_lens, wavs.shape[0], wavs.shape[1])
    if wavs.shape[1] < min_samples:
        wavs = torch.nn.functional.pad(wavs, (0, min_samples - wavs.shape[1]))
    return wavs, lengths.clamp(min=min_samples)


def merge_parts(path: str, world: int, ids: list[str], fingerprint: dict) -> None:
    """Joins the ranks' shares in manifest order and writes the cache."""
    found = {}
    for rank in range(world):
        part = torch.load(f"{path}.part{rank}", map_location="cpu", weights_only=True)
        found.update(zip(part["ids"], part["embeddings"], strict=True))
    missing = [i for i in ids if i not in found]
    if missing:
        raise RuntimeError(f"{path}: no embedding for {len(missing)} clips")
    cache = {
        "ids": ids,
        "embeddings": torch.stack([found[i] for i in ids]),
        "fingerprint": fingerprint,
    }
    with atomic_path(path) as part:
        torch.save(cache, part)
    for rank in range(world):
        os.remove(f"{path}.part{rank}")


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
