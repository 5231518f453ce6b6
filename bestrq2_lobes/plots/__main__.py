"""``python -m bestrq2_lobes.plots``: see ``bestrq2_lobes.plots.run_plots``."""

import sys

from bestrq2_lobes.plots.run_plots import main

if __name__ == "__main__":
    sys.exit(main())
