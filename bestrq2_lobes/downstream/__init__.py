"""What the downstream recipes share around the frozen encoder.

``brain`` holds ``FrozenEncoderBrain`` (encoder, layer sum, head; one lengths
contract, one optimiser and checkpoint layout) and ``start_run`` (one way to
parse arguments and set up a run); ``feature_cache`` keeps a frozen encoder's
hidden states of each clip for later epochs; ``frames`` pools frames by their
counts; ``labels`` keeps a run's label set; ``reporting`` writes the encoder
line and ``results.json``.

May import: SpeechBrain, torch and every other layer of the library except
``plots``. The recipes (``recipes/asr``, ``music_tagging``, ``sed``) subclass
the Brain and keep only what is theirs: labels, losses, metrics.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""
