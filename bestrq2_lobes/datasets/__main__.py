"""``python -m bestrq2_lobes.datasets``: prepare a corpus from the shell.

::

    python -m bestrq2_lobes.datasets list
    python -m bestrq2_lobes.datasets prepare CORPUS DATA_FOLDER SAVE_FOLDER [--KEY V]

Every keyword of ``prepare_<corpus>`` is an option (``--check header``,
``--jobs 16``, ``--folds '[1, 2]'``; values are read as YAML). A bad corpus
root, an unknown corpus or option stops with one line and exit code 2.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys

import yaml

from bestrq2_lobes.datasets import CORPORA, get_preparer
from bestrq2_lobes.datasets.preparation import PrepareError

FIXED = ("data_folder", "save_folder")


def options_of(corpus: str) -> dict[str, object]:
    """The keyword options of a corpus's preparer and their defaults.

    Example
    -------
    >>> options_of("esc50")["skip_prep"]
    False
    """
    signature = inspect.signature(get_preparer(corpus))
    return {
        name: p.default
        for name, p in signature.parameters.items()
        if name not in FIXED and p.default is not inspect.Parameter.empty
    }


def parse_options(corpus: str, words: list[str]) -> dict:
    """``--key value`` words as keyword arguments (values read as YAML).

    Example
    -------
    >>> parse_options("esc50", ["--jobs", "4", "--check", "header"])
    {'jobs': 4, 'check': 'header'}
    >>> parse_options("esc50", ["--colour", "red"])
    Traceback (most recent call last):
    ...
    bestrq2_lobes.datasets.preparation.PrepareError: ... has no option --colour ...
    """
    known = options_of(corpus)
    kwargs, i = {}, 0
    while i < len(words):
        word = words[i]
        key, _, value = (
            word[2:].partition("=") if word.startswith("--") else ("", "", "")
        )
        key = key.replace("-", "_")
        if key not in known:
            raise PrepareError(
                f"prepare_{corpus} has no option {word.split('=')[0]} "
                f"(options: {', '.join('--' + k for k in known)})"
            )
        if not _:
            if i + 1 >= len(words):
                raise PrepareError(f"option {word} needs a value")
            value, i = words[i + 1], i + 1
        kwargs[key] = yaml.safe_load(value)
        i += 1
    return kwargs


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m bestrq2_lobes.datasets",
        description="Prepare a public corpus (official layout) into SpeechBrain CSVs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the corpora and their options")
    prep = sub.add_parser(
        "prepare", help="prepare one corpus (options: the preparer's keywords)"
    )
    prep.add_argument("corpus", help="corpus name (see `list`)")
    prep.add_argument("data_folder", help="the corpus root, as its archive unpacks")
    prep.add_argument("save_folder", help="where the CSVs and skipped.csv go")
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "list":
            if rest:
                parser.error(f"unrecognized arguments: {' '.join(rest)}")
            for corpus in CORPORA:
                doc = (inspect.getdoc(get_preparer(corpus)) or "").splitlines()
                print(f"{corpus:16s} {doc[0] if doc else ''}")
                opts = ", ".join(f"--{k} {v!r}" for k, v in options_of(corpus).items())
                print(f"{'':16s} options: {opts}")
            return 0
        kwargs = parse_options(args.corpus, rest)
        outputs = get_preparer(args.corpus)(
            args.data_folder, args.save_folder, **kwargs
        )
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for key, value in outputs.items():
        if key.endswith(("_csv", "_tsv", "_file")):
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
