"""Tests for bestrq2_lobes.model.pretraining (BestRQ2, OneStageBestRQ, the loss).

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

import math

import pytest
import torch
from torch.nn import functional as F

from bestrq2_lobes.model.encoder import ViTEncoder
from bestrq2_lobes.model.frontend import LogMel
from bestrq2_lobes.model.masking import MaskSampler
from bestrq2_lobes.model.predictor import Predictor
from bestrq2_lobes.model.pretraining import (
    BestRQ2,
    OneStageBestRQ,
    OneStageHead,
    PretrainOutput,
    masked_prediction_loss,
)
from bestrq2_lobes.model.quantizer import RandomProjectionQuantizer
from bestrq2_lobes.model.tokens import gather_tokens

SR = 16000
DIM, HEADS, MELS, CODES = 32, 4, 32, 64
ROWS = MELS // 16


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: thread start-up dominates, and a busy 2-core box makes it worse."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(kind="bestrq2", ratio=(0.5, 0.5), shared=True, codebooks=1, seed=0):
    torch.manual_seed(seed)
    frontend = LogMel(n_mels=MELS)
    encoder = ViTEncoder(
        n_mels=MELS, embed_dim=DIM, depth=1, num_heads=HEADS, drop_path=0.0
    )
    quantizer = RandomProjectionQuantizer(256, 16, CODES, num_codebooks=codebooks)
    sampler = MaskSampler(ratio, shared=shared)
    if kind == "bestrq2":
        predictor = Predictor(
            DIM,
            DIM,
            depth=1,
            num_heads=HEADS,
            freq_rows=ROWS,
            codebook_size=CODES,
            num_codebooks=codebooks,
        )
        return BestRQ2(frontend, encoder, predictor, quantizer, sampler)
    head = OneStageHead(DIM, CODES, codebooks)
    return OneStageBestRQ(frontend, encoder, head, quantizer, sampler)


def _wav(batch=2, seconds=3.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, int(seconds * SR), generator=gen)


def _structured_wav(batch=2, seconds=4.0, seed=0):
    """Noise with a gain jumping over 40 dB every 0.25 s, plus a tone: varied codes."""
    gen = torch.Generator().manual_seed(seed)
    n = int(seconds * SR)
    gains = 10 ** (-4 * torch.rand(batch, -(-n // 4000), generator=gen))
    envelope = gains.repeat_interleave(4000, 1)[:, :n]
    freq = 100 + 6000 * torch.rand(batch, 1, generator=gen)
    tone = 0.05 * torch.sin(2 * math.pi * freq * torch.arange(n) / SR)
    return envelope * torch.randn(batch, n, generator=gen) + tone


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _stack_input_recorder(model):
    seen = []

    def hook(module, args, kwargs):
        seen.append((args[0].detach().clone(), args[1] if len(args) > 1 else None))

    handle = model.encoder.blocks.register_forward_pre_hook(hook, with_kwargs=True)
    return seen, handle


def _patches(model, wav, wav_lens=None):
    lengths = None
    if wav_lens is not None:
        lengths = (wav_lens * wav.shape[1]).round().long()
    return model.encoder.grid.patchify(model.frontend(wav, lengths))


# ------------------------------------------------------------------ BestRQ2


def test_bestrq2_encoder_sees_only_visible_tokens():
    model = _model("bestrq2").eval()
    wav = _wav(2, 3.0)  # 77 frames -> 4 columns x 2 rows = 8 tokens
    seen, handle = _stack_input_recorder(model)
    with torch.no_grad():
        out = model(wav, generator=_gen())
    handle.remove()
    # The predictor has its own stack: only the encoder's is recorded.
    assert len(seen) == 1
    x, key_mask = seen[0]
    plan = out.plan
    assert plan.masked.shape == (2, 8)
    assert x.shape == (2, 8 - 4, DIM)
    assert plan.visible_idx.shape == (2, 4)
    assert key_mask is None
    # The encoder input is the visible patches' embeddings plus their positions.
    patches = _patches(model, wav)
    expected = model.encoder.patch_embed(
        gather_tokens(patches, plan.visible_idx)
    ) + model.encoder.positions(plan.visible_idx)
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)
    assert out.logits[0].shape == (2, 4, CODES)
    assert out.target_mask is None


def test_bestrq2_targets_equal_quantized_masked_patches():
    model = _model("bestrq2", codebooks=2)
    wav = _wav(2, 3.0, seed=1)
    wav_lens = torch.tensor([1.0, 0.6])
    with torch.no_grad():
        out = model(wav, wav_lens, generator=_gen(3))
        patches = _patches(model, wav, wav_lens)
    expected = model.quantizer(patches)  # (B, N, 2)
    plan = out.plan
    assert out.targets.shape == (2, plan.masked_idx.shape[1], 2)
    for b in range(2):
        assert torch.equal(out.targets[b], expected[b, plan.masked_idx[b]])
    assert out.targets.grad_fn is None


def test_padding_is_never_a_target_or_visible():
    model = _model("bestrq2", ratio=(0.4, 0.6), shared=False)
    wav = _wav(3, 4.0, seed=2)  # 103 frames -> 6 columns -> 12 tokens
    wav_lens = torch.tensor([1.0, 0.5, 0.3])
    out = model(wav, wav_lens, generator=_gen(1))
    frames = model.frontend.num_frames((wav_lens * wav.shape[1]).round().long())
    valid = model.encoder.grid.valid_tokens(frames)
    assert valid.tolist() == [12, 6, 2]
    assert torch.equal(out.valid_tokens, valid)
    plan = out.plan
    assert out.target_mask is not None
    counts = out.target_mask.sum(1)
    assert torch.equal(counts, plan.masked.sum(1))
    for b in range(3):
        k = int(counts[b])
        assert k >= 1
        # Real target slots first, then padding slots.
        assert out.target_mask[b, :k].all() and not out.target_mask[b, k:].any()
        assert (plan.masked_idx[b, :k] < valid[b]).all()
        vis = plan.visible_idx[b][plan.visible_valid[b]]
        assert (vis < valid[b]).all()
        assert not plan.masked[b, int(valid[b]) :].any()
    assert out.audio_seconds == pytest.approx(4.0 * 1.8)
    loss, _ = masked_prediction_loss(out)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("kind", ["bestrq2", "onestage"])
def test_masked_content_does_not_leak_into_logits(kind):
    """Changing the spectrogram under masked tokens changes targets, not logits."""
    model = _model(kind).eval()
    wav = _wav(2, 3.0, seed=4)
    with torch.no_grad():
        base = model(wav, generator=_gen(5))
    plan = base.plan

    def region_hook(tokens_of):
        def hook(module, args, feats):
            feats = feats.clone()
            for b in range(feats.shape[0]):
                for n in tokens_of(b):
                    row, col = n % ROWS, n // ROWS
                    feats[b, row * 16 : (row + 1) * 16, col * 16 : (col + 1) * 16] += (
                        30.0 * torch.randn(16, 16)
                    )
            return feats

        return hook

    masked_of = lambda b: plan.masked_idx[b].tolist()  # noqa: E731
    visible_of = lambda b: plan.visible_idx[b][:1].tolist()  # noqa: E731
    torch.manual_seed(0)
    handle = model.frontend.register_forward_hook(region_hook(masked_of))
    with torch.no_grad():
        changed = model(wav, generator=_gen(5))
    handle.remove()
    assert torch.equal(changed.plan.masked, plan.masked)
    torch.testing.assert_close(changed.logits[0], base.logits[0], atol=1e-5, rtol=0)
    assert not torch.equal(changed.targets, base.targets)

    handle = model.frontend.register_forward_hook(region_hook(visible_of))
    with torch.no_grad():
        changed = model(wav, generator=_gen(5))
    handle.remove()
    assert (changed.logits[0] - base.logits[0]).abs().max() > 1e-4
    assert torch.equal(changed.targets, base.targets)


def test_predictor_input_is_projected_context_then_mask_queries():
    model = _model("bestrq2").eval()
    wav = _wav(2, 3.0, seed=9)
    inputs, contexts = [], []
    h1 = model.predictor.blocks.register_forward_pre_hook(
        lambda m, args: inputs.append(args[0].detach().clone())
    )
    h2 = model.encoder.blocks.register_forward_hook(
        lambda m, args, out: contexts.append(out.detach().clone())
    )
    with torch.no_grad():
        out = model(wav, torch.tensor([1.0, 0.5]), generator=_gen(4))
    h1.remove()
    h2.remove()
    plan = out.plan
    visible, masked = plan.visible_idx.shape[1], plan.masked_idx.shape[1]
    x = inputs[0]
    assert x.shape == (2, visible + masked, DIM)
    pred = model.predictor
    with torch.no_grad():
        # Context tokens: a linear projection only, no position added again.
        torch.testing.assert_close(
            x[:, :visible], pred.input_proj(contexts[0]), atol=1e-5, rtol=0
        )
        table = pred.position(8)
        queries = pred.mask_token[0] + table[plan.masked_idx]
        torch.testing.assert_close(x[:, visible:], queries, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["bestrq2", "onestage"])
def test_bf16_autocast_forward(kind):
    model = _model(kind).eval()
    wav = _wav(2, 3.0, seed=10)
    wav_lens = torch.tensor([1.0, 0.7])
    with torch.no_grad():
        ref = model(wav, wav_lens, generator=_gen(1))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(wav, wav_lens, generator=_gen(1))
            loss, _ = masked_prediction_loss(out)
    assert out.logits[0].dtype == torch.bfloat16
    assert torch.equal(out.targets, ref.targets)  # fp32 front end and quantizer
    assert torch.equal(out.plan.masked, ref.plan.masked)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.testing.assert_close(
        out.logits[0].float(), ref.logits[0], atol=0.05, rtol=0.05
    )


# ------------------------------------------------------------ one-stage model


def test_onestage_encoder_sees_all_tokens_with_mask_token():
    model = _model("onestage").eval()
    wav = _wav(2, 3.0, seed=6)
    seen, handle = _stack_input_recorder(model)
    with torch.no_grad():
        out = model(wav, generator=_gen(2))
    handle.remove()
    assert len(seen) == 1
    x, key_mask = seen[0]
    assert x.shape == (2, 8, DIM)
    assert key_mask is None
    plan = out.plan
    positions = model.encoder.positions(torch.arange(8).expand(2, -1))
    embedded = model.encoder.patch_embed(_patches(model, wav))
    mask_token = model.head.mask_token[0, 0]
    for b in range(2):
        for n in range(8):
            if plan.masked[b, n]:
                expected = mask_token + positions[b, n]
            else:
                expected = embedded[b, n] + positions[b, n]
            torch.testing.assert_close(x[b, n], expected, atol=1e-5, rtol=0)
    assert plan.masked.sum().item() == 8
    assert out.logits[0].shape == (2, 4, CODES)


def test_onestage_padded_batch_uses_key_mask():
    model = _model("onestage").eval()
    wav = _wav(2, 3.0, seed=7)
    seen, handle = _stack_input_recorder(model)
    with torch.no_grad():
        out = model(wav, torch.tensor([1.0, 0.5]), generator=_gen(0))
    handle.remove()
    x, key_mask = seen[0]
    assert x.shape == (2, 8, DIM)
    assert key_mask.tolist() == [[True] * 8, [True] * 4 + [False] * 4]
    assert out.target_mask.sum(1).tolist() == [4, 2]


# ----------------------------------------------------------------- training


@pytest.mark.parametrize("kind", ["bestrq2", "onestage"])
def test_tiny_model_overfits_fixed_batch(kind):
    model = _model(kind, seed=1).train()
    wav = _structured_wav(2, 4.0, seed=8)
    wav_lens = torch.tensor([1.0, 0.8])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):
        out = model(wav, wav_lens, generator=_gen(0))  # same mask every step
        loss, stats = masked_prediction_loss(out)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    # Several distinct targets, so the model cannot just learn one bias.
    assert out.targets[out.target_mask].unique().numel() >= 4
    assert float(stats["perplexity"]) > 3.0
    assert losses[0] == pytest.approx(math.log(CODES), abs=0.5)
    assert losses[-1] < losses[20] < losses[0]
    assert losses[-1] < losses[0] - 1.2
    # The quantizer stays frozen.
    assert not any(p.requires_grad for p in model.quantizer.parameters())


# --------------------------------------------------------------------- loss


def test_loss_with_target_mask_equals_ce_on_valid_subset():
    gen = _gen(0)
    logits = [torch.randn(2, 5, 16, generator=gen) for _ in range(2)]
    targets = torch.randint(0, 16, (2, 5, 2), generator=gen)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    out = PretrainOutput(logits, targets, mask, None, None, 0.0)
    loss, _ = masked_prediction_loss(out)
    expected = torch.stack(
        [F.cross_entropy(logits[q][mask], targets[..., q][mask]) for q in range(2)]
    ).mean()
    torch.testing.assert_close(loss, expected)
    # Garbage in the padded slots does not matter.
    logits[0][1, 2:] = 1e4
    targets[1, 2:] = 0
    assert torch.equal(masked_prediction_loss(out)[0], loss)
    # Without a mask all slots count, so the loss changes.
    out_all = PretrainOutput(logits, targets, None, None, None, 0.0)
    assert not torch.allclose(masked_prediction_loss(out_all)[0], loss)


def test_accuracy_and_perplexity_hand_made():
    # Predictions (argmax): 0, 1, 1, 2; targets: 0, 0, 1, 3.
    logits = torch.full((1, 4, 4), -5.0)
    for n, code in enumerate([0, 1, 1, 2]):
        logits[0, n, code] = 5.0
    targets = torch.tensor([[[0], [0], [1], [3]]])
    out = PretrainOutput([logits], targets, None, None, None, 0.0)
    _, stats = masked_prediction_loss(out)
    assert float(stats["accuracy"]) == pytest.approx(0.5)
    # Codes used: 0 (1/2), 1 (1/4), 3 (1/4): entropy 1.5 ln 2.
    assert float(stats["perplexity"]) == pytest.approx(2**1.5, rel=1e-5)
    # The last slot is padding: accuracy 2/3, codes 0 (2/3) and 1 (1/3).
    mask = torch.tensor([[True, True, True, False]])
    out = PretrainOutput([logits], targets, mask, None, None, 0.0)
    _, stats = masked_prediction_loss(out)
    assert float(stats["accuracy"]) == pytest.approx(2 / 3)
    p = torch.tensor([2 / 3, 1 / 3])
    assert float(stats["perplexity"]) == pytest.approx(
        float(torch.exp(-(p * p.log()).sum())), rel=1e-5
    )
    assert not stats["accuracy"].requires_grad


# ------------------------------------------------------------- construction


def test_min_seconds_paper_preset():
    torch.manual_seed(0)
    model = BestRQ2(
        LogMel(),
        ViTEncoder(embed_dim=DIM, depth=1, num_heads=HEADS),
        Predictor(DIM, DIM, depth=1, num_heads=HEADS, freq_rows=8, codebook_size=64),
        RandomProjectionQuantizer(256, 16, 64),
        MaskSampler((0.5, 0.5)),
    )
    assert model.min_seconds == max(15 * 625, 1025) / 16000
    shortest = round(model.min_seconds * SR)
    out = model(_wav(1, shortest / SR))
    assert out.valid_tokens.tolist() == [8]
    assert out.logits[0].shape == (1, 4, 64)
    with pytest.raises(ValueError):
        model(_wav(1, (shortest - 1) / SR))


def test_mismatched_components_are_rejected():
    with pytest.raises(ValueError):
        OneStageBestRQ(
            LogMel(n_mels=MELS),
            ViTEncoder(n_mels=MELS, embed_dim=DIM, depth=1, num_heads=HEADS),
            OneStageHead(DIM, CODES),
            RandomProjectionQuantizer(128, 16, CODES),
            MaskSampler(),
        )
    with pytest.raises(ValueError):
        OneStageBestRQ(
            LogMel(n_mels=64),
            ViTEncoder(n_mels=MELS, embed_dim=DIM, depth=1, num_heads=HEADS),
            OneStageHead(DIM, CODES),
            RandomProjectionQuantizer(256, 16, CODES),
            MaskSampler(),
        )
