"""Given manifests checked clip by clip before training.

``check_manifest_audio`` decodes every clip of a manifest once, before step 1
(cached while the CSV is unchanged), and writes the usable rows and, with the
reason, the skipped ones: a broken clip never stops a run later. The clips are
checked in parallel worker processes (``jobs``, default: the CPUs available),
with a progress bar on a terminal.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor

from tqdm import tqdm

from bestrq2_lobes.data.audio import AudioError, check_audio
from bestrq2_lobes.data.manifest import (
    SKIPPED_FIELDS,
    ManifestError,
    read_manifest,
    write_csv,
)

logger = logging.getLogger(__name__)

_CHUNK = 16  # clips per task sent to a worker process


def _reason(path: str, min_seconds: float) -> str | None:
    """Why a clip is unusable, or None (one clip's check, in a worker)."""
    try:
        check_audio(path, min_seconds=min_seconds)
    except AudioError as err:
        return str(err)
    return None


def check_manifest_audio(
    csv_path: str | os.PathLike,
    save_csv: str | os.PathLike,
    skipped_csv: str | os.PathLike,
    min_seconds: float,
    data_root: str | None = None,
    progress: bool = True,
    jobs: int | None = None,
) -> str:
    """Decodes every clip of a manifest once; writes the usable rows and the rest.

    The same checks as a folder scan (readable, decodable, finite samples, long
    enough) applied to a given manifest, so a broken file is listed in
    ``skipped_csv`` instead of stopping training at its first batch. The result
    is reused while the manifest file is unchanged.

    Arguments
    ---------
    csv_path : str | os.PathLike
        The manifest (``ID,duration,wav,...``).
    save_csv : str | os.PathLike
        Where the usable rows go (same columns, ``$data_root`` kept).
    skipped_csv : str | os.PathLike
        Where the skipped files go (``file,reason``).
    min_seconds : float
        Clips shorter than this are skipped.
    data_root : str | None
        Replacement for ``$data_root``.
    progress : bool
        Show a progress bar.
    jobs : int | None
        Worker processes checking clips (None: the CPUs available to this
        process; 1: in this process).

    Returns
    -------
    str
        ``save_csv``.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> tmp = getfixture("tmpdir")
    >>> sf.write(str(tmp / "ok.wav"), np.zeros(16000, dtype="float32"), 16000)
    >>> _ = (tmp / "bad.wav").write("not audio")
    >>> rows = ["ID,duration,wav", "ok,1,$data_root/ok.wav", "bad,1,$data_root/bad.wav"]
    >>> _ = (tmp / "m.csv").write("\\n".join(rows) + "\\n")
    >>> out = check_manifest_audio(tmp / "m.csv", tmp / "c.csv", tmp / "s.csv",
    ...                            0.5, data_root=str(tmp), progress=False)
    >>> [r["ID"] for r in read_manifest(out, data_root=str(tmp))]
    ['ok']
    """
    csv_path, save_csv = os.fspath(csv_path), os.fspath(save_csv)
    checked = read_manifest(csv_path, data_root=data_root)
    stat = os.stat(csv_path)
    opts = {
        "manifest": os.path.abspath(csv_path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "data_root": data_root,
        "min_seconds": min_seconds,
    }
    opts_file = save_csv + ".opts.json"
    if os.path.isfile(save_csv) and os.path.isfile(opts_file):
        with open(opts_file, encoding="utf-8") as f:
            if json.load(f) == opts:
                return save_csv
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields, raw = list(reader.fieldnames or []), list(reader)
    good, skipped = [], []
    paths = [row["wav"] for row in checked]
    if jobs is None:
        jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    jobs = max(1, min(jobs, len(paths) // _CHUNK))
    pool = None
    if jobs > 1:
        context = multiprocessing.get_context("fork")
        pool = ProcessPoolExecutor(jobs, mp_context=context)
        reasons = pool.map(_reason, paths, [min_seconds] * len(paths), chunksize=_CHUNK)
    else:
        reasons = map(_reason, paths, [min_seconds] * len(paths))
    bar = tqdm(
        zip(raw, paths, reasons, strict=True),
        total=len(paths),
        desc=f"checking {os.path.basename(csv_path)}",
        unit="clip",
        disable=not progress or not sys.stderr.isatty(),
    )
    try:
        for original, path, reason in bar:
            if reason is None:
                good.append(original)
            else:
                skipped.append({"file": path, "reason": reason})
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    write_csv(skipped, skipped_csv, SKIPPED_FIELDS)
    if not good:
        raise ManifestError(
            f"{csv_path}: no usable audio ({len(skipped)} skipped, see {skipped_csv})"
        )
    write_csv(good, save_csv, fields)
    with open(opts_file, "w", encoding="utf-8") as f:
        json.dump(opts, f)
    if skipped:
        logger.info(
            "%s: %d usable clips, %d skipped -> see %s",
            csv_path,
            len(good),
            len(skipped),
            skipped_csv,
        )
    else:
        logger.info("%s: all %d clips usable", csv_path, len(good))
    return save_csv
