"""Tests for bestrq2_lobes.training.optim.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

import math

import pytest
import torch

from bestrq2_lobes.model.encoder import ViTEncoder
from bestrq2_lobes.model.pretraining import OneStageHead
from bestrq2_lobes.training.optim import WarmupCosineScheduler, parameter_groups


def _module():
    torch.manual_seed(0)
    return torch.nn.ModuleDict(
        {
            "encoder": ViTEncoder(n_mels=32, embed_dim=32, depth=2, num_heads=4),
            "head": OneStageHead(32, 64),
        }
    )


def test_parameter_groups_decay_everything_by_default():
    module = _module()
    groups = parameter_groups(module, 0.05)
    assert len(groups) == 1
    assert groups[0]["weight_decay"] == 0.05
    ids = [id(p) for p in groups[0]["params"]]
    assert sorted(ids) == sorted(id(p) for p in module.parameters())


def test_parameter_groups_exempt_norms_and_biases():
    module = _module()
    groups = parameter_groups(module, 0.05, exempt_norms_and_biases=True)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    decay, no_decay = groups[0]["params"], groups[1]["params"]
    all_ids = [id(p) for p in module.parameters()]
    got_ids = [id(p) for p in decay + no_decay]
    # Nothing lost, nothing duplicated.
    assert len(got_ids) == len(set(got_ids)) == len(all_ids)
    assert set(got_ids) == set(all_ids)
    assert all(p.dim() >= 2 for p in decay)
    assert all(p.dim() < 2 for p in no_decay)
    by_name = dict(module.named_parameters())
    no_decay_ids = {id(p) for p in no_decay}
    for name, p in by_name.items():
        is_bias_or_norm = name.endswith("bias") or "norm" in name
        assert (id(p) in no_decay_ids) == is_bias_or_norm, name
    # The mask token (1, 1, D) keeps its decay.
    assert id(module["head"].mask_token) not in no_decay_ids
    # The groups are accepted by AdamW.
    torch.optim.AdamW(groups, lr=1e-4)


def test_parameter_groups_skip_frozen():
    module = torch.nn.Linear(3, 2)
    module.bias.requires_grad_(False)
    groups = parameter_groups(module, 0.1, True)
    assert [len(g["params"]) for g in groups] == [1, 0]


def _reference_lr(step, lr, total, warmup, final):
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress)))


def test_warmup_cosine_schedule():
    lr, total = 1e-4, 200
    sched = WarmupCosineScheduler(lr, total, warmup_ratio=0.05, final_ratio=0.001)
    assert sched.warmup_steps == 10
    values = [sched.lr_at(s) for s in range(total + 50)]
    for s, v in enumerate(values):
        assert v == pytest.approx(_reference_lr(s, lr, total, 10, 0.001), rel=1e-9)
    # Linear warm-up reaching the peak at its end.
    warm = values[:10]
    steps = [b - a for a, b in zip(warm, warm[1:], strict=False)]
    assert all(d == pytest.approx(lr / 10) for d in steps)
    assert values[9] == pytest.approx(lr)
    assert values[10] == pytest.approx(lr)
    assert max(values) == pytest.approx(lr)
    # Monotone decay after the warm-up, to final_ratio * lr, and flat afterwards.
    decay = values[10 : total + 1]
    assert all(b <= a for a, b in zip(decay, decay[1:], strict=False))
    assert decay[0] > decay[-1]
    assert values[total] == pytest.approx(0.001 * lr)
    assert all(v == pytest.approx(0.001 * lr) for v in values[total:])
    # Half-way through the decay: the mid-point between peak and final.
    mid = 10 + (total - 10) // 2
    assert values[mid] == pytest.approx(lr * (0.001 + 0.999 * 0.5), rel=1e-2)


def test_warmup_cosine_edge_cases():
    with pytest.raises(ValueError):
        WarmupCosineScheduler(1.0, 0)
    sched = WarmupCosineScheduler(1.0, 10, warmup_ratio=0.0)
    assert sched.warmup_steps == 1
    assert sched.lr_at(0) == pytest.approx(1.0)
    assert sched.lr_at(10) == pytest.approx(0.001)


def test_set_lr_sets_every_group():
    module = _module()
    opt = torch.optim.AdamW(parameter_groups(module, 0.05, True), lr=0.0)
    sched = WarmupCosineScheduler(1e-3, 100, warmup_ratio=0.1)
    for step in (0, 4, 9, 50, 100):
        lr = sched.set_lr(opt, step)
        assert lr == sched.lr_at(step)
        assert [g["lr"] for g in opt.param_groups] == [lr, lr]
    # The schedule depends only on the step: a restart at step 50 matches.
    fresh = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    assert WarmupCosineScheduler(1e-3, 100, 0.1).set_lr(fresh, 50) == sched.lr_at(50)
