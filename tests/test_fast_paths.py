"""The fast paths of a training step against the plain ones.

``compile_blocks`` (``torch.compile`` of every transformer block) must give the
eager values and gradients, across batches whose visible-token counts differ; on
a GPU, a training step must never make the host wait for the device.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

import copy

import pytest
import torch

from bestrq2_lobes.model.device_copy import to_device
from bestrq2_lobes.model.encoder import ViTEncoder
from bestrq2_lobes.model.frontend import LogMel
from bestrq2_lobes.model.masking import MaskSampler
from bestrq2_lobes.model.predictor import Predictor
from bestrq2_lobes.model.pretraining import BestRQ2, masked_prediction_loss
from bestrq2_lobes.model.quantizer import RandomProjectionQuantizer
from bestrq2_lobes.model.transformer import compile_blocks


def _tiny_model(drop_path: float) -> BestRQ2:
    torch.manual_seed(0)
    return BestRQ2(
        LogMel(n_mels=32),
        ViTEncoder(n_mels=32, embed_dim=32, depth=2, num_heads=4, drop_path=drop_path),
        Predictor(32, 32, depth=1, num_heads=4, freq_rows=2, codebook_size=64),
        RandomProjectionQuantizer(256, 16, 64),
        MaskSampler((0.4, 0.6)),
    )


def _loss_and_grads(model, wav, lens, seed):
    out = model(wav, lens, generator=torch.Generator().manual_seed(seed))
    loss, _ = masked_prediction_loss(out)
    loss.backward()
    grads = {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads, out.plan.visible_idx.shape[1]


def test_compiled_blocks_match_eager_values_and_gradients():
    torch._dynamo.reset()
    try:
        # drop-path rates differ per block (each one a cache entry); eval mode
        # keeps the comparison deterministic while gradients still flow.
        eager = _tiny_model(drop_path=0.2).eval()
        compiled = copy.deepcopy(eager)
        assert compile_blocks(compiled) == 3
        assert torch._dynamo.config.recompile_limit >= 2 * 3 + 8
        torch.manual_seed(1)
        wav = torch.randn(2, 3 * 16000)
        lens = torch.tensor([1.0, 0.7])
        visible_counts = set()
        for seed in (0, 1, 2):  # different mask ratios: different token counts
            ref_loss, ref_grads, visible = _loss_and_grads(eager, wav, lens, seed)
            loss, grads, _ = _loss_and_grads(compiled, wav, lens, seed)
            visible_counts.add(visible)
            torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
            assert grads.keys() == ref_grads.keys()
            for name, grad in grads.items():
                torch.testing.assert_close(
                    grad, ref_grads[name], atol=1e-5, rtol=1e-4, msg=name
                )
        assert len(visible_counts) > 1
    finally:
        torch._dynamo.reset()


def test_to_device_keeps_values():
    x = torch.arange(5)
    assert to_device(x, "cpu") is x
    if torch.cuda.is_available():
        assert torch.equal(to_device(x, "cuda").cpu(), x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_step_never_synchronizes_on_cuda():
    model = _tiny_model(drop_path=0.1).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), fused=True)
    wav = torch.randn(4, 3 * 16000, device="cuda")
    lens = torch.tensor([1.0, 0.9, 0.8, 0.5])  # padded clips: the key-mask path

    def step(seed):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(wav, lens, generator=torch.Generator().manual_seed(seed))
            loss, _ = masked_prediction_loss(out)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(0)  # first use: allocations, kernel selection
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step(1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
