"""Tests for model.transformer, model.encoder and the predictor size.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

import math

import pytest
import torch

from bestrq2_lobes.model.encoder import ViTEncoder, encode_visible
from bestrq2_lobes.model.frontend import LogMel
from bestrq2_lobes.model.predictor import Predictor
from bestrq2_lobes.model.transformer import (
    Block,
    DropPath,
    SelfAttention,
    TransformerStack,
    explicit_attention,
    init_vit_weights,
)

DIM, HEADS = 32, 4


def _naive_attention(attn, x, key_mask=None):
    """softmax(Q K^T / sqrt(d)) V per head, from the module's weights."""
    batch, seq, dim = x.shape
    head_dim = dim // attn.num_heads
    w, b = attn.qkv.weight, attn.qkv.bias
    q = x @ w[:dim].T + b[:dim]
    k = x @ w[dim : 2 * dim].T + b[dim : 2 * dim]
    v = x @ w[2 * dim :].T + b[2 * dim :]
    out = torch.zeros(batch, seq, dim)
    for h in range(attn.num_heads):
        sl = slice(h * head_dim, (h + 1) * head_dim)
        scores = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(head_dim)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, :], float("-inf"))
        out[..., sl] = scores.softmax(-1) @ v[..., sl]
    return attn.proj(out)


# -------------------------------------------------------------- transformer


def test_self_attention_equals_naive_reference():
    torch.manual_seed(0)
    attn = SelfAttention(DIM, HEADS)
    x = torch.randn(3, 7, DIM)
    with torch.no_grad():
        torch.testing.assert_close(
            attn(x), _naive_attention(attn, x), atol=1e-5, rtol=0
        )
        key_mask = torch.tensor(
            [[True] * 7, [True] * 4 + [False] * 3, [True] + [False] * 6]
        )
        torch.testing.assert_close(
            attn(x, key_mask), _naive_attention(attn, x, key_mask), atol=1e-5, rtol=0
        )
        # The mask actually changes the result.
        assert (attn(x, key_mask)[1] - attn(x)[1]).abs().max() > 1e-3


def test_explicit_attention_matches_fused_sdpa_values_and_gradients():
    """The CPU fast path against PyTorch's fused kernel, fp32 and bf16 autocast."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 64, 64, requires_grad=True) for _ in range(3))
    key_mask = torch.ones(2, 64, dtype=torch.bool)
    key_mask[1, 40:] = False
    for mask in (None, key_mask):
        attn_mask = None if mask is None else mask[:, None, None, :]
        fast = explicit_attention(q, k, v, mask)
        ref = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask
        )
        torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
        grad = torch.randn_like(ref)
        fast_grads = torch.autograd.grad(fast, (q, k, v), grad)
        ref_grads = torch.autograd.grad(ref, (q, k, v), grad)
        for a, b in zip(fast_grads, ref_grads, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            qb, kb, vb = (t.bfloat16() for t in (q, k, v))
            fast16 = explicit_attention(qb, kb, vb, mask)
        assert fast16.dtype == torch.bfloat16
        # bf16 keeps 8 bits of mantissa: about 1e-2 on values of order 1.
        torch.testing.assert_close(fast16.float(), ref, atol=3e-2, rtol=0)


def test_key_mask_makes_real_tokens_independent_of_padding():
    torch.manual_seed(0)
    block = Block(DIM, HEADS).eval()
    stack = TransformerStack(DIM, 2, HEADS).eval()
    x = torch.randn(2, 9, DIM)
    key_mask = torch.tensor([[True] * 9, [True] * 5 + [False] * 4])
    y = x.clone()
    y[1, 5:] = 100.0 * torch.randn(4, DIM)
    with torch.no_grad():
        for module in (block.attn, block, stack):
            a, b = module(x, key_mask), module(y, key_mask)
            torch.testing.assert_close(a[:, :5], b[:, :5], atol=1e-5, rtol=0)
            torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=0)
            # Without the mask the padding leaks into the real tokens.
            assert (module(x)[1, :5] - module(y)[1, :5]).abs().max() > 1e-3


def test_drop_path():
    x = torch.ones(200, 3, 4)
    drop = DropPath(0.5)
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(DropPath(0.0).train()(x), x)
    torch.manual_seed(0)
    out = drop.train()(x)
    per_sample = out.flatten(1)
    # Each sample is either dropped entirely or kept and scaled by 1 / keep.
    assert torch.all((per_sample == 0).all(1) | (per_sample == 2.0).all(1))
    dropped = int((per_sample == 0).all(1).sum())
    assert 60 < dropped < 140
    # Unbiased in expectation.
    assert abs(float(out.mean()) - 1.0) < 0.2


def test_drop_path_rates_rise_linearly():
    stack = TransformerStack(DIM, 3, HEADS, drop_path=0.1)
    rates = [block.drop_path.prob for block in stack.blocks]
    assert rates == pytest.approx([0.0, 0.05, 0.1])
    single = TransformerStack(DIM, 1, HEADS, drop_path=0.1)
    assert single.blocks[0].drop_path.prob == 0.0


def test_block_is_pre_norm_residual():
    torch.manual_seed(0)
    block = Block(DIM, HEADS).eval()
    x = torch.randn(2, 5, DIM)
    with torch.no_grad():
        h = x + _naive_attention(block.attn, block.norm1(x))
        expected = h + block.mlp(block.norm2(h))
        torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=0)
    assert block.mlp[0].out_features == 4 * DIM
    assert isinstance(block.mlp[1], torch.nn.GELU)


def test_transformer_stack_hiddens():
    torch.manual_seed(0)
    depth = 2
    stack = TransformerStack(DIM, depth, HEADS).eval()
    x = torch.randn(2, 6, DIM)
    with torch.no_grad():
        out, hiddens = stack(x, return_hiddens=True)
        assert len(hiddens) == depth + 1
        assert torch.equal(hiddens[0], x)
        h1 = stack.blocks[0](x)
        h2 = stack.blocks[1](h1)
        torch.testing.assert_close(hiddens[1], h1)
        torch.testing.assert_close(hiddens[-1], stack.norm(h2))
        assert torch.equal(hiddens[-1], out)
        torch.testing.assert_close(stack(x), out)
    # After the final LayerNorm every token has ~zero mean and unit variance.
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 6), atol=1e-5, rtol=0)


def test_init_vit_weights():
    torch.manual_seed(0)
    layer = torch.nn.Linear(256, 512)
    norm = torch.nn.LayerNorm(8)
    with torch.no_grad():
        norm.weight.fill_(3.0)
    layer.apply(init_vit_weights)
    norm.apply(init_vit_weights)
    weight = layer.weight.detach()
    assert float(weight.std()) == pytest.approx(0.02, rel=0.05)
    assert abs(float(weight.mean())) < 1e-3
    assert torch.all(layer.bias == 0)
    assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)


# ------------------------------------------------------------------ encoder


def _tiny_encoder(seed=0, depth=2):
    torch.manual_seed(seed)
    return ViTEncoder(n_mels=32, embed_dim=DIM, depth=depth, num_heads=HEADS).eval()


def test_encoder_output_independent_of_batch_partner():
    sr = 16000
    frontend = LogMel(n_mels=32)
    enc = _tiny_encoder()
    gen = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(2, 10 * sr, generator=gen)
    wav[1, 5 * sr :] = 0.0
    lengths = torch.tensor([10 * sr, 5 * sr])
    with torch.no_grad():
        feats = frontend(wav, lengths)
        out, valid = enc(feats, frontend.num_frames(lengths))
        alone_out, alone_valid = enc(frontend(wav[1:, : 5 * sr]))
        long_out, _ = enc(frontend(wav[:1]))
    # 10 s: 257 frames -> 16 columns x 2 rows; 5 s: 129 frames -> 8 columns.
    assert out.shape == (2, 32, DIM)
    assert valid.sum(1).tolist() == [32, 16]
    assert alone_out.shape == (1, 16, DIM) and bool(alone_valid.all())
    torch.testing.assert_close(out[1, :16], alone_out[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0], long_out[0], atol=1e-5, rtol=0)


def test_encoder_forward_tokens_and_encode_visible_agree_with_forward():
    enc = _tiny_encoder()
    torch.manual_seed(1)
    feats = torch.randn(2, 32, 64)
    with torch.no_grad():
        out, valid = enc(feats)
        assert bool(valid.all())
        patches = enc.grid.patchify(feats)
        idx = torch.arange(patches.shape[1]).expand(2, -1)
        torch.testing.assert_close(
            encode_visible(enc, patches, idx, None), out, atol=1e-5, rtol=0
        )
        # A subset of tokens keeps its true positions: equal to a manual pipeline.
        sub = torch.tensor([[0, 3, 6], [1, 2, 7]])
        tokens = enc.patch_embed(torch.stack([patches[b, sub[b]] for b in range(2)]))
        coords_pos = enc.positions(sub)
        expected = enc.blocks(tokens + coords_pos)
        torch.testing.assert_close(
            encode_visible(enc, patches, sub, None), expected, atol=1e-5, rtol=0
        )


def test_encoder_return_hiddens():
    enc = _tiny_encoder(depth=2)
    torch.manual_seed(1)
    feats = torch.randn(2, 32, 48)
    with torch.no_grad():
        out, _ = enc(feats, torch.tensor([48, 32]))
        hiddens, valid = enc(feats, torch.tensor([48, 32]), return_hiddens=True)
    assert len(hiddens) == 3
    assert torch.equal(hiddens[-1], out)
    assert valid.sum(1).tolist() == [6, 4]


def test_pool_frames_is_mean_over_frequency_rows():
    enc = ViTEncoder(n_mels=64, embed_dim=DIM, depth=1, num_heads=HEADS)  # 4 rows
    torch.manual_seed(0)
    tokens = torch.randn(2, 4 * 5, DIM)
    pooled = enc.pool_frames(tokens)
    assert pooled.shape == (2, 5, DIM)
    rows = enc.grid.freq_rows
    for col in range(5):
        manual = sum(tokens[:, col * rows + r] for r in range(rows)) / rows
        torch.testing.assert_close(pooled[:, col], manual, atol=1e-6, rtol=0)


def _num_params(module):
    return sum(p.numel() for p in module.parameters())


def test_paper_size_parameter_counts():
    with torch.device("meta"):  # shapes only: fast
        encoder = ViTEncoder()
        predictor = Predictor()
    assert 85.0e6 <= _num_params(encoder) <= 85.5e6
    assert 34.5e6 <= _num_params(predictor) <= 35.5e6
    assert encoder.grid.freq_rows == 8
    assert encoder.patch_embed.proj.weight.shape == (768, 1, 16, 16)
    assert len(encoder.blocks.blocks) == 12
    assert encoder.blocks.blocks[0].attn.num_heads == 12
    assert encoder.blocks.blocks[-1].drop_path.prob == pytest.approx(0.1)
    assert encoder.blocks.norm.eps == 1e-5
    assert len(predictor.blocks.blocks) == 4
    assert predictor.heads.heads[0].out_features == 8192
