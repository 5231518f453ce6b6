"""The networks and the pretraining objective of BEST-RQ-2 and its baseline.

Front end (log-mel), patch grid and embedding, 2-D sin-cos positions, token
helpers, mask sampling, the frozen random-projection quantizer and the
normalisation of its input (``targets``), transformer blocks, the ViT context
encoder, the predictor, and the two pretraining models (two-step ``BestRQ2``
and one-stage ``OneStageBestRQ``) with their output and loss (``objective``).

May import: torch and torchaudio only, and modules of this package. Nothing
here knows about SpeechBrain, files or recipes.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""
