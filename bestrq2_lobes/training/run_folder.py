"""What a run folder was trained on, so that a resume cannot mix two runs.

A pretraining run resumes from the checkpoints of its output folder. Rerun with
other data, or with another model size, it would silently continue the earlier
run (or fail deep inside checkpoint loading). The first run records a
fingerprint of its data and of the settings a resume must not change in
``run_fingerprint.json``; a later run on the same folder compares its own
fingerprint with it before writing anything, and a difference stops it with a
one-line error naming what differs and the two ways on.

The data fingerprint is the content hash of the manifests, or of a folder
scan's list of files (the folder's path, and the relative path and size of
each file; modification times are not compared, so touching the files changes
nothing, while a moved folder counts as other data).

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence

from bestrq2_lobes.data.files import atomic_open
from bestrq2_lobes.data.folder_scan import list_audio
from bestrq2_lobes.data.manifest import AUDIO_EXTENSIONS

__all__ = [
    "FINGERPRINT_FILE",
    "RUN_SETTINGS",
    "RunFolderError",
    "folder_fingerprint",
    "manifest_fingerprint",
    "settings_fingerprint",
    "fingerprint_differences",
    "check_run_folder",
    "write_fingerprint",
]

FINGERPRINT_FILE = "run_fingerprint.json"

# hparams a resumed run must share with the run it continues: model sizes, the
# front end and patches, the quantizer and its input normalisation (the
# targets) and the target layout
RUN_SETTINGS = (
    "sample_rate",
    "n_mels",
    "n_fft",
    "hop_length",
    "f_max",
    "normalized_stft",
    "patch_freq",
    "patch_time",
    "embed_dim",
    "depth",
    "num_heads",
    "mlp_ratio",
    "predictor_dim",
    "predictor_depth",
    "predictor_heads",
    "num_codebooks",
    "codebook_size",
    "codebook_dim",
    "quantizer_seed",
    "target_norm",
    "target_norm_clips",
    "input_norm",
    "input_norm_clips",
)


class RunFolderError(ValueError):
    """An output folder holds another run; the message is one line."""


def _digest(chunks: Sequence[bytes]) -> str:
    sha = hashlib.sha256()
    for chunk in chunks:
        sha.update(len(chunk).to_bytes(8, "little"))
        sha.update(chunk)
    return sha.hexdigest()[:16]


def folder_fingerprint(
    folder: str | os.PathLike,
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
) -> dict:
    """The fingerprint of a folder of audio: its path, its files' paths and sizes.

    Arguments
    ---------
    folder : str | os.PathLike
        The folder a scan would read (recursively).
    extensions : Sequence[str]
        File name endings counted as audio.

    Returns
    -------
    dict
        ``kind`` ("folder"), ``where`` (the absolute path, for messages only),
        ``files`` (the count) and ``digest``.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "a.wav").write("1234")
    >>> first = folder_fingerprint(tmp)
    >>> first["files"], folder_fingerprint(tmp) == first
    (1, True)
    >>> _ = (tmp / "b.flac").write("5")
    >>> folder_fingerprint(tmp)["digest"] == first["digest"]
    False
    """
    folder = os.path.abspath(os.fspath(folder))
    files = list_audio(folder, extensions)
    lines = [folder.encode()] + [
        f"{rel}\t{os.path.getsize(os.path.join(folder, rel))}".encode() for rel in files
    ]
    return {
        "kind": "folder",
        "where": folder,
        "files": len(files),
        "digest": _digest(lines),
    }


def manifest_fingerprint(*manifests: str | os.PathLike | None) -> dict:
    """The fingerprint of manifests: the hash of their content (None: absent).

    Arguments
    ---------
    *manifests : str | os.PathLike | None
        The train manifest, then the optional validation manifest.

    Returns
    -------
    dict
        ``kind`` ("manifests"), ``where`` (the absolute paths, for messages
        only), ``files`` (data rows in all) and ``digest``.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "t.csv").write("ID,duration,wav\\na,1.0,a.wav\\n")
    >>> fp = manifest_fingerprint(tmp / "t.csv", None)
    >>> fp["files"], fp == manifest_fingerprint(tmp / "t.csv", None)
    (1, True)
    >>> _ = (tmp / "t.csv").write("ID,duration,wav\\nb,1.0,b.wav\\n")
    >>> manifest_fingerprint(tmp / "t.csv", None)["digest"] == fp["digest"]
    False
    """
    chunks, rows, where = [], 0, []
    for path in manifests:
        if path is None:
            chunks.append(b"")
            continue
        with open(path, "rb") as fin:
            content = fin.read()
        chunks.append(content)
        rows += max(0, len(content.splitlines()) - 1)
        where.append(os.path.abspath(path))
    return {
        "kind": "manifests",
        "where": ", ".join(where),
        "files": rows,
        "digest": _digest(chunks),
    }


def settings_fingerprint(
    hparams: Mapping, keys: Sequence[str] = RUN_SETTINGS, **extra
) -> dict:
    """The settings of ``keys`` found in ``hparams`` (and ``extra``), as JSON.

    Example
    -------
    >>> settings_fingerprint({"embed_dim": 768, "lr": 1e-4}, model="BestRQ2")
    {'embed_dim': 768, 'model': 'BestRQ2'}
    """
    settings = {key: hparams[key] for key in keys if key in hparams}
    settings.update(extra)
    return json.loads(json.dumps(settings, default=str))


def _describe_data(data: Mapping) -> str:
    kind = data.get("kind")
    if kind == "demo":
        return "the demo corpus"
    return f"{kind} {data.get('where')} ({data.get('files')} files)"


def fingerprint_differences(old: Mapping, new: Mapping) -> list[str]:
    """What differs between two run fingerprints, one phrase per difference.

    Example
    -------
    >>> old = {"data": {"kind": "demo", "digest": "1"}, "settings": {"depth": 12}}
    >>> new = {"data": {"kind": "folder", "where": "/a", "files": 3, "digest": "2"},
    ...        "settings": {"depth": 1}}
    >>> fingerprint_differences(old, new)
    ['data: the demo corpus -> folder /a (3 files)', 'depth: 12 -> 1']
    >>> fingerprint_differences(old, old)
    []
    >>> later = {"depth": 12, "input_norm": "none"}  # a key of a later version
    >>> fingerprint_differences(old, {**old, "settings": later})
    []
    """
    diffs = []
    old_data, new_data = old.get("data", {}), new.get("data", {})
    same = ("kind", "digest")
    if any(old_data.get(key) != new_data.get(key) for key in same):
        before, after = _describe_data(old_data), _describe_data(new_data)
        if before == after:
            after += ", changed"
        diffs.append(f"data: {before} -> {after}")
    old_set, new_set = old.get("settings", {}), new.get("settings", {})
    for key in old_set:  # a setting the old record lacks came with a later version
        if old_set.get(key) != new_set.get(key):
            diffs.append(f"{key}: {old_set.get(key)} -> {new_set.get(key)}")
    return diffs


def check_run_folder(
    output_folder: str | os.PathLike,
    fingerprint: Mapping,
    allow_changed: bool = False,
    option: str = "--allow_changed_run True",
) -> str | None:
    """Compares a run's fingerprint with the one its output folder recorded.

    Reads only; a folder without a record (a new run) passes.

    Arguments
    ---------
    output_folder : str | os.PathLike
        The run's output folder.
    fingerprint : Mapping
        ``{"data": ..., "settings": ...}`` of the run about to start.
    allow_changed : bool
        Continue despite differences (the user said so).
    option : str
        The command-line option that sets ``allow_changed``, for the message.

    Returns
    -------
    str | None
        None when the fingerprints agree (or there is no record); with
        ``allow_changed``, a one-line warning naming the differences.

    Raises
    ------
    RunFolderError
        The fingerprints differ and ``allow_changed`` is False.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> old = {"data": {"kind": "demo", "digest": "1"}, "settings": {"depth": 12}}
    >>> write_fingerprint(tmp, old)
    >>> check_run_folder(tmp, old) is None
    True
    >>> check_run_folder(tmp, {**old, "settings": {"depth": 1}})
    Traceback (most recent call last):
    ...
    bestrq2_lobes.training.run_folder.RunFolderError: ... (depth: 12 -> 1)...
    >>> print(check_run_folder(tmp, {**old, "settings": {"depth": 1}}, True))
    --allow_changed_run: continuing the run in ... although it was ... (depth: 12 -> 1)
    """
    path = os.path.join(os.fspath(output_folder), FINGERPRINT_FILE)
    try:
        with open(path, encoding="utf-8") as fin:
            recorded = json.load(fin)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{path}: unreadable run record ({err})") from None
    diffs = fingerprint_differences(recorded, fingerprint)
    if not diffs:
        return None
    what = "; ".join(diffs)
    if allow_changed:
        return (
            f"{option.split()[0]}: continuing the run in {output_folder} although "
            f"it was started on other data or settings ({what})"
        )
    message = (
        f"{output_folder} holds a run started on other data or settings ({what}); "
        "resuming it would mix the two runs. For a new run give another "
        f"--output_folder; to continue this one anyway give {option}"
    )
    raise RunFolderError(message)


def write_fingerprint(output_folder: str | os.PathLike, fingerprint: Mapping) -> None:
    """Records a run's fingerprint in its output folder (atomically).

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> write_fingerprint(tmp, {"data": {}, "settings": {"depth": 1}})
    >>> json.load(open(tmp / FINGERPRINT_FILE))["settings"]
    {'depth': 1}
    """
    path = os.path.join(os.fspath(output_folder), FINGERPRINT_FILE)
    with atomic_open(path) as fout:
        json.dump(fingerprint, fout, indent=1)
        fout.write("\n")
