"""Stable seeds from run facts, so random draws can be replayed after a resume.

Masks, mask ratios, drop-path and crops are drawn from generators seeded by
``(seed, epoch, batch, rank)`` or ``(seed, epoch, clip id)``: a run killed and
resumed from a checkpoint draws exactly what the uninterrupted run drew.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import hashlib


def stable_seed(*parts) -> int:
    """A 63-bit seed from any printable parts, identical across processes and runs.

    Python's ``hash`` is salted per process; this is not.

    Example
    -------
    >>> stable_seed(1986, "crop", 3, "clip_a") == stable_seed(1986, "crop", 3, "clip_a")
    True
    >>> stable_seed(1, 2) != stable_seed(2, 1)
    True
    """
    text = "\x1f".join(str(part) for part in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1
