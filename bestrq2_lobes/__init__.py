"""BEST-RQ-2 lobes for SpeechBrain: pretraining pieces and the frozen SSL encoder.

The library is layered; a layer imports only from the layers above it in this
list (and never from ``recipes/``):

* ``model``: the networks and the pretraining objective (front end, patches,
  positions, masking, quantizer, transformer, encoder, predictor, the two
  pretraining models). Plain PyTorch, no SpeechBrain.
* ``data``: robust audio reading, manifests and folder scans, datasets, the
  demo corpus.
* ``datasets``: one preparer per public corpus (AudioSet, LibriSpeech,
  ESC-50, DESED, ...): the official layout into checked CSVs, and the
  recipes' ``--corpus``.
* ``training``: what a pretraining run needs around the model (optimiser and
  schedule, atomic checkpoints, run helpers, seeding, CPU memory).
* ``lobe``: the exported encoder as a SpeechBrain lobe (encoder directory,
  export, ``BestRQ2Encoder``, ``WeightedLayerSum``, the pretrained interface).
* ``downstream``: what the downstream recipes share (the frozen-encoder Brain,
  cached features, label files, pooling, results).
* ``adapters`` and ``plots``: X-ARES / XARES-LLM encoder files, pictures.

``bestrq2_lobes.BestRQ2Encoder`` and ``bestrq2_lobes.WeightedLayerSum`` are the
names HyperPyYAML files use.
Importing the package drops SpeechBrain's "torchvision is not available"
warning (``training.console``).

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from bestrq2_lobes.training.console import silence_torchvision_notice

silence_torchvision_notice()  # SpeechBrain's "cannot save figures", in every recipe

from bestrq2_lobes.lobe.frozen_encoder import BestRQ2Encoder  # noqa: E402
from bestrq2_lobes.lobe.layer_sum import WeightedLayerSum  # noqa: E402

__all__ = ["BestRQ2Encoder", "WeightedLayerSum"]
