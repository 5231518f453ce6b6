"""Files that appear whole or not at all: write to a temporary name, then rename.

A reader (another process, a resumed run) never sees a half-written file: the
content goes to a temporary file beside the target, which replaces the target
only once it is complete. A failure removes the temporary file and leaves the
previous target, if any, as it was.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import IO


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path to write; it replaces ``path`` when the block succeeds.

    For writers that take a path (``torch.save``, ``soundfile.write``). The
    target's folder is created if needed.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> with atomic_path(tmp / "out.txt") as part:
    ...     _ = open(part, "w").write("done")
    >>> (tmp / "out.txt").read(), len(tmp.listdir())
    ('done', 1)
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """``open(path, mode)`` whose file replaces ``path`` only once closed whole.

    Text modes default to UTF-8. A failure inside the block leaves ``path`` as
    it was.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> with atomic_open(tmp / "a.json") as fout:
    ...     _ = fout.write("[1]")
    >>> try:
    ...     with atomic_open(tmp / "a.json") as fout:
    ...         _ = fout.write("[2")
    ...         raise KeyboardInterrupt
    ... except KeyboardInterrupt:
    ...     pass
    >>> (tmp / "a.json").read(), len(tmp.listdir())
    ('[1]', 1)
    """
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fout:
        yield fout
