"""The exported encoder as a SpeechBrain lobe.

``encoder_dir`` defines the encoder directory (``config.json`` + weights; strict,
safe loading; ``config_checks`` bounds its sizes and checks its weights before
anything is built), ``export`` writes one from a pretraining run
(``python -m bestrq2_lobes.lobe.export``), ``frozen_encoder`` is
``BestRQ2Encoder`` (waveforms in, frames out; ``inputs`` checks what it is given
and defines ``LobeInputError``), ``layer_sum`` the ``WeightedLayerSum`` over its
hidden states, ``interface`` the ``Pretrained``-style interface. ``convert``
turns the authors' released weights into an encoder directory (``python -m
bestrq2_lobes.lobe.convert``): ``authors_source`` reads them, ``authors_encoder``
maps their encoder onto ours, ``authors_pretraining`` their predictor or head and
quantizer, and ``pretraining_init`` writes that state for the pretraining recipe's
``--init_from`` and loads it there. ``hub`` resolves their Hugging Face ids
wherever a ``source`` is taken.

May import: torch, SpeechBrain, ``bestrq2_lobes.model`` and
``bestrq2_lobes.data``. Never ``training`` or ``downstream``.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""
