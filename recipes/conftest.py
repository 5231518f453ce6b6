"""Lets pytest import recipe modules for their doctests.

Each recipe folder is put on ``sys.path``, as it is when its ``train.py`` runs,
so that sibling imports such as ``from sed_labels import ...`` resolve.
"""

import sys
from pathlib import Path

for folder in sorted(Path(__file__).parent.iterdir()):
    if folder.is_dir() and not folder.name.startswith((".", "_")):
        sys.path.insert(0, str(folder))
