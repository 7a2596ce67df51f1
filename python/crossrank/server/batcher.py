"""Dynamic batching: one engine thread fed by a bounded queue.

The C engine already spreads one forward pass over every compute thread, and a second pass started
concurrently would only wait on its lock, so one thread drives it. Requests that arrive while a
pass runs wait in the queue; when the pass ends the thread takes every waiting request (a *round*)
and packs their pairs into the next passes, in arrival order, up to ``max_batch_tokens`` tokens a
pass. Pairs whose prompts start with the same query (same key) share that token prefix: its K/V
are computed once (``build_prefix``) and each pair runs only its own tail. Scores do not depend on
packing or prefix reuse (the engine's reductions have a fixed order), so a request gets exactly
the scores it would get alone.

Cancellation. Every engine call gets its own :class:`~crossrank.CancelToken`. A request that times
out or whose client goes away is *abandoned*: its remaining pairs are dropped from later passes,
and the running call is cancelled only when every request with pairs in it is abandoned, so one
request's timeout never costs the others their work. A pass packs requests together, so a
timed-out request can keep the engine busy until the end of the pass it shares with a live one:
at most one pass (``max_batch_tokens`` tokens).

The engine thread never holds the event loop: results travel back through
:class:`concurrent.futures.Future` objects the handlers await with :func:`asyncio.wrap_future`.
"""
from __future__ import annotations

import collections
import concurrent.futures
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Hashable, List, Optional, Sequence

import numpy as np

from ..errors import Cancelled
from ..model import CancelToken
from .metrics import Metrics

__all__ = ["Batcher", "Job", "QueueFull", "EngineStopped"]

logger = logging.getLogger("crossrank.server")

# A prefix shorter than this is not worth an extra engine call.
MIN_PREFIX_TOKENS = 16


class QueueFull(Exception):
    """The queue holds ``max_queue`` requests already (the client gets 503)."""


class EngineStopped(Exception):
    """The engine thread is not running (shutting down, or it failed)."""


_CANCELLED = object()
_STOP = object()


@dataclass(eq=False)
class Job:
    """One request's pairs on their way through the engine.

    Attributes:
        ids: Token ids per pair (``int32``).
        keys: Prefix-sharing key per pair (``None``: no sharing).
        future: Resolves to the raw logits ``[n, num_labels]`` (float32), in the request's order.
    """

    ids: Sequence[np.ndarray]
    keys: Sequence[Optional[Hashable]]
    out: np.ndarray
    future: "concurrent.futures.Future[np.ndarray]" = field(default_factory=concurrent.futures.Future)
    abandoned: bool = False
    failed: bool = False
    remaining: int = 0

    @property
    def tokens(self) -> int:
        return int(sum(len(a) for a in self.ids))

    @property
    def closed(self) -> bool:
        """No more work is wanted for this job."""
        return self.abandoned or self.failed

    def _finish(self) -> None:
        try:
            self.future.set_result(self.out)
        except concurrent.futures.InvalidStateError:  # cancelled by its waiter meanwhile
            pass

    def _fail(self, exc: BaseException) -> None:
        self.failed = True
        try:
            self.future.set_exception(exc)
        except concurrent.futures.InvalidStateError:
            pass


@dataclass(eq=False)
class _Prefix:
    """A token prefix shared by several pairs of one round, and its K/V handle once built."""

    tokens: np.ndarray
    members: List["_Seq"]
    remaining: int
    handle: Any = None
    failed: bool = False


@dataclass(eq=False)
class _Seq:
    job: Job
    index: int
    ids: np.ndarray
    prefix: Optional[_Prefix] = None

    @property
    def prefix_len(self) -> int:
        return len(self.prefix.tokens) if self.prefix is not None and not self.prefix.failed else 0


class Batcher:
    """Queues requests and runs them through the engine on one thread.

    Args:
        engine: The C engine (``forward(tokens, positions, seq_start, prefixes=, prefix_lens=,
            control=)`` and ``build_prefix(tokens, control=)``).
        num_labels: Outputs per pair.
        max_queue: Requests allowed to wait; one more raises :class:`QueueFull`.
        max_batch_tokens: Tokens per forward pass (shared prefixes not counted).
        metrics: Where passes are counted.
    """

    def __init__(self, engine: Any, num_labels: int, *, max_queue: int = 256, max_batch_tokens: int = 16384,
                 metrics: Optional[Metrics] = None) -> None:
        self._engine = engine
        self._num_labels = num_labels
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=max_queue)
        self._max_batch_tokens = max_batch_tokens
        # A round takes at most a few passes' worth of requests, so the prefixes it builds and the
        # latency it adds to the requests that wait behind it stay bounded.
        self._round_tokens = 4 * max_batch_tokens
        self._metrics = metrics
        self._lock = threading.Lock()
        self._active: Optional[tuple] = None  # (CancelToken, jobs of the running engine call)
        self._thread: Optional[threading.Thread] = None
        self._stopping = False

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the engine thread."""
        self._thread = threading.Thread(target=self._run, name="crossrank-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancels the running call, fails the waiting requests and joins the engine thread."""
        self._stopping = True
        with self._lock:
            if self._active is not None:
                self._active[0].cancel()
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(job, Job):
                job._fail(EngineStopped("the server is shutting down"))
        try:
            self._queue.put_nowait(_STOP)
        except queue.Full:
            pass
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """True while the engine thread runs and accepts work."""
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    @property
    def queue_depth(self) -> int:
        """Requests waiting for the engine."""
        return self._queue.qsize()

    # -- requests ------------------------------------------------------------------------------

    def submit(self, ids: Sequence[np.ndarray], keys: Sequence[Optional[Hashable]]) -> Job:
        """Queues one request's pairs; the returned job's future gives their raw logits.

        Raises:
            QueueFull: ``max_queue`` requests are waiting already.
            EngineStopped: the engine thread is not running.
        """
        if not self.alive:
            raise EngineStopped("the engine is not running")
        job = Job(ids=ids, keys=keys, out=np.empty((len(ids), self._num_labels), dtype=np.float32),
                  remaining=len(ids))
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            if self._metrics is not None:
                self._metrics.add("queue_full")
            raise QueueFull(f"{self._queue.maxsize} requests are waiting already") from None
        if self._metrics is not None:
            self._metrics.set_gauge("queue_depth", self._queue.qsize())
        return job

    def abandon(self, job: Job) -> None:
        """Nobody waits for ``job`` any more: skip its pairs, and cancel the running engine call
        if every request with pairs in it has been abandoned."""
        with self._lock:
            job.abandoned = True
            active = self._active
            if active is not None and any(j is job for j in active[1]) and all(j.closed for j in active[1]):
                active[0].cancel()

    # -- engine thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP or self._stopping:
                break
            jobs, tokens, stop = [first], first.tokens, False
            while tokens < self._round_tokens:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                jobs.append(nxt)
                tokens += nxt.tokens
            if self._metrics is not None:
                self._metrics.set_gauge("queue_depth", self._queue.qsize())
            try:
                self._run_round(jobs)
            except Exception as exc:  # the thread must outlive anything one round raises
                logger.exception("engine round failed")
                for job in jobs:
                    if not job.future.done():
                        job._fail(exc)
            if stop:
                break

    def _guarded(self, jobs: List[Job], call: Callable[[CancelToken], Any]) -> Any:
        """Runs one engine call with its own cancel token, registered so :meth:`abandon` can stop
        it; returns ``_CANCELLED`` when it was stopped (or all its jobs were gone already)."""
        token = CancelToken()
        with self._lock:
            if all(j.closed for j in jobs):
                return _CANCELLED
            self._active = (token, jobs)
        try:
            return call(token)
        except Cancelled:
            return _CANCELLED
        finally:
            with self._lock:
                self._active = None

    def _run_round(self, jobs: List[Job]) -> None:
        live = [j for j in jobs if j.future.set_running_or_notify_cancel() and not j.closed]
        seqs = [_Seq(j, i, ids) for j in live for i, ids in enumerate(j.ids)]
        self._plan_prefixes(seqs)
        pending: Deque[_Seq] = collections.deque(seqs)
        while pending:
            batch: List[_Seq] = []
            tokens = 0
            while pending:
                seq = pending[0]
                if seq.job.closed:
                    self._release(pending.popleft())
                    continue
                tail = len(seq.ids) - seq.prefix_len
                if batch and tokens + tail > self._max_batch_tokens:
                    break
                batch.append(pending.popleft())
                tokens += tail
            if batch:
                self._run_pass(batch)

    def _plan_prefixes(self, seqs: List[_Seq]) -> None:
        """Groups the round's pairs by query key and plans one shared prefix per group."""
        groups: Dict[Hashable, List[_Seq]] = {}
        for seq in seqs:
            key = seq.job.keys[seq.index]
            if key is not None:
                groups.setdefault(key, []).append(seq)
        for members in groups.values():
            if len(members) < 2:
                continue
            n = _common_prefix([m.ids for m in members])
            if n < MIN_PREFIX_TOKENS:
                continue
            prefix = _Prefix(tokens=members[0].ids[:n], members=members, remaining=len(members))
            for m in members:
                m.prefix = prefix

    def _build_prefix(self, prefix: _Prefix) -> None:
        jobs = _unique_jobs(prefix.members)
        t0 = time.perf_counter()
        try:
            handle = self._guarded(jobs, lambda token: self._engine.build_prefix(prefix.tokens, control=token))
        except Exception:  # run the members without the prefix rather than fail them
            logger.exception("building a shared prefix of %d tokens failed", len(prefix.tokens))
            handle = _CANCELLED
        if handle is _CANCELLED:
            prefix.failed = True
            return
        prefix.handle = handle
        if self._metrics is not None:
            self._metrics.add("computed_tokens", len(prefix.tokens))
        logger.debug("prefix: %d tokens for %d pairs, %.1f ms", len(prefix.tokens), len(prefix.members),
                     1e3 * (time.perf_counter() - t0))

    def _run_pass(self, batch: List[_Seq]) -> None:
        for seq in batch:
            if seq.prefix is not None and seq.prefix.handle is None and not seq.prefix.failed:
                self._build_prefix(seq.prefix)
        keep = [s for s in batch if not s.job.closed]
        for seq in batch:
            if seq.job.closed:
                self._release(seq)
        if not keep:
            return
        batch = keep
        plens = np.array([s.prefix_len for s in batch], dtype=np.int64)
        tails = [s.ids[p:] for s, p in zip(batch, plens)]
        lengths = np.array([len(t) for t in tails], dtype=np.int64)
        tokens = np.concatenate(tails).astype(np.int32, copy=False)
        positions = np.concatenate([np.arange(p, p + n, dtype=np.int32) for p, n in zip(plens, lengths)])
        seq_start = np.zeros(len(batch) + 1, dtype=np.int64)
        np.cumsum(lengths, out=seq_start[1:])
        use_prefix = bool(plens.any())
        handles = [s.prefix.handle if s.prefix_len else None for s in batch] if use_prefix else None
        jobs = _unique_jobs(batch)
        t0 = time.perf_counter()
        try:
            out = self._guarded(jobs, lambda token: self._engine.forward(
                tokens, positions, seq_start, prefixes=handles, prefix_lens=plens if use_prefix else None,
                control=token))
        except Exception as exc:
            logger.exception("forward pass of %d pairs failed", len(batch))
            for job in jobs:
                job._fail(exc)
            out = _CANCELLED
        elapsed = time.perf_counter() - t0
        for seq in batch:
            self._release(seq)
        if out is _CANCELLED:
            logger.info("forward pass cancelled: every request in it was abandoned")
            return
        reused = int(plens.sum())
        if self._metrics is not None:
            self._metrics.observe_pass(len(batch), int(lengths.sum()))
            self._metrics.add("prefix_tokens_reused", reused)
        logger.info("forward pass: %d pairs from %d requests, %d tokens computed, %d prefix tokens reused, "
                    "%.1f ms", len(batch), len(jobs), int(lengths.sum()), reused, 1e3 * elapsed)
        for k, seq in enumerate(batch):
            job = seq.job
            job.out[seq.index] = out[k]
            job.remaining -= 1
            if job.remaining == 0 and not job.closed:
                job._finish()

    @staticmethod
    def _release(seq: _Seq) -> None:
        """Drops the prefix handle once its last pair has run (its K/V can be large)."""
        prefix = seq.prefix
        if prefix is None:
            return
        seq.prefix = None
        prefix.remaining -= 1
        if prefix.remaining <= 0:
            prefix.handle = None


def _unique_jobs(seqs: Sequence[_Seq]) -> List[Job]:
    seen: Dict[int, Job] = {}
    for s in seqs:
        seen.setdefault(id(s.job), s.job)
    return list(seen.values())


def _common_prefix(arrays: Sequence[np.ndarray]) -> int:
    """Length of the longest token prefix of all arrays, leaving each at least one token of its own."""
    first = arrays[0]
    n = min(len(a) for a in arrays) - 1
    for other in arrays[1:]:
        if n <= 0:
            return 0
        same = first[:n] == other[:n]
        if not same.all():
            n = int(np.argmin(same))
    return max(n, 0)
