"""An HTTP server that speaks vLLM's ``/score`` and ``/rerank`` APIs (and TEI's ``/rerank``).

    crossrank serve Qwen/Qwen3-Reranker-0.6B --hf_overrides '{"architectures": [...], ...}'

Needs the ``serve`` extra (FastAPI, uvicorn): ``pip install 'crossrank[serve]'``. Importing this
package does not import them; :mod:`crossrank.server.app` does.

Modules: :mod:`~crossrank.server.settings` (the settings), :mod:`~crossrank.server.protocol`
(vLLM's request and response shapes), :mod:`~crossrank.server.tei` (TEI's ``/rerank`` and
``/info``), :mod:`~crossrank.server.tokenize_routes` (``/tokenize``, ``/detokenize``),
:mod:`~crossrank.server.errors` (vLLM's and TEI's error shapes), :mod:`~crossrank.server.engine`
(tokenization per request form), :mod:`~crossrank.server.batcher` (dynamic batching on one engine
thread), :mod:`~crossrank.server.metrics` (Prometheus text), :mod:`~crossrank.server.middleware`
(metrics, API key and body limit, before any parsing), :mod:`~crossrank.server.loader` (loading the
model), :mod:`~crossrank.server.app` (the ASGI app
and uvicorn), :mod:`~crossrank.server.cli` (the ``serve`` subcommand).
"""
from .settings import ServerSettings

__all__ = ["ServerSettings"]
