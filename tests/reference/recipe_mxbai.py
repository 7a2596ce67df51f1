"""The mxbai-rerank-v2 recipe: mixedbread's `mxbai_rerank/mxbai_rerank_v2.py` (`prepare_inputs`,
`concat_input_ids`, `forward`), read from the library's source and rewritten against the
transformers 5 API.

prefix ids + the query piece ("[instruction: {instruction}\\n]query: {query}", capped at
max_length * 3 // 4) + "\\n" + "document: {doc}" (truncated `only_second` so that query, separator
and document fit max_length; the template constants are not counted) + "\\n" + task prompt +
suffix; left padding to a multiple of 8; score = logit("1") - logit("0").
"""

from reference_stage import Recipe, first_token_after, prepare_for_model_only_second

MXBAI_PREFIX = ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                "assistant.<|im_end|>\n<|im_start|>user\n")
MXBAI_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
MXBAI_TASK = (
    "You are a search relevance expert who evaluates how well documents match search queries. "
    "For each query-document pair, carefully analyze the semantic relationship between them, then "
    "provide your binary relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:")
MXBAI_SEP = "\n"
MXBAI_MAX_LENGTH = 8192

FAMILY = {
    "template": "mxbai-rerank-v2",
    "tokens": ["0", "1"],
    "method": "from_2_way_softmax",
    "max_length": MXBAI_MAX_LENGTH,
}
# The recipe's constants, part of the fixtures' specs.
CONSTANTS = {"prefix": MXBAI_PREFIX, "suffix": MXBAI_SUFFIX, "task": MXBAI_TASK, "sep": MXBAI_SEP}


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
        self.model_dir = model_dir
        self._model_max_length = None
        self.predefined_length = (len(self.prefix_inputs) + len(self.task_prompt_inputs)
                                  + len(self.suffix_inputs) + len(self.sep_inputs))
        self.label_tokens = {"0": self.no_loc, "1": self.yes_loc}

    @property
    def model_max_length(self):
        """mxbai-rerank 0.1.6: the config's max_position_embeddings (earlier releases read the
        tokenizer's model_max_length); read when first needed (the fixture builder makes a recipe
        for the tokenizer before it writes the config)."""
        if self._model_max_length is None:
            from transformers import AutoConfig  # the fixture plumbing imports this module without transformers

            config = self.config or AutoConfig.from_pretrained(self.model_dir)
            self._model_max_length = config.max_position_embeddings
        return self._model_max_length

    @model_max_length.setter
    def model_max_length(self, value):
        self._model_max_length = value

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
                "doc_label_tokens": first_token_after(tok, doc_text, len("document: ")),
            })
        return out, details

    def score_rows(self, logits_last):
        return (logits_last[:, self.yes_loc] - logits_last[:, self.no_loc]).tolist()

    @staticmethod
    def request_texts(pair):
        instruction = f"instruction: {pair['instruction']}\n" if pair["instruction"] else ""
        return (f"{MXBAI_PREFIX}{instruction}query: {pair['query']}\n",
                f"document: {pair['document']}\n{MXBAI_TASK}{MXBAI_SUFFIX}")


def problems(golden_extra, differ):
    """What the mxbai fixtures must show beyond a good spread of scores."""
    found = []
    if not differ:
        found.append("no pair tokenizes differently piecewise and joined")
    if "truncation" in golden_extra:
        t = golden_extra["truncation"]
        if len(t["pairs"]) < 8 or not any(d["query_capped"] for d in t["details"]):
            found.append("the truncation section needs >= 8 pairs and one capped query")
    return found
