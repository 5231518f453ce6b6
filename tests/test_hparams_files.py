"""The pretraining hparams files agree where they must.

``bestrq2_vit_speech.yaml`` and ``bestrq2_vit_normalized.yaml`` are
``bestrq2_vit.yaml`` with a few keys changed (``__base__``);
``bestrq_vit_onestage.yaml`` is a full file, since it builds
another model, and every key it shares with the base file must be equal.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

import io
from pathlib import Path

import ruamel.yaml
from hyperpyyaml import load_hyperpyyaml

from bestrq2_lobes.training.run import parse_arguments

HPARAMS = Path(__file__).resolve().parents[1] / "hparams"
TINY = ["--embed_dim=32", "--depth=1", "--num_heads=4", "--predictor_depth=1"]
# keys that name the model, or the parts only one of the two models has
MODEL_KEYS = {
    "experiment_name",
    "predictor_dim",
    "predictor_depth",
    "predictor_heads",
    "predictor",
    "head",
    "model",
    "modules",
    "checkpointer",
}


def _load(argv):
    hparams_file, _, overrides = parse_arguments(argv)
    with open(hparams_file, encoding="utf-8") as fin:
        return hparams_file, load_hyperpyyaml(fin, overrides)


def test_speech_variant_is_the_base_with_its_keys_changed():
    path, hp = _load([str(HPARAMS / "bestrq2_vit_speech.yaml"), *TINY])
    assert Path(path).name == "bestrq2_vit.yaml"
    assert hp["experiment_name"] == "bestrq2_vit_speech"
    assert (hp["n_mels"], hp["hop_length"], hp["patch_freq"]) == (80, 160, 80)
    assert hp["frontend"].config["n_mels"] == 80 and hp["embed_dim"] == 32
    _, base = _load([str(HPARAMS / "bestrq2_vit.yaml"), *TINY])
    assert base["n_mels"] == 128 and base["lr"] == hp["lr"]


def test_normalized_variant_changes_only_the_targets_and_the_readout():
    path, hp = _load([str(HPARAMS / "bestrq2_vit_normalized.yaml"), *TINY])
    assert Path(path).name == "bestrq2_vit.yaml"
    assert hp["experiment_name"] == "bestrq2_vit_normalized"
    assert hp["model"].target_norm.mode == "utterance_patch"
    assert hp["input_norm"] == "none" and hp["frontend"].norm_mean is None
    _, base = _load([str(HPARAMS / "bestrq2_vit.yaml"), *TINY])
    assert base["target_norm"] == "none"  # the paper stays the default
    assert hp["frontend"].config == base["frontend"].config
    assert (hp["frame_readout"], base["frame_readout"]) == ("concat", "mean")


def test_command_line_overrides_win_over_the_variant():
    _, hp = _load([str(HPARAMS / "bestrq2_vit_speech.yaml"), *TINY, "--n_mels=40"])
    assert hp["n_mels"] == hp["patch_freq"] == 40  # the !ref follows


def _top_level(path):
    with open(path, encoding="utf-8") as fin:
        data = ruamel.yaml.YAML().load(fin)

    def text(value):
        stream = io.StringIO()
        ruamel.yaml.YAML().dump({"v": value}, stream)
        return stream.getvalue()

    return {key: text(value) for key, value in data.items()}


def test_one_stage_file_shares_every_other_key_with_the_base():
    base = _top_level(HPARAMS / "bestrq2_vit.yaml")
    one_stage = _top_level(HPARAMS / "bestrq_vit_onestage.yaml")
    differ = {
        key
        for key in base.keys() & one_stage.keys()
        if key not in MODEL_KEYS and base[key] != one_stage[key]
    }
    assert not differ, f"keys that differ from bestrq2_vit.yaml: {sorted(differ)}"
    missing = base.keys() - one_stage.keys() - MODEL_KEYS
    assert not missing, f"keys of bestrq2_vit.yaml missing: {sorted(missing)}"
