"""Task files of the probe suite: a safe YAML list of classification tasks.

A task file is plain YAML, read with ``yaml.safe_load`` (no HyperPyYAML tags, no
Python objects). It is a list of tasks, each a mapping::

    - name: gm_instruments          # letters, digits, '_', '-', '.'
      domain: music                 # free text: speech, music, environment, ...
      train_csv: data/train.csv     # SpeechBrain manifests (ID,duration,wav,...)
      valid_csv: data/valid.csv     # optional: model selection of the linear probe
      test_csv: data/test.csv
      data_root: data               # optional: $data_root (default: each CSV's folder)
      label_column: tags
      type: multilabel              # or multiclass
      metric: map                   # map (multilabel) or accuracy (multiclass)
      weight: 1                     # optional, weight in the overall mean
      prepare: {kind: word_tags, source_column: wrd, top_k: 20}   # optional

Relative paths are relative to the folder of the task file. Multilabel labels
are space-separated (an empty field is a clip with no label). ``prepare``
derives the labels first (see ``probe_prepare``).

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import dataclasses
import os
import re

import yaml

TYPES = {"multiclass": "accuracy", "multilabel": "map"}
SPLITS = ("train", "valid", "test")
REQUIRED = ("name", "domain", "train_csv", "test_csv", "label_column", "type")
OPTIONAL = ("valid_csv", "data_root", "metric", "weight", "prepare")
RESERVED = ("overall", "mean_of_domains")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class TaskError(ValueError):
    """A task file or task is unusable; the message is one line."""


@dataclasses.dataclass
class Task:
    """One probe task (paths absolute, fields checked).

    Arguments
    ---------
    name : str
        Unique name (used in file names and result keys).
    domain : str
        Domain of the task for the per-domain means.
    csvs : dict
        ``{"train": path, "valid": path or None, "test": path}``.
    data_root : str or None
        Replacement of ``$data_root`` (None: each CSV's folder).
    label_column : str
        Column holding the labels.
    type : str
        ``multiclass`` or ``multilabel``.
    metric : str
        ``accuracy`` or ``map``.
    weight : float
        Weight in the overall mean.
    prepare : dict or None
        Label derivation to run first (``probe_prepare``), paths absolute.
    """

    name: str
    domain: str
    csvs: dict
    data_root: str | None
    label_column: str
    type: str
    metric: str
    weight: float = 1.0
    prepare: dict | None = None

    @property
    def multilabel(self) -> bool:
        """Whether labels are space-separated tag sets."""
        return self.type == "multilabel"

    def splits(self) -> list[str]:
        """The splits this task has (valid is optional)."""
        return [s for s in SPLITS if self.csvs.get(s)]

    def root_of(self, split: str) -> str:
        """``$data_root`` of a split (the task's, else the CSV's folder)."""
        if self.data_root is not None:
            return self.data_root
        return os.path.dirname(os.path.abspath(self.csvs[split]))


def load_tasks(path: str | os.PathLike) -> list[Task]:
    """Reads and checks a task file.

    Arguments
    ---------
    path : str or PathLike
        The YAML task file.

    Returns
    -------
    list of Task

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "t.yaml").write(
    ...     "- {name: a, domain: speech, train_csv: tr.csv, test_csv: te.csv,\\n"
    ...     "   label_column: lab, type: multiclass}\\n")
    >>> task = load_tasks(tmp / "t.yaml")[0]
    >>> task.metric, task.splits(), task.csvs["train"] == str(tmp / "tr.csv")
    ('accuracy', ['train', 'test'], True)
    >>> _ = (tmp / "bad.yaml").write("- {name: a, domain: x}\\n")
    >>> try:
    ...     load_tasks(tmp / "bad.yaml")
    ... except TaskError as err:
    ...     print(str(err).split("bad.yaml: ")[1])
    task 1 ('a'): missing key 'train_csv'
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise TaskError(f"task file not found: {path!r}")
    with open(path, encoding="utf-8") as fin:
        try:
            entries = yaml.safe_load(fin)
        except yaml.YAMLError as err:
            first = " ".join(str(err).split())
            raise TaskError(f"{path}: not plain YAML ({first})") from None
    if not isinstance(entries, list) or not entries:
        raise TaskError(f"{path}: expected a non-empty YAML list of tasks")
    base = os.path.dirname(os.path.abspath(path))
    tasks = [
        make_task(entry, base, f"{path}: task {num}")
        for num, entry in enumerate(entries, start=1)
    ]
    check_unique(tasks, path)
    return tasks


def make_task(entry: dict, base: str, where: str) -> Task:
    """Checks one task entry and makes its paths absolute.

    Arguments
    ---------
    entry : dict
        The mapping read from the task file (or built from the command line).
    base : str
        Folder that relative paths are relative to.
    where : str
        Prefix of error messages.

    Returns
    -------
    Task
    """
    if not isinstance(entry, dict):
        raise TaskError(f"{where}: expected a mapping, got {type(entry).__name__}")
    if "name" in entry:
        where = f"{where} ({entry['name']!r})"
    for key in REQUIRED:
        if entry.get(key) in (None, ""):
            raise TaskError(f"{where}: missing key {key!r}")
    unknown = sorted(set(entry) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise TaskError(f"{where}: unknown key {unknown[0]!r}")
    name = str(entry["name"])
    if not NAME_RE.match(name) or name in RESERVED or name.startswith("domain_"):
        raise TaskError(
            f"{where}: bad name {name!r} (letters, digits, '_', '-', '.'; not "
            f"{', '.join(RESERVED)} or domain_*)"
        )
    task_type = entry["type"]
    if task_type not in TYPES:
        raise TaskError(
            f"{where}: type must be one of {list(TYPES)}, not {task_type!r}"
        )
    metric = entry.get("metric") or TYPES[task_type]
    if metric != TYPES[task_type]:
        raise TaskError(
            f"{where}: metric {metric!r} does not fit type {task_type!r} "
            f"(use {TYPES[task_type]!r})"
        )
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
        raise TaskError(f"{where}: weight must be a positive number, not {weight!r}")
    data_root = entry.get("data_root")
    return Task(
        name=name,
        domain=str(entry["domain"]),
        csvs={s: _abs(entry.get(f"{s}_csv"), base) for s in SPLITS},
        data_root=_abs(data_root, base),
        label_column=str(entry["label_column"]),
        type=task_type,
        metric=metric,
        weight=float(weight),
        prepare=_prepare_spec(entry.get("prepare"), base, where),
    )


def check_unique(tasks: list[Task], path: str) -> None:
    """Task names must be unique (they name files and result keys)."""
    seen = set()
    for task in tasks:
        if task.name in seen:
            raise TaskError(f"{path}: duplicate task name {task.name!r}")
        seen.add(task.name)


def _abs(value, base: str) -> str | None:
    """An absolute path (relative ones are taken from ``base``), or None."""
    if value in (None, ""):
        return None
    value = os.path.expanduser(str(value))
    return os.path.normpath(os.path.join(base, value))


def _prepare_spec(spec, base: str, where: str) -> dict | None:
    """Checks a ``prepare`` mapping; paths inside ``events`` become absolute."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or "kind" not in spec:
        raise TaskError(f"{where}: prepare must be a mapping with a 'kind'")
    spec = dict(spec)
    if "events" in spec:
        events = spec["events"]
        if not isinstance(events, dict):
            raise TaskError(f"{where}: prepare.events must map splits to TSV files")
        spec["events"] = {split: _abs(p, base) for split, p in events.items()}
    return spec
