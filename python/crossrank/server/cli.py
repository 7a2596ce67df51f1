"""``crossrank serve``: its arguments (vLLM's names where vLLM has them) and its entry point.

Nothing here imports FastAPI or uvicorn until the command runs, so the base package never needs
the ``serve`` extra.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
from typing import Callable, List, Tuple

__all__ = ["add_serve_parser", "run_serve"]

# The values of vLLM's --task, --runner and --convert that mean a scoring (pooling) model.
_SCORING_TASKS = ("auto", "score", "classify")
_POOLING_RUNNERS = ("auto", "pooling")
_SCORING_CONVERTS = ("auto", "none", "classify")

# vLLM flags with no meaning on a CPU reranker, and the type of their value (bool: no value).
_IGNORED_FLAGS = (("--trust-remote-code", bool), ("--gpu-memory-utilization", float), ("--max-num-seqs", int),
                  ("--tensor-parallel-size", int), ("--pipeline-parallel-size", int),
                  ("--data-parallel-size", int), ("--enforce-eager", bool), ("--max-num-batched-tokens", int),
                  ("--swap-space", float), ("--disable-log-requests", bool), ("--disable-log-stats", bool))


def _json_list(text: str) -> List[str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}); give a list such as '[\"*\"]'") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise argparse.ArgumentTypeError(f"must be a JSON list of strings, got {text}")
    return value


def _scoring_choice(flag: str, allowed: Tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in allowed:
            raise argparse.ArgumentTypeError(
                f"{value!r}: crossrank serves rerankers, which score (pooling); {flag} takes {', '.join(allowed)}. "
                "Text generation needs vLLM itself")
        return value
    return check


def add_serve_parser(sub: "argparse._SubParsersAction") -> None:
    """Adds the ``serve`` subcommand to the ``crossrank`` parser."""
    p = sub.add_parser(
        "serve", help="HTTP server speaking vLLM's /score and /rerank APIs (needs crossrank[serve])",
        description="Serve a reranker over HTTP with vLLM's /score and /rerank request and response shapes "
                    "(and TEI's /rerank shape). Binds to 127.0.0.1 unless --host says otherwise.")
    p.add_argument("model", help="model directory or Hugging Face id")
    p.add_argument("--hf_overrides", "--hf-overrides", default=None, help="config overrides as JSON (vLLM semantics)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", "--served_model_name", nargs="+", default=None,
                   help="name(s) accepted in the request's model field; the first is reported "
                        "(default: the model argument)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float", "float32", "bfloat16", "int8"],
                   help="compute dtype (auto: bfloat16 where the CPU has AVX512_BF16, else float32)")
    p.add_argument("--threads", type=int, default=None,
                   help="compute threads per worker (default: the CPUs divided among the workers)")
    p.add_argument("--max-length", "--max_length", "--max-model-len", "--max_model_len", dest="max_length",
                   type=int, default=None, help="token budget of one prompt (default: the family's)")
    p.add_argument("--api-key", "--api_key", default=os.environ.get("CROSSRANK_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $CROSSRANK_API_KEY)")
    p.add_argument("--template", default=None, help="prompt template name (default: from the model or served name)")
    p.add_argument("--chat-template", "--chat_template", dest="chat_template", default=None,
                   help="a Jinja chat (score) template file, or the template in one line (vLLM's flag); it "
                        "renders every request form")
    p.add_argument("--no-template", action="store_true",
                   help="take queries and documents as given, never apply the family template")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes, each with its own model")
    p.add_argument("--max-queue", type=int, default=256, help="requests allowed to wait before 503")
    p.add_argument("--request-timeout", type=float, default=600.0,
                   help="seconds before a request gets 504 and its work is cancelled (0: no limit)")
    p.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024, help="largest request body (413 above)")
    p.add_argument("--max-batch-tokens", type=int, default=16384, help="tokens per forward pass")
    p.add_argument("--max-client-batch-size", type=int, default=100_000,
                   help="items (documents, texts, pairs) per request; above it 413 (TEI shape) or 400")
    p.add_argument("--max-concurrent-requests", type=int, default=None,
                   help="requests handled at once, from before the body is read; beyond it 429 (TEI shape) or "
                        "503 at once, with Retry-After (default: --max-queue + 1)")
    p.add_argument("--max-connections", type=int, default=None,
                   help="open connections; beyond it 503 and close (default: the file limit less a reserve)")
    p.add_argument("--header-timeout", type=float, default=10.0,
                   help="seconds to send complete request headers before the connection is closed (0: none)")
    p.add_argument("--body-timeout", type=float, default=30.0,
                   help="seconds from the headers to the end of the body before 408 (0: none)")
    p.add_argument("--timeout-keep-alive", type=float, default=5.0,
                   help="seconds an idle keep-alive connection stays open (uvicorn's and vLLM's flag)")
    p.add_argument("--shutdown-timeout", type=float, default=30.0,
                   help="seconds in-flight requests get after SIGTERM; what still waits then gets 503")
    p.add_argument("--revision", default=None)
    p.add_argument("--local-files-only", action="store_true")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--disable-access-log", "--disable-uvicorn-access-log", action="store_true",
                   help="no per-request access log lines")
    p.add_argument("--uvicorn-log-level", default=None,
                   choices=["critical", "error", "warning", "info", "debug", "trace"],
                   help="uvicorn's log level (vLLM's flag; default: --log-level)")
    p.add_argument("--root-path", default="", help="path prefix a proxy serves the app under (vLLM's flag)")
    p.add_argument("--enable-request-id-headers", action="store_true",
                   help="echo X-Request-Id (a new one when absent) in every response (vLLM's flag)")
    # CORS, with vLLM's flags and defaults; each takes a JSON list.
    for flag in ("--allowed-origins", "--allowed-methods", "--allowed-headers"):
        p.add_argument(flag, type=_json_list, default=["*"], help=f"CORS {flag[10:]} as a JSON list (default: [\"*\"])")
    p.add_argument("--allow-credentials", action="store_true", help="CORS: allow credentials")
    # vLLM's task selection: a reranker scores, so only the values that mean scoring are taken.
    p.add_argument("--task", type=_scoring_choice("--task", _SCORING_TASKS), default=None,
                   help="vLLM's flag; only " + ", ".join(_SCORING_TASKS) + " (a reranker scores)")
    p.add_argument("--runner", type=_scoring_choice("--runner", _POOLING_RUNNERS), default=None,
                   help="vLLM's flag; only " + ", ".join(_POOLING_RUNNERS))
    p.add_argument("--convert", type=_scoring_choice("--convert", _SCORING_CONVERTS), default=None,
                   help="vLLM's flag; only " + ", ".join(_SCORING_CONVERTS))
    # vLLM's GPU and parallelism flags mean nothing on a CPU reranker: accepted, logged and ignored.
    for flag, kind in _IGNORED_FLAGS:
        if kind is bool:
            p.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
        else:
            p.add_argument(flag, type=kind, default=None, help=argparse.SUPPRESS)


def run_serve(args: argparse.Namespace) -> int:
    """Runs ``crossrank serve`` with parsed arguments; returns the exit code."""
    missing = [name for name in ("fastapi", "uvicorn", "prometheus_client") if importlib.util.find_spec(name) is None]
    if missing:
        print(f"crossrank: error: `crossrank serve` needs {' and '.join(missing)}; "
              "install them with: pip install 'crossrank[serve]'", file=sys.stderr)
        return 2
    from ..errors import CrossrankError
    from .app import configure_logging, run
    from .settings import ServerSettings

    configure_logging(args.log_level)
    for flag, _ in _IGNORED_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value not in (None, False):
            logging.getLogger("crossrank.server").info("%s means nothing on a CPU reranker; ignored", flag)
    overrides = None
    if args.hf_overrides:
        try:
            overrides = json.loads(args.hf_overrides)
        except json.JSONDecodeError as exc:
            print(f"crossrank: error: --hf_overrides is not valid JSON: {exc}", file=sys.stderr)
            return 2
    try:
        settings = ServerSettings(
            model=args.model, hf_overrides=overrides, served_model_names=list(args.served_model_name or []),
            host=args.host, port=args.port, dtype=args.dtype, threads=args.threads, max_length=args.max_length,
            template=args.template, chat_template=args.chat_template, use_template=not args.no_template,
            api_key=args.api_key or None,
            workers=args.workers, max_queue=args.max_queue, request_timeout=args.request_timeout or None,
            max_body_bytes=args.max_body_bytes, max_batch_tokens=args.max_batch_tokens,
            max_client_batch_size=args.max_client_batch_size, max_concurrent_requests=args.max_concurrent_requests,
            max_connections=args.max_connections, header_timeout=args.header_timeout or None,
            body_timeout=args.body_timeout or None, timeout_keep_alive=args.timeout_keep_alive,
            shutdown_timeout=args.shutdown_timeout,
            local_files_only=args.local_files_only, revision=args.revision, log_level=args.log_level,
            access_log=not args.disable_access_log, uvicorn_log_level=args.uvicorn_log_level,
            root_path=args.root_path, request_id_headers=args.enable_request_id_headers,
            allowed_origins=args.allowed_origins, allowed_methods=args.allowed_methods,
            allowed_headers=args.allowed_headers, allow_credentials=args.allow_credentials)
        code = run(settings)
    except (CrossrankError, OSError, ValueError, TypeError) as exc:
        print(f"crossrank: error: {exc}", file=sys.stderr)
        return 2
    return code
