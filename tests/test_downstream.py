"""Tests of the downstream layer: frames by counts, feature cache, labels, Brain.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

import importlib
import sys

import pytest
import torch

from bestrq2_lobes import BestRQ2Encoder, WeightedLayerSum
from bestrq2_lobes.downstream.feature_cache import FeatureCache
from bestrq2_lobes.downstream.frames import masked_mean
from bestrq2_lobes.downstream.labels import LabelError, keep_label_set, load_labels
from bestrq2_lobes.lobe.encoder_dir import encoder_config


def test_masked_mean_ignores_padding():
    torch.manual_seed(0)
    feats = torch.randn(3, 5, 4)
    counts = [5, 2, 0]
    pooled = masked_mean(feats, torch.tensor(counts))
    for i, n in enumerate(counts):
        ref = feats[i, :n].mean(0) if n else torch.zeros(4)
        assert torch.allclose(pooled[i], ref, atol=1e-6)


@pytest.fixture(scope="module")
def lobe():
    torch.manual_seed(0)
    cfg = encoder_config(embed_dim=32, depth=2, num_heads=4, n_mels=32)
    return BestRQ2Encoder(config=cfg, output_all_hiddens=True)


def test_num_layers_sizes_the_layer_sum(lobe):
    hiddens = lobe(torch.randn(1, 16000), torch.ones(1))
    assert lobe.num_layers == lobe.depth + 1 == hiddens.shape[0]
    assert WeightedLayerSum(lobe.num_layers)(hiddens).shape == hiddens.shape[1:]


def test_cached_batches_equal_encoded_batches(lobe):
    """A batch rebuilt from the cache is the batch the encoder gives (up to float
    rounding of other batch shapes), whatever clips it is mixed with."""
    torch.manual_seed(1)
    clips = {f"c{i}": torch.randn(int(16000 * s)) for i, s in enumerate([3, 1.3, 2])}
    cache = FeatureCache(max_bytes=10**8)

    def batch(ids):
        longest = max(clips[i].numel() for i in ids)
        wavs = torch.zeros(len(ids), longest)
        for row, uid in enumerate(ids):
            wavs[row, : clips[uid].numel()] = clips[uid]
        lens = torch.tensor([clips[i].numel() / longest for i in ids])
        samples = [clips[i].numel() for i in ids]
        return wavs, lens, samples

    for ids in (["c0", "c1"], ["c2"]):
        wavs, lens, samples = batch(ids)
        hiddens = lobe(wavs, lens)
        cache.put(
            ids, lobe.frame_counts(lens, wavs.shape[1]).tolist(), hiddens, samples
        )
    for ids in (["c1", "c2"], ["c2", "c0", "c1"], ["c1"]):
        wavs, lens, samples = batch(ids)
        cached = cache.get(ids, samples)
        torch.testing.assert_close(cached, lobe(wavs, lens), atol=1e-5, rtol=1e-5)
    assert cache.get(["c1"], [5]) is None  # another length is another entry


def test_cache_stops_growing_at_its_bound():
    cache = FeatureCache(max_bytes=100)
    cache.put(["a", "b"], [2, 2], torch.ones(1, 2, 2, 8), [1, 1])
    assert list(cache.items) == [("a", 1)] and cache.bytes == 64


def test_label_set_kept_across_reruns(tmp_path):
    path = tmp_path / "labels.json"
    assert keep_label_set(path, ["a", "b"], "train.csv", label_column="t") == [
        "a",
        "b",
    ]
    assert keep_label_set(path, ["a", "b"], "train.csv") == ["a", "b"]
    with pytest.raises(LabelError, match="made from other labels"):
        keep_label_set(path, ["a"], "new.csv")
    (tmp_path / "bad.json").write_text('{"labels": 3}')
    with pytest.raises(LabelError, match="not a label set"):
        load_labels(tmp_path / "bad.json")


@pytest.mark.parametrize(
    "old", ["bestrq2_lobes.ssl", "bestrq2_lobes.encoder_dir", "bestrq2_lobes.export"]
)
def test_flat_layout_paths_are_gone(old):
    """The aliases of the pre-0.2 flat layout were removed: one home per module."""
    sys.modules.pop(old, None)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old)
