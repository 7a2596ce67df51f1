#!/usr/bin/env python
"""Reference stage for the non-Qwen3 families: random-weight checkpoints and golden scores.

    python tests/reference/make_family_fixtures.py --out tests/.fixtures [--only NAME ...] [--force]

Each fixture DIR/NAME/ holds a checkpoint written by `transformers` (float32 safetensors,
config.json), the tokenizer files and golden.json: the token ids and raw scores of the family's
official recipe, reproduced here with `transformers` from the libraries' source, run in float32.
The crossrank stage (tests/test_parity_families.py) reads these files and never imports torch.

The recipes (read from the libraries' source, then rewritten here against the transformers API):

* mxbai-rerank-v2 (mixedbread's `mxbai_rerank/mxbai_rerank_v2.py`, `prepare_inputs` and
  `concat_input_ids`): prefix ids + the query piece ("[instruction: {instruction}\\n]query: {query}",
  capped at max_length * 3 // 4) + "\\n" + "document: {doc}" (truncated `only_second` so that query,
  separator and document fit max_length; the template constants are not counted) + "\\n" + task
  prompt + suffix; left padding to a multiple of 8; score = logit("1") - logit("0").
* bge-reranker-v2-gemma (FlagEmbedding's `BaseLLMReranker.compute_score_single_gpu`): "A: {query}"
  capped at max_length * 3 // 4, "B: {passage}" capped at max_length, [BOS] + query + "\\n" +
  passage truncated `only_second` within max_length + len("\\n") + len(prompt), then "\\n" + prompt;
  batches sorted by length, padded to a multiple of 8; score = the raw logit of "Yes".
* Qwen3-Reranker's model card recipe, for the Llama and Mistral fixtures (same tokenizer and
  prompts as the Qwen3 fixtures, other architectures): score = logit("yes") - logit("no").

transformers 5 dropped `prepare_for_model` from fast tokenizers, so the official libraries do not
run on it as written; `prepare_for_model_only_second` below is transformers 4's `only_second`
truncation (`truncate_sequences`), the only part of it the recipes use.

Every golden also holds vLLM's request form of the same prompts ("joined": `tokenizer(text_1 +
text_2)` with the tokenizer's special tokens, scored by `transformers` unpadded) and a few pairs
tokenized as pairs ("sep_pair": `tokenizer(text_1, text_pair=text_2)`, for `use_sep_token`).

Random weights are shaped as in make_fixtures.py (unit-scale embeddings and projections, jittered
norms, q/k projections scaled for sharper attention, head rows fitted to the principal direction
of the last token's final hidden state), so the scores are spread out; the build fails otherwise.

The Gemma fixture cannot use the real Gemma tokenizer (not available here): the script trains a
small byte-fallback BPE on the test texts with Gemma's conventions (<pad>=0, <eos>=1, <bos>=2,
"▁" for spaces, BOS added by the post-processor). See GEMMA_TOKENIZER_NOTES for what it does not
cover.

A fixture is rebuilt only when golden.json is missing or its "spec_hash" differs from the hash of
its spec (config, shaping, pairs, recipe constants, tokenizer) and SCRIPT_VERSION (bump it whenever
the build or reference code changes). torch is imported inside the build functions only: the
spec, the hash and the freshness check work in the torch-free test process
(tests/_family_fixtures.py).
"""

import argparse
import contextlib
import copy
import hashlib
import importlib.util
import json
import math
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The Qwen3 reference stage: shared paths and torch-free helpers (hashing the weights, score
# statistics). Importing it has no side effects and does not import torch.
_qwen3_stage = _load_module("crossrank_make_fixtures", HERE / "make_fixtures.py")
PAIRS = _qwen3_stage.PAIRS
EXIT_NO_TORCH = _qwen3_stage.EXIT_NO_TORCH
DEFAULT_OUT = _qwen3_stage.DEFAULT_OUT
MODEL_CONFIGS = _qwen3_stage.MODEL_CONFIGS
QWEN_TOKENIZER_DIR = _qwen3_stage.TOKENIZER_DIR
QWEN_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
weights_sha256 = _qwen3_stage.weights_sha256
score_stats = _qwen3_stage.score_stats

SCRIPT_VERSION = 1

# torch threads. One: on a 2-core machine shared with other jobs, two OpenMP threads wait in
# barriers whenever the other core is busy (the tiny models' GEMMs ran ~100x slower, the real
# shape's 2x slower than with one thread).
THREADS = 1

REFERENCE_BATCH = 8
NOISE_TOLERANCE = 5e-5       # max |raw score(padded batches of 8) - raw score(batch size 1)|
SEP_PAIRS = 6                # pairs in the "sep_pair" section

# -- The recipes' constants (from the libraries' source and RECIPES.md) -----------------------

MXBAI_PREFIX = ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                "assistant.<|im_end|>\n<|im_start|>user\n")
MXBAI_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
MXBAI_TASK = (
    "You are a search relevance expert who evaluates how well documents match search queries. "
    "For each query-document pair, carefully analyze the semantic relationship between them, then "
    "provide your binary relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:")
MXBAI_SEP = "\n"
MXBAI_MAX_LENGTH = 8192

GEMMA_PROMPT = ("Given a query A and a passage B, determine whether the passage contains an answer "
                "to the query by providing a prediction of either 'Yes' or 'No'.")
GEMMA_SEP = "\n"
GEMMA_MAX_LENGTH = 1024      # the model card's; FlagEmbedding's class default is 512

QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and "
    "the Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n"
    "<|im_start|>user\n")
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
QWEN3_MAX_LENGTH = 8192

FAMILIES = {
    "mxbai": {
        "template": "mxbai-rerank-v2",
        "tokens": ["0", "1"],
        "method": "from_2_way_softmax",
        "max_length": MXBAI_MAX_LENGTH,
    },
    "gemma": {
        "template": "bge-reranker-v2-gemma",
        "tokens": ["Yes"],
        "method": "no_post_processing",
        "max_length": GEMMA_MAX_LENGTH,
    },
    "llama": {
        "template": "qwen3-reranker",
        "tokens": ["no", "yes"],
        "method": "from_2_way_softmax",
        "max_length": QWEN3_MAX_LENGTH,
    },
    "mistral": {
        "template": "qwen3-reranker",
        "tokens": ["no", "yes"],
        "method": "from_2_way_softmax",
        "max_length": QWEN3_MAX_LENGTH,
    },
}

# -- Weight shaping (see make_fixtures.py; q/k projections stand in for Qwen3's q/k norms) -----

SHAPING = {
    "embed_std": 1.0,          # token embeddings ~ N(0, embed_std^2) (Gemma: times sqrt(hidden))
    "linear_gain": 1.0,        # every projection ~ N(0, gain^2 / fan_in)
    "qk_gain": 1.5,            # q_proj and k_proj also multiplied by this: logits' std ~ gain^2
    "bias_std": 0.2,           # biases (Qwen2 q/k/v; Llama attention_bias, mlp_bias)
    "norm_jitter": 0.1,        # RMSNorm weights = 1 + jitter * N(0, 1) (Gemma stores weight - 1)
    "head_logit_iqr": 2.4,     # target IQR of the raw score
    "head_abs_q95": 4.0,       # ... capped so that 95% of |raw score| stay below this
    "head_common_rms": 2.0,    # RMS of the part two head rows share (2-way heads)
    "tied_rounds": 2,          # head fits with tied embeddings
}

# -- The Gemma fixture's tokenizer -------------------------------------------------------------

GEMMA_TOKENIZER = {
    "specials": ["<pad>", "<eos>", "<bos>", "<unk>"],   # ids 0..3, as Gemma's
    "bpe_vocab_size": 1200,    # trained merges and characters (plus 256 byte tokens)
    "min_frequency": 2,
    "limit_alphabet": 120,     # rarer characters (most CJK, emoji) go through byte fallback
    "answer_words": ["Yes", "No"],
    "answer_repeats": 50,      # so that "Yes" and "No" are single tokens
    "model_max_length": 8192,
}

GEMMA_TOKENIZER_NOTES = (
    "A byte-level-fallback BPE trained by this script on the test texts, with Gemma's conventions "
    "(<pad>=0, <eos>=1, <bos>=2, <unk>=3, spaces normalised to U+2581, BOS added by a "
    "TemplateProcessing post-processor, add_bos_token true, 'Yes' and 'No' single tokens). It does "
    "not reproduce the real Gemma tokenizer: its 256k SentencePiece vocabulary and merges, its "
    "handling of runs of spaces and newlines, digits split one by one, the <start_of_turn>-style "
    "added tokens, or the exact pieces byte fallback produces (here most CJK, emoji and rare "
    "accents fall back to <0xNN> byte tokens because the alphabet is capped; in Gemma they are "
    "mostly whole-character pieces). Words are pre-split at U+2581 here, which Gemma does not do "
    "(its BPE runs on the whole normalised string). It proves the recipe's piecewise assembly, "
    "BOS handling and offsets over byte-fallback tokens, not Gemma's own token ids.")

# -- Fixtures ----------------------------------------------------------------------------------

QWEN_TINY = {
    "vocab_size": 151669,
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 32768,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}

# Pairs of the real-shape mxbai fixture: short to ~600 tokens, one query per pair, with and
# without an instruction, the ".\n" and "?\n" endings, other scripts.
MXBAI_BASE_PAIRS = [
    0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 14, 16, 18, 21, 22, 23,
    24, 29, 32, 33, 34, 36, 37, 39, 41, 42, 43, 44, 45, 46, 47, 48,
    50, 51, 53, 57, 58,
]

FIXTURES = {
    "mxbai-tiny": {
        "family": "mxbai",
        "architecture": "Qwen2ForCausalLM",
        "config": dict(QWEN_TINY, model_type="qwen2", tie_word_embeddings=True,
                       rope_theta=1000000.0, use_sliding_window=False),
        "tokenizer": "qwen3",
        "seed": 20250801,
        "pairs": "all",
        "truncation_max_length": 64,
        "slow": False,
    },
    "mxbai-base": {
        "family": "mxbai",
        "architecture": "Qwen2ForCausalLM",
        "config_file": "mxbai-rerank-base-v2.json",
        # 24 layers: sharp attention compounds into padding noise (see make_fixtures.py).
        "shaping": {"qk_gain": 1.0, "tied_rounds": 1},
        "tokenizer": "qwen3",
        "seed": 20250802,
        "pairs": MXBAI_BASE_PAIRS,
        "joined_pairs": 8,       # the request form on the first 8 pairs only (build time)
        "slow": True,
    },
    "gemma-tiny": {
        "family": "gemma",
        "architecture": "GemmaForCausalLM",
        "config": {
            "model_type": "gemma",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 1,
            "head_dim": 32,
            "hidden_act": "gelu_pytorch_tanh",
            "hidden_activation": "gelu_pytorch_tanh",
            "tie_word_embeddings": True,
            "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0,
            "max_position_embeddings": 8192,
            "pad_token_id": 0,
            "eos_token_id": 1,
            "bos_token_id": 2,
        },
        # Gemma multiplies the embeddings by sqrt(hidden) = 8: unit scale after that.
        "shaping": {"embed_std": 0.125, "qk_gain": 1.25},
        "tokenizer": "gemma-built",
        "seed": 20250803,
        "pairs": "all",
        # The passage is cut by its own cap at max_length for most pairs, by the pair budget
        # (max_length + separator + prompt) for the long query, whose cap is 72 tokens.
        "truncation_max_length": 96,
        "slow": False,
    },
    "llama-tiny-llama3rope": {
        "family": "llama",
        "architecture": "LlamaForCausalLM",
        "config": dict(
            QWEN_TINY, model_type="llama", head_dim=32, tie_word_embeddings=False,
            attention_bias=True, mlp_bias=True, max_position_embeddings=4096,
            # Written with the hub's legacy keys, as Llama 3.1/3.2 checkpoints carry them. With
            # theta 1e4, head_dim 32 and an original context of 32 the frequencies fall in all
            # three llama3 bands (kept, smoothed, divided by the factor).
            rope_theta=10000.0,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
        ),
        "legacy_config": True,
        "tokenizer": "qwen3",
        "seed": 20250804,
        "pairs": "all",
        "slow": False,
    },
    "mistral-tiny-window": {
        "family": "mistral",
        "architecture": "MistralForCausalLM",
        "config": dict(QWEN_TINY, model_type="mistral", tie_word_embeddings=False,
                       rope_theta=10000.0, sliding_window=8),
        # No head_dim in config.json, as in Mistral-7B-v0.1: hidden / heads = 16.
        "omit_config_keys": ["head_dim"],
        "tokenizer": "qwen3",
        "seed": 20250805,
        # Prompts of 75 to ~300 tokens (every one far beyond the window of 8).
        "pairs": [i for i in range(len(PAIRS)) if i not in (24, 25, 26, 27, 28, 30)],
        "short_pairs": True,     # plus raw request pairs of 20-60 tokens
        "slow": False,
    },
}


# --------------------------------------------------------------------------
# Spec, hash, freshness (no torch)

def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pair_indices(spec):
    return list(range(len(PAIRS))) if spec["pairs"] == "all" else list(spec["pairs"])


def resolved_spec(name):
    """Everything a fixture's content depends on, as plain JSON data."""
    spec = copy.deepcopy(FIXTURES[name])
    if "config_file" in spec:
        spec["config"] = json.loads((MODEL_CONFIGS / spec["config_file"]).read_text())
    spec["shaping"] = dict(SHAPING, **spec.get("shaping", {}))
    spec["pair_list"] = [PAIRS[i] for i in pair_indices(spec)]
    if spec.get("short_pairs"):
        spec["short_pair_list"] = short_request_pairs()
    spec["recipe"] = dict(FAMILIES[spec["family"]], batch=REFERENCE_BATCH)
    if spec["family"] == "mxbai":
        spec["recipe"].update(prefix=MXBAI_PREFIX, suffix=MXBAI_SUFFIX, task=MXBAI_TASK, sep=MXBAI_SEP)
    elif spec["family"] == "gemma":
        spec["recipe"].update(prompt=GEMMA_PROMPT, sep=GEMMA_SEP)
    else:
        spec["recipe"].update(prefix=QWEN3_PREFIX, suffix=QWEN3_SUFFIX,
                              default_instruction=QWEN3_DEFAULT_INSTRUCTION)
    if spec["tokenizer"] == "qwen3":
        spec["tokenizer_sha256"] = {f: _sha256_file(QWEN_TOKENIZER_DIR / f) for f in QWEN_TOKENIZER_FILES}
    else:
        spec["tokenizer_build"] = dict(GEMMA_TOKENIZER, corpus=_gemma_corpus())
    return spec


def spec_hash(name):
    blob = json.dumps({"script_version": SCRIPT_VERSION, "spec": resolved_spec(name)},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def read_golden(name, out):
    try:
        return json.loads((Path(out) / name / "golden.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_fresh(name, out):
    """True when DIR/NAME holds a complete fixture built from the current spec."""
    golden = read_golden(name, out)
    return golden is not None and golden.get("spec_hash") == spec_hash(name)


# --------------------------------------------------------------------------
# Logging and locking

def _log(msg):
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _phase(what):
    started = time.time()
    yield
    _log(f"  {what}: {time.time() - started:.1f} s")


@contextlib.contextmanager
def _locked(out, name):
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock
        yield
        return
    with open(Path(out) / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------
# Tokenizers

def _gemma_corpus():
    """The texts the Gemma fixture's tokenizer is trained on (plain data)."""
    corpus = []
    for p in PAIRS:
        corpus += ["A: " + p["query"], "B: " + p["document"]]
        if p["instruction"]:
            corpus.append(p["instruction"])
    corpus += [GEMMA_PROMPT, GEMMA_SEP]
    corpus += GEMMA_TOKENIZER["answer_words"] * GEMMA_TOKENIZER["answer_repeats"]
    return corpus


def build_gemma_tokenizer(dst):
    """Trains the Gemma-convention BPE (see GEMMA_TOKENIZER_NOTES) and saves it to dst."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, \
        processors, trainers

    cfg = GEMMA_TOKENIZER
    space = "\u2581"

    def pipeline(tok):
        tok.normalizer = normalizers.Replace(" ", space)
        tok.pre_tokenizer = pre_tokenizers.Split(space, behavior="merged_with_next")

    # The trainer's own limit_alphabet breaks ties between equally frequent characters at random,
    # so the alphabet is chosen here (most frequent first, then by code point) and the other
    # characters are removed from the training texts; they reach the model as byte tokens.
    corpus = _gemma_corpus()
    counts = {}
    for text in corpus:
        for ch in text.replace(" ", space):
            counts[ch] = counts.get(ch, 0) + 1
    alphabet = set(sorted(counts, key=lambda c: (-counts[c], ord(c)))[:cfg["limit_alphabet"]])
    corpus = ["".join(ch for ch in text if ch == " " or ch in alphabet) for text in corpus]
    trainee = Tokenizer(models.BPE())
    pipeline(trainee)
    trainer = trainers.BpeTrainer(vocab_size=cfg["bpe_vocab_size"], min_frequency=cfg["min_frequency"],
                                  special_tokens=[], show_progress=False)
    trainee.train_from_iterator(corpus, trainer)
    trained = json.loads(trainee.to_str())["model"]

    # Final vocabulary: the specials at 0..3, the 256 byte tokens, then the trained entries.
    vocab = {s: i for i, s in enumerate(cfg["specials"])}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True,
                               byte_fallback=True))
    pipeline(tok)
    tok.decoder = decoders.Sequence([decoders.Replace(space, " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in cfg["specials"]])
    bos = cfg["specials"][2]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1", special_tokens=[(bos, vocab[bos])])
    for word in cfg["answer_words"]:
        if word not in vocab:
            raise RuntimeError(f"the Gemma fixture tokenizer has no single token {word!r}")
    tok.save(str(Path(dst) / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "padding_side": "left",
        "model_max_length": cfg["model_max_length"],
        "clean_up_tokenization_spaces": False,
    }
    (Path(dst) / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return len(tok.get_vocab(with_added_tokens=True))


def install_tokenizer(spec, dst):
    """Writes the fixture's tokenizer files; returns the vocabulary size."""
    if spec["tokenizer"] == "qwen3":
        for f in QWEN_TOKENIZER_FILES:
            shutil.copyfile(QWEN_TOKENIZER_DIR / f, Path(dst) / f)
        return None
    return build_gemma_tokenizer(dst)


# --------------------------------------------------------------------------
# transformers 4's prepare_for_model(..., truncation="only_second", add_special_tokens=False)

def prepare_for_model_only_second(ids, pair_ids, max_length):
    """ids + pair_ids, the end of pair_ids cut so that the total fits max_length. As in
    transformers 4, nothing is cut (the library logs an error) when pair_ids is too short."""
    excess = len(ids) + len(pair_ids) - max_length
    if max_length and excess > 0:
        if len(pair_ids) > excess:
            pair_ids = pair_ids[:-excess]
        else:
            _log(f"  only_second: cannot remove {excess} tokens from a second sequence of "
                 f"{len(pair_ids)} (transformers 4 keeps it whole)")
    return list(ids) + list(pair_ids)


def _first_token_after(tokenizer, text, n_chars):
    """Index of the first token of tokenizer(text) that ends after character n_chars."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    for k, (_, end) in enumerate(enc["offset_mapping"]):
        if end > n_chars:
            return k
    return len(enc["input_ids"])


# --------------------------------------------------------------------------
# The recipes

class Recipe:
    """Tokenization (no model needed) and scoring (model) of one family's official recipe.

    encode(pairs, max_length) -> (ids, details); logits(model, ids) -> raw scores of the padded
    batches the library would run; head_logits(model, ids) -> raw scores run unpadded, one
    sequence at a time (vLLM's way); request_texts(pair) -> vLLM's (text_1, text_2).
    """

    pad_to_multiple_of = 8

    def __init__(self, model_dir):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"

    def ids_of(self, text):
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def score_rows(self, logits_last):
        """Raw score from the last position's logits [batch, vocab] (float32 tensor)."""
        raise NotImplementedError

    def _batches(self, ids, batch_size):
        for start in range(0, len(ids), batch_size):
            yield list(range(start, min(start + batch_size, len(ids))))

    def logits(self, model, ids, batch_size=REFERENCE_BATCH):
        import torch

        out = [None] * len(ids)
        for chunk in self._batches(ids, batch_size):
            feats = [{"input_ids": ids[i], "attention_mask": [1] * len(ids[i])} for i in chunk]
            batch = self.tokenizer.pad(feats, padding="longest", pad_to_multiple_of=self.pad_to_multiple_of,
                                       return_tensors="pt")
            # The libraries compute the logits of every position and read the last; the LM head
            # is applied position by position, so computing the last one only (logits_to_keep)
            # gives the same values at a fraction of the cost (151k-row head).
            with torch.no_grad():
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               logits_to_keep=1).logits
            rows = self.score_rows(self.last_logits(logits, batch["attention_mask"]))
            for k, i in enumerate(chunk):
                out[i] = float(rows[k])
        return out

    @staticmethod
    def last_logits(logits, attention_mask):
        return logits[:, -1, :]

    def head_logits(self, model, ids):
        """Unpadded, batch size 1, only the last position through the LM head."""
        import torch

        out = []
        for seq in ids:
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([seq]), logits_to_keep=1).logits
            out.append(float(self.score_rows(logits[:, -1, :])[0]))
        return out


class MxbaiRerankV2Recipe(Recipe):
    """mixedbread's MxbaiRerankV2.prepare_inputs / concat_input_ids / forward."""

    def __init__(self, model_dir):
        super().__init__(model_dir)
        tok = self.tokenizer
        self.yes_loc = self.ids_of("1")[0]
        self.no_loc = self.ids_of("0")[0]
        self.task_prompt_inputs = self.ids_of(MXBAI_TASK)
        self.sep_inputs = self.ids_of(MXBAI_SEP)
        self.prefix_inputs = self.ids_of(MXBAI_PREFIX)
        self.suffix_inputs = self.ids_of(MXBAI_SUFFIX)
        self.model_max_length = tok.model_max_length
        self.predefined_length = (len(self.prefix_inputs) + len(self.task_prompt_inputs)
                                  + len(self.suffix_inputs) + len(self.sep_inputs))
        self.label_tokens = {"0": self.no_loc, "1": self.yes_loc}

    def _max_length(self, max_length):
        # "Ensure that the template will not cause the input to exceed the model max length".
        if max_length + self.predefined_length > self.model_max_length:
            max_length = self.model_max_length - self.predefined_length
        return max_length

    def query_piece(self, pair):
        query_prompt = f"query: {pair['query']}"
        if pair["instruction"]:
            query_prompt = "".join([f"instruction: {pair['instruction']}", MXBAI_SEP, query_prompt])
        return query_prompt

    def encode(self, pairs, max_length=MXBAI_MAX_LENGTH):
        max_length = self._max_length(max_length)
        tok = self.tokenizer
        out, details = [], []
        for p in pairs:
            query_inputs = tok(self.query_piece(p), add_special_tokens=False,
                               max_length=max_length * 3 // 4, truncation=True)["input_ids"]
            doc_text = f"document: {p['document']}"
            doc_maxlen = min(self.model_max_length - len(query_inputs) - self.predefined_length, max_length)
            document_inputs = tok(doc_text, add_special_tokens=False, max_length=doc_maxlen,
                                  truncation=True)["input_ids"]
            item = prepare_for_model_only_second(query_inputs, self.sep_inputs + document_inputs, max_length)
            ids = self.prefix_inputs + item + self.sep_inputs + self.task_prompt_inputs + self.suffix_inputs
            out.append(ids)
            details.append({
                "query_capped": len(self.ids_of(self.query_piece(p))) > len(query_inputs),
                "doc_piece_tokens": len(self.ids_of(doc_text)),
                "doc_piece_kept": len(item) - len(query_inputs) - len(self.sep_inputs),
                "doc_label_tokens": _first_token_after(tok, doc_text, len("document: ")),
            })
        return out, details

    def score_rows(self, logits_last):
        return (logits_last[:, self.yes_loc] - logits_last[:, self.no_loc]).tolist()

    @staticmethod
    def request_texts(pair):
        instruction = f"instruction: {pair['instruction']}\n" if pair["instruction"] else ""
        return (f"{MXBAI_PREFIX}{instruction}query: {pair['query']}\n",
                f"document: {pair['document']}\n{MXBAI_TASK}{MXBAI_SUFFIX}")


class FlagLLMRerankerRecipe(Recipe):
    """FlagEmbedding's BaseLLMReranker.compute_score_single_gpu (bge-reranker-v2-gemma)."""

    def __init__(self, model_dir):
        super().__init__(model_dir)
        self.yes_loc = self.ids_of("Yes")[0]
        self.sep_inputs = self.ids_of(GEMMA_SEP)
        self.label_tokens = {"Yes": self.yes_loc}

    def prompt_of(self, pair):
        return pair["instruction"] if pair["instruction"] is not None else GEMMA_PROMPT

    def encode(self, pairs, max_length=GEMMA_MAX_LENGTH):
        tok = self.tokenizer
        query_max_length = max_length * 3 // 4
        out, details = [], []
        for p in pairs:
            query_text, passage_text = f"A: {p['query']}", f"B: {p['document']}"
            query_inputs = tok(query_text, add_special_tokens=False, max_length=query_max_length,
                               truncation=True)["input_ids"]
            passage_inputs = tok(passage_text, add_special_tokens=False, max_length=max_length,
                                 truncation=True)["input_ids"]
            prompt_inputs = self.ids_of(self.prompt_of(p))
            encode_max_length = max_length + len(self.sep_inputs) + len(prompt_inputs)
            first = query_inputs
            if tok.bos_token_id is not None and tok.bos_token_id != tok.pad_token_id:
                first = [tok.bos_token_id] + query_inputs
            item = prepare_for_model_only_second(first, self.sep_inputs + passage_inputs, encode_max_length)
            out.append(item + self.sep_inputs + prompt_inputs)
            kept = len(item) - len(first) - len(self.sep_inputs)
            details.append({
                "query_capped": len(self.ids_of(query_text)) > len(query_inputs),
                "doc_piece_tokens": len(self.ids_of(passage_text)),
                "doc_piece_kept": kept,
                "doc_label_tokens": _first_token_after(tok, passage_text, len("B: ")),
                # What cut the passage: its own cap at max_length, or the pair budget.
                "bound": ("budget" if kept < len(passage_inputs) else
                          "passage_cap" if len(passage_inputs) < len(self.ids_of(passage_text)) else None),
            })
        return out, details

    def _batches(self, ids, batch_size):
        # Longest first, as compute_score_single_gpu (it sorts by the query's and passage's token
        # counts; the prompt's length orders the pairs the same way but for ties).
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        for start in range(0, len(order), batch_size):
            yield order[start:start + batch_size]

    @staticmethod
    def last_logits(logits, attention_mask):
        # FlagEmbedding's last_logit_pool. The padding is on the left (the fixture's tokenizer
        # config, as bge-reranker-v2-gemma's), so the first branch is taken, the one that
        # logits_to_keep=1 leaves possible.
        import torch

        if attention_mask[:, -1].sum() == attention_mask.shape[0]:
            return logits[:, -1, :]
        lengths = attention_mask.sum(dim=1) - 1
        return torch.stack([logits[i, lengths[i], :] for i in range(logits.shape[0])], dim=0)

    def score_rows(self, logits_last):
        return logits_last[:, self.yes_loc].tolist()

    def request_texts(self, pair):
        return f"A: {pair['query']}\n", f"B: {pair['document']}\n{self.prompt_of(pair)}"


class Qwen3RerankerCardRecipe(Recipe):
    """The Qwen3-Reranker model card's format_instruction / process_inputs / compute_logits."""

    pad_to_multiple_of = None

    def __init__(self, model_dir):
        super().__init__(model_dir)
        self.token_false_id = self.tokenizer.convert_tokens_to_ids("no")
        self.token_true_id = self.tokenizer.convert_tokens_to_ids("yes")
        self.prefix_tokens = self.ids_of(QWEN3_PREFIX)
        self.suffix_tokens = self.ids_of(QWEN3_SUFFIX)
        self.label_tokens = {"no": self.token_false_id, "yes": self.token_true_id}

    @staticmethod
    def middle(pair):
        instruction = pair["instruction"] if pair["instruction"] is not None else QWEN3_DEFAULT_INSTRUCTION
        return f"<Instruct>: {instruction}\n<Query>: {pair['query']}\n<Document>: {pair['document']}"

    def encode(self, pairs, max_length=QWEN3_MAX_LENGTH):
        enc = self.tokenizer([self.middle(p) for p in pairs], padding=False, truncation="longest_first",
                             return_attention_mask=False,
                             max_length=max_length - len(self.prefix_tokens) - len(self.suffix_tokens))
        return [self.prefix_tokens + list(ids) + self.suffix_tokens for ids in enc["input_ids"]], None

    def score_rows(self, logits_last):
        return (logits_last[:, self.token_true_id] - logits_last[:, self.token_false_id]).tolist()

    @staticmethod
    def request_texts(pair):
        instruction = pair["instruction"] if pair["instruction"] is not None else QWEN3_DEFAULT_INSTRUCTION
        return (f"{QWEN3_PREFIX}<Instruct>: {instruction}\n<Query>: {pair['query']}\n",
                f"<Document>: {pair['document']}{QWEN3_SUFFIX}")


RECIPES = {
    "mxbai": MxbaiRerankV2Recipe,
    "gemma": FlagLLMRerankerRecipe,
    "llama": Qwen3RerankerCardRecipe,
    "mistral": Qwen3RerankerCardRecipe,
}


def encode_grouped(recipe, pairs, max_length):
    """recipe.encode on pairs in one call per instruction (the libraries take one instruction
    or prompt per call), in the pairs' order."""
    ids, details = [None] * len(pairs), [None] * len(pairs)
    groups = {}
    for i, p in enumerate(pairs):
        groups.setdefault(p["instruction"], []).append(i)
    for idx in groups.values():
        got, det = recipe.encode([pairs[i] for i in idx], max_length)
        for k, i in enumerate(idx):
            ids[i] = got[k]
            details[i] = det[k] if det is not None else None
    return ids, details


def short_request_pairs():
    """Raw (text_1, text_2) requests of 20-60 tokens for the sliding-window fixture."""
    out = []
    for p in PAIRS[4:24]:   # the single-paragraph documents, first sentence
        doc = p["document"].split(". ")[0]
        out.append((f"query: {p['query']}\n", f"document: {doc}"))
    return out


# --------------------------------------------------------------------------
# Building

def _model_config(spec, vocab_size):
    from transformers import AutoConfig

    cfg = copy.deepcopy(spec["config"])
    for key in ("architectures", "torch_dtype", "dtype", "transformers_version"):
        cfg.pop(key, None)
    model_type = cfg.pop("model_type")
    if vocab_size is not None:
        cfg["vocab_size"] = vocab_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoConfig.for_model(model_type, dtype="float32", **cfg)


def _init_weights(model, seed, shaping, gemma_norms):
    """Draw every parameter from our own generator (see SHAPING)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    linear = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"}
    norms = {"input_layernorm", "post_attention_layernorm", "norm"}
    with torch.no_grad():
        for name, p in model.named_parameters():
            parts = name.split(".")
            leaf, kind = parts[-2], parts[-1]
            if kind == "bias":
                p.normal_(0.0, shaping["bias_std"], generator=gen)
            elif kind != "weight":
                raise ValueError(f"unexpected parameter {name}")
            elif leaf == "embed_tokens":
                p.normal_(0.0, shaping["embed_std"], generator=gen)
            elif leaf in linear:
                p.normal_(0.0, shaping["linear_gain"] / math.sqrt(p.shape[1]), generator=gen)
                if leaf in ("q_proj", "k_proj"):
                    p.mul_(shaping["qk_gain"])
            elif leaf in norms:
                p.normal_(0.0, shaping["norm_jitter"], generator=gen)
                if not gemma_norms:   # Gemma's RMSNorm multiplies by (1 + weight)
                    p.add_(1.0)
            else:
                raise ValueError(f"no init rule for parameter {name}")


def _last_hidden(model, ids):
    """Final-normed hidden state of the last token of each sequence (batch size 1) and the
    sequence lengths."""
    import torch

    rows = []
    with torch.no_grad():
        for seq in ids:
            rows.append(model.model(input_ids=torch.tensor([seq])).last_hidden_state[0, -1].double())
    return torch.stack(rows), torch.tensor([len(x) for x in ids], dtype=torch.float64)


def _orthonormal(vectors):
    import torch

    q, _ = torch.linalg.qr(torch.stack(vectors, dim=1))
    return q


def _set_head_rows(model, ids, groups, rows, seed, shaping):
    """Set the head rows that make the raw score from the last token's final hidden state h.

    raw = alpha * h.d. d is the top principal direction of what varies in h beyond the prompt's
    length and its group (the pairs with a custom instruction end in other tokens, which moves h
    as a block): h is regressed on [1, log length, group indicators] and d is taken from the
    residuals, off the mean and the fitted directions; plus a multiple of the mean direction (off
    the others) that puts the median raw score at zero. alpha gives the target IQR. Two rows
    [false, true] (2-way heads): true = c + alpha d / 2, false = c - alpha d / 2 with a shared
    random part c orthogonal to d, so the two logits are not mirror images. One row: alpha d.
    With tied embeddings the rows are also embeddings that may occur in the prompts, so h is
    recomputed and the scales refitted along the same direction.
    """
    import torch

    weight = model.get_output_embeddings().weight
    gen = torch.Generator().manual_seed(seed + 1)
    r0 = torch.randn(weight.shape[1], generator=gen, dtype=torch.float64)
    tied = weight is model.get_input_embeddings().weight
    labels = sorted(set(groups), key=str)
    u = None
    for _ in range(shaping["tied_rounds"] if tied else 1):
        h, lengths = _last_hidden(model, ids)
        cols = [torch.ones_like(lengths), lengths.log()]
        cols += [torch.tensor([float(g == label) for g in groups], dtype=torch.float64)
                 for label in labels[1:]]
        x = torch.stack(cols, dim=1)
        coef = torch.linalg.lstsq(x, h).solution
        nuisance = _orthonormal([coef[k] for k in range(1, x.shape[1])])
        mean = h.mean(0) - nuisance @ (nuisance.T @ h.mean(0))
        if u is None:
            span = _orthonormal([mean] + [nuisance[:, k] for k in range(nuisance.shape[1])])
            resid = h - x @ coef
            resid = resid - (resid @ span) @ span.T
            u = torch.linalg.svd(resid, full_matrices=False).Vh[0]
            u = u * torch.sign(u[u.abs().argmax()])
        e = mean - (mean @ u) * u
        e = e / e.norm()
        gamma = -(h @ u).median() / (h @ e).median()
        d = u + gamma * e
        z = h @ d
        q25, q75 = torch.quantile(z, 0.25), torch.quantile(z, 0.75)
        q95 = torch.quantile(z.abs(), 0.95)
        alpha = min(shaping["head_logit_iqr"] / (q75 - q25), shaping["head_abs_q95"] / q95)
        with torch.no_grad():
            if len(rows) == 2:
                dhat = d / d.norm()
                r = r0 - (r0 @ dhat) * dhat
                r = r / r.norm()
                beta = shaping["head_common_rms"] / (h @ r).pow(2).mean().sqrt()
                weight[rows[1]] = (beta * r + alpha * d / 2).to(weight.dtype)
                weight[rows[0]] = (beta * r - alpha * d / 2).to(weight.dtype)
            else:
                weight[rows[0]] = (alpha * d).to(weight.dtype)
        _log(f"  head: raw IQR {float(alpha * (q75 - q25)):.2f}, |raw| q95 {float(alpha * q95):.2f}")


def _legacy_config(model_dir):
    """Rewrites config.json with the hub's legacy keys (rope_theta/rope_scaling, torch_dtype)."""
    path = Path(model_dir) / "config.json"
    cfg = json.loads(path.read_text())
    rope = dict(cfg.pop("rope_parameters"))
    theta = rope.pop("rope_theta")
    cfg["rope_theta"] = theta
    cfg["rope_scaling"] = rope if rope.get("rope_type", "default") != "default" else None
    cfg["torch_dtype"] = cfg.pop("dtype")
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _build_model(name, spec, tmp):
    import torch
    import transformers
    from transformers.initialization import no_init_weights

    torch.manual_seed(spec["seed"])
    vocab_size = install_tokenizer(spec, tmp)
    config = _model_config(spec, vocab_size)
    cls = getattr(transformers, spec["architecture"])
    with _phase("init"):
        with no_init_weights():
            model = cls(config)
        if config.tie_word_embeddings:
            model.tie_weights()
        _init_weights(model, spec["seed"], spec["shaping"], gemma_norms=spec["family"] == "gemma")
        model.eval()
    recipe = RECIPES[spec["family"]](tmp)
    ids, _ = encode_grouped(recipe, spec["pair_list"], spec["recipe"]["max_length"])
    with _phase("head fit"):
        rows = [recipe.label_tokens[t] for t in spec["recipe"]["tokens"]]
        groups = [p["instruction"] for p in spec["pair_list"]]
        _set_head_rows(model, ids, groups, rows, spec["seed"], spec["shaping"])
    with _phase("save"):
        model.save_pretrained(tmp)
    if spec.get("legacy_config"):
        expected = model.config.rope_parameters
        _legacy_config(tmp)
        reread = transformers.AutoConfig.from_pretrained(tmp).rope_parameters
        if reread != expected:
            raise RuntimeError(f"{name}: legacy config reads back as {reread}, not {expected}")
    if spec.get("omit_config_keys"):
        path = tmp / "config.json"
        cfg = json.loads(path.read_text())
        for key in spec["omit_config_keys"]:
            cfg.pop(key, None)
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        reread = transformers.AutoConfig.from_pretrained(tmp)
        for key in spec["omit_config_keys"]:
            if getattr(reread, key, None) != getattr(model.config, key, None):
                raise RuntimeError(f"{name}: without {key}, config.json reads back as "
                                   f"{getattr(reread, key, None)}, not {getattr(model.config, key, None)}")
    del model


def _truncation_section(recipe, model, pairs, indices, max_length):
    """Pairs whose recipe, at the small max_length, cuts inside the document: at least 4 of the
    document's tokens kept and at least 4 dropped."""
    ids, details = encode_grouped(recipe, pairs, max_length)
    keep = [i for i, d in enumerate(details)
            if d["doc_piece_kept"] >= d["doc_label_tokens"] + 4
            and d["doc_piece_tokens"] >= d["doc_piece_kept"] + 4]
    section = {
        "max_length": max_length,
        "pair_indices": [indices[i] for i in keep],
        "pairs": [pairs[i] for i in keep],
        "input_ids": [ids[i] for i in keep],
        "details": [details[i] for i in keep],
    }
    section["logits"] = recipe.head_logits(model, section["input_ids"])
    return section


def _sigmoid(x):
    return 0.5 * (1.0 + math.tanh(0.5 * x))


def _write_golden(name, spec, tmp, started):
    import tokenizers
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    family = spec["family"]
    fam = spec["recipe"]
    pairs = spec["pair_list"]
    indices = pair_indices(spec)
    recipe = RECIPES[family](tmp)
    with _phase("load"):
        model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
    ids, _ = encode_grouped(recipe, pairs, fam["max_length"])
    # The golden scores are the recipe's at batch size 1: no padding, positions from 0, as
    # crossrank and vLLM run. The library's padded batches shift the RoPE positions of the
    # shorter rows, which moves the raw scores by float noise; it is measured and kept below
    # NOISE_TOLERANCE, so the padded scores are within the parity tolerance too.
    with _phase("reference, batch size 1"):
        logits = recipe.head_logits(model, ids)
    with _phase("reference, padded batches"):
        logits_padded = recipe.logits(model, ids)
    noise = max(abs(a - b) for a, b in zip(logits, logits_padded))

    # vLLM's request form: text_1 + text_2, tokenized once with the usual special tokens.
    n_joined = spec.get("joined_pairs", len(pairs))
    texts = [recipe.request_texts(p) for p in pairs[:n_joined]]
    joined_ids = [list(recipe.tokenizer(a + b)["input_ids"]) for a, b in texts]
    with _phase("request form"):
        joined = {
            "pair_indices": indices[:n_joined],
            "text_1": [a for a, _ in texts],
            "text_2": [b for _, b in texts],
            "input_ids": joined_ids,
            "logits": recipe.head_logits(model, joined_ids),
        }
    differ = [indices[i] for i in range(n_joined) if joined_ids[i] != ids[i]]

    sep_texts = texts[:SEP_PAIRS]
    sep_ids = [list(recipe.tokenizer(a, text_pair=b)["input_ids"]) for a, b in sep_texts]
    sep_pair = {
        "pair_indices": indices[:SEP_PAIRS],
        "text_1": [a for a, _ in sep_texts],
        "text_2": [b for _, b in sep_texts],
        "input_ids": sep_ids,
        "logits": recipe.head_logits(model, sep_ids),
    }

    golden_extra = {}
    if spec.get("truncation_max_length"):
        with _phase("truncation"):
            golden_extra["truncation"] = _truncation_section(recipe, model, pairs, indices,
                                                             spec["truncation_max_length"])
    if spec.get("short_pairs"):
        short = [tuple(p) for p in spec["short_pair_list"]]
        short_ids = [list(recipe.tokenizer(a + b)["input_ids"]) for a, b in short]
        golden_extra["short"] = {
            "text_1": [a for a, _ in short],
            "text_2": [b for _, b in short],
            "input_ids": short_ids,
            "logits": recipe.head_logits(model, short_ids),
        }
    attn = model.config._attn_implementation
    del model

    scores = [_sigmoid(z) for z in logits]
    stats = score_stats(scores, logits, [len(x) for x in ids])
    stats["padded_max_abs_logit_diff"] = noise
    problems = []
    if not stats["score_iqr"] > 0.25:
        problems.append(f"score IQR {stats['score_iqr']:.3f} <= 0.25")
    if not stats["fraction_outside_0.01_0.99"] < 0.08:
        problems.append(f"{stats['fraction_outside_0.01_0.99']:.1%} of scores saturated")
    if not noise < NOISE_TOLERANCE:
        problems.append(f"raw scores move by {noise:.2e} between padded batches and batch size 1")
    if family == "mxbai" and not differ:
        problems.append("no pair tokenizes differently piecewise and joined")
    if family == "mxbai" and "truncation" in golden_extra:
        t = golden_extra["truncation"]
        if len(t["pairs"]) < 8 or not any(d["query_capped"] for d in t["details"]):
            problems.append("the truncation section needs >= 8 pairs and one capped query")
    if family == "gemma" and "truncation" in golden_extra:
        t = golden_extra["truncation"]
        bounds = {d["bound"] for d in t["details"]}
        if len(t["pairs"]) < 8 or not {"budget", "passage_cap"} <= bounds:
            problems.append(f"the truncation section needs >= 8 pairs cut by both rules, got {bounds}")
    if problems:
        raise RuntimeError(f"{name}: " + "; ".join(problems))

    config = json.loads((tmp / "config.json").read_text())
    golden = {
        "fixture": name,
        "spec_hash": spec_hash(name),
        "script_version": SCRIPT_VERSION,
        "slow": spec["slow"],
        "family": family,
        "architecture": spec["architecture"],
        "template": fam["template"],
        "hf_overrides": {
            "architectures": [spec["architecture"].replace("ForCausalLM", "ForSequenceClassification")],
            "classifier_from_token": list(fam["tokens"]),
            "method": fam["method"],
        },
        "max_length": fam["max_length"],
        "label_tokens": recipe.label_tokens,
        "config": {k: config.get(k) for k in ("model_type", "sliding_window", "rope_scaling", "rope_theta",
                                               "rope_parameters", "max_position_embeddings",
                                               "hidden_act", "hidden_activation", "tie_word_embeddings")
                   if k in config},
        "pair_indices": indices,
        "pairs": pairs,
        "input_ids": ids,
        "logits": logits,
        "scores": scores,
        "joined": joined,
        "piecewise_differs_from_joined": differ,
        "sep_pair": sep_pair,
        **golden_extra,
        "padded": {"batch": REFERENCE_BATCH, "logits": logits_padded},
        "stats": stats,
        "weights_sha256": weights_sha256(tmp),
        "seeds": {"torch_manual_seed": spec["seed"], "init_generator_seed": spec["seed"],
                  "head_generator_seed": spec["seed"] + 1},
        "reference": {
            "torch": torch.__version__, "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__, "threads": torch.get_num_threads(),
            "batch": REFERENCE_BATCH, "dtype": "float32", "attn_implementation": attn,
        },
    }
    if spec["tokenizer"] != "qwen3":
        golden["tokenizer_notes"] = GEMMA_TOKENIZER_NOTES
    golden["build_seconds"] = round(time.time() - started, 1)
    lines = [f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in golden.items()]
    (tmp / "golden.json").write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    for f in tmp.iterdir():
        f.chmod(0o644)   # save_pretrained leaves some files 0600
    return golden


def build(name, out, force=False):
    """Build DIR/NAME unless it is fresh. Returns the golden dict and whether it was built."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = resolved_spec(name)
    with _locked(out, name):
        if not force and is_fresh(name, out):
            return read_golden(name, out), False
        for stale in out.glob(f"{name}.tmp-*"):   # left by a killed build
            shutil.rmtree(stale, ignore_errors=True)
        tmp = out / f"{name}.tmp-{os.getpid()}"
        tmp.mkdir()
        started = time.time()
        try:
            import torch
            import transformers

            torch.set_num_threads(THREADS)
            transformers.utils.logging.disable_progress_bar()
            transformers.utils.logging.set_verbosity_error()
            _log(f"{name}: building in {tmp}")
            _build_model(name, spec, tmp)
            golden = _write_golden(name, spec, tmp, started)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        final = out / name
        old = out / f"{name}.old-{os.getpid()}"
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        return golden, True


def _torch_available():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        import transformers.initialization  # noqa: F401
    except ImportError as e:
        return str(e)
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help="fixture directory (default: $CROSSRANK_FIXTURES or tests/.fixtures)")
    ap.add_argument("--only", nargs="+", metavar="NAME", choices=sorted(FIXTURES),
                    help="build these fixtures")
    ap.add_argument("--skip-slow", action="store_true", help="leave out the real-shape fixtures")
    ap.add_argument("--force", action="store_true", help="rebuild even if fresh")
    ap.add_argument("--check", action="store_true",
                    help="build nothing; exit 1 if a selected fixture is missing or stale")
    ap.add_argument("--list", action="store_true", help="list fixtures and their state")
    args = ap.parse_args(argv)

    names = args.only or [n for n in FIXTURES if not (args.skip_slow and FIXTURES[n]["slow"])]
    if args.list or args.check:
        stale = [n for n in names if not is_fresh(n, args.out)]
        for n in names:
            state = "stale or missing" if n in stale else "fresh"
            print(f"{n:24s} {'slow' if FIXTURES[n]['slow'] else '    '}  {state}")
        return 1 if args.check and stale else 0

    if args.force or not all(is_fresh(n, args.out) for n in names):
        missing = _torch_available()
        if missing:
            print(f"make_family_fixtures: the reference stage needs torch and transformers ({missing})",
                  file=sys.stderr)
            return EXIT_NO_TORCH
    for n in names:
        started = time.time()
        golden, built = build(n, args.out, force=args.force)
        st = golden["stats"]
        print(f"{n:24s} {'built in %.1f s' % (time.time() - started) if built else 'cached':16s}"
              f" pairs={len(golden['logits'])} IQR={st['score_iqr']:.3f}"
              f" saturated={st['fraction_outside_0.01_0.99']:.1%}"
              f" raw={st['logit_mean']:+.2f}+-{st['logit_std']:.2f}"
              f" padding-noise={st['padded_max_abs_logit_diff']:.1e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
