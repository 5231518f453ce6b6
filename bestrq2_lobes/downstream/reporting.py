"""What a downstream run says about itself: the encoder line, the results file.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import json
import os

from bestrq2_lobes.data.files import atomic_open


def describe_encoder(encoder_dir: str | None, ssl) -> str:
    """One line saying which encoder a downstream recipe uses.

    Example
    -------
    >>> from bestrq2_lobes import BestRQ2Encoder
    >>> from bestrq2_lobes.lobe.encoder_dir import encoder_config
    >>> ssl = BestRQ2Encoder(config=encoder_config(embed_dim=32, depth=1, num_heads=4))
    >>> describe_encoder(None, ssl)[:60]
    'No --encoder_dir given: using a RANDOMLY INITIALISED encoder'
    """
    shape = (
        f"width {ssl.encoder.embed_dim}, depth {ssl.depth}, frame hop {ssl.hop_ms:g} "
        f"ms, {ssl.output_dim} features per frame ({ssl.frame_readout} read-out)"
    )
    if encoder_dir:
        return f"Encoder: {encoder_dir} ({shape}, frozen={ssl.freeze})"
    return (
        "No --encoder_dir given: using a RANDOMLY INITIALISED encoder of the default "
        f"configuration ({shape}); results are a random-encoder baseline."
    )


def write_results(path: str | os.PathLike, results: dict) -> None:
    """Writes flat final metrics as JSON (``<output_folder>/results.json``).

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> write_results(tmp / "results.json", {"map": 0.5})
    >>> json.loads((tmp / "results.json").read())
    {'map': 0.5}
    """
    with atomic_open(path) as fout:
        json.dump(results, fout, indent=2, sort_keys=True)
