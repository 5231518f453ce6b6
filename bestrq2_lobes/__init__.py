"""BEST-RQ-2 lobes for SpeechBrain: pretraining pieces and the frozen SSL encoder.

The library is layered; a layer imports only from the layers above it in this
list (and never from ``recipes/``):

* ``model``: the networks and the pretraining objective (front end, patches,
  positions, masking, quantizer, transformer, encoder, predictor, the two
  pretraining models). Plain PyTorch, no SpeechBrain.
* ``data``: robust audio reading, manifests and folder scans, datasets, the
  demo corpus.
* ``training``: what a pretraining run needs around the model (optimiser and
  schedule, atomic checkpoints, run helpers, seeding, CPU memory).
* ``lobe``: the exported encoder as a SpeechBrain lobe (encoder directory,
  export, ``BestRQ2Encoder``, ``WeightedLayerSum``, the pretrained interface).
* ``downstream``: what the downstream recipes share (the frozen-encoder Brain,
  cached features, label files, pooling, results).
* ``adapters`` and ``plots``: X-ARES / XARES-LLM encoder files, pictures.

``bestrq2_lobes.BestRQ2Encoder`` and ``bestrq2_lobes.WeightedLayerSum`` are the
names HyperPyYAML files use. The module paths of the earlier flat layout
(``bestrq2_lobes.ssl`` and so on) still import, with a deprecation warning.
Importing the package drops SpeechBrain's "torchvision is not available"
warning (``training.console``).

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from bestrq2_lobes import _moved
from bestrq2_lobes.training.console import silence_torchvision_notice

_moved.install()
silence_torchvision_notice()  # SpeechBrain's "cannot save figures", in every recipe

from bestrq2_lobes.lobe.frozen_encoder import BestRQ2Encoder  # noqa: E402
from bestrq2_lobes.lobe.layer_sum import WeightedLayerSum  # noqa: E402

__all__ = ["BestRQ2Encoder", "WeightedLayerSum"]
