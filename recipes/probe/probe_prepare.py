"""Derived labels of probe tasks, written as new manifests in the output folder.

A task with a ``prepare`` entry gets its labels computed here from its source
manifests; the derived manifests (``<folder>/<task>/<split>.csv``: the source
columns plus the task's ``label_column``, ``$data_root`` already filled in) are
written into the experiment folder, never next to the source data.

Kinds:

- ``word_tags`` (``source_column``: default ``wrd``, ``top_k``: default 20):
  word-presence tagging. The vocabulary is the ``top_k`` words found in the most
  training clips (ties by alphabetical order; train split only); a clip's tags
  are the vocabulary words its transcript contains.
- ``event_tags`` (``events``: ``{split: TSV}``): clip-level tags from DCASE
  strong labels (``filename onset offset event_label``, tab-separated): the set
  of event classes occurring in the clip, matched by file name.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import os

from probe_tasks import Task, TaskError

from bestrq2_lobes.data.manifest import read_manifest, write_csv


def prepare_tasks(tasks: list[Task], folder: str) -> list[Task]:
    """Runs the label derivation of every task that asks for one.

    Arguments
    ---------
    tasks : list of Task
        Tasks of the suite.
    folder : str
        Where the derived manifests go (``<folder>/<task>/<split>.csv``).

    Returns
    -------
    list of Task
        The tasks, derived ones pointing to their new manifests.
    """
    return [prepare_task(task, folder) for task in tasks]


def prepare_task(task: Task, folder: str) -> Task:
    """Derives the labels of one task (a task without ``prepare`` is returned)."""
    if task.prepare is None:
        return task
    spec = dict(task.prepare)
    kind = spec.pop("kind")
    if kind not in PREPARERS:
        raise TaskError(
            f"task {task.name!r}: unknown prepare kind {kind!r} "
            f"(use one of {list(PREPARERS)})"
        )
    rows = {s: read_source(task, s) for s in task.splits()}
    headers = {s: header_of(task.csvs[s]) for s in task.splits()}
    for split, header in headers.items():
        if task.label_column in header:
            raise TaskError(
                f"{task.csvs[split]}: already has a column {task.label_column!r}; "
                "give the derived labels another label_column"
            )
    labels = PREPARERS[kind](task, rows, spec, os.path.join(folder, task.name))
    csvs = dict(task.csvs)
    for split in task.splits():
        path = os.path.join(folder, task.name, f"{split}.csv")
        for row, label in zip(rows[split], labels[split], strict=True):
            row[task.label_column] = label
        write_csv(rows[split], path, [*headers[split], task.label_column])
        csvs[split] = path
    return dataclasses.replace(task, csvs=csvs, prepare=None)


def read_source(task: Task, split: str) -> list[dict]:
    """Rows of a source manifest with ``$data_root`` filled in."""
    return read_manifest(task.csvs[split], data_root=task.root_of(split))


def header_of(path: str) -> list[str]:
    """Column names of a CSV file."""
    with open(path, newline="", encoding="utf-8") as fin:
        return next(csv.reader(fin, skipinitialspace=True), [])


def word_vocabulary(texts: list[str], top_k: int) -> list[str]:
    """The ``top_k`` words occurring in the most texts (ties: alphabetical).

    Example
    -------
    >>> word_vocabulary(["A B", "B C", "B A", "D"], 2)
    ['B', 'A']
    """
    counts = collections.Counter(w for text in texts for w in set(text.split()))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [word for word, _ in ranked[:top_k]]


def word_tags(text: str, vocabulary: list[str]) -> str:
    """Space-separated vocabulary words present in a text (vocabulary order).

    Example
    -------
    >>> word_tags("PRESS ONE TO CONTINUE", ["TO", "PRESS", "POUND"])
    'TO PRESS'
    """
    words = set(text.split())
    return " ".join(w for w in vocabulary if w in words)


def prepare_word_tags(task: Task, rows: dict, spec: dict, out_dir: str) -> dict:
    """Word-presence tags of the ``top_k`` most frequent training words."""
    column = spec.pop("source_column", "wrd")
    top_k = int(spec.pop("top_k", 20))
    _no_more_keys(task, spec)
    for split, split_rows in rows.items():
        if column not in split_rows[0]:
            raise TaskError(f"{task.csvs[split]}: missing column {column!r}")
    vocabulary = word_vocabulary([r[column] for r in rows["train"]], top_k)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "vocabulary.txt"), "w", encoding="utf-8") as fout:
        fout.write("\n".join(vocabulary) + "\n")
    return {
        split: [word_tags(r[column], vocabulary) for r in split_rows]
        for split, split_rows in rows.items()
    }


def read_event_tags(path: str) -> dict[str, set[str]]:
    """Clip file name -> set of event labels, from a DCASE TSV.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "e.tsv").write(
    ...     "filename\\tonset\\toffset\\tevent_label\\n"
    ...     "a.flac\\t0.1\\t0.5\\tdog\\na.flac\\t1.0\\t2.0\\tcat\\n"
    ...     "b.flac\\t\\t\\t\\n")
    >>> tags = read_event_tags(str(tmp / "e.tsv"))
    >>> sorted(tags["a.flac"]), tags["b.flac"]
    (['cat', 'dog'], set())
    """
    if not os.path.isfile(path):
        raise TaskError(f"events file not found: {path!r}")
    tags = collections.defaultdict(set)
    with open(path, newline="", encoding="utf-8") as fin:
        reader = csv.DictReader(fin, delimiter="\t")
        for col in ("filename", "event_label"):
            if col not in (reader.fieldnames or []):
                raise TaskError(f"{path}: missing column {col!r}")
        for row in reader:
            name = os.path.basename(row["filename"] or "")
            if not name:
                continue
            tags[name]  # a listed clip with no event still exists
            if row["event_label"]:
                tags[name].add(row["event_label"])
    return dict(tags)


def prepare_event_tags(task: Task, rows: dict, spec: dict, out_dir: str) -> dict:
    """Clip-level event tags (sorted, space-separated) from DCASE TSV files."""
    events = spec.pop("events", None) or {}
    _no_more_keys(task, spec)
    labels = {}
    for split, split_rows in rows.items():
        if not events.get(split):
            raise TaskError(f"task {task.name!r}: prepare.events has no {split!r} TSV")
        tags = read_event_tags(events[split])
        names = {os.path.basename(r["wav"]) for r in split_rows}
        unmatched = sorted(set(tags) - names)
        if unmatched:
            raise TaskError(
                f"{events[split]}: {len(unmatched)} file names are not in "
                f"{task.csvs[split]} (first: {unmatched[0]!r})"
            )
        labels[split] = [
            " ".join(sorted(tags.get(os.path.basename(r["wav"]), ())))
            for r in split_rows
        ]
    return labels


def _no_more_keys(task: Task, spec: dict) -> None:
    if spec:
        raise TaskError(f"task {task.name!r}: unknown prepare key {sorted(spec)[0]!r}")


PREPARERS = {"word_tags": prepare_word_tags, "event_tags": prepare_event_tags}
