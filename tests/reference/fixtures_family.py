"""The fixtures of the families beyond Qwen3: random-weight checkpoints and the golden scores of
each family's official recipe (recipe_mxbai.py, recipe_flag_llm.py, and recipe_qwen3.py's card
recipe for the Llama and Mistral fixtures), run by `transformers` in float32.

Each fixture DIR/NAME/ holds a checkpoint written by `transformers` (float32 safetensors,
config.json), the tokenizer files and golden.json: the token ids and raw scores of the family's
official recipe. The crossrank stage (tests/test_parity_families.py) reads these files and never
imports torch.

Every golden also holds vLLM's request form of the same prompts ("joined": `tokenizer(text_1 +
text_2)` with the tokenizer's special tokens, scored by `transformers` unpadded) and a few pairs
tokenized as pairs ("sep_pair": `tokenizer(text_1, text_pair=text_2)`, for `use_sep_token`).

Random weights are shaped as in fixtures_qwen3.py (unit-scale embeddings and projections, jittered
norms, q/k projections scaled for sharper attention, head rows fitted to the principal direction
of the last token's final hidden state), so the scores are spread out; the build fails otherwise.

A fixture is rebuilt only when golden.json is missing or its "spec_hash" differs from the hash of
its spec (config, shaping, pairs, recipe constants, tokenizer) and SCRIPT_VERSION (bump it whenever
the build or reference code changes). torch is imported inside the build functions only.
"""

import copy
import json
import math
import time
import warnings
from pathlib import Path

import recipe_flag_llm
import recipe_mxbai
import recipe_qwen3
from recipe_flag_llm import GEMMA_TOKENIZER, GEMMA_TOKENIZER_NOTES, build_gemma_tokenizer, gemma_corpus
from reference_stage import (MODEL_CONFIGS, PAIRS, REFERENCE_BATCH, build_atomically,
                             copy_qwen3_tokenizer, encode_grouped, log, orthonormal, pair_indices,
                             phase, read_golden, reference_versions, score_stats, seeds, sigmoid,
                             spread_problems, tokenizer_sha256, weights_sha256, write_golden)
from reference_stage import spec_hash as _spec_hash

SCRIPT_VERSION = 1

# torch threads. One: on a 2-core machine shared with other jobs, two OpenMP threads wait in
# barriers whenever the other core is busy (the tiny models' GEMMs ran ~100x slower, the real
# shape's 2x slower than with one thread).
THREADS = 1

NOISE_TOLERANCE = 5e-5       # max |raw score(padded batches of 8) - raw score(batch size 1)|
SEP_PAIRS = 6                # pairs in the "sep_pair" section

# The recipe of each family: its module (FAMILY: template, head tokens, method, max_length;
# CONSTANTS: the prompt pieces) and its Recipe class.
FAMILY_RECIPES = {
    "mxbai": (recipe_mxbai, recipe_mxbai.MxbaiRerankV2Recipe),
    "gemma": (recipe_flag_llm, recipe_flag_llm.FlagLLMRerankerRecipe),
    "llama": (recipe_qwen3, recipe_qwen3.Qwen3RerankerCardRecipe),
    "mistral": (recipe_qwen3, recipe_qwen3.Qwen3RerankerCardRecipe),
}
FAMILIES = {family: module.FAMILY for family, (module, _) in FAMILY_RECIPES.items()}
RECIPES = {family: cls for family, (_, cls) in FAMILY_RECIPES.items()}

# -- Weight shaping (see fixtures_qwen3.py; q/k projections stand in for Qwen3's q/k norms) -----

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
        # the library lowers max_length so that its fixed text fits max_position_embeddings beside it
        "positions_limit": 200,
        "slow": False,
    },
    "mxbai-base": {
        "family": "mxbai",
        "architecture": "Qwen2ForCausalLM",
        "config_file": "mxbai-rerank-base-v2.json",
        # 24 layers: sharp attention compounds into padding noise (see fixtures_qwen3.py, qwen3-0.6b).
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
            # not a multiple of 32: crossrank pads each half of gate|up (and its biases) to whole
            # 32-column panels, which this fixture checks against transformers
            intermediate_size=120,
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

def resolved_spec(name):
    """Everything a fixture's content depends on, as plain JSON data."""
    spec = copy.deepcopy(FIXTURES[name])
    if "config_file" in spec:
        spec["config"] = json.loads((MODEL_CONFIGS / spec["config_file"]).read_text())
    spec["shaping"] = dict(SHAPING, **spec.get("shaping", {}))
    spec["pair_list"] = [PAIRS[i] for i in pair_indices(spec)]
    if spec.get("short_pairs"):
        spec["short_pair_list"] = short_request_pairs()
    module, _ = FAMILY_RECIPES[spec["family"]]
    spec["recipe"] = dict(module.FAMILY, batch=REFERENCE_BATCH)
    spec["recipe"].update(module.CONSTANTS)
    if spec["tokenizer"] == "qwen3":
        spec["tokenizer_sha256"] = tokenizer_sha256()
    else:
        spec["tokenizer_build"] = dict(GEMMA_TOKENIZER, corpus=gemma_corpus())
    return spec


def spec_hash(name):
    return _spec_hash(SCRIPT_VERSION, resolved_spec(name))


def is_fresh(name, out):
    """True when DIR/NAME holds a complete fixture built from the current spec."""
    golden = read_golden(name, out)
    return golden is not None and golden.get("spec_hash") == spec_hash(name)


def install_tokenizer(spec, dst):
    """Writes the fixture's tokenizer files; returns the vocabulary size (None: the config's)."""
    if spec["tokenizer"] == "qwen3":
        copy_qwen3_tokenizer(dst)
        return None
    return build_gemma_tokenizer(dst)


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


def init_weights(model, seed, shaping, gemma_norms):
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


def set_head_rows(model, ids, groups, rows, seed, shaping):
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
        nuisance = orthonormal([coef[k] for k in range(1, x.shape[1])])
        mean = h.mean(0) - nuisance @ (nuisance.T @ h.mean(0))
        if u is None:
            span = orthonormal([mean] + [nuisance[:, k] for k in range(nuisance.shape[1])])
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
        log(f"  head: raw IQR {float(alpha * (q75 - q25)):.2f}, |raw| q95 {float(alpha * q95):.2f}")


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
    with phase("init"):
        with no_init_weights():
            model = cls(config)
        if config.tie_word_embeddings:
            model.tie_weights()
        init_weights(model, spec["seed"], spec["shaping"], gemma_norms=spec["family"] == "gemma")
        model.eval()
    recipe = RECIPES[spec["family"]](tmp)
    recipe.config = config
    ids, _ = encode_grouped(recipe, spec["pair_list"], spec["recipe"]["max_length"])
    with phase("head fit"):
        rows = [recipe.label_tokens[t] for t in spec["recipe"]["tokens"]]
        groups = [p["instruction"] for p in spec["pair_list"]]
        set_head_rows(model, ids, groups, rows, spec["seed"], spec["shaping"])
    with phase("save"):
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


def _positions_section(recipe, model, pairs, indices, max_length, limit):
    """The pairs at the family's max_length with the model's max_position_embeddings set to
    `limit` (mxbai: the library lowers max_length to `limit` minus its fixed text). The forward
    itself does not read the limit, so the fixture's weights serve."""
    saved, recipe.model_max_length = recipe.model_max_length, limit
    try:
        ids, _ = encode_grouped(recipe, pairs, max_length)
    finally:
        recipe.model_max_length = saved
    return {"max_position_embeddings": limit, "max_length": max_length, "pair_indices": indices, "pairs": pairs,
            "input_ids": ids, "logits": recipe.head_logits(model, ids)}


def _write_golden(name, spec, tmp, started):
    import torch
    from transformers import AutoModelForCausalLM

    family = spec["family"]
    fam = spec["recipe"]
    pairs = spec["pair_list"]
    indices = pair_indices(spec)
    recipe = RECIPES[family](tmp)
    with phase("load"):
        model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
    ids, _ = encode_grouped(recipe, pairs, fam["max_length"])
    # The golden scores are the recipe's at batch size 1: no padding, positions from 0, as
    # crossrank and vLLM run. The library's padded batches shift the RoPE positions of the
    # shorter rows, which moves the raw scores by float noise; it is measured and kept below
    # NOISE_TOLERANCE, so the padded scores are within the parity tolerance too.
    with phase("reference, batch size 1"):
        logits = recipe.head_logits(model, ids)
    with phase("reference, padded batches"):
        logits_padded = recipe.logits(model, ids)
    noise = max(abs(a - b) for a, b in zip(logits, logits_padded))

    # vLLM's request form: text_1 + text_2, tokenized once with the usual special tokens.
    n_joined = spec.get("joined_pairs", len(pairs))
    texts = [recipe.request_texts(p) for p in pairs[:n_joined]]
    joined_ids = [list(recipe.tokenizer(a + b)["input_ids"]) for a, b in texts]
    with phase("request form"):
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
        with phase("truncation"):
            golden_extra["truncation"] = _truncation_section(recipe, model, pairs, indices,
                                                             spec["truncation_max_length"])
    if spec.get("positions_limit"):
        with phase("positions"):
            golden_extra["positions"] = _positions_section(recipe, model, pairs, indices, fam["max_length"],
                                                           spec["positions_limit"])
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

    scores = [sigmoid(z) for z in logits]
    stats = score_stats(scores, logits, [len(x) for x in ids])
    stats["padded_max_abs_logit_diff"] = noise
    problems = spread_problems(stats)
    if not noise < NOISE_TOLERANCE:
        problems.append(f"raw scores move by {noise:.2e} between padded batches and batch size 1")
    if family == "mxbai":
        problems += recipe_mxbai.problems(golden_extra, differ)
    if family == "gemma":
        problems += recipe_flag_llm.problems(golden_extra)
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
        "seeds": seeds(spec["seed"]),
        "reference": reference_versions(attn),
    }
    if spec["tokenizer"] != "qwen3":
        golden["tokenizer_notes"] = GEMMA_TOKENIZER_NOTES
    golden["build_seconds"] = round(time.time() - started, 1)
    write_golden(tmp, golden)
    return golden


def build(name, out, force=False):
    """Build DIR/NAME unless it is fresh. Returns the golden dict and whether it was built."""
    spec = resolved_spec(name)

    def make(tmp, started):
        import torch
        import transformers

        torch.set_num_threads(THREADS)
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        log(f"{name}: building in {tmp}")
        _build_model(name, spec, tmp)
        return _write_golden(name, spec, tmp, started)

    return build_atomically(name, out, force, is_fresh, make)


def summary(golden):
    """One line of figures on a built or cached fixture."""
    st = golden["stats"]
    return (f"pairs={len(golden['logits'])} IQR={st['score_iqr']:.3f}"
            f" saturated={st['fraction_outside_0.01_0.99']:.1%}"
            f" raw={st['logit_mean']:+.2f}+-{st['logit_std']:.2f}"
            f" padding-noise={st['padded_max_abs_logit_diff']:.1e}")
