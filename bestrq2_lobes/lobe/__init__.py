"""The exported encoder as a SpeechBrain lobe.

``encoder_dir`` defines the encoder directory (``config.json`` + weights; strict,
safe loading), ``export`` writes one from a pretraining run
(``python -m bestrq2_lobes.lobe.export``), ``frozen_encoder`` is
``BestRQ2Encoder`` (waveforms in, frames out), ``layer_sum`` the
``WeightedLayerSum`` over its hidden states, ``interface`` the
``Pretrained``-style interface.

May import: torch, SpeechBrain, ``bestrq2_lobes.model`` and
``bestrq2_lobes.data``. Never ``training`` or ``downstream``.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""
