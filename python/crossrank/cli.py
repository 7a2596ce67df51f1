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
    """The arguments _load() reads, and the instruction: shared by score, rank and eval."""
    p.add_argument("model", help="model directory or Hugging Face id")
    p.add_argument("--hf_overrides", "--hf-overrides", default=None, help="config overrides as JSON (vLLM semantics)")
    p.add_argument("--max-length", "--max_length", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "int8"],
                   help="compute dtype (auto: bfloat16 on AMX tiles or on AMD with AVX512_BF16, else float32)")
    p.add_argument("--template", default=None, help="prompt template name (default: from the model)")
    p.add_argument("--instruction", default=None, help="task instruction (default: the template's)")
    p.add_argument("--local-files-only", action="store_true")


def _add_scoring_parser(sub, name: str, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help)
    _add_model_args(p)
    p.add_argument("--query", required=True)
    p.add_argument("--doc", action="append", required=True, help="a document (repeat for several)")
    p.add_argument("--raw", action="store_true", help="print raw logits instead of activated scores")
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


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


def _add_eval_parser(sub) -> None:
    p = sub.add_parser(
        "eval", help="BM25 top-k reranked by MODEL: nDCG@10, MRR@10, Recall@100 before and after",
        description="Evaluate a reranker on a dataset in BEIR's layout (corpus.jsonl, queries.jsonl, "
                    "qrels/<split>.tsv or qrels.tsv): BM25 (bm25s) takes the top k per query, MODEL "
                    "reranks them, and ir-measures reports the metrics of both rankings. Needs "
                    'pip install "crossrank[eval]".')
    _add_model_args(p)
    p.add_argument("--data", required=True, help="dataset directory (BEIR layout)")
    p.add_argument("--split", default="test", help="qrels split: qrels/<split>.tsv (default: test)")
    p.add_argument("--top-k", "--top_k", dest="top_k", type=int, default=100,
                   help="BM25 candidates per query (default: 100)")
    p.add_argument("--max-queries", type=int, default=None, help="evaluate only the first N queries")
    p.add_argument("--timing", choices=("document", "query"), default="document",
                   help="document: score and time each document alone (per-document latency); "
                        "query: score each query's candidates in batches")
    p.add_argument("--batch-size", type=int, default=32, help="documents per forward pass with --timing query")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT",
                   help="write the full result (metrics, per-query values, runs, per-pair records) as JSON "
                        "to OUT ('-' for stdout)")
    p.add_argument("--run", dest="run_out", default=None, metavar="OUT",
                   help="write the reranked ranking as a TREC run file")
    progress = p.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="show a progress bar (default: on a terminal)")
    progress.add_argument("--no-progress", dest="progress", action="store_false")


def _eval(args: argparse.Namespace) -> int:
    try:
        from .evaluation import evaluate, load_dataset
    except ImportError as exc:
        raise SystemExit(f"crossrank eval: {exc}")
    dataset = load_dataset(args.data, args.split)  # bad data fails before a large model loads
    model = _load(args)
    try:
        result = evaluate(model, dataset, split=args.split, top_k=args.top_k, batch_size=args.batch_size,
                          instruction=args.instruction, max_queries=args.max_queries, timing=args.timing,
                          show_progress_bar=args.progress)
    except ImportError as exc:
        raise SystemExit(f"crossrank eval: {exc}")
    if args.json_out == "-":
        print(json.dumps(result.to_dict()))
    else:
        print(result.summary())
        if args.json_out:
            with open(args.json_out, "w", encoding="utf-8") as f:
                json.dump(result.to_dict(), f, indent=1)
            print(f"wrote {args.json_out}")
    if args.run_out:
        result.write_trec_run(args.run_out)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``crossrank`` console script."""
    parser = argparse.ArgumentParser(prog="crossrank", description="LLM rerankers on the CPU")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_scoring_parser(sub, "score", "score documents against a query")
    p_rank = _add_scoring_parser(sub, "rank", "rank documents for a query")
    p_rank.add_argument("--top-k", type=int, default=None)
    sub.add_parser("cpu", help="show the kernels this CPU uses")
    _add_convert_parser(sub)
    _add_eval_parser(sub)
    from .server.cli import add_serve_parser, run_serve  # imports no web framework until `serve` runs

    add_serve_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return run_serve(args)

    from .errors import CrossrankError

    try:
        if args.command == "cpu":
            from . import cpu_info

            print(json.dumps(cpu_info(), indent=2))
            return 0
        if args.command == "convert":
            return _convert(args)
        if args.command == "eval":
            return _eval(args)
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
