"""The pure ASGI middlewares of the server: they run before any body parsing.

* :class:`MetricsMiddleware` counts and times every request by endpoint and status;
* :class:`APIKeyMiddleware` checks ``Authorization: Bearer KEY`` (401 otherwise);
* :class:`AdmissionMiddleware` takes a permit for a scoring request before its body is read
  (429/503 with ``Retry-After`` at once when none is free);
* :class:`RequestIdMiddleware` echoes ``X-Request-Id`` (vLLM's ``--enable-request-id-headers``);
* :class:`BodyLimitMiddleware` reads the body up to the size limit (413 beyond) within the body
  timeout (408 beyond).

A request whose client goes away before any answer is counted as status 499 (nginx's "client
closed request"), never as a 500.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from typing import Any, Awaitable, Callable, FrozenSet, List, MutableMapping, Optional

from .errors import error_body
from .limits import Admission, looks_like_tei, overloaded_response
from .metrics import Metrics

__all__ = ["MetricsMiddleware", "APIKeyMiddleware", "AdmissionMiddleware", "BodyLimitMiddleware",
           "RequestIdMiddleware", "CLIENT_GONE",
           "Scope", "Message", "Receive", "Send",
           "ASGIApp"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Status recorded for a request whose client went away before it was answered (nginx's 499).
CLIENT_GONE = 499


async def _send_json(send: Send, status: int, body: Any, headers: Optional[List[tuple]] = None) -> None:
    payload = json.dumps(body).encode("utf-8")  # ensure_ascii: never fails to encode
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode())] + list(headers or [])})
    await send({"type": "http.response.body", "body": payload})


class MetricsMiddleware:
    """Counts every HTTP request by endpoint and status and times it."""

    def __init__(self, app: ASGIApp, metrics_of: Callable[[], Optional[Metrics]], known_paths: FrozenSet[str]) -> None:
        self.app = app
        self.metrics_of = metrics_of
        # Paths named in metrics; anything else is "other", so scanners cannot blow up the labels.
        self.known_paths = known_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [CLIENT_GONE]  # until a response starts: the client went away first

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            metrics = self.metrics_of()
            if metrics is not None:
                path = scope.get("path", "")
                metrics.observe_request(path if path in self.known_paths else "other", status[0],
                                        time.perf_counter() - t0)
                if status[0] == CLIENT_GONE:
                    metrics.add("client_disconnects")


class APIKeyMiddleware:
    """With an API key set, every path but the public ones (``/health``, ``/ping``) needs
    ``Authorization: Bearer KEY`` (401 otherwise)."""

    def __init__(self, app: ASGIApp, api_key: Optional[str], public_paths: FrozenSet[str]) -> None:
        self.app = app
        self.public_paths = public_paths
        self.expected = f"Bearer {api_key}".encode("utf-8") if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.expected is None or scope["type"] != "http" or scope.get("path") in self.public_paths:
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                given = value
                break
        # The scheme is case-insensitive; the key is compared in constant time.
        if given[:7].lower() == b"bearer " and hmac.compare_digest(b"Bearer " + given[7:], self.expected):
            await self.app(scope, receive, send)
            return
        await _send_json(send, 401, error_body("Unauthorized: send the API key as 'Authorization: Bearer KEY'",
                                               "Unauthorized", 401),
                         [(b"www-authenticate", b"Bearer")])


class AdmissionMiddleware:
    """Takes an :class:`~crossrank.server.limits.Admission` permit for each scoring request
    (``paths``, POST) before its body is read; without one, the request is refused at once:
    TEI's 429 ``Overloaded`` for a body in TEI's shape, else 503, both with ``Retry-After``. Only
    the first piece of the body that has arrived is looked at, to pick the shape; the body is
    never parsed.
    """

    def __init__(self, app: ASGIApp, admission_of: Callable[[], Optional[Admission]], paths: FrozenSet[str],
                 metrics_of: Callable[[], Optional[Metrics]]) -> None:
        self.app = app
        self.admission_of = admission_of
        self.paths = paths
        self.metrics_of = metrics_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        admission = self.admission_of()
        if (admission is None or scope["type"] != "http" or scope.get("method") != "POST"
                or scope.get("path") not in self.paths):
            await self.app(scope, receive, send)
            return
        if admission.try_acquire():
            try:
                await self.app(scope, receive, send)
            finally:
                admission.release()
            return
        metrics = self.metrics_of()
        if metrics is not None:
            metrics.add("overloaded")
        head = b""
        try:  # whatever part of the body is already here, only to answer in the right shape
            message = await asyncio.wait_for(receive(), 0.5)
            if message["type"] == "http.disconnect":
                return
            head = message.get("body", b"")[:65536]
        except asyncio.TimeoutError:
            pass
        status, body = overloaded_response(
            f"Model is overloaded: {admission.limit} requests are being handled already (crossrank serve "
            "--max-concurrent-requests); retry after a second", looks_like_tei(head))
        # The body is never read: without closing, a client could trickle it into this connection forever.
        await _send_json(send, status, body, [(b"retry-after", b"1"), (b"connection", b"close")])


class BodyLimitMiddleware:
    """Reads request bodies up to ``max_bytes`` (413 beyond), before the app sees them, within
    ``timeout`` seconds from the request's headers (408 and ``Connection: close`` beyond: a client
    that sends its body a byte at a time holds nothing for long).

    A declared ``Content-Length`` over the limit is refused without reading the body; a chunked
    body is refused as soon as it passes the limit. The app then gets the body in one message,
    and later ``receive`` calls go to the server (so a handler can notice a disconnect).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: Optional[float] = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_json(send, 400, error_body("Content-Length is not a number", "BadRequestError", 400))
                    return
                if declared > self.max_bytes:
                    await self._too_large(send)
                    return
        chunks, size = [], 0
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            try:
                message = await asyncio.wait_for(
                    receive(), None if deadline is None else max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                await _send_json(send, 408, error_body(
                    f"the request body did not arrive within {self.timeout:g} s (crossrank serve --body-timeout)",
                    "RequestTimeout", 408), [(b"connection", b"close")])
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await _send_json(send, 413, error_body(
            f"the request body is larger than the server's limit of {self.max_bytes} bytes "
            "(crossrank serve --max-body-bytes)", "RequestEntityTooLarge", 413), [(b"connection", b"close")])


class RequestIdMiddleware:
    """Puts the request's ``X-Request-Id`` (a new one when it has none) on its response, as vLLM
    does with ``--enable-request-id-headers``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), None)
        rid = given or uuid.uuid4().hex.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message, headers=list(message.get("headers", [])) + [(b"x-request-id", rid)])
            await send(message)

        await self.app(scope, receive, send_with_id)
