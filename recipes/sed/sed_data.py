"""Data of the SED recipe: manifests with their strong labels, frame targets.

Each split is a SpeechBrain CSV manifest and a DCASE TSV label file (given, or
``<csv stem>_events.tsv`` beside the CSV). ``dataio_prepare`` gives datasets
with the waveform ``sig`` and the frame ``targets`` at the encoder's frame hop.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import speechbrain as sb
import torch
from sed_labels import Event, check_labels, frame_targets, match_events, read_events_tsv

from bestrq2_lobes.data.datasets import audio_dataset
from bestrq2_lobes.data.manifest import read_manifest

SPLITS = ("train", "valid", "test")


@dataclass
class Clip:
    """A manifest clip: its TSV file name, duration and reference events."""

    filename: str
    duration: float
    events: list[Event]


def label_paths(hparams: dict) -> dict[str, tuple[str, str]]:
    """(csv, tsv) of each split given; a missing TSV is looked for beside its CSV."""
    paths = {}
    for split in SPLITS:
        csv = hparams[f"{split}_csv"]
        tsv = hparams[f"{split}_tsv"]
        if csv is None:
            if split != "valid":
                raise SystemExit(f"error: --{split}_csv is required")
            continue
        if not os.path.isfile(csv):
            raise SystemExit(f"error: --{split}_csv {csv}: no such file")
        if tsv is None:
            stem = os.path.splitext(os.path.basename(csv))[0]
            tsv = os.path.join(
                os.path.dirname(os.path.abspath(csv)), f"{stem}_events.tsv"
            )
            if not os.path.isfile(tsv):
                raise SystemExit(
                    f"error: no --{split}_tsv given and no {tsv} beside {csv}"
                )
        paths[split] = (csv, tsv)
    return paths


def load_clips(
    csv: str, tsv: str, data_root: str, labels: list[str]
) -> dict[str, Clip]:
    """``ID -> Clip`` of a manifest with the events of its label file."""
    rows = read_manifest(csv, data_root=data_root)
    events = match_events(rows, read_events_tsv(tsv), tsv)
    check_labels(events, labels, tsv)
    return {
        row["ID"]: Clip(
            filename=os.path.basename(row["wav"]),
            duration=float(row["duration"]),
            events=list(events[row["ID"]]),
        )
        for row in rows
    }


def dataio_prepare(
    hparams: dict,
    paths: dict[str, tuple[str, str]],
    labels: list[str],
    num_frames: Callable[[int], int],
) -> tuple[dict, dict[str, dict[str, Clip]]]:
    """Datasets with ``sig`` and frame ``targets``, and the clips of each split."""
    hop_s = hparams["ssl"].hop_ms / 1000.0
    datasets, clips = {}, {}
    for split, (csv, tsv) in paths.items():
        data_root = hparams["data_root"] or os.path.dirname(os.path.abspath(csv))
        split_clips = load_clips(csv, tsv, data_root, labels)
        dataset = audio_dataset(
            csv,
            data_root=data_root,
            sample_rate=hparams["ssl"].sample_rate,
            max_seconds=hparams["max_seconds"],
        )

        def target_pipeline(uid, sig, split_clips=split_clips):
            events = split_clips[uid].events
            frames = num_frames(len(sig))
            return torch.from_numpy(
                frame_targets(events, labels, frames, hop_s, hparams["min_overlap"])
            )

        pipeline = sb.utils.data_pipeline.provides("targets")(target_pipeline)
        pipeline = sb.utils.data_pipeline.takes("id", "sig")(pipeline)
        dataset.add_dynamic_item(pipeline)
        dataset.set_output_keys(["id", "sig", "targets"])
        datasets[split], clips[split] = dataset, split_clips
    return datasets, clips
