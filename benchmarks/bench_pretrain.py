"""One training step of the paper configuration, three models side by side.

Measured in one process on batches of 10 s clips: BEST-RQ-2 (two-step), the
one-stage ViT baseline, and SpeechBrain's own BEST-RQ as its LibriSpeech recipe
builds it (Fbank + sentence normalisation, ``ConvolutionFrontEnd``, 12-layer
Conformer ``TransformerASR`` with d_model 576, linear head, its
``RandomProjectionQuantizer``; 89 M parameters against our 85 M encoder).

For each: median step time (forward, backward, AdamW), audio seconds and tokens
per second, model FLOP/s (counted analytically for ours; with PyTorch's FLOP
counter for SpeechBrain's, whose Conformer has no closed form here), MFU = model
FLOP/s over a large matmul's FLOP/s measured in the same process and precision,
the share of the step spent outside the networks (front end, masking, quantizer,
gathers) and the memory one step adds on top of the weights and optimiser state.
Variants are timed in interleaved rounds, so slow phases of the machine hit all;
in each round both of our variants draw the same mask (ratio from U(0.4, 0.6)), so
their ratio compares equal work, and the median over rounds spans the ratios.

    python benchmarks/bench_pretrain.py --device cpu --json --compile
    python benchmarks/bench_pretrain.py --device cuda --precision bf16 --batch 64
    python benchmarks/bench_pretrain.py --device cuda --batch 256 --compile \
        --without_speechbrain

``--compile`` compiles each transformer stack of our models
(``bestrq2_lobes.model.transformer.compile_blocks``) and each Conformer layer of
SpeechBrain's; the compilation happens in the untimed steps (on a CPU without a
C++ compiler everything stays eager, said in one line). ``--precision auto``
(the default) is bf16 on CUDA with bf16 and on CPUs with AMX or AVX512-BF16,
fp32 elsewhere; the JSON names the CPU (model, torch's capability, AMX,
AVX512-BF16) and the precision chosen.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    autocast,
    choose_precision,
    common_arguments,
    current_memory_mb,
    device_name,
    machine_fields,
    matmul_flops_per_second,
    median_time,
    peak_memory_mb,
    print_json,
    reset_peak_memory,
    sync,
    transformer_flops,
)

from bestrq2_lobes.model.encoder import ViTEncoder  # noqa: E402
from bestrq2_lobes.model.frontend import LogMel  # noqa: E402
from bestrq2_lobes.model.masking import MaskSampler  # noqa: E402
from bestrq2_lobes.model.predictor import Predictor  # noqa: E402
from bestrq2_lobes.model.pretraining import (  # noqa: E402
    BestRQ2,
    OneStageBestRQ,
    OneStageHead,
    masked_prediction_loss,
)
from bestrq2_lobes.model.quantizer import RandomProjectionQuantizer  # noqa: E402
from bestrq2_lobes.model.transformer import compile_blocks  # noqa: E402
from bestrq2_lobes.training.cpu_memory import retain_freed_memory  # noqa: E402
from bestrq2_lobes.training.precision import can_compile  # noqa: E402

SR = 16000
CLIP = 10.0
CODES = 8192


def build_ours(kind: str, device):
    """The paper configuration of the two-step model or the one-stage baseline."""
    common = dict(
        frontend=LogMel(),
        encoder=ViTEncoder(),
        quantizer=RandomProjectionQuantizer(seed=42),
        mask_sampler=MaskSampler((0.4, 0.6)),
    )
    if kind == "two_step":
        model = BestRQ2(predictor=Predictor(), **common)
    else:
        model = OneStageBestRQ(head=OneStageHead(768, CODES), **common)
    return model.to(device)


def our_flops(kind: str, batch: int) -> float:
    """Training FLOPs (3 x forward) of one step at the mean mask ratio (0.5)."""
    tokens, dim, patch = 128, 768, 256
    masked = tokens // 2
    visible = tokens - masked
    if kind == "two_step":
        forward = 2 * visible * patch * dim + transformer_flops(visible, dim, 12)
        forward += 2 * visible * dim * dim + transformer_flops(tokens, dim, 4)
    else:
        forward = 2 * tokens * patch * dim + transformer_flops(tokens, dim, 12)
    forward += 2 * masked * dim * CODES
    return 3 * batch * forward


class SpeechBrainBestRQ(torch.nn.Module):
    """SpeechBrain's BEST-RQ pieces, wired as its LibriSpeech recipe does."""

    def __init__(self):
        super().__init__()
        from speechbrain.lobes.features import Fbank
        from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
        from speechbrain.lobes.models.transformer.TransformerASR import (
            EncoderWrapper,
            TransformerASR,
        )
        from speechbrain.nnet.linear import Linear
        from speechbrain.nnet.quantisers import RandomProjectionQuantizer as SBRQ
        from speechbrain.processing.features import InputNormalization

        self.fbank = Fbank(sample_rate=SR, n_fft=400, n_mels=80)
        self.normalize = InputNormalization(norm_type="sentence")
        self.cnn = ConvolutionFrontEnd(
            input_shape=(8, 10, 80),
            num_blocks=2,
            num_layers_per_block=1,
            out_channels=(128, 32),
            kernel_sizes=(3, 3),
            strides=(2, 2),
            residuals=(False, False),
        )
        transformer = TransformerASR(
            input_size=640,
            tgt_vocab=2048,
            d_model=576,
            nhead=8,
            num_encoder_layers=12,
            num_decoder_layers=0,
            d_ffn=2048,
            dropout=0.1,
            activation=torch.nn.GELU,
            conformer_activation=torch.nn.GELU,
            encoder_module="conformer",
            attention_type="RelPosMHAXL",
            normalize_before=True,
            causal=False,
        )
        self.wrapper = EncoderWrapper(transformer)
        self.quantizer = SBRQ(input_dim=320, cb_dim=16, cb_vocab=CODES)
        self.linear = Linear(input_size=576, n_neurons=CODES)

    def prepare(self, wav, lens, mask):
        """Features, targets and the noised input (the work outside the networks)."""
        feats = self.normalize(self.fbank(wav), lens)
        pad = (-feats.shape[1]) % 4
        feats = torch.nn.functional.pad(feats, (0, 0, 0, pad))
        batch, frames, mels = feats.shape
        mask_idx = mask[::4] // 4
        stacked = feats.view(batch, frames // 4, -1)[:, mask_idx, :]
        targets = self.quantizer(stacked)
        noise = torch.randn(batch, mask.shape[0], mels, device=feats.device) * 0.1
        feats = feats.clone()
        feats[:, mask, :] = noise
        return feats, targets, mask_idx

    def forward(self, wav, lens, mask):
        """Masked prediction loss of one batch."""
        feats, targets, mask_idx = self.prepare(wav, lens, mask)
        enc = self.wrapper(self.cnn(feats), lens)
        logits = self.linear(enc)[:, mask_idx, :]
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, CODES).float(), targets.reshape(-1)
        )


def speechbrain_mask(batch: int, device):
    """SpeechBrain's own mask (made in its collate function, so not timed)."""
    from speechbrain.lobes.models.BESTRQ import compute_mask

    frames = int(CLIP * 100) + 1
    frames += (-frames) % 4
    mask = compute_mask((batch, frames, 80), [frames] * batch, 0.15, 4)
    return torch.as_tensor(mask, device=device)


class Variant:
    """A model's training step, its non-network part, FLOPs and tokens per clip."""

    def __init__(self, name, step, prepare, flops, tokens_per_clip):
        self.name, self.step, self.prepare = name, step, prepare
        self.flops, self.tokens_per_clip = flops, tokens_per_clip
        self.times, self.outside = [], []


ROUND = {"seed": 0}  # set by ``measure`` each round: the mask both variants draw


def ours(kind, args, device):
    """Two-step or one-stage variant of the paper configuration."""
    torch.manual_seed(0)
    model = build_ours(kind, device).train()
    if args.compile:
        compile_blocks(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=True)
    wav = torch.randn(args.batch, int(CLIP * SR), device=device)
    lens = torch.ones(args.batch)

    def step():
        masks = torch.Generator().manual_seed(ROUND["seed"])
        with autocast(device, args.precision):
            loss, _ = masked_prediction_loss(model(wav, lens, generator=masks))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def prepare():
        with autocast(device, args.precision):
            masks = torch.Generator().manual_seed(ROUND["seed"])
            patches, plan, _, _, _ = model.prepare(wav, lens, masks)
            torch.gather(patches, 1, plan.visible_idx[..., None].expand(-1, -1, 256))

    name = "BEST-RQ-2 (two-step)" if kind == "two_step" else "one-stage ViT"
    return Variant(name, step, prepare, our_flops(kind, args.batch), 128)


def speechbrain(args, device):
    """SpeechBrain's BEST-RQ variant."""
    torch.manual_seed(0)
    model = SpeechBrainBestRQ().to(device).train()
    if args.compile:
        for layer in model.wrapper.transformer.encoder.layers:
            layer.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=8e-4, weight_decay=0.01, fused=True)
    wav = torch.randn(args.batch, int(CLIP * SR), device=device)
    lens = torch.ones(args.batch, device=device)
    mask = speechbrain_mask(args.batch, device)

    def step():
        with autocast(device, args.precision):
            loss = model(wav, lens, mask)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step()
    sync(device)

    @torch.no_grad()
    def prepare():
        with autocast(device, args.precision):
            model.prepare(wav, lens, mask)

    tokens = (int(CLIP * 100) + 4) // 4
    return Variant(
        "SpeechBrain BEST-RQ", step, prepare, counter.get_total_flops(), tokens
    )


def build_all(builders, device):
    """Builds each variant and runs its first step, recording the memory it took.

    The memory of a variant is the peak during its first training step minus the
    memory in use before it was built: weights, gradients, optimiser state and
    activations (CUDA: allocated tensors; CPU: resident set size).
    """
    variants = []
    for build in builders:
        sync(device)
        base = current_memory_mb(device)
        reset_peak_memory(device)
        variant = build()
        variant.step()
        sync(device)
        variant.memory = peak_memory_mb(device) - base
        variants.append(variant)
    return variants


def measure(variants, args, device, precision):
    """Interleaved rounds: one matmul, then each variant in turn.

    Interleaving spreads slow phases of the machine (frequency, other load)
    over all variants instead of the first one measured. In its turn, a
    variant takes one untimed step and then the timed one: what a training
    run sees, a step after a step of the same model, and not a step right
    after another model, which leaves caches and the allocator in its own
    state (measured: up to 8 % slower for whichever variant comes next). The
    matmul reference is the best round, so MFU is not flattered by a slow
    moment.
    """
    for variant in variants:
        for _ in range(args.warmup):
            variant.step()
    peaks = []
    for repeat in range(args.repeats):
        ROUND["seed"] = repeat
        peaks.append(matmul_flops_per_second(device, precision))
        for variant in variants:
            variant.times.append(median_time(variant.step, device, 1, warmup=1))
            variant.outside.append(median_time(variant.prepare, device, 1, warmup=0))
    peak = max(peaks)
    rows = []
    for variant in variants:
        seconds = statistics.median(variant.times)
        outside = statistics.median(variant.outside)
        row = {
            "variant": variant.name,
            "step_s": seconds,
            "audio_sec_per_sec": args.batch * CLIP / seconds,
            "tokens_per_sec": args.batch * variant.tokens_per_clip / seconds,
            "model_tflops": variant.flops / seconds / 1e12,
            "mfu": variant.flops / seconds / peak,
            "overhead_share": outside / seconds,
            "memory_mb": variant.memory,
            "step_times_s": [round(t, 4) for t in variant.times],
        }
        print(
            f"{variant.name:>22}: step {seconds:7.3f} s"
            f" | {row['audio_sec_per_sec']:7.1f} audio s/s"
            f" | {row['tokens_per_sec']:8.0f} tok/s"
            f" | {row['model_tflops']:6.2f} TFLOP/s | MFU {row['mfu']:.2f}"
            f" | outside nets {row['overhead_share']:.1%}"
            f" | memory {row['memory_mb']:,.0f} MB",
            flush=True,
        )
        rows.append(row)
    return rows, peak


def main(argv=None):
    parser = common_arguments(__doc__.split("\n\n")[0], "small batch, 3 repeats")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--without_speechbrain",
        action="store_true",
        help="time only our two variants (the two-step/one-stage ratio alone)",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    choose_precision(args, device)
    args.compile = args.compile and can_compile(device)
    if args.batch is None:
        args.batch = 2 if args.quick else (16 if device.type == "cpu" else 64)
    if args.quick:
        args.repeats, args.warmup = 3, 1
    if device.type == "cpu":
        retain_freed_memory()  # as the pretraining recipe does on the CPU
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    print(
        f"device: {device_name(device)} | precision {args.precision} | batch "
        f"{args.batch} x {CLIP:g} s | {args.repeats} interleaved rounds"
        + (" | blocks compiled" if args.compile else ""),
        flush=True,
    )
    builders = [
        lambda: ours("two_step", args, device),
        lambda: ours("one_stage", args, device),
    ]
    if not args.without_speechbrain:
        builders.append(lambda: speechbrain(args, device))
    variants = build_all(builders, device)
    rows, peak = measure(variants, args, device, args.precision)
    two, one = rows[:2]
    print(f"MFU reference: best matmul of the rounds, {peak / 1e12:.2f} TFLOP/s")
    ratios = {"two_step_over_one_stage": two["step_s"] / one["step_s"]}
    line = f"two-step / one-stage step time: {ratios['two_step_over_one_stage']:.3f}"
    if len(rows) == 3:
        ratios["speechbrain_bestrq_over_two_step"] = (
            two["audio_sec_per_sec"] / rows[2]["audio_sec_per_sec"]
        )
        line += (
            "; SpeechBrain BEST-RQ needs "
            f"{ratios['speechbrain_bestrq_over_two_step']:.2f}x longer per audio second"
        )
    print(line, flush=True)
    if args.json:
        print_json(
            {
                **ratios,
                "mfu_two_step": two["mfu"],
                "mfu_one_stage": one["mfu"],
                "overhead_share": two["overhead_share"],
                "device": device_name(device),
                **machine_fields(args, device),
                "batch": args.batch,
                "compile": args.compile,
                "matmul_tflops": peak / 1e12,
                "variants": rows,
            }
        )


if __name__ == "__main__":
    main()
