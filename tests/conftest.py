"""Fixtures shared by the test files."""

import socket
import sys
import warnings
from pathlib import Path

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


@pytest.fixture(scope="session")
def pretrain_args():
    """``pretrain_args(data, out, *extra)``: the pretraining recipe on a tiny model.

    The recipe and ``hparams/bestrq2_vit.yaml`` with overrides that shrink the
    paper model to a CPU smoke size (width 32, one block, 32 mels, 64 codes),
    reading ``data`` and writing ``out``, in fp32 so that the tests' numbers do
    not depend on the CPU kind; ``extra`` overrides are appended (a later
    ``--precision`` wins).
    """
    repo = Path(__file__).resolve().parents[1]

    def args(data, out, *extra: str) -> list[str]:
        return [
            str(repo / "recipes" / "pretrain" / "train.py"),
            str(repo / "hparams" / "bestrq2_vit.yaml"),
            f"--data_folder={data}",
            f"--output_folder={out}",
            "--embed_dim=32",
            "--depth=1",
            "--num_heads=4",
            "--predictor_depth=1",
            "--codebook_size=64",
            "--n_mels=32",
            "--num_workers=0",
            "--device=cpu",
            "--precision=fp32",  # the same numbers on every CPU kind
            "--noprogressbar",
            *extra,
        ]

    return args


def drop_broken_lazy_modules() -> None:
    """Removes SpeechBrain lazy modules that can never import from ``sys.modules``.

    Hypothesis reads ``__file__`` of every module in ``sys.modules`` (at
    collection and before each example). SpeechBrain registers lazy modules there
    whose target cannot import without optional packages
    (``speechbrain.integrations.k2_fsa`` without k2); any attribute of one raises
    ``ImportError``, which stops the whole pytest session. Such a module can
    never be imported, so dropping it loses nothing.
    """
    if "speechbrain.utils.importutils" not in sys.modules:
        return
    from speechbrain.utils.importutils import LazyModule

    for name, module in list(sys.modules.items()):
        if isinstance(module, LazyModule) and module.lazy_module is None:
            try:
                with warnings.catch_warnings():  # deprecated-redirect warnings
                    warnings.simplefilter("ignore")
                    getattr(module, "__file__", None)
            except ImportError:
                del sys.modules[name]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Before hypothesis's own hook (see ``drop_broken_lazy_modules``)."""
    drop_broken_lazy_modules()


@pytest.fixture(scope="module")
def no_broken_lazy_modules():
    """``drop_broken_lazy_modules`` again, before a module's hypothesis tests."""
    drop_broken_lazy_modules()
