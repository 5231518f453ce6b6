"""Host-to-device copies that do not wait for the device.

A plain ``tensor.to("cuda")`` from ordinary (pageable) host memory makes the
host wait until the GPU has finished all queued work, so the Python side can no
longer run ahead of the kernels. The small index tensors of a step (lengths,
mask counts, CPU-drawn noise) go through :func:`to_device` instead: a pinned
staging copy and an asynchronous transfer.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``tensor`` on ``device``; CPU-to-CUDA copies are pinned and non-blocking.

    Arguments
    ---------
    tensor : torch.Tensor
        Any tensor.
    device : torch.device or str
        Where it must be.

    Returns
    -------
    torch.Tensor
        The tensor itself when it is already there, else a copy.

    Example
    -------
    >>> x = torch.arange(3)
    >>> to_device(x, "cpu") is x
    True
    """
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
