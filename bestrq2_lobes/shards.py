"""``python -m bestrq2_lobes.shards``: write tar shards of a corpus, or show a set.

The command of :mod:`bestrq2_lobes.data.shard_writer` (see its docstring)::

    python -m bestrq2_lobes.shards write CSV_OR_FOLDER OUT_DIR --jobs 16
    python -m bestrq2_lobes.shards info OUT_DIR

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from bestrq2_lobes.data.shard_writer import main

if __name__ == "__main__":
    main()
