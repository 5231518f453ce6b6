#!/usr/bin/env bash
# The GPU benchmark matrix of the training step, in one go, JSON lines on stdout.
#
#   bash benchmarks/gpu_check.sh            # on a GPU machine (meant to fit 8 minutes;
#                                           # not yet run on one)
#   bash benchmarks/gpu_check.sh --quick    # a smoke run of the same matrix (batch 2,
#                                           # fp32: for checking it on a CPU)
#
# Runs benchmarks/bench_pretrain.py, bf16, for batch 256 and 512, eager and
# --compile, our two models side by side (two-step and one-stage), then once with
# SpeechBrain's BEST-RQ too, at the largest of BESTRQ2_SB_BATCHES (default
# "128 64 32") that fits in memory. Each run ends with one JSON line, printed
# here prefixed with "json: "; the runs' other output goes to stderr. A run that
# fails (out of memory, say) prints "json: {"failed": ...}" and the matrix goes on.
set -uo pipefail
cd "$(dirname "$0")/.."
quick=()
precision=bf16
batches=(256 512)
sb_batches=(${BESTRQ2_SB_BATCHES:-128 64 32})
if [ "${1:-}" = "--quick" ]; then
    quick=(--quick)
    precision=fp32  # CPUs without bf16 matrix units run bf16 matmuls very slowly
    batches=(2)
    sb_batches=(2)
fi
bench() {  # bench LABEL ARGS...: one run, its JSON line or a failure line
    local label=$1 out
    shift
    if out=$(python benchmarks/bench_pretrain.py --precision "$precision" --json "${quick[@]}" "$@"); then
        echo "json: $(tail -n 1 <<<"$out")"
        return 0
    fi
    echo "json: {\"failed\": \"$label\", \"args\": \"$*\"}"
    return 1
}
for batch in "${batches[@]}"; do
    bench "eager b$batch" --batch "$batch" --without_speechbrain
    bench "compile b$batch" --batch "$batch" --without_speechbrain --compile
done
for batch in "${sb_batches[@]}"; do  # the largest batch SpeechBrain's model fits
    bench "speechbrain b$batch" --batch "$batch" && break
done
