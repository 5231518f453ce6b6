"""Tests for bestrq2_lobes.model.position and bestrq2_lobes.model.masking.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

import math

import pytest
import torch

from bestrq2_lobes.model.encoder import ViTEncoder
from bestrq2_lobes.model.masking import MaskSampler, masked_count
from bestrq2_lobes.model.position import SinCosPosition2d, sincos_2d
from bestrq2_lobes.model.tokens import gather_tokens, prefix_mask

# ----------------------------------------------------------------- position


def _reference_sincos(row, col, dim):
    quarter = dim // 4
    omega = [10000.0 ** (-k / quarter) for k in range(quarter)]
    return (
        [math.sin(row * w) for w in omega]
        + [math.sin(col * w) for w in omega]
        + [math.cos(row * w) for w in omega]
        + [math.cos(col * w) for w in omega]
    )


def test_sincos_2d_equals_direct_formula():
    gen = torch.Generator().manual_seed(0)
    coords = torch.stack(
        [torch.randint(0, 8, (40,), generator=gen), torch.randint(0, 500, (40,))], -1
    )
    dim = 32
    got = sincos_2d(coords, dim)
    assert got.shape == (40, dim) and got.dtype == torch.float32
    expected = torch.tensor(
        [_reference_sincos(int(f), int(t), dim) for f, t in coords.tolist()]
    )
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    # Batched (..., 2) input works element-wise.
    torch.testing.assert_close(
        sincos_2d(coords.view(4, 10, 2), dim), got.view(4, 10, -1)
    )
    with pytest.raises(ValueError):
        sincos_2d(coords, 30)


def test_positions_of_short_clip_are_prefix_of_long_clip():
    rows = 8
    short_first = SinCosPosition2d(dim=32, freq_rows=rows)
    s5, s10 = short_first(64), short_first(128)
    long_first = SinCosPosition2d(dim=32, freq_rows=rows)
    l10, l5 = long_first(128), long_first(64)
    assert s5.shape == (64, 32) and s10.shape == (128, 32)
    assert torch.equal(s5, s10[:64])
    assert torch.equal(l5, l10[:64])
    assert torch.equal(s5, l5) and torch.equal(s10, l10)
    # Token n is at row n % rows, column n // rows.
    coords = torch.stack([torch.arange(128) % rows, torch.arange(128) // rows], -1)
    assert torch.equal(l10, sincos_2d(coords, 32))


def test_encoder_positions_by_token_index():
    enc = ViTEncoder(n_mels=128, embed_dim=32, depth=1, num_heads=4)
    idx10 = torch.arange(128).unsqueeze(0)
    idx5 = torch.arange(64).unsqueeze(0)
    p10 = enc.positions(idx10)
    p5 = enc.positions(idx5)
    assert p10.shape == (1, 128, 32)
    assert torch.equal(p5, p10[:, :64])
    # Scattered indices (e.g. visible tokens) get their own grid cell's position.
    scattered = torch.tensor([[3, 17, 100], [0, 64, 127]])
    got = enc.positions(scattered)
    assert torch.equal(got, p10[0][scattered])
    coords = enc.grid.coordinates(128)
    assert torch.equal(got[1, 2], sincos_2d(coords[127], 32))
    # Given the grid size, the table is the same without reading the indices back.
    assert torch.equal(enc.positions(scattered, num_tokens=128), got)


def test_rows_differ_by_frequency_row():
    dim, rows = 32, 8
    q = dim // 4
    table = SinCosPosition2d(dim, rows)(rows * 4).view(4, rows, dim)  # col, row, D
    # Within a column all rows differ; the time part is shared.
    for col in range(4):
        assert torch.cdist(table[col], table[col]).add(torch.eye(rows)).min() > 1e-3
        time_part = torch.cat([table[col, :, q : 2 * q], table[col, :, 3 * q :]], -1)
        assert torch.equal(time_part, time_part[:1].expand_as(time_part))
    # Along a row the frequency part is shared and the time part changes.
    freq_part = torch.cat([table[:, :, :q], table[:, :, 2 * q : 3 * q]], -1)
    assert torch.equal(freq_part, freq_part[:1].expand_as(freq_part))
    assert not torch.equal(table[0, 3], table[1, 3])
    expected_row = torch.tensor([math.sin(3 * 10000.0 ** (-k / q)) for k in range(q)])
    torch.testing.assert_close(table[2, 3, :q], expected_row, atol=1e-6, rtol=0)


# ------------------------------------------------------------------ masking


def _expected_masked(valid_tokens, ratio):
    """floor(N r), kept within [1, N - 1] (0 when N = 1)."""
    out = []
    for n in valid_tokens.tolist():
        k = math.floor(n * ratio)
        out.append(min(max(k, 1), max(n - 1, 0)))
    return torch.tensor(out)


def test_masked_count_reference():
    valid = torch.tensor([128, 64, 33, 7, 3, 2, 1])
    for ratio in (0.0, 0.25, 0.4, 0.45, 0.5, 0.6, 0.99):
        assert torch.equal(masked_count(valid, ratio), _expected_masked(valid, ratio))
    # In the usual regime it is plain floor(N r).
    assert masked_count(torch.tensor([128, 64]), 0.45).tolist() == [57, 28]


def _check_plan(plan, valid_tokens, num_tokens):
    batch = valid_tokens.shape[0]
    valid = prefix_mask(valid_tokens, num_tokens)
    masked = plan.masked
    assert masked.shape == (batch, num_tokens) and masked.dtype == torch.bool
    expected_masked = _expected_masked(valid_tokens, plan.ratio)
    assert torch.equal(masked.sum(1), expected_masked)
    # Masked tokens lie inside the valid prefix.
    assert not (masked & ~valid).any()
    # Visible tokens from the index lists (restricted to valid slots).
    visible = torch.zeros_like(masked)
    for b in range(batch):
        vis_idx = plan.visible_idx[b][plan.visible_valid[b]]
        msk_idx = plan.masked_idx[b][plan.masked_valid[b]]
        assert torch.equal(vis_idx, torch.nonzero(valid[b] & ~masked[b]).flatten())
        assert torch.equal(msk_idx, torch.nonzero(masked[b]).flatten())
        # Strictly increasing (positional order, no duplicates).
        assert (vis_idx.diff() > 0).all() and (msk_idx.diff() > 0).all()
        visible[b, vis_idx] = True
    assert not (visible & masked).any()
    assert torch.equal(visible | masked, valid)
    assert torch.equal(plan.visible_valid.sum(1), valid_tokens - expected_masked)
    assert torch.equal(plan.masked_valid.sum(1), expected_masked)
    # Valid slots come first (rectangles are padded at the end).
    assert torch.equal(
        plan.visible_valid,
        prefix_mask(plan.visible_valid.sum(1), plan.visible_valid.shape[1]),
    )
    assert torch.equal(
        plan.masked_valid,
        prefix_mask(plan.masked_valid.sum(1), plan.masked_valid.shape[1]),
    )
    assert plan.visible_idx.shape[1] == int((valid_tokens - expected_masked).max())
    assert plan.masked_idx.shape[1] == int(expected_masked.max())


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_plan_invariants(shared, seed):
    gen = torch.Generator().manual_seed(seed)
    num_tokens = 128
    valid_tokens = torch.randint(1, num_tokens + 1, (6,), generator=gen)
    valid_tokens[0] = num_tokens
    valid_tokens[1] = 1
    sampler = MaskSampler((0.3, 0.7), shared=shared)
    plan = sampler(valid_tokens, num_tokens, generator=gen)
    assert 0.3 <= plan.ratio <= 0.7
    _check_plan(plan, valid_tokens, num_tokens)


@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.99])
def test_mask_plan_fixed_ratio(ratio):
    valid_tokens = torch.tensor([128, 64, 7, 2, 1, 128])
    plan = MaskSampler((0.4, 0.6), shared=False)(
        valid_tokens, 128, generator=torch.Generator().manual_seed(0), ratio=ratio
    )
    assert plan.ratio == ratio
    _check_plan(plan, valid_tokens, 128)


def test_shared_mode_identical_for_equal_lengths():
    valid_tokens = torch.tensor([128, 128, 64, 64, 128])
    plan = MaskSampler((0.5, 0.5), shared=True)(
        valid_tokens, 128, generator=torch.Generator().manual_seed(0)
    )
    for b in (1, 4):
        assert torch.equal(plan.masked[b], plan.masked[0])
        assert torch.equal(plan.visible_idx[b], plan.visible_idx[0])
    assert torch.equal(plan.masked[3], plan.masked[2])
    # The shorter clips' masks are still confined to their valid prefix.
    assert not plan.masked[2, 64:].any()


def test_per_sample_mode_differs():
    valid_tokens = torch.full((4,), 128)
    plan = MaskSampler((0.5, 0.5), shared=False)(
        valid_tokens, 128, generator=torch.Generator().manual_seed(0)
    )
    for a in range(4):
        for b in range(a + 1, 4):
            assert not torch.equal(plan.masked[a], plan.masked[b])
    assert torch.equal(plan.masked.sum(1), torch.full((4,), 64))


def test_ratio_drawn_within_range():
    sampler = MaskSampler((0.4, 0.6))
    gen = torch.Generator().manual_seed(0)
    ratios = torch.tensor([sampler.draw_ratio(gen) for _ in range(400)])
    assert ratios.min() >= 0.4 and ratios.max() <= 0.6
    assert ratios.min() < 0.42 and ratios.max() > 0.58
    assert abs(float(ratios.mean()) - 0.5) < 0.02
    # The plan's ratio is what its counts use.
    valid_tokens = torch.tensor([128])
    counts = set()
    for _ in range(50):
        plan = sampler(valid_tokens, 128, generator=gen)
        assert 0.4 <= plan.ratio <= 0.6
        assert int(plan.masked.sum()) == math.floor(128 * plan.ratio)  # no clamp
        counts.add(int(plan.masked.sum()))
    assert len(counts) > 5


def test_reproducible_with_seeded_generator():
    valid_tokens = torch.tensor([128, 90, 33])
    for shared in (True, False):
        sampler = MaskSampler((0.4, 0.6), shared=shared)
        a = sampler(valid_tokens, 128, generator=torch.Generator().manual_seed(7))
        b = sampler(valid_tokens, 128, generator=torch.Generator().manual_seed(7))
        c = sampler(valid_tokens, 128, generator=torch.Generator().manual_seed(8))
        assert a.ratio == b.ratio
        assert torch.equal(a.masked, b.masked)
        assert torch.equal(a.visible_idx, b.visible_idx)
        assert torch.equal(a.masked_idx, b.masked_idx)
        assert not torch.equal(a.masked, c.masked)
    # Without a generator, the global seed makes it reproducible.
    sampler = MaskSampler((0.4, 0.6), shared=False)
    torch.manual_seed(3)
    d = sampler(valid_tokens, 128)
    torch.manual_seed(3)
    e = sampler(valid_tokens, 128)
    assert d.ratio == e.ratio and torch.equal(d.masked, e.masked)


def test_mask_is_uniform_over_valid_tokens():
    """Every valid token is masked about ratio of the time; padding never."""
    sampler = MaskSampler((0.5, 0.5), shared=False)
    valid_tokens = torch.tensor([40] * 500)
    plan = sampler(valid_tokens, 48, generator=torch.Generator().manual_seed(0))
    freq = plan.masked.float().mean(0)
    assert (freq[:40] - 0.5).abs().max() < 0.1
    assert freq[40:].sum() == 0


def test_mask_ratio_range_validation():
    for bad in [(0.6, 0.4), (-0.1, 0.5), (0.5, 1.0)]:
        with pytest.raises(ValueError):
            MaskSampler(bad)


def test_gather_tokens_and_prefix_mask():
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(3, 10, 5, generator=gen)
    index = torch.randint(0, 10, (3, 4), generator=gen)
    got = gather_tokens(tokens, index)
    expected = torch.stack([tokens[b, index[b]] for b in range(3)])
    assert torch.equal(got, expected)
    assert gather_tokens(tokens, index[:, :0]).shape == (3, 0, 5)

    counts = torch.tensor([0, 3, 7, 9])
    mask = prefix_mask(counts, 7)
    expected = torch.tensor([[i < c for i in range(7)] for c in counts.tolist()])
    assert torch.equal(mask, expected)
