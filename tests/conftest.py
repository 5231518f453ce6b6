"""Fixtures shared by the test files."""

import socket
import sys

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def torchrun_cmd():
    """``torchrun_cmd(nproc)``: the command prefix launching ``nproc`` processes."""

    def command(nproc: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={nproc}",
            f"--master_port={_free_port()}",
        ]

    return command
