"""The ASGI app, on FastAPI and uvicorn: vLLM's ``/score``, ``/rerank``, ``/tokenize``,
``/detokenize``, ``/invocations`` (routed by the body), ``/health``, ``/ping``, ``/v1/models`` and
``/metrics``; TEI's ``/rerank`` shape, ``POST /`` and ``GET /info``.

Request path: the metrics, API-key, admission (a permit before the body is read) and body-limit
middlewares (pure ASGI, before any parsing) → JSON body (integers bounded; NaN, Infinity, nesting
deeper than 64 levels and lone surrogates refused; a large body is parsed off the event loop) →
item counts and types checked → validation into a
:class:`~crossrank.server.protocol.ScoringTask` → texts that provably cannot fit refused →
tokenization on a small thread pool, in slices (each request queues its next slice behind the
other requests' slices, so requests share the pool fairly) → the
:class:`~crossrank.server.batcher.Batcher` (one engine thread, requests rotated fairly through its
passes) → activation → response. The event loop only awaits and serializes.

:func:`create_app` builds the app from :class:`ServerSettings` (the model loads at startup, in
each worker process); :func:`app_from_env` is the factory uvicorn imports in every ``--workers``
process; :func:`run` starts uvicorn.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, TypeVar

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..model import CrossEncoder
from ..tokenization import TokenizationError, TooLongError, tokenizer_failure
from .batcher import Batcher, EngineStopped, QueueFull
from .responses import JSONResponse
from .engine import Prepared, PromptError, ScoringEngine
from .metrics import MULTIPROC_ENV, Metrics
from .errors import APIError, error_body
from .loader import load_model
from .limits import (Admission, check_items, looks_like_tei, parse_json_body, pre_cut, refuse_unfittable,
                     slices)
from .middleware import (AdmissionMiddleware, APIKeyMiddleware, BodyLimitMiddleware, MetricsMiddleware, Receive,
                         RequestIdMiddleware)
from .serving import DRAIN
from .protocol import ScoringTask, models_response, parse_rerank, parse_score, rerank_response, score_response
from .settings import ServerSettings
from .tei import info_response, is_tei_rerank, parse_tei_rerank, tei_rerank_response
from .tokenize_routes import detokenize, parse_detokenize, parse_tokenize, tokenize

__all__ = ["create_app", "app_from_env", "run", "load_model"]

logger = logging.getLogger("crossrank.server")

T = TypeVar("T")


SCORE_PATHS = ("/score", "/v1/score")
RERANK_PATHS = ("/rerank", "/v1/rerank", "/v2/rerank")
# Routed by the body: vLLM's SageMaker entry (/invocations) and TEI's router (POST /).
ROUTED_PATHS = ("/invocations", "/")
TOKENIZE_PATHS = ("/tokenize", "/detokenize")
# Paths named in metrics; anything else is counted as "other" so scanners cannot blow up the labels.
_KNOWN_PATHS = frozenset(SCORE_PATHS + RERANK_PATHS + ROUTED_PATHS + TOKENIZE_PATHS + (
    "/health", "/ping", "/info", "/v1/models", "/metrics", "/version"))
# Open without the API key: load balancers probe them.
_PUBLIC_PATHS = frozenset({"/health", "/ping"})
_LOOPBACK = ("127.0.0.1", "::1", "localhost")

# Threads that tokenize requests (reported by TEI's /info as tokenization_workers).
_TOKENIZER_THREADS = 2

# A model loaded by run() before uvicorn starts (one worker), picked up by the factory.
_PRELOADED: Dict[str, CrossEncoder] = {}

# Tokenization slices: a request's pairs go to the tokenizer pool this many at a time (or fewer,
# when their texts pass _SLICE_CHARS characters), each slice queued behind the other requests'.
_SLICE_PAIRS = 64
_SLICE_CHARS = 256 * 1024
# Bodies larger than this are parsed on the tokenizer pool instead of the event loop.
_PARSE_OFF_LOOP_BYTES = 256 * 1024


class _State:
    """What the handlers share: the engine, the batcher, the metrics and the tokenizer pool."""

    def __init__(self, settings: ServerSettings, model: CrossEncoder) -> None:
        self.settings = settings
        self.engine = ScoringEngine(model, use_template=settings.use_template)
        self.metrics = Metrics(settings.model_name)
        self.batcher = Batcher(model, max_queue=settings.max_queue, max_batch_tokens=settings.max_batch_tokens,
                               metrics=self.metrics)
        # Tokenization runs here, off the event loop and alongside the engine thread (the tokenizers
        # library releases the GIL while it encodes).
        self.tokenizer_pool = ThreadPoolExecutor(max_workers=_TOKENIZER_THREADS,
                                                 thread_name_prefix="crossrank-tokenize")
        # /tokenize and /detokenize get a thread of their own: a whole 15 MB prompt takes tens of
        # seconds (nothing can be cut), and its thread runs on after the 504, which must not hold
        # the scoring requests' tokenizers.
        self.tokenize_route_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crossrank-tokenize-route")
        self.names = list(settings.served_model_names) or [settings.model]
        self.created = int(time.time())
        self.admission = Admission(settings.concurrent_requests)

    def close(self) -> None:
        self.batcher.stop()
        self.tokenizer_pool.shutdown(wait=False, cancel_futures=True)
        self.tokenize_route_pool.shutdown(wait=False, cancel_futures=True)


# -- handlers ----------------------------------------------------------------------------------


async def _json_body(request: Request, state: Optional[_State] = None) -> Dict[str, Any]:
    raw = await request.body()
    if state is not None and len(raw) > _PARSE_OFF_LOOP_BYTES:
        return await asyncio.get_running_loop().run_in_executor(state.tokenizer_pool, parse_json_body, raw)
    return parse_json_body(raw)


async def _wait_disconnect(receive: Receive) -> None:
    """Returns when the client goes away (the body has been read, so the server's next message is
    ``http.disconnect``)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class _ClientGone(Exception):
    pass


def _shutting_down(settings: ServerSettings) -> APIError:
    return APIError(f"the server is shutting down: it takes no new work, and work still waiting after the grace "
                    f"period of {settings.shutdown_timeout:g} s (crossrank serve --shutdown-timeout) is dropped; "
                    "retry on another instance", 503, "ServiceUnavailableError", tei_type="Unhealthy")


def _retry_after(status: int) -> Optional[Dict[str, str]]:
    return {"retry-after": "1"} if status in (429, 503) else None


class _Handlers:
    """The endpoints, bound to the state the lifespan builds."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.state: Optional[_State] = None

    def _ready(self) -> _State:
        if self.state is None or not self.state.batcher.alive:
            raise APIError("the model is not loaded or the engine has stopped", 503, "ServiceUnavailableError")
        return self.state

    def _check_model(self, state: _State, name: Optional[str]) -> None:
        if name and name not in state.names:
            raise APIError(f"The model `{name}` does not exist.", 404, "NotFoundError", "model")

    def _prepare(self, state: _State, task: ScoringTask, first_index: int = 0) -> Prepared:
        """Token ids for the task, or a slice of it whose first pair is ``first_index`` of the
        request (runs on the tokenizer pool)."""
        engine = state.engine
        for name, texts in (("query", task.firsts), ("document", task.seconds), ("instruction", [task.instruction])):
            try:
                "".join(t for t in texts if t is not None).encode("utf-8")
            except UnicodeEncodeError:
                raise APIError(f"a {name} holds a lone surrogate escape (\\ud800-\\udfff without its pair); "
                               "send valid Unicode text", 400) from None
        firsts = engine.cut_texts(task.firsts, task.max_tokens_per_query)
        seconds = engine.cut_texts(task.seconds, task.max_tokens_per_doc)
        limit = task.limit
        if limit == -1:
            limit = engine.max_length
        elif limit is not None and limit > engine.max_length:
            raise APIError(f"truncate_prompt_tokens value ({limit}) is greater than max_model_len "
                           f"({engine.max_length}). Please request a smaller truncation size.", 400,
                           param="truncate_prompt_tokens")
        # A chat (score) template renders every request form, as vLLM does; a family template only
        # plain queries and documents (text_1/text_2 and data_1/data_2 are taken as given).
        if (task.templated and engine.templated) or engine.chat_templated:
            return engine.encode_queries(firsts, seconds, task.instruction, limit=limit, side=task.side,
                                         truncate=task.truncate, fit=task.fit, variables=task.template_vars,
                                         first_index=first_index)
        if task.instruction is not None:
            where = ("this server runs with --no-template" if task.templated and not self.settings.use_template
                     else "no prompt template is known for this model" if task.templated
                     else "text_1/text_2 and data_1/data_2 are taken as given")
            raise APIError(f"instruction goes into the model's prompt template, but {where}; send queries + "
                           "documents (or /rerank) to a server with a template, or put the instruction in "
                           "the texts yourself", 400, param="instruction")
        if task.kind == "tei":
            limit = (limit or engine.max_length) if task.truncate else None
        return engine.encode_pairs(firsts, seconds, limit=limit, side=task.side, fit=task.fit,
                                   first_index=first_index)

    async def _run(self, state: _State, watcher: "asyncio.Future[None]", prepared: Prepared,
                   deadline: Optional[float]):
        try:
            job = state.batcher.submit(prepared.ids, prepared.keys)
        except QueueFull as exc:
            raise APIError(f"the server is busy ({exc}); retry later", 503, "ServiceUnavailableError",
                           tei_type="Overloaded") from None
        except EngineStopped as exc:
            raise APIError(str(exc), 503, "ServiceUnavailableError") from None
        result = asyncio.wrap_future(job.future)
        try:
            await self._race(state, result, watcher, deadline)
        except BaseException:  # the client went away, the deadline passed, or the server stops the handler
            state.batcher.abandon(job)
            result.cancel()
            raise
        try:
            return result.result()
        except EngineStopped as exc:
            raise APIError(str(exc), 503, "ServiceUnavailableError") from None
        except (ValueError, TypeError) as exc:  # the engine refused the input (e.g. a token id)
            raise APIError(str(exc), 400) from None

    async def _race(self, state: _State, work: "asyncio.Future[Any]", watcher: "asyncio.Future[None]",
                    deadline: Optional[float]) -> None:
        """Returns when ``work`` is done, unless the client goes away (:class:`_ClientGone`), the
        server's grace period ends (503) or the deadline passes (504) first; the caller then drops
        the work."""
        drained = asyncio.ensure_future(DRAIN.expired.wait())
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            done, _ = await asyncio.wait({work, watcher, drained}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            drained.cancel()
        if work in done:
            return
        if watcher in done:
            raise _ClientGone()
        if drained in done:
            raise _shutting_down(self.settings)
        state.metrics.add("timeouts")
        raise APIError(f"the request did not finish within the server's timeout of "
                       f"{self.settings.request_timeout:g} s (crossrank serve --request-timeout); its work "
                       "was cancelled", 504, "TimeoutError")

    async def _pooled(self, state: _State, pool: ThreadPoolExecutor, watcher: "asyncio.Future[None]",
                      deadline: Optional[float], fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on ``pool``, raced as :meth:`_race` races the engine: the answer
        goes out on time even while a thread still tokenizes (a running thread cannot be stopped:
        it finishes in the background and its result is dropped; a queued call never runs)."""
        work = asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        try:
            await self._race(state, work, watcher, deadline)
        except BaseException:
            work.cancel()
            raise
        return work.result()

    async def scoring(self, request: Request, kind: str) -> Response:
        """``/score`` (``kind="score"``), ``/rerank`` (``"rerank"``: vLLM's or TEI's shape, by the
        body) and the routes that pick by the body (``"routed"``: ``/invocations``, ``POST /``).
        A request in TEI's shape gets its errors in TEI's shape."""
        tei = False
        try:
            state = self._ready()
            if DRAIN.draining:
                raise _shutting_down(self.settings)
            # Errors of a body that does not parse take TEI's shape when it looks like TEI's.
            tei = kind != "score" and looks_like_tei(await request.body())
            body = await _json_body(request, state)
            tei = kind != "score" and is_tei_rerank(body)
            check_items(body, self.settings.max_client_batch_size, tei=tei)
            return await self._score(state, request, body, _route(body, kind))
        except APIError as exc:
            if not tei:
                raise
            status, payload = exc.tei()
            return JSONResponse(payload, status_code=status, headers=_retry_after(status))
        except _ClientGone:
            return Response(status_code=499)

    async def _tokenized(self, state: _State, watcher: "asyncio.Future[None]", task: ScoringTask,
                         deadline: Optional[float]) -> Prepared:
        """The task's token ids, computed slice by slice on the tokenizer pool; stops early when the
        client goes away, the deadline passes or the server drains."""
        refuse_unfittable(state.engine, task)
        task = pre_cut(state.engine, task)
        ids: List[Any] = []
        keys: List[Any] = []
        for part in slices(task, _SLICE_PAIRS, _SLICE_CHARS):
            piece = task if len(part) == len(task.firsts) else dataclasses.replace(
                task, firsts=task.firsts[part.start:part.stop], seconds=task.seconds[part.start:part.stop])
            try:
                prepared = await self._pooled(state, state.tokenizer_pool, watcher, deadline, self._prepare, state,
                                              piece, part.start)
            except PromptError as exc:
                raise APIError(str(exc), 400, param=exc.param, tei_type=exc.tei_type) from None
            except APIError:
                raise
            except TooLongError as exc:  # TEI: its own validation of the input's length (413)
                raise APIError(str(exc), 400, tei_type="Validation") from None
            except TokenizationError as exc:  # the tokenizer panicked on a text: TEI's tokenizer error (422)
                index = exc.indices[0] + part.start if exc.indices else None  # numbered in the slice
                raise APIError(str(tokenizer_failure(index, exc.reason)), 400, tei_type="Tokenizer") from None
            except (ValueError, TypeError) as exc:  # other refusals of the texts
                raise APIError(str(exc), 400, tei_type="Tokenizer") from None
            ids.extend(prepared.ids)
            keys.extend(prepared.keys)
        return Prepared(ids, keys)

    def _deadline(self) -> Optional[float]:
        """When a request arriving now runs out of time (``--request-timeout``)."""
        timeout = self.settings.request_timeout
        return None if timeout is None else time.monotonic() + timeout

    async def _score(self, state: _State, request: Request, body: Dict[str, Any], kind: str) -> Response:
        deadline = self._deadline()
        state.metrics.add_gauge("requests_in_flight", 1)
        try:
            rid = request.headers.get("x-request-id")
            if kind == "tei":
                task = parse_tei_rerank(body, rid)
            else:
                task = parse_score(body, rid) if kind == "score" else parse_rerank(body, rid)
                self._check_model(state, task.model)
            # Watches for the client going away from now to the answer.
            watcher = asyncio.ensure_future(_wait_disconnect(request.receive))
            try:
                prepared = await self._tokenized(state, watcher, task, deadline)
                raw = await self._run(state, watcher, prepared, deadline)
            except _ClientGone:
                logger.info("client went away; request %s abandoned", task.request_id)
                return Response(status_code=499)
            finally:
                watcher.cancel()
            scores = state.engine.activate(raw, task.use_activation)
            tokens = prepared.num_tokens
            state.metrics.add("pairs", len(prepared.ids))
            state.metrics.add("prompt_tokens", tokens)
            if task.kind == "score":
                return JSONResponse(score_response(task, state.names[0], scores.tolist(), tokens))
            if task.kind == "rerank":
                return JSONResponse(rerank_response(task, state.names[0], scores.tolist(), tokens))
            return JSONResponse(tei_rerank_response(task, scores.tolist()))
        finally:
            state.metrics.add_gauge("requests_in_flight", -1)

    async def tokenizer_route(self, request: Request) -> Response:
        """``/tokenize`` and ``/detokenize`` (vLLM's shapes), off the event loop (on a thread of their
        own) and within the request timeout."""
        state = self._ready()
        deadline = self._deadline()
        body = await _json_body(request, state)
        watcher = asyncio.ensure_future(_wait_disconnect(request.receive))
        try:
            result = await self._pooled(state, state.tokenize_route_pool, watcher, deadline,
                                        self._tokenizer_answer, state, body, request.url.path)
        except _ClientGone:
            return Response(status_code=499)
        finally:
            watcher.cancel()
        return JSONResponse(result)

    def _tokenizer_answer(self, state: _State, body: Dict[str, Any], path: str) -> Dict[str, Any]:
        if path == "/tokenize":
            req = parse_tokenize(body)
            self._check_model(state, req.model)
            return tokenize(state.engine.model.tokenizer, req, state.engine.max_length)
        dreq = parse_detokenize(body)
        self._check_model(state, dreq.model)
        return detokenize(state.engine.model.tokenizer, dreq)


# The request forms /invocations tells apart, in the order it tries them (vLLM's SageMaker entry
# tries its request types in order; TEI's router sends a reranker's POST / to /rerank).
_SCORE_KEYS = ("queries", "data_1", "text_1")


def _route(body: Dict[str, Any], kind: str) -> str:
    """The handler a body goes to: ``"score"``, ``"rerank"`` or ``"tei"``."""
    if kind == "score":
        return "score"
    if is_tei_rerank(body):
        return "tei"
    if kind == "rerank" or "query" in body:
        return "rerank"
    if any(k in body for k in _SCORE_KEYS):
        return "score"
    if "documents" in body:
        return "rerank"
    raise APIError("Cannot find suitable handler for request. Expected one of: a rerank request (query + "
                   "documents, or TEI's query + texts) or a score request (queries + documents, data_1 + "
                   "data_2 or text_1 + text_2)", 400)


# -- app ---------------------------------------------------------------------------------------


def create_app(settings: ServerSettings, model: Optional[CrossEncoder] = None) -> FastAPI:
    """The ASGI app for ``settings``.

    Args:
        settings: Server settings.
        model: An already loaded model; by default the model loads at startup (in each worker).
    """
    handlers = _Handlers(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loaded = model if model is not None else load_model(settings)
        state = _State(settings, loaded)
        state.batcher.start()
        handlers.state = state
        engine = state.engine
        logger.info("ready: %s as %s (pid %d, %d threads, prompt format %s, max_length %d, queue %d, timeout %s)",
                    settings.model, ", ".join(state.names), os.getpid(), loaded.threads,
                    engine.prompt_format or "none", engine.max_length, settings.max_queue,
                    f"{settings.request_timeout:g} s" if settings.request_timeout else "none")
        try:
            yield
        finally:
            handlers.state = None
            state.close()

    app = FastAPI(title="crossrank", lifespan=lifespan, root_path=settings.root_path, docs_url=None, redoc_url=None,
                  openapi_url=None, default_response_class=JSONResponse)

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=_retry_after(exc.status))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        phrase = HTTPStatus(exc.status_code).phrase
        return JSONResponse(error_body(str(exc.detail or phrase), phrase, exc.status_code),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(str(exc), HTTPStatus.BAD_REQUEST.phrase, 400), status_code=400)

    @app.exception_handler(Exception)
    async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
        logger.error("internal error: %s: %s", type(exc).__name__, exc, exc_info=exc)
        return JSONResponse(error_body(f"internal server error ({type(exc).__name__})", "InternalServerError", 500),
                            status_code=500)

    async def score(request: Request) -> Response:
        return await handlers.scoring(request, "score")

    async def rerank(request: Request) -> Response:
        return await handlers.scoring(request, "rerank")

    async def routed(request: Request) -> Response:
        return await handlers.scoring(request, "routed")

    async def tokenizer_route(request: Request) -> Response:
        return await handlers.tokenizer_route(request)

    for path in SCORE_PATHS:
        app.add_api_route(path, score, methods=["POST"], include_in_schema=False)
    for path in RERANK_PATHS:
        app.add_api_route(path, rerank, methods=["POST"], include_in_schema=False)
    for path in ROUTED_PATHS:
        app.add_api_route(path, routed, methods=["POST"], include_in_schema=False)
    for path in TOKENIZE_PATHS:
        app.add_api_route(path, tokenizer_route, methods=["POST"], include_in_schema=False)

    @app.api_route("/info", methods=["GET", "HEAD"], include_in_schema=False)
    async def info() -> JSONResponse:
        from .. import __version__

        state = handlers._ready()
        return JSONResponse(info_response(
            model_id=state.names[0], revision=settings.revision, dtype=state.engine.model.dtype,
            max_input_length=state.engine.max_length, max_concurrent_requests=settings.concurrent_requests,
            max_batch_tokens=settings.max_batch_tokens, tokenization_workers=_TOKENIZER_THREADS,
            max_client_batch_size=settings.max_client_batch_size, version=__version__))

    # Every GET answers HEAD too, as axum's (TEI) and Starlette's plain routes do; TEI answers GET / as /health.
    @app.api_route("/ping", methods=["GET", "HEAD", "POST"], include_in_schema=False)
    @app.api_route("/health", methods=["GET", "HEAD"], include_in_schema=False)
    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def health() -> Response:
        state = handlers.state
        if state is None or not state.batcher.alive:
            return JSONResponse(error_body("the engine is not running", "ServiceUnavailableError", 503),
                                status_code=503)
        if DRAIN.draining:  # load balancers stop sending here
            return JSONResponse(error_body("the server is shutting down", "ServiceUnavailableError", 503),
                                status_code=503)
        return Response(status_code=200)

    @app.api_route("/v1/models", methods=["GET", "HEAD"], include_in_schema=False)
    async def list_models() -> JSONResponse:
        state = handlers._ready()
        return JSONResponse(models_response(state.names, settings.model, state.engine.max_length, state.created))

    @app.api_route("/version", methods=["GET", "HEAD"], include_in_schema=False)
    async def version() -> JSONResponse:
        from .. import __version__

        return JSONResponse({"version": __version__})

    @app.api_route("/metrics", methods=["GET", "HEAD"], include_in_schema=False)
    async def metrics() -> Response:
        state = handlers._ready()
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # add_middleware puts each new middleware outside the previous ones: the body limit runs
    # innermost, the admission permit before it (before any byte of the body is read), the API key
    # before that, and the metrics see every request, refused ones included.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout=settings.body_timeout)
    app.add_middleware(AdmissionMiddleware, admission_of=lambda: handlers.state.admission if handlers.state else None,
                       paths=frozenset(SCORE_PATHS + RERANK_PATHS + ROUTED_PATHS + TOKENIZE_PATHS),
                       metrics_of=lambda: handlers.state.metrics if handlers.state else None)
    app.add_middleware(APIKeyMiddleware, api_key=settings.api_key, public_paths=_PUBLIC_PATHS)
    app.add_middleware(MetricsMiddleware, metrics_of=lambda: handlers.state.metrics if handlers.state else None,
                       known_paths=_KNOWN_PATHS)
    if settings.request_id_headers:
        app.add_middleware(RequestIdMiddleware)
    # Outermost, as vLLM has it: a browser's preflight needs no API key.
    app.add_middleware(CORSMiddleware, allow_origins=settings.allowed_origins, allow_methods=settings.allowed_methods,
                       allow_headers=settings.allowed_headers, allow_credentials=settings.allow_credentials)
    return app


def configure_logging(level: str) -> None:
    """Sends the ``crossrank`` loggers to stderr with the process id (workers are processes)."""
    root = logging.getLogger("crossrank")
    if not any(getattr(h, "_crossrank_server", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [pid %(process)d] %(message)s"))
        handler._crossrank_server = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False


def app_from_env() -> FastAPI:
    """App factory for uvicorn (``crossrank.server.app:app_from_env``): settings from
    ``CROSSRANK_SERVER_SETTINGS``, the model loaded at startup in this process."""
    settings = ServerSettings.from_env()
    configure_logging(settings.log_level)
    return create_app(settings, model=_PRELOADED.pop(settings.to_json(), None))


def run(settings: ServerSettings) -> int:
    """Serves ``settings`` with uvicorn until stopped; returns the exit code (0 after a drain).

    With one worker the model loads here first, so a bad model path or override fails before the
    server binds; with several, each worker process loads its own copy.
    """
    import uvicorn

    from .serving import GuardedH11Protocol, serve

    configure_logging(settings.log_level)
    if settings.host not in _LOOPBACK:
        logger.warning("binding to %s: the server is reachable from other machines%s", settings.host,
                       "" if settings.api_key else " and no --api-key is set")
    settings.to_env()
    if settings.workers == 1:
        _PRELOADED[settings.to_json()] = load_model(settings)
    config = uvicorn.Config("crossrank.server.app:app_from_env", factory=True, host=settings.host,
                            port=settings.port, workers=settings.workers,
                            log_level=(settings.uvicorn_log_level or settings.log_level).lower(),
                            access_log=settings.access_log, http=GuardedH11Protocol,
                            timeout_keep_alive=settings.timeout_keep_alive,
                            timeout_graceful_shutdown=settings.shutdown_timeout)
    shared = None
    if settings.workers > 1 and not os.environ.get(MULTIPROC_ENV):
        # One set of numbers for every scrape: the workers write their metrics into one directory.
        shared = tempfile.mkdtemp(prefix="crossrank-metrics-")
        os.environ[MULTIPROC_ENV] = shared
    try:
        return serve(config, header_timeout=settings.header_timeout, max_connections=settings.max_connections)
    finally:
        if shared is not None:
            shutil.rmtree(shared, ignore_errors=True)
