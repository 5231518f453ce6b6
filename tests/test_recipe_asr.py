"""Tests of the CTC ASR recipe (recipes/asr): helpers and end-to-end runs.

The runs use tiny generated data (a few seconds of tones with digit-word
transcripts) and tiny encoders, so they take seconds on a CPU.
"""

import csv
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from bestrq2_lobes import BestRQ2Encoder
from bestrq2_lobes.lobe.encoder_dir import encoder_config, write_encoder_dir
from bestrq2_lobes.model.encoder import ViTEncoder
from bestrq2_lobes.model.frontend import LogMel

REPO = Path(__file__).resolve().parents[1]
RECIPE_DIR = REPO / "recipes" / "asr"
RECIPE = RECIPE_DIR / "train.py"
HPARAMS = REPO / "hparams" / "asr_ctc.yaml"
SHARED = REPO.parent / "shared" / "data" / "asterisk_prompts"
SR = 16000
WORDS = "ZERO ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE".split()
TINY = [
    "--embed_dim=32",
    "--depth=1",
    "--num_heads=4",
    "--n_mels=32",
    "--head_dim=32",
    "--batch_size=4",
    "--num_workers=0",
    "--beam_size=4",
    "--device=cpu",
    "--noprogressbar",
]


def _load(name, path):
    """Imports a recipe module under a unique name, without touching sys.path."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the recipe's `from asr_prepare import` reuses it
    spec.loader.exec_module(module)
    return module


tok = _load("asr_tokenizer", RECIPE_DIR / "asr_tokenizer.py")
prep = _load("asr_prepare", RECIPE_DIR / "asr_prepare.py")
recipe = _load("asr_train_recipe", RECIPE)


def run_recipe(*args, check=True, timeout=240, launcher=None):
    """Runs the recipe in a subprocess with one thread."""
    cmd = (launcher or [sys.executable]) + [str(RECIPE), str(HPARAMS), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def write_manifest(path, rows, fields=("ID", "duration", "wav", "wrd")):
    with open(path, "w", newline="", encoding="utf-8") as fout:
        writer = csv.DictWriter(fout, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Train/valid/test manifests of short tone clips with digit transcripts."""
    root = tmp_path_factory.mktemp("asr_corpus")
    (root / "audio").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(14):
        words = [WORDS[(i + k) % 10] for k in range(1 + i % 3)]
        seconds = 0.6 + 0.4 * len(words)
        t = np.arange(int(seconds * SR)) / SR
        wav = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t)
        wav += 0.02 * rng.standard_normal(t.shape)
        sf.write(root / "audio" / f"u{i}.flac", wav.astype(np.float32), SR)
        rows.append(
            {
                "ID": f"u{i}",
                "duration": f"{seconds:.3f}",
                "wav": f"$data_root/audio/u{i}.flac",
                "wrd": " ".join(words),
            }
        )
    for name, part in (("train", rows[:10]), ("valid", rows[10:12])):
        write_manifest(root / f"{name}.csv", part)
    write_manifest(root / "test.csv", rows[12:])
    return root


def data_args(root):
    return [f"--{s}_csv={root / (s + '.csv')}" for s in ("train", "valid", "test")]


def check_outputs(out):
    results = json.loads((out / "results.json").read_text())
    assert {"wer", "cer", "num_test", "frame_hop_ms"} <= set(results)
    for key in ("wer", "cer", "test_loss"):
        assert math.isfinite(results[key]) and results[key] >= 0
    assert (out / "wer_test.txt").read_text().startswith("%WER")
    return results


# ---------------------------------------------------------------- helpers


def test_ctc_min_frames_matches_torch_ctc_feasibility():
    """CTC is finite exactly when there are at least ctc_min_frames frames."""
    rng = np.random.default_rng(1)
    for _ in range(30):
        target = rng.integers(1, 4, size=rng.integers(1, 6)).tolist()
        need = prep.ctc_min_frames(target)
        for frames in range(max(need - 1, 1), need + 2):
            log_probs = torch.zeros(frames, 1, 4).log_softmax(-1)
            loss = torch.nn.functional.ctc_loss(
                log_probs,
                torch.tensor([target]),
                torch.tensor([frames]),
                torch.tensor([len(target)]),
                blank=0,
                reduction="sum",
            )
            assert math.isfinite(loss.item()) == (frames >= need)


@pytest.fixture(scope="module")
def tokenizer(corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    return tok.train_tokenizer(str(folder), str(corpus / "train.csv"), 20, "unigram")


def test_tokenizer_targets_skip_blank_and_round_trip(tokenizer):
    sp = tokenizer
    targets = tok.encode(sp, "SEVEN EIGHT NINE")
    assert min(targets) > tok.BLANK_INDEX
    assert [t - 1 for t in targets] == sp.encode_as_ids("SEVEN EIGHT NINE")
    # greedy output: blanks between tokens are dropped by decode
    with_blanks = [x for t in targets for x in (t, tok.BLANK_INDEX)]
    assert tok.decode(sp, with_blanks) == "SEVEN EIGHT NINE"
    vocab = tok.vocabulary(sp)
    assert len(vocab) == sp.vocab_size() + 1 and vocab[0] == "<blank>"


@pytest.mark.parametrize("token_type", ["unigram", "bpe"])
def test_too_large_vocabulary_is_capped_unless_exact(
    corpus, tmp_path, caplog, token_type
):
    """A 10-word corpus allows a few dozen pieces: 500 is capped, with one line;
    with exact_vocab_size the run stops with SentencePiece's limit (one line)."""
    train = str(corpus / "train.csv")
    with caplog.at_level("WARNING"):
        sp = tok.train_tokenizer(str(tmp_path / "capped"), train, 500, token_type)
    assert 17 < sp.vocab_size() < 500  # more than the characters, all it allows
    (line,) = [r.getMessage() for r in caplog.records if "tokenizer:" in r.getMessage()]
    assert line == (
        f"tokenizer: the train transcripts allow only {sp.vocab_size()} "
        f"{token_type} pieces, fewer than vocab_size=500: using "
        f"{sp.vocab_size()} (--exact_vocab_size=True stops instead)"
    )
    folder = str(tmp_path / "exact")
    with pytest.raises(SystemExit) as err:
        tok.train_tokenizer(folder, train, 500, token_type, exact_vocab_size=True)
    message = str(err.value)
    assert "Vocabulary size too high (500)" in message and "\n" not in message
    assert f"value <= {sp.vocab_size()}" in message
    assert message.endswith(
        "--exact_vocab_size=False (the size is then capped "
        "to what the text allows) or --token_type=char."
    )
    assert not os.path.exists(os.path.join(folder, tok.TOKENIZER_MODEL))


def test_too_small_vocabulary_is_one_line_error(corpus, tmp_path):
    with pytest.raises(SystemExit) as err:
        tok.train_tokenizer(str(tmp_path), str(corpus / "train.csv"), 5, "unigram")
    message = str(err.value)
    assert "smaller than required_chars" in message and "\n" not in message
    assert message.endswith("Try a larger --vocab_size or --token_type=char.")


def test_tokenizer_reused_retrained_or_refused(corpus, tmp_path, caplog):
    """Same settings: the model is reused; other settings or transcripts: it is
    retrained, unless checkpoints were trained with it (then a one-line error)."""
    folder = str(tmp_path / "tok")
    model = Path(folder) / tok.TOKENIZER_MODEL
    train = str(corpus / "train.csv")
    first = tok.train_tokenizer(folder, train, 20, "unigram")
    stored = json.loads((Path(folder) / tok.TOKENIZER_SETTINGS).read_text())
    assert stored["token_type"] == "unigram" and stored["vocab_size"] == 20
    os.utime(model, (0, 0))
    again = tok.train_tokenizer(folder, train, 20, "unigram")
    assert model.stat().st_mtime == 0  # reused, not retrained
    assert again.serialized_model_proto() == first.serialized_model_proto()
    # char ignores vocab_size: a different one does not retrain
    char = tok.train_tokenizer(folder, train, 20, "char")
    os.utime(model, (0, 0))
    assert tok.train_tokenizer(folder, train, 64, "char").vocab_size() == (
        char.vocab_size()
    )
    assert model.stat().st_mtime == 0
    with caplog.at_level("INFO"):
        bpe = tok.train_tokenizer(folder, train, 24, "bpe")
    assert bpe.vocab_size() == 24 and model.stat().st_mtime > 0
    assert "retraining it (token_type char -> bpe, vocab_size None -> 24" in (
        caplog.text
    )
    with pytest.raises(SystemExit) as err:
        tok.train_tokenizer(folder, train, 20, "bpe", checkpointed="save")
    assert str(err.value) == (
        f"error: the checkpoints in save were trained with the tokenizer in "
        f"{folder}, made with other settings (vocab_size 24 -> 20): use a new "
        "--output_folder, or delete the CKPT+* folders in save to start over"
    )
    other = tmp_path / "other.csv"
    other.write_text((corpus / "valid.csv").read_text())
    with pytest.raises(SystemExit) as err:
        tok.train_tokenizer(folder, str(other), 24, "bpe", checkpointed="save")
    assert "(other train transcripts)" in str(err.value)
    (Path(folder) / tok.TOKENIZER_SETTINGS).unlink()
    with pytest.raises(SystemExit) as err:
        tok.train_tokenizer(folder, train, 24, "bpe", checkpointed="save")
    assert "whose settings (tokenizer.json) are missing" in str(err.value)


def test_beam_searcher_reads_shifted_vocabulary(tokenizer):
    """The recipe's beam search turns a peaked CTC output into the right text."""
    sp = tokenizer
    targets = tok.encode(sp, "TWO ONE")
    frames = [x for t in targets for x in (t, t, tok.BLANK_INDEX)]
    log_probs = torch.full((1, len(frames), sp.vocab_size() + 1), -20.0)
    log_probs[0, torch.arange(len(frames)), torch.tensor(frames)] = 0.0
    from speechbrain.decoders.ctc import CTCBeamSearcher

    searcher = CTCBeamSearcher(
        blank_index=0, vocab_list=tok.vocabulary(sp), beam_size=4
    )
    assert searcher(log_probs)[0][0].text == "TWO ONE"


def test_count_unalignable_with_real_encoder_frames(tokenizer):
    """625 ms frames cannot carry a sentence; 40 ms frames can."""
    rows = [{"duration": 1.0, "wrd": "ONE TWO THREE FOUR FIVE"}]
    expected_tokens = prep.ctc_min_frames(tok.encode(tokenizer, rows[0]["wrd"]))
    sizes = dict(embed_dim=32, depth=1, num_heads=4, n_mels=32)
    coarse = BestRQ2Encoder(config=encoder_config("paper", **sizes))
    fine = BestRQ2Encoder(config=encoder_config("speech", patch_time=4, **sizes))
    assert fine.hop_ms == 40.0 and coarse.hop_ms == 625.0
    bad, worst = prep.count_unalignable(rows, tokenizer, coarse.num_output_frames, SR)
    frames = int(coarse.num_output_frames(torch.tensor([SR])))
    assert (bad, worst) == (1, expected_tokens - frames)
    assert prep.count_unalignable(rows, tokenizer, fine.num_output_frames, SR)[0] == (0)
    message = prep.unalignable_message("train", 1, 1, worst, coarse.hop_ms)
    assert "too coarse for CTC" in message
    assert "too coarse" not in prep.unalignable_message("x", 1, 1, 1, 40.0)


def test_first_output_unwraps_rnn_tuples():
    x = torch.ones(1)
    assert recipe.first_output((x, "hidden")) is x
    assert recipe.first_output(x) is x


# ---------------------------------------------------------------- recipe runs


def test_debug_run_random_encoder_default_vocabulary(corpus, tmp_path):
    """The README's command with default settings on a 10-word corpus: the
    64-piece default is capped to what the transcripts allow."""
    out = tmp_path / "out"
    proc = run_recipe(*data_args(corpus), f"--output_folder={out}", "--debug", *TINY)
    assert proc.stdout.startswith("No --encoder_dir given: using a RANDOMLY")
    assert "ASR finished" in proc.stdout.strip().splitlines()[-1]
    results = check_outputs(out)
    assert results["frame_hop_ms"] == 40.0
    assert results["num_test"] == 2 and 17 < results["vocab_size"] < 64
    assert proc.stdout.count("fewer than vocab_size=64") == 1
    folder = out / "save" / "tokenizer"
    assert (folder / tok.TOKENIZER_MODEL).is_file()
    assert json.loads((folder / tok.TOKENIZER_SETTINGS).read_text())["vocab_size"] == 64
    assert "test WER" in (out / "train_log.txt").read_text()


def test_char_run_then_other_tokenizer_refused(corpus, tmp_path):
    """--token_type char needs no other option; the output layer follows the
    tokenizer; a rerun with another tokenizer next to the checkpoints stops."""
    out = tmp_path / "out"
    proc = run_recipe(
        *data_args(corpus),
        f"--output_folder={out}",
        "--token_type=char",
        "--number_of_epochs=1",
        *TINY,
    )
    assert "ASR finished" in proc.stdout.strip().splitlines()[-1]
    results = check_outputs(out)
    rows = csv.DictReader((corpus / "train.csv").read_text().splitlines())
    letters = {c for row in rows for c in row["wrd"]}
    # <unk>, the word boundary (the space) and the letters
    assert results["vocab_size"] == len(letters) + 1
    (ckpt,) = (out / "save").glob("CKPT+*")
    weights = torch.load(ckpt / "ctc_lin.ckpt", weights_only=True)
    assert weights["weight"].shape == (results["vocab_size"] + 1, 32)
    proc = run_recipe(*data_args(corpus), f"--output_folder={out}", *TINY, check=False)
    assert proc.returncode != 0
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: the checkpoints in {out / 'save'} were trained")
    assert "(token_type char -> unigram, vocab_size None -> 64" in line


def test_exported_encoder_fine_tuned_under_ddp(corpus, tmp_path, torchrun_cmd):
    """--encoder_dir, --freeze_encoder False, two gloo processes (no --debug:
    SpeechBrain 1.1.2 gives each rank its own temporary checkpoint folder in
    debug mode, which deadlocks DDP)."""
    torch.manual_seed(0)
    frontend = LogMel(n_mels=32, n_fft=400, win_length=400, hop_length=160)
    encoder = ViTEncoder(
        n_mels=32, patch_freq=32, patch_time=4, embed_dim=32, depth=2, num_heads=4
    )
    enc_dir = write_encoder_dir(tmp_path / "enc", frontend, encoder, 10.0)
    out = tmp_path / "out"
    launcher = torchrun_cmd(2)
    proc = run_recipe(
        *data_args(corpus),
        f"--output_folder={out}",
        f"--encoder_dir={enc_dir}",
        "--freeze_encoder=False",
        "--number_of_epochs=1",
        "--token_type=char",
        "--distributed_backend=gloo",
        *TINY,
        launcher=launcher,
    )
    assert proc.stdout.count(f"Encoder: {enc_dir} (width 32, depth 2") == 1
    assert proc.stdout.count("ASR finished: test WER") == 1
    check_outputs(out)
    (ckpt,) = (out / "save").glob("CKPT+*")
    for name in ("ssl", "optimizer_encoder", "optimizer_head", "layer_sum", "ctc_lin"):
        assert (ckpt / f"{name}.ckpt").is_file(), name
    weights = torch.load(ckpt / "ssl.ckpt", weights_only=True)
    assert not torch.equal(
        weights["encoder.patch_embed.proj.weight"], encoder.patch_embed.proj.weight
    )


def test_coarse_encoder_warning_from_recipe(corpus, tokenizer, caplog):
    """The recipe's check warns, with a count, that 625 ms frames are too coarse."""
    sizes = dict(embed_dim=32, depth=1, num_heads=4, n_mels=32)
    ssl = BestRQ2Encoder(config=encoder_config("paper", **sizes))
    rows = prep.check_manifests({"train": str(corpus / "train.csv")}, None)
    with caplog.at_level("WARNING"):
        counts = recipe.check_alignability(rows, tokenizer, ssl)
    assert counts["train"] > 0
    assert f"train: {counts['train']} of 10 transcripts need more" in caplog.text
    assert "(625 ms) is too coarse for CTC" in caplog.text


def recipe_main_error(*args):
    """Runs the recipe's main in-process and returns its SystemExit message."""
    with pytest.raises(SystemExit) as err:
        recipe.main([str(HPARAMS), *args, *TINY])
    return str(err.value)


def test_bad_inputs_give_one_line_errors(corpus, tmp_path):
    no_wrd = tmp_path / "no_wrd.csv"
    text = (corpus / "train.csv").read_text().splitlines()
    no_wrd.write_text("\n".join(",".join(r.split(",")[:3]) for r in text) + "\n")
    out = [f"--output_folder={tmp_path / 'out'}"]
    given = [
        f"--valid_csv={corpus / 'valid.csv'}",
        f"--test_csv={corpus / 'test.csv'}",
        *out,
    ]
    message = recipe_main_error(f"--train_csv={no_wrd}", *given)
    assert "missing required column 'wrd'" in message and "\n" not in message
    message = recipe_main_error(f"--train_csv={tmp_path / 'absent.csv'}", *given)
    assert message.startswith("error: manifest not found")
    message = recipe_main_error(f"--train_csv={corpus / 'train.csv'}", *out)
    assert message == "error: --valid_csv is required"


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_debug_run_on_shared_asterisk_prompts(tmp_path):
    out = tmp_path / "shared"
    run_recipe(
        *data_args(SHARED),
        f"--output_folder={out}",
        "--debug",
        "--debug_batches=1",
        *TINY,
    )
    results = check_outputs(out)
    assert results["num_test"] == 56 and results["unalignable_train"] == 0
