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

A task can name a corpus instead of manifests (see ``probe_corpora``): its
preparer (``bestrq2_lobes.datasets``) writes them first::

    - name: esc50
      domain: environment
      corpus: esc50                 # instead of train_csv/valid_csv/test_csv
      data_folder: /data/ESC-50-master   # optional: else --data_folders esc50=...
      corpus_options: {check: header}    # optional: the preparer's options
      folds: 5                      # cross-validation on fold1..fold5 (or a list)
      # splits: {train: train, valid: valid, test: test}   # without folds
      label_column: label
      type: multiclass

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
CORPUS_KEYS = ("corpus", "data_folder", "corpus_options", "splits", "folds")
MANIFEST_KEYS = ("train_csv", "valid_csv", "test_csv", "data_root")
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
    corpus : str or None
        A corpus of ``bestrq2_lobes.datasets`` whose preparer writes the
        manifests (``probe_corpora``); None: the task gives them.
    data_folder : str or None
        The corpus root (absolute), when the task file gives it.
    corpus_options : dict
        Keyword options of the corpus's preparer.
    split_map : dict
        ``{task split: prepared split}`` of a corpus task without folds.
    folds : list of str or None
        Prepared splits of a cross-validated task: each one the test set once,
        the others the training set; ``csvs`` is then keyed by fold.
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
    corpus: str | None = None
    data_folder: str | None = None
    corpus_options: dict = dataclasses.field(default_factory=dict)
    split_map: dict = dataclasses.field(default_factory=dict)
    folds: list[str] | None = None

    @property
    def multilabel(self) -> bool:
        """Whether labels are space-separated tag sets."""
        return self.type == "multilabel"

    def splits(self) -> list[str]:
        """The splits this task has (valid is optional; the folds of folds)."""
        if self.folds:
            return [f for f in self.folds if self.csvs.get(f)]
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
    corpus = entry.get("corpus")
    for key in REQUIRED:
        if corpus and key in MANIFEST_KEYS:
            continue  # the corpus's preparer writes the manifests
        if entry.get(key) in (None, ""):
            raise TaskError(f"{where}: missing key {key!r}")
    unknown = sorted(set(entry) - set(REQUIRED) - set(OPTIONAL) - set(CORPUS_KEYS))
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
    corpus_fields = _corpus_fields(entry, base, where)
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
        **corpus_fields,
    )


def _corpus_fields(entry: dict, base: str, where: str) -> dict:
    """The corpus keys of a task entry, checked (empty without ``corpus``).

    Example
    -------
    >>> _corpus_fields({"corpus": "esc50", "folds": 2}, "/t", "x")["folds"]
    ['fold1', 'fold2']
    >>> _corpus_fields({"corpus": "nsynth"}, "/t", "x")["split_map"]["valid"]
    'valid'
    >>> try:
    ...     _corpus_fields({"folds": 2}, "/t", "x")
    ... except TaskError as err:
    ...     print(err)
    x: folds, splits, data_folder and corpus_options need a 'corpus'
    """
    corpus = entry.get("corpus")
    if not corpus:
        if any(entry.get(k) is not None for k in CORPUS_KEYS):
            raise TaskError(
                f"{where}: folds, splits, data_folder and corpus_options need a "
                "'corpus'"
            )
        return {}
    given = [k for k in MANIFEST_KEYS if entry.get(k) not in (None, "")]
    if given:
        raise TaskError(f"{where}: give either corpus or {given[0]}, not both")
    options = entry.get("corpus_options") or {}
    if not isinstance(options, dict):
        raise TaskError(f"{where}: corpus_options must be a mapping")
    folds, splits = entry.get("folds"), entry.get("splits")
    if folds is not None and splits is not None:
        raise TaskError(f"{where}: give either folds or splits, not both")
    if isinstance(folds, bool) or folds is not None and not isinstance(
        folds, (int, list)
    ):
        raise TaskError(f"{where}: folds must be a count or a list of split names")
    if isinstance(folds, int):
        folds = [f"fold{i}" for i in range(1, folds + 1)]
    if folds is not None:
        folds = [str(f) for f in folds]
        if len(folds) < 2 or len(set(folds)) != len(folds):
            raise TaskError(f"{where}: folds needs at least 2 distinct folds")
    split_map = {s: s for s in SPLITS}
    if splits is not None:
        if not isinstance(splits, dict) or set(splits) - set(SPLITS):
            raise TaskError(
                f"{where}: splits must map train, valid, test to prepared splits"
            )
        split_map = {s: (None if v is None else str(v)) for s, v in splits.items()}
        for split in ("train", "test"):
            split_map.setdefault(split, split)
    return {
        "corpus": str(corpus),
        "data_folder": _abs(entry.get("data_folder"), base),
        "corpus_options": dict(options),
        "split_map": split_map,
        "folds": folds,
    }


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
