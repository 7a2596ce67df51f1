"""The Qwen3-Reranker model card recipe (RECIPES.md), in transformers.

Two forms of the same card code: Qwen3RerankerRecipe runs it as the card does (padded batches of
8, log_softmax over the "no"/"yes" logits), for the Qwen3 fixtures (fixtures_qwen3.py);
Qwen3RerankerCardRecipe is the card's tokenization behind the shared Recipe protocol
(reference_stage.Recipe), for the Llama and Mistral fixtures (fixtures_family.py): same tokenizer
and prompts, other architectures, score = logit("yes") - logit("no").

torch and transformers are imported inside the classes only.
"""

from reference_stage import REFERENCE_BATCH, Recipe

QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on "
    "the Query and the Instruct provided. Note that the answer can only be \"yes\" "
    "or \"no\".<|im_end|>\n<|im_start|>user\n"
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_DEFAULT_INSTRUCTION = (
    "Given a web search query, retrieve relevant passages that answer the query"
)
QWEN3_MAX_LENGTH = 8192

# The recipe as the Llama and Mistral fixtures use it (fixtures_family.py).
FAMILY = {
    "template": "qwen3-reranker",
    "tokens": ["no", "yes"],
    "method": "from_2_way_softmax",
    "max_length": QWEN3_MAX_LENGTH,
}
# The recipe's constants, part of those fixtures' specs.
CONSTANTS = {"prefix": QWEN3_PREFIX, "suffix": QWEN3_SUFFIX, "default_instruction": QWEN3_DEFAULT_INSTRUCTION}


def format_instruction(instruction, query, doc):
    if instruction is None:
        instruction = QWEN3_DEFAULT_INSTRUCTION
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"


def request_texts(pair):
    """vLLM's request form of a pair: (text_1, text_2), tokenized as tokenizer(text_1 + text_2)."""
    instruction = pair["instruction"]
    if instruction is None:
        instruction = QWEN3_DEFAULT_INSTRUCTION
    return (f"{QWEN3_PREFIX}<Instruct>: {instruction}\n<Query>: {pair['query']}\n",
            f"<Document>: {pair['document']}{QWEN3_SUFFIX}")


class Qwen3RerankerRecipe:
    """The model card's code, kept as close to the card as possible."""

    def __init__(self, model_dir, load_model=True):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
        self.model = None
        if load_model:
            self.model = AutoModelForCausalLM.from_pretrained(
                model_dir, dtype=torch.float32).eval()
        self.token_false_id = self.tokenizer.convert_tokens_to_ids("no")
        self.token_true_id = self.tokenizer.convert_tokens_to_ids("yes")
        self.prefix_tokens = self.tokenizer.encode(QWEN3_PREFIX, add_special_tokens=False)
        self.suffix_tokens = self.tokenizer.encode(QWEN3_SUFFIX, add_special_tokens=False)

    def process_inputs(self, pairs, max_length):
        inputs = self.tokenizer(
            pairs, padding=False, truncation="longest_first", return_attention_mask=False,
            max_length=max_length - len(self.prefix_tokens) - len(self.suffix_tokens),
        )
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = self.prefix_tokens + ele + self.suffix_tokens
        unpadded = [list(ids) for ids in inputs["input_ids"]]
        inputs = self.tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=max_length)
        return inputs, unpadded

    def compute_logits(self, inputs, **model_kwargs):
        torch = self.torch
        with torch.no_grad():
            batch_scores = self.model(**inputs, **model_kwargs).logits[:, -1, :]
            true_vector = batch_scores[:, self.token_true_id]
            false_vector = batch_scores[:, self.token_false_id]
            raw = (true_vector - false_vector).tolist()
            batch_scores = torch.stack([false_vector, true_vector], dim=1)
            batch_scores = torch.nn.functional.log_softmax(batch_scores, dim=1)
            scores = batch_scores[:, 1].exp().tolist()
        return scores, raw

    def run(self, pairs, max_length, batch_size=REFERENCE_BATCH, **model_kwargs):
        """pairs: dicts with query/document/instruction. Returns ids, scores, logits."""
        texts = [format_instruction(p["instruction"], p["query"], p["document"]) for p in pairs]
        ids, scores, logits = [], [], []
        for start in range(0, len(texts), batch_size):
            inputs, unpadded = self.process_inputs(texts[start:start + batch_size], max_length)
            s, r = self.compute_logits(inputs, **model_kwargs)
            ids += unpadded
            scores += s
            logits += r
        return ids, scores, logits

    def joined_ids(self, pairs):
        """vLLM's request form: tokenizer(text_1 + text_2), special tokens as usual."""
        out = []
        for p in pairs:
            text_1, text_2 = request_texts(p)
            out.append(list(self.tokenizer(text_1 + text_2)["input_ids"]))
        return out

    def truncation_candidates(self, pairs, max_length):
        """Indices of pairs whose right-truncation at max_length cuts only
        inside the document, keeping at least 4 of its tokens and dropping
        at least 4."""
        budget = max_length - len(self.prefix_tokens) - len(self.suffix_tokens)
        found = []
        for i, p in enumerate(pairs):
            if not p["document"].strip():
                continue
            text = format_instruction(p["instruction"], p["query"], p["document"])
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            doc_start = len(text) - len(p["document"])
            first = next(k for k, (_, end) in enumerate(enc["offset_mapping"]) if end > doc_start)
            if first + 4 <= budget and len(enc["input_ids"]) >= budget + 4:
                found.append(i)
        return found


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
        return format_instruction(pair["instruction"], pair["query"], pair["document"])

    def encode(self, pairs, max_length=QWEN3_MAX_LENGTH):
        enc = self.tokenizer([self.middle(p) for p in pairs], padding=False, truncation="longest_first",
                             return_attention_mask=False,
                             max_length=max_length - len(self.prefix_tokens) - len(self.suffix_tokens))
        return [self.prefix_tokens + list(ids) + self.suffix_tokens for ids in enc["input_ids"]], None

    def score_rows(self, logits_last):
        return (logits_last[:, self.token_true_id] - logits_last[:, self.token_false_id]).tolist()

    @staticmethod
    def request_texts(pair):
        return request_texts(pair)
