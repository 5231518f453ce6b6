"""Keep freed memory in the process during CPU training (glibc ``mallopt``).

Each training step frees and reallocates the same large buffers: gradients
(``zero_grad(set_to_none=True)``), the bf16 weight copies of autocast, logits
and attention scores. By default glibc serves blocks above a few MB with
``mmap`` and returns them to the system when freed, so every step page-faults
hundreds of MB in again; on a small CPU machine that is a visible share of the
step. Raising the mmap and trim thresholds lets freed blocks be reused in
place: the resident memory stays at the step's peak (which the step reaches
anyway) and the page faults stop. This is what the usual advice of running
PyTorch CPU training on jemalloc/tcmalloc achieves, without preloading a
library. On other platforms (or another libc) it does nothing.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def retain_freed_memory(threshold_bytes: int = 1 << 28) -> bool:
    """Asks glibc to keep freed blocks below ``threshold_bytes`` for reuse.

    Arguments
    ---------
    threshold_bytes : int
        Blocks up to this size come from the heap instead of ``mmap``, and
        freed memory is returned to the system only above twice this much.

    Returns
    -------
    bool
        True when glibc accepted both settings; False where there is no glibc
        (nothing changed).

    Example
    -------
    >>> retain_freed_memory() in (True, False)
    True
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mmap_ok = mallopt(M_MMAP_THRESHOLD, int(threshold_bytes))
    trim_ok = mallopt(M_TRIM_THRESHOLD, int(2 * threshold_bytes))
    return bool(mmap_ok and trim_ok)
