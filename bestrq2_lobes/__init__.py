"""BEST-RQ-2 lobes for SpeechBrain: pretraining pieces and the frozen SSL encoder.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from bestrq2_lobes.layer_sum import WeightedLayerSum
from bestrq2_lobes.ssl import BestRQ2Encoder

__all__ = ["BestRQ2Encoder", "WeightedLayerSum"]
