"""The ``crossrank`` command line."""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

__all__ = ["main"]


def _load(args: argparse.Namespace):
    from .model import CrossEncoder

    overrides = None
    if args.hf_overrides:
        try:
            overrides = json.loads(args.hf_overrides)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"crossrank: --hf_overrides is not valid JSON: {exc}")
        if not isinstance(overrides, dict):
            raise SystemExit("crossrank: --hf_overrides must be a JSON object")
    return CrossEncoder(args.model, hf_overrides=overrides, max_length=args.max_length,
                        threads=args.threads, dtype=args.dtype, template=args.template,
                        local_files_only=args.local_files_only)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model directory or Hugging Face id")
    p.add_argument("--hf_overrides", "--hf-overrides", default=None, help="config overrides as JSON (vLLM semantics)")
    p.add_argument("--max-length", "--max_length", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "int8"],
                   help="compute dtype (auto: bfloat16 where the CPU has AVX512_BF16)")
    p.add_argument("--template", default=None, help="prompt template name (default: from the model)")
    p.add_argument("--instruction", default=None, help="task instruction (default: the template's)")
    p.add_argument("--local-files-only", action="store_true")
    p.add_argument("--raw", action="store_true", help="print raw logits instead of activated scores")
    p.add_argument("--json", action="store_true", help="print JSON")


def _add_convert_parser(sub) -> None:
    p = sub.add_parser(
        "convert", help="write a *ForSequenceClassification checkpoint (as vLLM's convert_model_to_seq_cls.py)",
        description="Convert a causal-LM reranker into a sequence classifier: score.weight built from the "
                    "LM-head rows of the answer tokens, no LM head. The output loads in crossrank and vLLM "
                    "without hf_overrides and in transformers' AutoModelForSequenceClassification.")
    p.add_argument("--model_name", "--model-name", dest="model_name", required=True,
                   help="the causal LM: model directory or Hugging Face id")
    p.add_argument("--classifier_from_tokens", "--classifier-from-tokens", dest="classifier_from_tokens",
                   required=True, help='answer tokens as a JSON list, e.g. \'["no", "yes"]\' ([false, true])')
    p.add_argument("--method", default=None, help="from_2_way_softmax or no_post_processing "
                   "(default: no_post_processing for a single token)")
    p.add_argument("--path", required=True, help="output directory (must not exist or be empty)")
    p.add_argument("--use-sep-token", "--use_sep_token", "--use-pad-token", "--use_pad_token",
                   dest="use_sep_token", action="store_true",
                   help="tokenize (text_1, text_2) as a pair (--use-pad-token is the older name)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --path")
    p.add_argument("--template", default=None, help="crossrank template to record (default: from the model)")
    p.add_argument("--revision", default=None)
    p.add_argument("--local-files-only", action="store_true")


def _convert(args: argparse.Namespace) -> int:
    from .convert import convert

    try:
        tokens = json.loads(args.classifier_from_tokens)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"crossrank: --classifier_from_tokens is not valid JSON ({exc}); write a JSON list, "
                         f"e.g. --classifier_from_tokens '[\"no\", \"yes\"]'")
    out = convert(args.model_name, tokens, args.method, args.path, use_sep_token=args.use_sep_token,
                  force=args.force, revision=args.revision, local_files_only=args.local_files_only,
                  template=args.template)
    print(f"wrote {out}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``crossrank`` console script."""
    parser = argparse.ArgumentParser(prog="crossrank", description="LLM rerankers on the CPU")
    sub = parser.add_subparsers(dest="command", required=True)
    p_score = sub.add_parser("score", help="score documents against a query")
    _add_model_args(p_score)
    p_score.add_argument("--query", required=True)
    p_score.add_argument("--doc", action="append", required=True, help="a document (repeat for several)")
    p_rank = sub.add_parser("rank", help="rank documents for a query")
    _add_model_args(p_rank)
    p_rank.add_argument("--query", required=True)
    p_rank.add_argument("--doc", action="append", required=True, help="a document (repeat for several)")
    p_rank.add_argument("--top-k", type=int, default=None)
    sub.add_parser("cpu", help="show the kernels this CPU uses")
    _add_convert_parser(sub)
    args = parser.parse_args(argv)

    from .errors import CrossrankError

    try:
        if args.command == "cpu":
            from . import cpu_info

            print(json.dumps(cpu_info(), indent=2))
            return 0
        if args.command == "convert":
            return _convert(args)
        model = _load(args)
        activation = "identity" if args.raw else None
        if args.command == "score":
            scores = model.score(args.query, args.doc, args.instruction, activation_fn=activation)
            if args.json:
                print(json.dumps([{"index": i, "score": float(s)} for i, s in enumerate(scores)]))
            else:
                for doc, s in zip(args.doc, scores):
                    print(f"{float(s):.6f}\t{doc}")
        else:
            ranked = model.rank(args.query, args.doc, top_k=args.top_k, return_documents=True,
                                activation_fn=activation, instruction=args.instruction)
            if args.json:
                print(json.dumps(ranked))
            else:
                for r in ranked:
                    print(f"{r['score']:.6f}\t{r['corpus_id']}\t{r['text']}")
        return 0
    except (CrossrankError, OSError, ValueError, TypeError) as exc:
        print(f"crossrank: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
