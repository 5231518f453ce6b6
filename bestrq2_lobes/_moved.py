"""The module paths of the flat layout (before version 0.2), kept importable.

The library used to be one folder of modules (``bestrq2_lobes.ssl``,
``bestrq2_lobes.encoder_dir``, ...). Each old path is now an alias of the
module's new home: importing it (or running it with ``python -m``) gives the
very same module object, with a ``DeprecationWarning`` naming the new path, so
code, HyperPyYAML files and exported ``hyperparams.yaml`` files written against
the old layout keep working.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: old module name (under ``bestrq2_lobes.``) -> new module name
MOVED = {
    "frontend": "model.frontend",
    "patches": "model.patches",
    "position": "model.position",
    "masking": "model.masking",
    "quantizer": "model.quantizer",
    "transformer": "model.transformer",
    "encoder": "model.encoder",
    "predictor": "model.predictor",
    "pretraining": "model.pretraining",
    "transfer": "model.device_copy",
    "encoder_dir": "lobe.encoder_dir",
    "ssl": "lobe.frozen_encoder",
    "layer_sum": "lobe.layer_sum",
    "interface": "lobe.interface",
    "export": "lobe.export",
    "audio": "data.audio",
    "manifest": "data.manifest",
    "dataio": "data.datasets",
    "demo_corpus": "data.demo_corpus",
    "optim": "training.optim",
    "checkpointing": "training.checkpointing",
    "cli": "training.run",
    "seeding": "training.seeding",
    "cpu_memory": "training.cpu_memory",
    "probe_chart": "plots.probe_chart",
}
PACKAGE = "bestrq2_lobes"


def new_name(old: str) -> str | None:
    """The module that an old flat-layout module name now refers to.

    Example
    -------
    >>> new_name("bestrq2_lobes.ssl")
    'bestrq2_lobes.lobe.frozen_encoder'
    >>> new_name("bestrq2_lobes.model.encoder") is None
    True
    """
    prefix = PACKAGE + "."
    if not old.startswith(prefix) or old[len(prefix) :] not in MOVED:
        return None
    return prefix + MOVED[old[len(prefix) :]]


class _AliasLoader(importlib.abc.Loader):
    """Loads an old name as the already imported module of its new name."""

    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def create_module(self, spec):
        warnings.warn(
            f"{self.old} moved to {self.new}; the old path will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(self.new)
        self._spec = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self._spec  # the import system set the alias's spec

    def get_code(self, fullname):
        """The new module's code, for ``python -m OLD_NAME``."""
        print(f"note: {self.old} moved to {self.new}", file=sys.stderr)
        return importlib.util.find_spec(self.new).loader.get_code(self.new)


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Finds the old flat-layout names and nothing else."""

    def find_spec(self, fullname, path=None, target=None):
        new = new_name(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(fullname, new))


def install() -> None:
    """Puts the alias finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
