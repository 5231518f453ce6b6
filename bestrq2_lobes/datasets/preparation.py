"""What every corpus preparer shares: root checks, clip checks, CSVs, skipping.

A preparer (``prepare_<corpus>`` in this package) reads a corpus's own
metadata into :class:`Clip` entries, one per clip it lists, and hands them to
:func:`write_prepared`, which

- checks every clip in parallel worker processes (``check="decode"``: fully
  decoded, as the pretraining recipe does; ``"header"``: the header only),
  with a progress bar on a terminal;
- leaves out the missing, unreadable and too short clips, listing each with
  its reason in ``skipped.csv`` (``file,reason``), together with the entries
  the preparer itself refused (a label outside the vocabulary, ...);
- writes one SpeechBrain CSV per split (``ID,duration,wav,<fields>``, paths
  under ``$data_root``, which is the corpus root) and ``prepare_opts.json``
  last, so a preparation cut off midway is redone.

:func:`already_prepared` makes a rerun cheap: with the same options and
unchanged inputs (the metadata files' and the audio folders' sizes and
modification times) it returns the earlier result without reading any clip.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor

from tqdm import tqdm

from bestrq2_lobes.data.audio import AudioError, check_audio, probe_audio
from bestrq2_lobes.data.files import atomic_open
from bestrq2_lobes.data.manifest import (
    DATA_ROOT,
    SKIPPED_FIELDS,
    ManifestError,
    write_csv,
)

logger = logging.getLogger(__name__)

OPTS_FILE = "prepare_opts.json"
SKIPPED_CSV = "skipped.csv"
CHECKS = ("decode", "header", "none")
_CHUNK = 16  # clips per task sent to a worker process
_POOL_FROM = 64  # fewer clips than this are checked in this process
_FORMAT = 1  # bump when the files written here change


class PrepareError(ManifestError):
    """A corpus cannot be prepared; the message is one line.

    Example
    -------
    >>> str(PrepareError("x")), issubclass(PrepareError, ValueError)
    ('x', True)
    """


@dataclasses.dataclass
class Clip:
    """One clip listed by a corpus's metadata.

    Arguments
    ---------
    ID : str
        Unique ID (unique over all splits of the corpus).
    path : str
        The audio file (absolute, or relative to the corpus root).
    split : str
        The split it belongs to (``train``, ``valid``, ``test``, ``fold1``, ...).
    fields : dict
        More CSV columns (labels, transcript, speaker, ...), as strings.
    """

    ID: str
    path: str
    split: str
    fields: dict = dataclasses.field(default_factory=dict)


def corpus_preparer(function: Callable[..., dict]) -> Callable[..., dict]:
    """Gives a ``prepare_<corpus>`` its ``data_folder`` as an absolute path.

    Preparers build clip paths from ``data_folder``; made absolute here, once,
    a root given relative to the working directory works as an absolute one
    (the CSVs hold ``$data_root`` paths either way), whoever calls it.

    Example
    -------
    >>> @corpus_preparer
    ... def prepare_toy(data_folder, save_folder):
    ...     return data_folder
    >>> os.path.isabs(prepare_toy("corpus", "out")), prepare_toy.__name__
    (True, 'prepare_toy')
    """

    @functools.wraps(function)
    def with_absolute_root(data_folder, save_folder, *args, **kwargs) -> dict:
        return function(os.path.abspath(data_folder), save_folder, *args, **kwargs)

    return with_absolute_root


def require(data_folder: str, corpus: str, *expected: str, hint: str = "") -> None:
    """Stops unless ``data_folder`` holds each ``expected`` path (the corpus root).

    Arguments
    ---------
    data_folder : str
        The folder the user gave.
    corpus : str
        Corpus name, for the message.
    *expected : str
        Paths relative to the root that must exist (files or folders).
    hint : str
        Appended to the message (e.g. what the official archive unpacks to).

    Raises
    ------
    PrepareError
        One line naming the first missing path.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> require(str(tmp), "ESC-50", "meta/esc50.csv")
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.preparation.PrepareError: ... is not the ESC-50 root: ...
    """
    if not os.path.isdir(data_folder):
        raise PrepareError(f"{corpus}: data folder not found: {data_folder!r}")
    for rel in expected:
        if not os.path.exists(os.path.join(data_folder, rel)):
            more = f" ({hint})" if hint else ""
            raise PrepareError(
                f"{data_folder!r} is not the {corpus} root: expected {rel} in it{more}"
            )


def missing(path: str, listed_in: str) -> dict:
    """The skipped-row of a clip that the metadata lists but the disk lacks.

    Example
    -------
    >>> missing("/d/a.wav", "meta.csv")
    {'file': '/d/a.wav', 'reason': 'missing (listed in meta.csv)'}
    """
    return {"file": path, "reason": f"missing (listed in {listed_in})"}


def refused(what: str, reason: str) -> dict:
    """The skipped-row of an entry refused for its metadata (a label, a split).

    Example
    -------
    >>> refused("a.wav", "label 'x' is not in the vocabulary")
    {'file': 'a.wav', 'reason': "label 'x' is not in the vocabulary"}
    """
    return {"file": what, "reason": reason}


def _signature(path: str) -> list:
    """Size and modification time of a file; count, bytes, newest mtime of a folder."""
    if os.path.isfile(path):
        stat = os.stat(path)
        return [stat.st_size, stat.st_mtime_ns]
    if not os.path.isdir(path):
        return [None]
    count = size = newest = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                stat = os.stat(os.path.join(root, name))
            except OSError:
                continue
            count, size = count + 1, size + stat.st_size
            newest = max(newest, stat.st_mtime_ns)
    return [count, size, newest]


def fingerprint(
    corpus: str, data_folder: str, options: dict, watched: Sequence[str]
) -> dict:
    """What a preparation depends on: corpus, root, options and watched inputs.

    Arguments
    ---------
    corpus : str
        Corpus name.
    data_folder : str
        The corpus root.
    options : dict
        The preparer's options (JSON-serialisable).
    watched : Sequence[str]
        Files and folders (relative to the root, or absolute) whose change
        means preparing again: the metadata files and the audio folders.

    Returns
    -------
    dict
        A JSON-serialisable record, equal between two calls exactly when
        nothing it covers changed.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "meta.csv").write("a")
    >>> one = fingerprint("c", str(tmp), {"k": 1}, ["meta.csv"])
    >>> one == fingerprint("c", str(tmp), {"k": 1}, ["meta.csv"])
    True
    >>> one == fingerprint("c", str(tmp), {"k": 2}, ["meta.csv"])
    False
    """
    root = os.path.abspath(data_folder)
    return json.loads(
        json.dumps(
            {
                "format": _FORMAT,
                "corpus": corpus,
                "data_folder": root,
                "options": options,
                "inputs": {
                    rel: _signature(os.path.join(root, rel)) for rel in sorted(watched)
                },
            }
        )
    )


def already_prepared(save_folder: str, record: dict) -> dict | None:
    """The outputs of an earlier preparation with the same record, or None.

    Arguments
    ---------
    save_folder : str
        Where the preparation writes.
    record : dict
        The :func:`fingerprint` of this call.

    Returns
    -------
    dict or None
        The earlier call's outputs when its record is the same and all its
        files are still there.

    Example
    -------
    >>> already_prepared(str(getfixture("tmpdir")), {"corpus": "c"}) is None
    True
    """
    opts_file = os.path.join(save_folder, OPTS_FILE)
    if not os.path.isfile(opts_file):
        return None
    try:
        with open(opts_file, encoding="utf-8") as fin:
            saved = json.load(fin)
    except (OSError, ValueError):
        return None
    if saved.get("record") != record:
        return None
    outputs = saved.get("outputs", {})
    files = [v for k, v in outputs.items() if k.endswith(("_csv", "_tsv", "_file"))]
    if not all(isinstance(p, str) and os.path.isfile(p) for p in files):
        return None
    return outputs


def _check_one(task: tuple[str, float, str]) -> tuple[float | None, str | None]:
    """(duration, None) of a usable clip, (None, reason) of another."""
    path, min_seconds, check = task
    try:
        if check == "decode":
            info = check_audio(path, min_seconds=min_seconds)
        else:
            info = probe_audio(path)
            if info.duration < min_seconds:
                raise AudioError(
                    f"shorter than {min_seconds:g} s ({info.duration:.3f} s)"
                )
    except AudioError as err:
        return None, str(err)
    return info.duration, None


def check_clips(
    paths: Sequence[str],
    min_seconds: float,
    check: str = "decode",
    jobs: int | None = None,
    progress: bool = True,
    desc: str = "checking clips",
) -> list[tuple[float | None, str | None]]:
    """Checks clips in parallel: ``(duration, None)`` or ``(None, reason)`` each.

    Arguments
    ---------
    paths : Sequence[str]
        Audio files.
    min_seconds : float
        Shorter clips are refused.
    check : str
        ``decode`` (every sample decoded and finite), ``header`` (the header
        only: fast, misses a corrupt body).
    jobs : int | None
        Worker processes (None: the CPUs available; 1: this process).
    progress : bool
        Show a progress bar (on a terminal only).
    desc : str
        The bar's label.

    Returns
    -------
    list of (float or None, str or None)
        In the order of ``paths``.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> tmp = getfixture("tmpdir")
    >>> sf.write(str(tmp / "a.wav"), np.zeros(16000), 16000)
    >>> check_clips([str(tmp / "a.wav"), str(tmp / "b.wav")], 0.5, progress=False)
    [(1.0, None), (None, 'file does not exist')]
    """
    if check not in CHECKS[:2]:
        raise PrepareError(f"check must be decode or header, not {check!r}")
    if jobs is None:
        jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    tasks = [(p, min_seconds, check) for p in paths]
    pool = None
    if jobs > 1 and len(tasks) >= _POOL_FROM:
        context = multiprocessing.get_context("fork")
        pool = ProcessPoolExecutor(min(jobs, len(tasks) // _CHUNK), mp_context=context)
        results = pool.map(_check_one, tasks, chunksize=_CHUNK)
    else:
        results = map(_check_one, tasks)
    show = progress and sys.stderr.isatty()
    try:
        return list(
            tqdm(results, total=len(tasks), desc=desc, unit="clip", disable=not show)
        )
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def reason_counts(skipped: Iterable[dict]) -> dict[str, int]:
    """Skipped entries by kind: missing, too short, unreadable, refused.

    Example
    -------
    >>> reason_counts([{"reason": "missing (listed in a)"},
    ...                {"reason": "shorter than 1 s (0.2 s)"},
    ...                {"reason": "cannot open as audio: x"},
    ...                {"reason": "label 'q' is not in the vocabulary"}])
    {'missing': 1, 'too short': 1, 'unreadable': 1, 'refused': 1}
    """
    counts = collections.Counter()
    for row in skipped:
        reason = row["reason"]
        if reason.startswith(("missing", "file does not exist", "broken symbolic")):
            counts["missing"] += 1
        elif reason.startswith("shorter than"):
            counts["too short"] += 1
        elif reason.startswith(("label", "no label", "unknown", "refused")):
            counts["refused"] += 1
        else:
            counts["unreadable"] += 1
    return dict(counts)


def _wav_entry(path: str, root: str) -> str:
    """``$data_root/<relative path>`` under the root, the absolute path elsewhere."""
    rel = os.path.relpath(path, root)
    if rel.startswith(os.pardir + os.sep) or rel == os.pardir or os.path.isabs(rel):
        return path
    return f"{DATA_ROOT}/{rel.replace(os.sep, '/')}"


def write_prepared(
    corpus: str,
    data_folder: str,
    save_folder: str,
    record: dict,
    clips: Sequence[Clip],
    fields: Sequence[str] = (),
    skipped: Sequence[dict] = (),
    min_seconds: float = 0.0,
    check: str = "decode",
    jobs: int | None = None,
    progress: bool = True,
    extra_outputs: Callable[[dict[str, list[dict]]], dict] | None = None,
) -> dict:
    """Checks the clips, writes one CSV per split, ``skipped.csv`` and the record.

    Arguments
    ---------
    corpus : str
        Corpus name (messages, the record).
    data_folder : str
        The corpus root, written as ``$data_root``.
    save_folder : str
        Output folder (created).
    record : dict
        The :func:`fingerprint` of the call, saved last.
    clips : Sequence[Clip]
        The clips the metadata lists.
    fields : Sequence[str]
        The columns after ``ID,duration,wav``.
    skipped : Sequence[dict]
        Entries the preparer left out already (``file,reason``), e.g. clips
        the metadata lists that are not on disk.
    min_seconds : float
        Shorter clips are left out.
    check : str
        ``decode``, ``header`` or ``none`` (``none``: trust the files; the
        duration column is then empty).
    jobs : int | None
        Worker processes for the checks.
    progress : bool
        Show a progress bar.
    extra_outputs : callable, optional
        Called with ``{split: kept rows}`` (``wav`` absolute); returns more
        outputs (files it wrote into ``save_folder``, ...).

    Returns
    -------
    dict
        ``<split>_csv`` per split, ``skipped_csv``, ``data_root``, the counts
        (``clips``, ``skipped``, ``hours``) and the extra outputs.

    Raises
    ------
    PrepareError
        Duplicate IDs, or no usable clip at all (``skipped.csv`` is written
        first, so the reasons are kept).

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> root = getfixture("tmpdir")
    >>> sf.write(str(root / "a.wav"), np.zeros(16000), 16000)
    >>> clips = [Clip("a", str(root / "a.wav"), "train", {"label": "dog"}),
    ...          Clip("b", str(root / "b.wav"), "test", {"label": "cat"})]
    >>> out = write_prepared("toy", str(root), str(root / "save"), {}, clips,
    ...                      ["label"], progress=False)
    >>> print(open(out["train_csv"]).read().strip())
    ID,duration,wav,label
    a,1.0,$data_root/a.wav,dog
    >>> out["skipped"], "test_csv" in out
    (1, False)
    """
    if check not in CHECKS:
        raise PrepareError(f"check must be one of {', '.join(CHECKS)}, not {check!r}")
    root = os.path.abspath(data_folder)
    seen = collections.Counter(c.ID for c in clips)
    dupes = [uid for uid, n in seen.items() if n > 1]
    if dupes:
        raise PrepareError(
            f"{corpus}: {len(dupes)} clip IDs repeat (first: {dupes[0]!r})"
        )
    paths = [os.path.join(root, c.path) for c in clips]
    if check == "none":
        results = [
            (None, None) if os.path.isfile(p) else (None, "file does not exist")
            for p in paths
        ]
    else:
        results = check_clips(
            paths, min_seconds, check, jobs, progress, desc=f"checking {corpus}"
        )
    kept: dict[str, list[dict]] = {}
    skipped = list(skipped)
    for clip, path, (duration, reason) in zip(clips, paths, results, strict=True):
        if reason is not None:
            skipped.append({"file": path, "reason": reason})
            continue
        row = {
            "ID": clip.ID,
            "duration": "" if duration is None else round(duration, 3),
            "wav": path,
        }
        row.update({k: clip.fields.get(k, "") for k in fields})
        kept.setdefault(clip.split, []).append(row)
    os.makedirs(save_folder, exist_ok=True)
    opts_file = os.path.join(save_folder, OPTS_FILE)
    if os.path.exists(opts_file):
        os.remove(opts_file)  # a preparation cut off from here on is redone
    outputs: dict = {"data_root": root}
    skipped_csv = os.path.join(save_folder, SKIPPED_CSV)
    write_csv(skipped, skipped_csv, SKIPPED_FIELDS)
    if not kept:
        first = skipped[0]["reason"] if skipped else "the metadata lists no clip"
        kinds = ", ".join(f"{k} {n}" for k, n in reason_counts(skipped).items())
        raise PrepareError(
            f"{corpus}: no usable clip under {data_folder!r} ({len(skipped)} "
            f"skipped: {kinds or 'none'}; first: {first}; see {skipped_csv})"
        )
    header = ["ID", "duration", "wav", *fields]
    for split, rows in sorted(kept.items()):
        path = os.path.join(save_folder, f"{split}.csv")
        write_csv(
            [{**r, "wav": _wav_entry(r["wav"], root)} for r in rows], path, header
        )
        outputs[f"{split}_csv"] = path
    outputs["skipped_csv"] = skipped_csv
    if extra_outputs is not None:
        outputs.update(extra_outputs(kept))
    seconds = sum(float(r["duration"] or 0) for rows in kept.values() for r in rows)
    outputs.update(
        clips=sum(len(rows) for rows in kept.values()),
        skipped=len(skipped),
        hours=round(seconds / 3600, 3),
    )
    with atomic_open(opts_file) as fout:
        json.dump({"record": record, "outputs": outputs}, fout, indent=1)
    logger.info(summary_line(corpus, outputs, skipped))
    return outputs


def summary_line(corpus: str, outputs: dict, skipped: Sequence[dict]) -> str:
    """One line on a preparation: clips per split, hours, skipped by kind.

    Example
    -------
    >>> outputs = {"train_csv": "t.csv", "test_csv": "e.csv", "clips": 3,
    ...            "hours": 0.5, "skipped_csv": "s.csv"}
    >>> summary_line("esc50", outputs, [{"reason": "missing (listed in m)"}])
    'esc50: 3 clips (0.50 h) in train, test; 1 skipped (missing 1) -> s.csv'
    """
    splits = ", ".join(
        k[: -len("_csv")] for k in outputs if k.endswith("_csv") and k != "skipped_csv"
    )
    line = f"{corpus}: {outputs['clips']} clips ({outputs['hours']:.2f} h) in {splits}"
    if not skipped:
        return line + "; none skipped"
    kinds = ", ".join(f"{k} {n}" for k, n in reason_counts(skipped).items())
    return f"{line}; {len(skipped)} skipped ({kinds}) -> {outputs['skipped_csv']}"


def prepared_outputs(save_folder: str) -> dict:
    """The outputs recorded by the last complete preparation in ``save_folder``.

    For ``skip_prep=True``: the CSVs of an earlier preparation, unchecked.

    Raises
    ------
    PrepareError
        Nothing was prepared there.

    Example
    -------
    >>> prepared_outputs(str(getfixture("tmpdir")))
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.preparation.PrepareError: skip_prep: nothing prepared in ...
    """
    opts_file = os.path.join(save_folder, OPTS_FILE)
    if not os.path.isfile(opts_file):
        raise PrepareError(
            f"skip_prep: nothing prepared in {save_folder!r} (no {OPTS_FILE}); "
            "run the preparation once without skip_prep"
        )
    with open(opts_file, encoding="utf-8") as fin:
        return json.load(fin)["outputs"]


def prepare(
    corpus: str,
    data_folder: str,
    save_folder: str,
    options: dict,
    watched: Sequence[str],
    collect: Callable[[], tuple[list[Clip], list[dict]]],
    fields: Sequence[str] = (),
    skip_prep: bool = False,
    min_seconds: float = 0.0,
    check: str = "decode",
    jobs: int | None = None,
    progress: bool = True,
    extra_outputs: Callable[[dict[str, list[dict]]], dict] | None = None,
) -> dict:
    """The frame of every ``prepare_<corpus>``: skip, or collect, check and write.

    Arguments
    ---------
    corpus : str
        Corpus name.
    data_folder : str
        The corpus root (checked by the preparer before calling this).
    save_folder : str
        Output folder.
    options : dict
        The preparer's options that change its output (in the record).
    watched : Sequence[str]
        Metadata files and audio folders (relative to the root) whose change
        means preparing again.
    collect : callable
        Reads the metadata: returns the clips and the entries refused so far.
    fields : Sequence[str]
        CSV columns after ``ID,duration,wav``.
    skip_prep : bool
        SpeechBrain's switch: return the earlier outputs, prepare nothing.
    min_seconds : float
        Shorter clips are left out.
    check : str
        ``decode``, ``header`` or ``none``.
    jobs : int | None
        Worker processes for the checks.
    progress : bool
        Show a progress bar.
    extra_outputs : callable, optional
        See :func:`write_prepared`.

    Returns
    -------
    dict
        The outputs (see :func:`write_prepared`); a rerun with the same
        record returns the saved ones.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> root = getfixture("tmpdir")
    >>> sf.write(str(root / "a.wav"), np.zeros(16000), 16000)
    >>> collect = lambda: ([Clip("a", "a.wav", "train")], [])
    >>> args = ("toy", str(root), str(root / "s"), {}, ["a.wav"], collect)
    >>> first = prepare(*args, progress=False)
    >>> prepare(*args, progress=False) == first
    True
    """
    if skip_prep:
        return prepared_outputs(save_folder)
    record = fingerprint(
        corpus,
        data_folder,
        {**options, "min_seconds": min_seconds, "check": check, "fields": list(fields)},
        watched,
    )
    earlier = already_prepared(save_folder, record)
    if earlier is not None:
        logger.info(
            "%s: %s is up to date (same options, unchanged files): not prepared again",
            corpus,
            save_folder,
        )
        return earlier
    clips, refused_rows = collect()
    return write_prepared(
        corpus,
        data_folder,
        save_folder,
        record,
        clips,
        fields,
        refused_rows,
        min_seconds,
        check,
        jobs,
        progress,
        extra_outputs,
    )
