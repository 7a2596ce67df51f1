"""The bge-reranker-v2-gemma recipe: FlagEmbedding's `BaseLLMReranker.compute_score_single_gpu`
(FlagLLMReranker), read from the library's source and rewritten against the transformers 5 API,
and the Gemma-convention tokenizer of the gemma-tiny fixture.

"A: {query}" capped at max_length * 3 // 4, "B: {passage}" capped at max_length, [BOS] + query +
"\\n" + passage truncated `only_second` within max_length + len("\\n") + len(prompt), then "\\n" +
prompt; batches sorted by length, padded to a multiple of 8; score = the raw logit of "Yes".

The Gemma fixture cannot use the real Gemma tokenizer (not available here): build_gemma_tokenizer
trains a small byte-fallback BPE on the test texts with Gemma's conventions (<pad>=0, <eos>=1,
<bos>=2, "\u2581" for spaces, BOS added by the post-processor). See GEMMA_TOKENIZER_NOTES for what
it does not cover.
"""

import json
from pathlib import Path

from reference_stage import PAIRS, Recipe, first_token_after, prepare_for_model_only_second

GEMMA_PROMPT = ("Given a query A and a passage B, determine whether the passage contains an answer "
                "to the query by providing a prediction of either 'Yes' or 'No'.")
GEMMA_SEP = "\n"
GEMMA_MAX_LENGTH = 1024      # the model card's; FlagEmbedding's class default is 512

FAMILY = {
    "template": "bge-reranker-v2-gemma",
    "tokens": ["Yes"],
    "method": "no_post_processing",
    "max_length": GEMMA_MAX_LENGTH,
}
# The recipe's constants, part of the fixtures' specs.
CONSTANTS = {"prompt": GEMMA_PROMPT, "sep": GEMMA_SEP}

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


def gemma_corpus():
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
    corpus = gemma_corpus()
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
                "doc_label_tokens": first_token_after(tok, passage_text, len("B: ")),
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


def problems(golden_extra):
    """What the Gemma fixtures must show beyond a good spread of scores."""
    found = []
    if "truncation" in golden_extra:
        t = golden_extra["truncation"]
        bounds = {d["bound"] for d in t["details"]}
        if len(t["pairs"]) < 8 or not {"budget", "passage_cap"} <= bounds:
            found.append(f"the truncation section needs >= 8 pairs cut by both rules, got {bounds}")
    return found
