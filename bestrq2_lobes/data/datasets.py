"""Checked audio datasets for the downstream recipes.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import speechbrain as sb

from bestrq2_lobes.data.audio import read_segment
from bestrq2_lobes.data.manifest import read_manifest


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
