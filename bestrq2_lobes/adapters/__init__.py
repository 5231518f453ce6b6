"""Adapters of the exported encoder to external benchmarks (X-ARES, XARES-LLM).

Each adapter file defines exactly one name ending in ``Encoder``, as X-ARES finds
the encoder class of a file by that suffix.

May import: torch and ``bestrq2_lobes.lobe`` (with what it builds on).

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""
