"""uvicorn, hardened: connection and header-read limits, a drain on stop, one listening socket per
worker, and a cap on repeated log lines.

* :class:`GuardedH11Protocol`: a connection must deliver complete request headers within
  ``header_timeout`` seconds of opening (or of its previous answer); beyond ``max_connections``
  open connections a new one gets a 503 and is closed at once, so the server never runs out of
  file descriptors (the cap defaults to the soft ``RLIMIT_NOFILE``, raised to the hard limit, less
  a reserve for the model, logs and pipes).
* :class:`CrossrankServer`: on SIGTERM or SIGINT it stops accepting, lets the requests in flight
  finish for ``shutdown_timeout`` seconds and then answers those still waiting with 503 (through
  :data:`DRAIN`, which the handlers watch), and exits 0. With ``--workers N`` each worker listens
  on its own ``SO_REUSEPORT`` socket, so the kernel spreads connections (keep-alive ones included)
  over the workers instead of one shared accept queue.
* :class:`RepeatFilter`: a log line repeated more than a few times in 10 s is dropped, and the
  count of dropped lines is logged once the burst is over.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import h11
from uvicorn import Config, Server
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from .metrics import mark_process_dead

__all__ = ["GuardedH11Protocol", "CrossrankServer", "Drain", "DRAIN", "RepeatFilter", "raise_file_limit",
           "default_max_connections", "serve", "FD_RESERVE"]

logger = logging.getLogger("crossrank.server")

#: File descriptors kept free of connections: the model's files, logs, pipes, the listening socket.
FD_RESERVE = 64

_OVERLOADED = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
               b"connection: close\r\ncontent-length: %d\r\n\r\n%s")


def raise_file_limit() -> int:
    """Raises the soft ``RLIMIT_NOFILE`` to the hard limit; returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def default_max_connections() -> int:
    """Open connections allowed by default: the file limit less :data:`FD_RESERVE`."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(16, soft - FD_RESERVE)


class Drain:
    """The stop in progress, seen by the handlers of one worker process: :meth:`begin` is called
    when the server stops accepting; :attr:`expired` is set ``grace`` seconds later (the handlers
    then answer what still waits with 503)."""

    def __init__(self) -> None:
        self.draining = False
        self._expired: Optional[asyncio.Event] = None

    @property
    def expired(self) -> asyncio.Event:
        """Set once the grace period is over (created in the running loop on first use)."""
        if self._expired is None:
            self._expired = asyncio.Event()
        return self._expired

    def begin(self, grace: float) -> None:
        """Starts the grace period (in the event loop)."""
        self.draining = True
        event = self.expired
        asyncio.get_running_loop().call_later(max(0.0, grace), event.set)


#: The drain of this process.
DRAIN = Drain()


class RepeatFilter(logging.Filter):
    """Lets a warning or error (same logger, message and exception type) through at most ``burst``
    times per ``window`` seconds; the number dropped is reported with the next one let through.
    Lines below WARNING (access lines, forward passes) always pass."""

    def __init__(self, burst: int = 5, window: float = 10.0) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self._seen: Dict[Tuple[str, str, Any], List[float]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        exc = record.exc_info[0] if record.exc_info else None
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not format: keyed by its template
            message = str(record.msg)
        key = (record.name, message, exc)
        now = time.monotonic()
        with self._lock:
            entry = self._seen.get(key)
            if entry is None or now - entry[0] > self.window:
                dropped = int(entry[2]) if entry is not None else 0
                self._seen[key] = [now, 1, 0]
                if len(self._seen) > 1000:  # forget old bursts
                    self._seen = {k: v for k, v in self._seen.items() if now - v[0] <= self.window}
                if dropped:
                    record.msg = f"{record.msg} [{dropped} more like this were not logged in the last burst]"
                return True
            entry[1] += 1
            if entry[1] <= self.burst:
                return True
            entry[2] += 1
            return False


_FILTER = RepeatFilter()


def install_log_filter() -> None:
    """Puts :class:`RepeatFilter` on the handlers of the server's loggers (idempotent)."""
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access", "asyncio", "crossrank"):
        for handler in logging.getLogger(name).handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
        log = logging.getLogger(name)
        if _FILTER not in log.filters:
            log.addFilter(_FILTER)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header-read deadline and a connection cap (class attributes,
    set by :func:`serve`)."""

    header_timeout: Optional[float] = 10.0
    max_connections: Optional[int] = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: Optional[asyncio.TimerHandle] = None
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            body = (b'{"error": {"message": "too many open connections; retry later", "type": '
                    b'"ServiceUnavailableError", "param": null, "code": 503}}')
            transport.write(_OVERLOADED % (len(body), body))
            transport.close()
            logger.warning("connection refused: %d connections are open (crossrank serve --max-connections)",
                           len(self.connections) - 1)
            return
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        if self.header_timeout is None:
            return
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_deadline)

    def _header_deadline(self) -> None:
        self._header_timer = None
        # IDLE: no complete request line and headers since the connection opened or its last answer.
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        super().connection_lost(exc)


class CrossrankServer(Server):
    """uvicorn's server with the drain of :class:`Drain` and, under a supervisor, its own
    ``SO_REUSEPORT`` listening socket (the supervisor's socket is bound, never listened on)."""

    def run(self, sockets: Optional[List[socket.socket]] = None) -> None:
        raise_file_limit()
        install_log_filter()
        if sockets:
            own = []
            for sock in sockets:
                host, port = sock.getsockname()[:2]
                own.append(_reuseport_socket(sock.family, host, port, listen=True,
                                             backlog=self.config.backlog))
                sock.close()
            sockets = own
        super().run(sockets=sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's signal capture, without raising the signal again once the drain is done: a
        drained stop exits 0."""
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()

    async def startup(self, sockets: Optional[List[socket.socket]] = None) -> None:
        install_log_filter()  # uvicorn's logging config is in place now
        await super().startup(sockets=sockets)

    async def shutdown(self, sockets: Optional[List[socket.socket]] = None) -> None:
        grace = self.config.timeout_graceful_shutdown or 0
        # The handlers answer what still waits 1 s before uvicorn would cancel them.
        DRAIN.begin(max(0.0, grace - 1.0))
        await super().shutdown(sockets=sockets)


def _reuseport_socket(family: int, host: str, port: int, *, listen: bool, backlog: int = 2048) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


class _Process(Process):
    @property
    def server(self) -> Server:
        if self._server is None:
            self._server = CrossrankServer(config=self.config)
        return self._server


class _Multiprocess(Multiprocess):
    """uvicorn's supervisor starting :class:`CrossrankServer` workers (it replaces a dead worker
    within half a second, as uvicorn's does)."""

    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            process = _Process(self.config, self.sockets)
            process.start()
            self.processes.append(process)

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            mark_process_dead(process.pid)
            if process.exitcode == 3:  # uvicorn's STARTUP_FAILURE: the next worker would fail alike
                logger.error("worker %s failed to start; stopping", process.pid)
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            logger.info("worker %s died; starting another", process.pid)
            process = _Process(self.config, self.sockets)
            process.start()
            self.processes[idx] = process


def serve(config: Config, *, header_timeout: Optional[float], max_connections: Optional[int]) -> int:
    """Runs ``config`` (an app factory import string) until stopped; returns the exit code."""
    raise_file_limit()
    GuardedH11Protocol.header_timeout = header_timeout
    GuardedH11Protocol.max_connections = max_connections or default_max_connections()
    # Worker processes are spawned: they read the limits from the environment.
    os.environ["CROSSRANK_HEADER_TIMEOUT"] = "" if header_timeout is None else repr(header_timeout)
    os.environ["CROSSRANK_MAX_CONNECTIONS"] = str(GuardedH11Protocol.max_connections)
    install_log_filter()
    if config.workers > 1:
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        sock = _reuseport_socket(family, config.host, config.port, listen=False)
        _Multiprocess(config, sockets=[sock]).run()
        return 0
    server = CrossrankServer(config=config)
    server.run()
    return 0 if server.started else 3


def _limits_from_env() -> None:
    text = os.environ.get("CROSSRANK_HEADER_TIMEOUT")
    if text is not None:
        GuardedH11Protocol.header_timeout = float(text) if text else None
    text = os.environ.get("CROSSRANK_MAX_CONNECTIONS")
    if text:
        GuardedH11Protocol.max_connections = int(text)


_limits_from_env()
