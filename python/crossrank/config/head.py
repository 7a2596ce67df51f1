"""The scoring head: vLLM's reranker keys -> :class:`HeadSpec`, and classifier token lookup.

``classifier_from_token``, ``method`` (``from_2_way_softmax`` / ``no_post_processing``),
``is_original_qwen3_reranker`` and ``use_sep_token`` / ``use_pad_token`` keep vLLM's
``hf_overrides`` meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from ..errors import ConfigError
from .values import Source, get_bool, get_int

__all__ = ["HeadSpec", "METHODS", "RERANKER_KEYS", "build_head", "resolve_classifier_tokens"]

#: The two ways of turning LM-head rows into a classifier (vLLM's ``method``).
METHODS: Tuple[str, ...] = ("from_2_way_softmax", "no_post_processing")

#: The reranker keys read from ``config.json`` / ``hf_overrides``.
RERANKER_KEYS: Tuple[str, ...] = (
    "classifier_from_token",
    "method",
    "is_original_qwen3_reranker",
    "is_qwen3_reranker",
    "use_sep_token",
    "use_pad_token",
    "num_labels",
    "logit_bias",
    "logit_mean",
    "logit_sigma",
)


@dataclass(frozen=True)
class HeadSpec:
    """How the score is read off the final hidden state of the last token.

    Attributes:
        kind: ``"lm_rows"`` — build the classifier from rows of the LM head
            (``lm_head.weight``, or the embeddings when tied) picked by ``tokens``;
            ``"score_weight"`` — the checkpoint stores a ``score.weight``
            ``[num_labels, hidden]`` (a converted ``*ForSequenceClassification``);
            ``"none"`` — a causal LM with no reranker keys: the caller must supply
            the head (a family template's default overrides) or refuse.
        tokens: the classifier token strings (``kind == "lm_rows"`` only), in order;
            for ``from_2_way_softmax`` they are ``[false_token, true_token]``.
        method: ``"from_2_way_softmax"`` (score weight ``W[true] - W[false]``,
            one label) or ``"no_post_processing"`` (the rows ``W[tokens]``, one label
            per token); ``None`` unless ``kind == "lm_rows"``.
        num_labels: outputs per sequence (0 for ``kind == "none"``).
    """

    kind: str
    tokens: Tuple[str, ...] = ()
    method: Optional[str] = None
    num_labels: int = 0


def build_head(m: Mapping[str, Any], architecture: str, src: Source) -> Tuple[HeadSpec, bool, bool]:
    """Return ``(head, use_sep_token, is_original_qwen3_reranker)`` of a merged config.

    The reranker keys follow vLLM's ``hf_overrides`` semantics: see
    :func:`crossrank.config.load_config`.
    """
    tokens_raw = m.get("classifier_from_token")
    tokens: Optional[Tuple[str, ...]] = None
    if tokens_raw is not None:
        if isinstance(tokens_raw, str):
            raise ConfigError(
                f"classifier_from_token must be a list of token strings, got the string {tokens_raw!r} "
                f"(from {src.where('classifier_from_token')}); write [{tokens_raw!r}]."
            )
        if (
            not isinstance(tokens_raw, (list, tuple))
            or not tokens_raw
            or not all(isinstance(t, str) and t for t in tokens_raw)
        ):
            raise ConfigError(
                f"classifier_from_token must be a non-empty list of non-empty token strings, got "
                f"{tokens_raw!r} (from {src.where('classifier_from_token')})."
            )
        tokens = tuple(tokens_raw)
        dups = sorted({t for t in tokens if tokens.count(t) > 1})
        if dups:
            raise ConfigError(f"classifier_from_token lists {dups!r} more than once: {list(tokens)!r}.")

    method = m.get("method")
    if method is not None and method not in METHODS:
        raise ConfigError(
            f"method {method!r} (from {src.where('method')}) is not a reranker method; use "
            f"'from_2_way_softmax' (2 tokens [false, true], score = softmax over them) or "
            f"'no_post_processing' (1+ tokens, their raw logits)."
        )

    is_orig = get_bool(m, "is_original_qwen3_reranker", False, src)
    is_orig = get_bool(m, "is_qwen3_reranker", False, src) or is_orig
    if is_orig:
        key = "is_original_qwen3_reranker" if m.get("is_original_qwen3_reranker") else "is_qwen3_reranker"
        if tokens is None:
            tokens = ("no", "yes")  # the Qwen3-Reranker answer tokens
        elif len(tokens) != 2:
            raise ConfigError(
                f"{key}=true needs classifier_from_token with exactly 2 tokens [false, true] "
                f"(Qwen3-Reranker: [\"no\", \"yes\"]), got {len(tokens)}: {list(tokens)!r}."
            )
        if method not in (None, "from_2_way_softmax"):
            raise ConfigError(
                f"{key}=true means method 'from_2_way_softmax', but method {method!r} was also given; "
                f"drop one of them."
            )
        method = "from_2_way_softmax"

    if tokens is not None and method is None:
        if len(tokens) == 1:
            method = "no_post_processing"  # the only method a single token allows
        else:
            raise ConfigError(
                f"classifier_from_token has {len(tokens)} tokens {list(tokens)!r} but no method is set; "
                f"add \"method\": \"from_2_way_softmax\" (exactly 2 tokens [false, true]; one score "
                f"= P(true)) or \"method\": \"no_post_processing\" (one raw logit per token)."
            )
    if method is not None and tokens is None:
        raise ConfigError(
            f"method {method!r} is set but classifier_from_token is not; give the answer tokens, e.g. "
            f"\"classifier_from_token\": [\"no\", \"yes\"] (from_2_way_softmax: [false, true])."
        )
    if method == "from_2_way_softmax" and len(tokens) != 2:  # type: ignore[arg-type]
        raise ConfigError(
            f"method 'from_2_way_softmax' needs exactly 2 classifier tokens [false_token, true_token], "
            f"got {len(tokens)}: {list(tokens)!r}. Use 'no_post_processing' for "  # type: ignore[arg-type]
            f"{'one token' if len(tokens) == 1 else 'several tokens'}."  # type: ignore[arg-type]
        )

    # use_sep_token: the old name use_pad_token wins when present (vLLM); the default is
    # False for an LLM reranker (a method is set) and True otherwise.
    if m.get("use_pad_token") is not None:
        use_sep = get_bool(m, "use_pad_token", False, src)
    elif m.get("use_sep_token") is not None:
        use_sep = get_bool(m, "use_sep_token", False, src)
    else:
        use_sep = method is None

    if tokens is not None:
        n = 1 if method == "from_2_way_softmax" else len(tokens)
        head = HeadSpec(kind="lm_rows", tokens=tokens, method=method, num_labels=n)
    elif architecture.endswith("ForSequenceClassification"):
        id2label = m.get("id2label")
        if isinstance(id2label, Mapping) and id2label:
            n = get_int("num_labels", len(id2label), src)
        elif m.get("num_labels") is not None:
            n = get_int("num_labels", m.get("num_labels"), src)
        else:
            n = 2  # transformers' default when neither id2label nor num_labels is saved
        head = HeadSpec(kind="score_weight", num_labels=n)
    else:
        head = HeadSpec(kind="none")
    return head, use_sep, is_orig


_SPACE_MARKERS = ("Ġ", "▁")  # byte-level BPE (GPT-2/Qwen/Llama-3) and SentencePiece (Gemma/Llama-2)


def _variants(token: str) -> List[str]:
    """Plausible intended spellings of a token that is not in the vocabulary."""
    core = token
    for prefix in _SPACE_MARKERS + (" ",):
        if core.startswith(prefix) and len(core) > len(prefix):
            core = core[len(prefix):]
            break
    cases = [core, core.lower(), core.upper(), core.capitalize()]
    out: List[str] = []
    for c in cases:
        for v in [c] + [p + c for p in _SPACE_MARKERS]:
            if v != token and v not in out:
                out.append(v)
    return out


def resolve_classifier_tokens(
    tokens: Sequence[str], vocab: Mapping[str, int], *, vocab_size: Optional[int] = None
) -> Tuple[int, ...]:
    """Map classifier token strings to ids by exact, case-sensitive vocabulary lookup.

    Args:
        tokens: the ``classifier_from_token`` strings, in order.
        vocab: ``tokenizer.get_vocab()`` (added tokens included).
        vocab_size: when given, every id must be below it (the LM head's rows).

    A string must be one vocabulary entry as it appears in the vocabulary: for a
    byte-level BPE tokenizer ``" yes"`` is the entry ``"Ġyes"``, and ``"Yes"`` and
    ``"yes"`` are different tokens. A string that is not an entry raises
    :class:`ConfigError` naming it and listing the existing case / space-prefixed
    variants with their ids.
    """
    if isinstance(tokens, str):
        raise ConfigError(
            f"classifier tokens must be a list of strings, got the string {tokens!r}; write [{tokens!r}]."
        )
    ids: List[int] = []
    for t in tokens:
        if not isinstance(t, str):
            raise ConfigError(f"classifier tokens must be strings, got {t!r}.")
        tid = vocab.get(t)
        if tid is None:
            found = [(v, vocab[v]) for v in _variants(t) if v in vocab]
            msg = (
                f"classifier_from_token {t!r} is not a single entry of the tokenizer's vocabulary "
                f"(the lookup is exact and case-sensitive)."
            )
            if found:
                listed = ", ".join(f"{v!r} (id {i})" for v, i in found)
                msg += f" Entries that do exist: {listed}."
                if any(v[:1] in _SPACE_MARKERS for v, _ in found):
                    msg += (
                        " 'Ġ' (byte-level BPE) and '▁' (SentencePiece) mark a leading space: 'Ġyes' is "
                        "the token of ' yes'."
                    )
                msg += " Use the exact entry the model answers with."
            else:
                msg += " Pick a string from tokenizer.get_vocab() (the model's answer token)."
            raise ConfigError(msg)
        tid = int(tid)
        if tid < 0 or (vocab_size is not None and tid >= vocab_size):
            raise ConfigError(
                f"classifier token {t!r} has id {tid}, outside the model's {vocab_size} LM-head rows; "
                f"the tokenizer does not match the checkpoint."
            )
        ids.append(tid)
    if len(set(ids)) != len(ids):
        raise ConfigError(
            f"classifier tokens {list(tokens)!r} map to repeated ids {ids}; each must be distinct."
        )
    return tuple(ids)
