"""The server's settings: one dataclass, passed to worker processes through an environment variable.

uvicorn starts each ``--workers`` process from an import string, so the settings cannot be handed
over as an object; :meth:`ServerSettings.to_env` writes them as JSON into
``CROSSRANK_SERVER_SETTINGS`` and the app factory reads them back in every process.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional

__all__ = ["ServerSettings", "SETTINGS_ENV"]

#: Environment variable holding the JSON settings for the app factory of each worker process.
SETTINGS_ENV = "CROSSRANK_SERVER_SETTINGS"


@dataclass
class ServerSettings:
    """Everything ``crossrank serve`` needs to build the app in a (worker) process.

    Attributes:
        model: Model directory or Hugging Face id.
        hf_overrides: Config overrides with vLLM's semantics.
        served_model_names: Names accepted in the ``model`` field; the first one is reported in
            responses. Empty: the ``model`` argument as given (vLLM's default).
        host: Bind address; loopback unless asked otherwise.
        port: TCP port.
        dtype: Compute dtype, as for :class:`~crossrank.CrossEncoder` (``"auto"``: bfloat16 where the
            CPU has AVX512_BF16, else float32).
        threads: Compute threads per worker; default: the CPUs this process may use, divided
            among the workers.
        max_length: Token budget of one prompt; default: the family's.
        template: Prompt template name; default: from the model's name, config or served name.
        chat_template: vLLM's ``--chat-template``: a Jinja chat (score) template file, or the
            template itself; it renders every request form. Excludes ``template``.
        use_template: Apply the family template to plain queries and documents (``--no-template``
            turns it off).
        api_key: When set, every endpoint but ``/health`` needs ``Authorization: Bearer KEY``.
        workers: uvicorn worker processes, each with its own copy of the model.
        max_queue: Requests waiting for the engine before new ones get 503.
        request_timeout: Seconds from arrival to answer before a request gets 504 and its work
            is cancelled; ``None`` or 0: no limit.
        max_body_bytes: Largest request body accepted (413 above it).
        max_batch_tokens: Tokens per forward pass (packed requests, prefixes excluded).
        max_client_batch_size: Items (documents, texts, pairs) one request may hold (TEI's flag:
            413 on TEI's route, 400 on vLLM's, above it).
        max_concurrent_requests: Scoring and tokenizer requests handled at once, from before the
            body is read to the answer (TEI's flag); beyond it 429 (TEI shape) or 503 at once, with
            ``Retry-After``. Default: ``max_queue + 1`` (one running, ``max_queue`` waiting).
        max_connections: Open connections; beyond it a new one gets 503 and is closed. Default: the
            file descriptor limit (raised to the hard limit) less a reserve.
        header_timeout: Seconds a connection has to send complete request headers (after opening or
            after its previous answer) before it is closed.
        body_timeout: Seconds from the request headers to the end of the body before 408.
        timeout_keep_alive: Seconds an idle keep-alive connection is kept open (uvicorn's and vLLM's
            ``--timeout-keep-alive``).
        shutdown_timeout: Seconds in-flight requests get to finish after SIGTERM before those still
            waiting are answered 503 and the process exits.
        local_files_only: Never download the model.
        revision: Hub revision.
        log_level: Level of the ``crossrank`` and uvicorn loggers.
        access_log: uvicorn's per-request access log.
        uvicorn_log_level: Level of uvicorn's loggers (vLLM's ``--uvicorn-log-level``); ``None``:
            ``log_level``.
        root_path: The path prefix a proxy serves the app under (ASGI ``root_path``, vLLM's
            ``--root-path``).
        request_id_headers: Echo each request's ``X-Request-Id`` in its response, or a new one
            (vLLM's ``--enable-request-id-headers``).
        allowed_origins, allowed_methods, allowed_headers, allow_credentials: CORS, with vLLM's
            flags and defaults (every origin, method and header; no credentials).
    """

    model: str
    hf_overrides: Optional[Dict[str, Any]] = None
    served_model_names: List[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8000
    dtype: str = "auto"
    threads: Optional[int] = None
    max_length: Optional[int] = None
    template: Optional[str] = None
    chat_template: Optional[str] = None
    use_template: bool = True
    api_key: Optional[str] = None
    workers: int = 1
    max_queue: int = 256
    request_timeout: Optional[float] = 600.0
    max_body_bytes: int = 16 * 1024 * 1024
    max_batch_tokens: int = 16384
    max_client_batch_size: int = 100_000
    max_concurrent_requests: Optional[int] = None
    max_connections: Optional[int] = None
    header_timeout: Optional[float] = 10.0
    body_timeout: Optional[float] = 30.0
    timeout_keep_alive: float = 5.0
    shutdown_timeout: float = 30.0
    local_files_only: bool = False
    revision: Optional[str] = None
    log_level: str = "info"
    access_log: bool = True
    uvicorn_log_level: Optional[str] = None
    root_path: str = ""
    request_id_headers: bool = False
    allowed_origins: List[str] = field(default_factory=lambda: ["*"])
    allowed_methods: List[str] = field(default_factory=lambda: ["*"])
    allowed_headers: List[str] = field(default_factory=lambda: ["*"])
    allow_credentials: bool = False

    def __post_init__(self) -> None:
        checks = (
            ("workers", self.workers, 1), ("max_queue", self.max_queue, 1),
            ("max_body_bytes", self.max_body_bytes, 1), ("max_batch_tokens", self.max_batch_tokens, 1),
            ("port", self.port, 0), ("max_client_batch_size", self.max_client_batch_size, 1),
        )
        for name, value, low in checks:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.request_timeout is not None and not self.request_timeout > 0:
            self.request_timeout = None
        for name in ("max_concurrent_requests", "max_connections"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("header_timeout", "body_timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                setattr(self, name, None)
        for name in ("timeout_keep_alive", "shutdown_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
        if self.chat_template is not None and self.template is not None:
            raise ValueError("give --chat-template or --template, not both")
        for name in ("allowed_origins", "allowed_methods", "allowed_headers"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{name} must be a JSON list of strings, got {value!r}")
        if self.hf_overrides is not None and not isinstance(self.hf_overrides, dict):
            raise ValueError("hf_overrides must be a JSON object")

    @property
    def concurrent_requests(self) -> int:
        """Admission permits in force (``max_concurrent_requests`` or its default)."""
        return self.max_concurrent_requests or self.max_queue + 1

    @property
    def model_name(self) -> str:
        """The name reported in responses."""
        return self.served_model_names[0] if self.served_model_names else self.model

    def worker_threads(self) -> int:
        """Compute threads of one worker: the given number, or the CPUs shared among the workers."""
        if self.threads is not None:
            return self.threads
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
        return max(1, cpus // self.workers)

    def to_json(self) -> str:
        """The settings as JSON (the inverse of :meth:`from_json`)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServerSettings":
        """Settings from :meth:`to_json`'s output; unknown keys are refused."""
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown server settings: {', '.join(unknown)}")
        return cls(**data)

    def to_env(self) -> None:
        """Stores the settings in ``os.environ`` for the worker processes."""
        os.environ[SETTINGS_ENV] = self.to_json()

    @classmethod
    def from_env(cls) -> "ServerSettings":
        """Reads the settings stored by :meth:`to_env`."""
        text = os.environ.get(SETTINGS_ENV)
        if not text:
            raise RuntimeError(f"{SETTINGS_ENV} is not set: start the server with `crossrank serve MODEL`")
        return cls.from_json(text)
