"""Audio and manifests: robust reading, folder scans, CSV checks, datasets.

``audio`` reads, resamples and checks clips; ``manifest`` scans folders and
validates SpeechBrain CSV manifests (bad clips go to ``skipped.csv`` with the
reason); ``datasets`` builds checked ``DynamicItemDataset`` objects;
``demo_corpus`` generates the synthetic corpus of the demo run; ``shards``
(the format), ``shard_writer`` (``python -m bestrq2_lobes.shards write``) and
``shard_stream`` and ``shard_loader`` (streaming batches, a checkpointed
loader) serve corpora at AudioSet scale.

May import: torch, torchaudio, soundfile, SpeechBrain's data utilities, and
``bestrq2_lobes.model``. Never ``training``, ``lobe`` or ``downstream``.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""
