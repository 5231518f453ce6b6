"""Data pieces shared by the downstream recipes: checked audio datasets, results.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import speechbrain as sb

from bestrq2_lobes.audio import read_segment
from bestrq2_lobes.manifest import read_manifest


def audio_dataset(
    csv_path: str | os.PathLike,
    data_root: str | None = None,
    sample_rate: int = 16000,
    max_seconds: float | None = None,
    required: Sequence[str] = ("ID", "duration", "wav"),
    output_keys: Sequence[str] = (),
) -> sb.dataio.dataset.DynamicItemDataset:
    """A DynamicItemDataset of a checked manifest with a ``sig`` waveform item.

    The manifest is validated first (one-line errors naming the row and column,
    missing audio files included). ``sig`` is the clip from its start (at most
    ``max_seconds``), resampled to ``sample_rate`` and downmixed to mono.

    Arguments
    ---------
    csv_path : str or PathLike
        SpeechBrain CSV manifest (``ID,duration,wav,...``).
    data_root : str, optional
        Replacement of ``$data_root``; defaults to the manifest's folder.
    sample_rate : int
        Sampling rate of ``sig``.
    max_seconds : float, optional
        Read at most this much of each clip.
    required : sequence of str
        Columns that must be present and non-empty.
    output_keys : sequence of str
        Keys returned besides ``id`` and ``sig``.

    Returns
    -------
    DynamicItemDataset

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> tmp = getfixture("tmpdir")
    >>> sf.write(str(tmp / "a.wav"), np.zeros(8000, dtype="float32"), 8000)
    >>> rows = "ID,duration,wav,tags\\na,1.0,$data_root/a.wav,x y\\n"
    >>> _ = (tmp / "m.csv").write(rows)
    >>> data = audio_dataset(tmp / "m.csv", output_keys=["tags"])
    >>> item = data[0]
    >>> item["id"], item["sig"].shape, item["tags"]
    ('a', torch.Size([16000]), 'x y')
    """
    csv_path = os.fspath(csv_path)
    if data_root is None:
        data_root = os.path.dirname(os.path.abspath(csv_path))
    read_manifest(csv_path, data_root=data_root, required=required)
    dataset = sb.dataio.dataset.DynamicItemDataset.from_csv(
        csv_path, replacements={"data_root": data_root}
    )

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return read_segment(wav, 0.0, max_seconds, sample_rate)

    dataset.add_dynamic_item(audio_pipeline)
    dataset.set_output_keys(["id", "sig", *output_keys])
    return dataset


def describe_encoder(encoder_dir: str | None, ssl) -> str:
    """One line saying which encoder a downstream recipe uses.

    Example
    -------
    >>> from bestrq2_lobes import BestRQ2Encoder
    >>> from bestrq2_lobes.encoder_dir import encoder_config
    >>> ssl = BestRQ2Encoder(config=encoder_config(embed_dim=32, depth=1, num_heads=4))
    >>> describe_encoder(None, ssl)[:60]
    'No --encoder_dir given: using a RANDOMLY INITIALISED encoder'
    """
    shape = (
        f"width {ssl.output_dim}, depth {ssl.num_layers}, frame hop {ssl.hop_ms:g} ms"
    )
    if encoder_dir:
        return f"Encoder: {encoder_dir} ({shape}, frozen={ssl.freeze})"
    return (
        "No --encoder_dir given: using a RANDOMLY INITIALISED encoder of the default "
        f"configuration ({shape}); results are a random-encoder baseline."
    )


def write_results(path: str | os.PathLike, results: dict) -> None:
    """Writes flat final metrics as JSON (``<output_folder>/results.json``).

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> write_results(tmp / "results.json", {"map": 0.5})
    >>> json.loads((tmp / "results.json").read())
    {'map': 0.5}
    """
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fout:
        json.dump(results, fout, indent=2, sort_keys=True)
    os.replace(tmp, path)
