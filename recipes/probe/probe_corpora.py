"""Corpus tasks of the probe suite: prepare what the user has, skip the rest; folds.

A task with a ``corpus`` entry (``probe_tasks``) has no manifests of its own:
its corpus's preparer (``bestrq2_lobes.datasets``) writes them into
``<task_data_folder>/<task>/prepared/`` on the main process (a rerun with the
same options on unchanged files is skipped by the preparer), and the task then
reads the prepared split CSVs. The corpus root is, first found:

1. ``--data_folders`` (by task name or by corpus name), on the command line as
   ``--data_folders esc50=/data/ESC-50-master gtzan=/data/gtzan`` (SpeechBrain
   turns these words into the string ``"esc50 /data/ESC-50-master gtzan
   /data/gtzan"``: name and path pairs) or as a YAML mapping
   ``--data_folders "{esc50: /data/ESC-50-master}"`` (needed for paths with
   spaces; the parser turns every ``=`` into a space, so a path with ``=``
   goes in the task's ``data_folder``);
2. the task's own ``data_folder``.

A corpus task with neither is skipped, one line each; so is one whose corpus
has no preparer in this installation, and one whose preparation leaves it
without a training or test split (or with fewer than two folds).

Cross-validated tasks (``folds``): every clip is embedded once per fold; each
fold with clips is the test set once, the other folds together the training
set, with no validation split (the probe trains for its fixed epoch budget:
X-ARES picks the epoch on the test fold itself, which we do not). A fold
without clips is skipped with one line; a training set that lacks a class of
the test fold still scores (those clips count as misses). The task's score is
the mean over the scored folds, as X-ARES reports it; ``folds`` in its
``results.json`` entry keeps each fold's scores.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Callable

import torch
import yaml
from probe_tasks import Task, TaskError
from speechbrain.utils.distributed import if_main_process

from bestrq2_lobes.datasets import CORPORA, get_preparer
from bestrq2_lobes.datasets.recipe_data import prepare_corpus

USAGE = "NAME=PATH words or a YAML mapping '{NAME: PATH}'"


def parse_data_folders(value) -> dict[str, str]:
    """``--data_folders`` as ``{name: path}``.

    Arguments
    ---------
    value : None, str, list or dict
        What the hparams hold: a mapping, a list of ``name=path`` words, or a
        string of ``name=path`` words or of ``name path`` pairs (what
        SpeechBrain's parser makes of ``--data_folders a=/x b=/y``).

    Returns
    -------
    dict

    Example
    -------
    >>> parse_data_folders("esc50 /data/ESC-50-master gtzan /d/g")
    {'esc50': '/data/ESC-50-master', 'gtzan': '/d/g'}
    >>> parse_data_folders(["esc50=/a"]), parse_data_folders({"x": "/b"})
    ({'esc50': '/a'}, {'x': '/b'})
    >>> parse_data_folders("esc50=/a nsynth=/b"), parse_data_folders(None)
    ({'esc50': '/a', 'nsynth': '/b'}, {})
    >>> try:
    ...     parse_data_folders("esc50 /a gtzan")
    ... except TaskError as err:
    ...     print(err)
    --data_folders: expected NAME=PATH words or a YAML mapping ..., got ...
    """
    if value in (None, "", [], {}):
        return {}
    if isinstance(value, dict):
        pairs = [(str(k), v) for k, v in value.items()]
    else:
        words = value.split() if isinstance(value, str) else list(value)
        words = [str(w) for w in words]
        if isinstance(value, str) and value.strip().startswith("{"):
            try:
                return parse_data_folders(yaml.safe_load(value))
            except yaml.YAMLError:
                raise TaskError(f"--data_folders: expected {USAGE}") from None
        if all("=" in w for w in words):
            pairs = [tuple(w.split("=", 1)) for w in words]
        elif not any("=" in w for w in words) and len(words) % 2 == 0:
            pairs = list(zip(words[::2], words[1::2], strict=True))
        else:
            raise TaskError(f"--data_folders: expected {USAGE}, got {value!r}")
    folders = {}
    for name, path in pairs:
        if not name or path in (None, ""):
            raise TaskError(f"--data_folders: {name!r} has no path ({USAGE})")
        folders[name] = os.path.abspath(os.path.expanduser(str(path)))
    return folders


def has_preparer(corpus: str) -> bool:
    """Whether the corpus's preparer module is installed.

    Example
    -------
    >>> has_preparer("esc50"), has_preparer("no_such_corpus")
    (True, False)
    """
    if corpus not in CORPORA:
        return False
    name = f"bestrq2_lobes.datasets.{CORPORA[corpus]}"
    return importlib.util.find_spec(name) is not None


def say(line: str, skipped: list[str] | None = None, why: str = "") -> None:
    """One line on the main process; a skipped task's ``name (why)`` to ``skipped``."""
    if skipped is not None:
        skipped.append(f"{line.split(':')[0]} ({why})")
    if if_main_process():
        print(line, flush=True)


def resolve_corpora(tasks: list[Task], hparams: dict) -> list[Task]:
    """Prepares the corpus of every corpus task that has data; skips the others.

    Call it on every process (the preparers run on the main one).

    Arguments
    ---------
    tasks : list of Task
        The suite's tasks.
    hparams : dict
        Reads ``data_folders`` and ``task_data_folder``; sets
        ``skipped_tasks`` (the lines of the tasks left out, for the report).

    Returns
    -------
    list of Task
        The tasks to score: manifest tasks as they are, corpus tasks pointing
        to their prepared CSVs.

    Raises
    ------
    TaskError
        A ``--data_folders`` name that is no task or corpus of the suite, an
        unknown corpus, or no task left to score.
    """
    folders = parse_data_folders(hparams.get("data_folders"))
    known = {t.name for t in tasks} | {t.corpus for t in tasks if t.corpus}
    unknown = sorted(set(folders) - known)
    if unknown:
        raise TaskError(
            f"--data_folders: no task or corpus {unknown[0]!r} in the task file "
            f"(its corpora: {', '.join(sorted(known - {t.name for t in tasks}))})"
        )
    kept, skipped = [], []
    hparams["skipped_tasks"] = skipped
    for task in tasks:
        if task.corpus is None:
            kept.append(task)
            continue
        if task.corpus not in CORPORA:
            raise TaskError(
                f"task {task.name!r}: unknown corpus {task.corpus!r} "
                f"(known: {', '.join(sorted(CORPORA))})"
            )
        root = folders.get(task.name) or folders.get(task.corpus) or task.data_folder
        if root is None:
            say(
                f"{task.name}: skipped, no data (give --data_folders "
                f"{task.corpus}=PATH, the corpus root)",
                skipped,
                "no data folder",
            )
            continue
        if not has_preparer(task.corpus):
            say(
                f"{task.name}: skipped, this installation has no preparer of "
                f"{task.corpus!r} (bestrq2_lobes/datasets/{CORPORA[task.corpus]}.py)",
                skipped,
                "no preparer",
            )
            continue
        prepared = prepare_task_corpus(task, root, hparams["task_data_folder"], skipped)
        if prepared is not None:
            kept.append(prepared)
    if not kept:
        raise TaskError(
            "no task to score: give the corpus roots with --data_folders NAME=PATH "
            f"(corpora of the task file: {', '.join(sorted(known))})"
        )
    return kept


def prepare_task_corpus(
    task: Task, root: str, folder: str, skipped: list[str] | None = None
) -> Task | None:
    """Runs the task's preparer and points the task to its CSVs (None: skipped)."""
    get_preparer(task.corpus)  # fails with one line on a broken module
    outputs = prepare_corpus(
        {
            "corpus": task.corpus,
            "data_folder": root,
            "corpus_options": task.corpus_options,
            "prepare_folder": os.path.join(folder, task.name, "prepared"),
        }
    )
    if task.folds:
        csvs = {}
        for fold in task.folds:
            if outputs.get(f"{fold}_csv"):
                csvs[fold] = outputs[f"{fold}_csv"]
            else:
                say(f"{task.name}/{fold}: skipped, the prepared corpus has no clip")
        if len(csvs) < 2:
            say(
                f"{task.name}: skipped, fewer than 2 folds have clips",
                skipped,
                "fewer than 2 folds",
            )
            return None
    else:
        csvs = {}
        for split, source in task.split_map.items():
            if source is not None and outputs.get(f"{source}_csv"):
                csvs[split] = outputs[f"{source}_csv"]
        absent = [s for s in ("train", "test") if s not in csvs]
        if absent:
            say(
                f"{task.name}: skipped, the prepared corpus has no "
                f"{task.split_map[absent[0]]!r} split",
                skipped,
                f"no {absent[0]} split",
            )
            return None
    return dataclasses.replace(
        task, csvs=csvs, data_root=outputs["data_root"], data_folder=root
    )


def concat_splits(parts: list[tuple[torch.Tensor, list]]) -> tuple[torch.Tensor, list]:
    """(embeddings, labels) of several splits, one after the other.

    Example
    -------
    >>> parts = [(torch.zeros(2, 3), ["a", "b"]), (torch.ones(1, 3), ["c"])]
    >>> x, y = concat_splits(parts)
    >>> x.shape, y
    (torch.Size([3, 3]), ['a', 'b', 'c'])
    """
    return torch.cat([p[0] for p in parts]), [y for p in parts for y in p[1]]


def evaluate_folds(
    task: Task, loaded: dict, score: Callable[[dict, str], dict]
) -> dict:
    """Scores a cross-validated task: each fold the test set once; the mean.

    Arguments
    ---------
    task : Task
        A task with ``folds``.
    loaded : dict
        ``{fold: (embeddings, labels)}`` of the folds with clips.
    score : callable
        ``score({"train": ..., "test": ...}, tag)`` trains and scores the
        probes of one fold and returns its record.

    Returns
    -------
    dict
        The record of the task: the means over folds of ``linear``, ``knn``
        (and ``layers_linear``), the mean sizes, and ``folds``.

    Example
    -------
    >>> task = Task("t", "env", {}, None, "label", "multiclass", "accuracy",
    ...             folds=["fold1", "fold2", "fold3"])
    >>> loaded = {f: (torch.zeros(1, 2), [f]) for f in ("fold1", "fold3")}
    >>> def score(data, tag):
    ...     return dict(name="t", linear=len(tag) / 10, knn=0.5, num_classes=1,
    ...                 sizes={k: len(v[1]) for k, v in data.items()}, epoch=3)
    >>> rec = evaluate_folds(task, loaded, score)
    >>> rec["linear"], rec["protocol"], sorted(rec["folds"]), rec["sizes"]
    (0.6, '2-fold', ['fold1', 'fold3'], {'train': 1, 'test': 1})
    """
    folds = [f for f in task.folds if f in loaded]
    records = {}
    for fold in folds:
        train = concat_splits([loaded[f] for f in folds if f != fold])
        records[fold] = score({"train": train, "test": loaded[fold]}, f"_{fold}")
    recs = list(records.values())

    def mean(key):
        return sum(r[key] for r in recs) / len(recs)

    record = dict(recs[0])
    record.update(
        linear=mean("linear"),
        knn=mean("knn"),
        num_classes=max(r["num_classes"] for r in recs),
        sizes={
            s: round(sum(r["sizes"].get(s, 0) for r in recs) / len(recs))
            for s in ("train", "test")
        },
        epoch=max(r["epoch"] for r in recs),
        valid_linear=None,
        protocol=f"{len(recs)}-fold",
        folds={
            fold: {
                k: r[k]
                for k in ("linear", "knn", "num_classes", "sizes", "epoch")
                if k in r
            }
            for fold, r in records.items()
        },
    )
    if all("layers_linear" in r for r in recs):
        depth = min(len(r["layers_linear"]) for r in recs)
        record.update(
            layers_linear=[
                sum(r["layers_linear"][i] for r in recs) / len(recs)
                for i in range(depth)
            ],
            layers_valid=None,
            best_layer=None,
            best_layer_linear=None,
        )
    return record
