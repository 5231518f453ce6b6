"""Optimisation pieces: AdamW parameter groups and the warm-up + cosine schedule.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import math

import torch


def parameter_groups(
    module: torch.nn.Module, weight_decay: float, exempt_norms_and_biases: bool = False
) -> list[dict]:
    """AdamW parameter groups: decay on all parameters (paper) or only on matrices.

    Arguments
    ---------
    module : torch.nn.Module
        The trained module.
    weight_decay : float
        Decoupled weight decay.
    exempt_norms_and_biases : bool
        Put parameters with fewer than 2 dimensions (biases, norms, mask tokens
        are 3-D and keep decay) in a group without weight decay.

    Returns
    -------
    list of dict
        Parameter groups for ``torch.optim.AdamW``.

    Example
    -------
    >>> groups = parameter_groups(torch.nn.Linear(3, 2), 0.05, True)
    >>> [(len(g["params"]), g["weight_decay"]) for g in groups]
    [(1, 0.05), (1, 0.0)]
    """
    params = [p for p in module.parameters() if p.requires_grad]
    if not exempt_norms_and_biases:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class WarmupCosineScheduler:
    """Linear warm-up to ``lr`` then cosine decay to ``final_ratio * lr``.

    The schedule is a function of the optimiser step, so restoring the step counter
    (SpeechBrain checkpoints it) restores the schedule.

    Arguments
    ---------
    lr : float
        Peak learning rate.
    total_steps : int
        Optimiser steps of the whole run.
    warmup_ratio : float
        Fraction of ``total_steps`` spent in linear warm-up.
    final_ratio : float
        Final learning rate relative to ``lr``.

    Example
    -------
    >>> sched = WarmupCosineScheduler(lr=1.0, total_steps=100, warmup_ratio=0.1)
    >>> [round(sched.lr_at(s), 3) for s in (0, 5, 10, 55, 100, 200)]
    [0.1, 0.6, 1.0, 0.5, 0.001, 0.001]
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    >>> sched.set_lr(opt, step=1)
    0.2
    """

    def __init__(
        self,
        lr: float,
        total_steps: int,
        warmup_ratio: float = 0.05,
        final_ratio: float = 0.001,
    ):
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.lr = lr
        self.total_steps = int(total_steps)
        self.warmup_steps = max(1, round(warmup_ratio * total_steps))
        self.final_ratio = final_ratio

    def lr_at(self, step: int) -> float:
        """Learning rate of the optimiser step number ``step`` (counted from 0)."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.lr * (self.final_ratio + (1.0 - self.final_ratio) * cosine)

    def set_lr(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Sets the learning rate of optimiser step ``step`` on every group."""
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr
