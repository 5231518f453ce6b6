"""Tests for bestrq2_lobes.model.quantizer.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

import math

import pytest
import torch

from bestrq2_lobes.model.quantizer import RandomProjectionQuantizer

INPUT_DIM, CODE_DIM, CODES = 256, 16, 64


def _inputs(shape=(3, 50), seed=0):
    gen = torch.Generator().manual_seed(seed)
    # Log-mel-like values: an offset and a spread in dB.
    return -40.0 + 15.0 * torch.randn(*shape, INPUT_DIM, generator=gen)


def _brute_force(quantizer, x):
    """Full L2 distance between normalised projections and normalised codes."""
    flat = x.reshape(-1, quantizer.input_dim).double()
    codes = []
    for q in range(quantizer.num_codebooks):
        proj = flat @ quantizer.projection[q].double()
        proj = proj / proj.norm(dim=-1, keepdim=True)
        book = quantizer.codebooks[q].double()
        book = book / book.norm(dim=-1, keepdim=True)
        dist = ((proj[:, None, :] - book[None, :, :]) ** 2).sum(-1)
        codes.append(dist.argmin(dim=-1))
    return torch.stack(codes, -1).reshape(*x.shape[:-1], quantizer.num_codebooks)


@pytest.mark.parametrize("num_codebooks", [1, 3])
def test_equals_brute_force_nearest_code(num_codebooks):
    quantizer = RandomProjectionQuantizer(
        INPUT_DIM, CODE_DIM, CODES, num_codebooks=num_codebooks, seed=0
    )
    x = _inputs()
    codes = quantizer(x)
    assert codes.shape == (3, 50, num_codebooks)
    assert codes.dtype == torch.long
    assert torch.equal(codes, _brute_force(quantizer, x))
    assert codes.min() >= 0 and codes.max() < CODES
    # Codebooks use different projections: their codes are not the same.
    if num_codebooks > 1:
        assert not torch.equal(codes[..., 0], codes[..., 1])


def test_buffers_shapes_and_distribution():
    quantizer = RandomProjectionQuantizer(INPUT_DIM, CODE_DIM, CODES, 2, seed=0)
    assert quantizer.projection.shape == (2, INPUT_DIM, CODE_DIM)
    assert quantizer.codebooks.shape == (2, CODES, CODE_DIM)
    torch.testing.assert_close(
        quantizer.codebooks.norm(dim=-1), torch.ones(2, CODES), atol=1e-5, rtol=0
    )
    bound = math.sqrt(6.0 / (INPUT_DIM + CODE_DIM))
    assert quantizer.projection.abs().max() <= bound
    assert quantizer.projection.abs().max() > 0.9 * bound  # Xavier-uniform spread
    assert not any(p.requires_grad for p in quantizer.parameters())
    assert len(list(quantizer.parameters())) == 0


def test_codes_are_spread_over_the_codebook():
    quantizer = RandomProjectionQuantizer(INPUT_DIM, CODE_DIM, CODES, seed=0)
    gen = torch.Generator().manual_seed(1)
    codes = quantizer(torch.randn(2000, INPUT_DIM, generator=gen))
    assert codes.unique().numel() > CODES // 2


def test_seeded_construction():
    a = RandomProjectionQuantizer(INPUT_DIM, CODE_DIM, CODES, 2, seed=5)
    torch.manual_seed(123)  # the global RNG must not matter
    b = RandomProjectionQuantizer(INPUT_DIM, CODE_DIM, CODES, 2, seed=5)
    c = RandomProjectionQuantizer(INPUT_DIM, CODE_DIM, CODES, 2, seed=6)
    assert torch.equal(a.projection, b.projection)
    assert torch.equal(a.codebooks, b.codebooks)
    assert not torch.equal(a.projection, c.projection)
    assert not torch.equal(a.codebooks, c.codebooks)
    x = _inputs()
    assert torch.equal(a(x), b(x))
    assert not torch.equal(a(x), c(x))


def test_chunk_size_does_not_change_codes():
    x = _inputs((7, 31))
    small = RandomProjectionQuantizer(INPUT_DIM, CODE_DIM, CODES, 3, chunk_size=5)
    large = RandomProjectionQuantizer(INPUT_DIM, CODE_DIM, CODES, 3, chunk_size=10**6)
    assert torch.equal(small(x), large(x))
    # Empty input works.
    assert small(x[:0]).shape == (0, 31, 3)


def test_fp32_and_same_codes_under_bf16_autocast():
    quantizer = RandomProjectionQuantizer(INPUT_DIM, CODE_DIM, CODES, 2, seed=0)
    x = _inputs()
    reference = quantizer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        codes = quantizer(x)
        from_bf16 = quantizer(x.bfloat16())
    assert torch.equal(codes, reference)
    # A bf16 input is quantized as its fp32 value.
    assert torch.equal(from_bf16, quantizer(x.bfloat16().float()))
    assert quantizer.projection.dtype == torch.float32


def test_state_dict_round_trip():
    a = RandomProjectionQuantizer(INPUT_DIM, CODE_DIM, CODES, 2, seed=0)
    state = a.state_dict()
    assert set(state) == {"projection", "codebooks"}
    b = RandomProjectionQuantizer(INPUT_DIM, CODE_DIM, CODES, 2, seed=1)
    x = _inputs()
    assert not torch.equal(a(x), b(x))
    b.load_state_dict(state)
    assert torch.equal(b.projection, a.projection)
    assert torch.equal(b.codebooks, a.codebooks)
    assert torch.equal(a(x), b(x))


def test_no_gradient():
    quantizer = RandomProjectionQuantizer(INPUT_DIM, CODE_DIM, CODES, seed=0)
    x = _inputs((4,)).requires_grad_(True)
    codes = quantizer(x)
    assert codes.grad_fn is None
    assert not codes.requires_grad
    assert torch.equal(codes, quantizer(x.detach()))
