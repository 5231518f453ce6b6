"""Tests of training.cpu_memory: freed memory is reused without page faults.

Run in fresh subprocesses, so the setting does not leak into the test process.
"""

import subprocess
import sys

import pytest

CHURN = """
import resource, sys, torch
from bestrq2_lobes.training.cpu_memory import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else None
for _ in range(3):  # warm-up: the heap reaches its size
    torch.ones(16 * 2**20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):  # a 64 MB buffer freed and reallocated, as a step does
    torch.ones(16 * 2**20)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(applied, faults)
"""


def churn_faults(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", CHURN, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_retained_memory_is_reused_without_page_faults():
    applied, retained = churn_faults("retain")
    _, default = churn_faults("default")
    if applied != "True":
        pytest.skip("this libc has no mallopt thresholds")
    # Default glibc maps and unmaps the 64 MB block each time: 16k faults
    # per 64 MB (4 KiB pages); retained, the same block is reused.
    assert default > 20 * 10_000
    assert retained < default / 20
