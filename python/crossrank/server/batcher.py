"""Dynamic batching: one engine thread fed by a bounded queue.

The C engine already spreads one forward pass over every compute thread, and a second pass started
concurrently would only wait on its lock, so one thread drives it. Requests that arrive while a pass
runs wait in the queue; before each pass the thread moves waiting requests, oldest first, into its
*rotation* (eight, or more while they hold less than four passes of work), and each pass takes pairs
from the requests of the rotation fairly: an equal share of ``max_batch_tokens`` each (at least one
pair), any room left in rotation order, and the rotation moves on by one request per pass. A request
of 100,000 documents thus shares the engine with the requests that arrive after it, which finish in
a few passes instead of waiting for it. Each pass is planned once by
:func:`crossrank.engine.plan_passes`, with the pairs' query keys as ``share_keys`` (pairs of the
pass whose prompts start with the same query run that token prefix once and only their own tails),
and run by the model's :class:`~crossrank.engine.Engine`; the same plan gives the metrics' token
counts, and planning each request alone gives the packing estimate of its pairs.
Scores do not depend on packing or prefix reuse (the engine's reductions have a fixed order), so a
request gets exactly the scores it would get alone.

The engine caps its own calls at a fixed token budget (16384 tokens, the default
``max_batch_tokens``); with a larger ``max_batch_tokens`` it runs one pass as several engine calls,
which is still one pass here (one cancel token, one log line).

Cancellation. Every pass gets its own :class:`~crossrank.CancelToken`. A request that times
out or whose client goes away is *abandoned*: its remaining pairs are dropped from later passes,
and the running pass is cancelled only when every request with pairs in it is abandoned, so one
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
from ..engine import CancelToken, plan_passes
from ..model import CrossEncoder
from .metrics import Metrics

__all__ = ["Batcher", "Job", "QueueFull", "EngineStopped"]

logger = logging.getLogger("crossrank.server")

class QueueFull(Exception):
    """``max_queue`` requests wait already besides the running one (the client gets 503)."""


class EngineStopped(Exception):
    """The engine thread is not running (shutting down, or it failed)."""


# Requests sharing the engine's passes at once (more while they hold little work); the others wait
# in arrival order. Sharing among a few keeps a small request from waiting behind a large one;
# sharing among all would make every request of a heavy load late together instead of answering
# the oldest first.
_ROTATION = 8

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
    released: bool = False  # no longer counted against max_queue

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
class _Pair:
    job: Job
    index: int
    ids: np.ndarray
    key: Optional[Hashable]
    tail: int  # tokens it adds to a pass: its own, a prefix shared within its request excluded


class Batcher:
    """Queues requests and runs them through the engine on one thread.

    Args:
        model: The loaded model; each pass is one :meth:`Engine.run <crossrank.engine.Engine.run>`
            call of its :attr:`~crossrank.CrossEncoder.engine`.
        max_queue: Requests allowed to wait; one more raises :class:`QueueFull`.
        max_batch_tokens: Tokens per forward pass (shared prefixes not counted).
        metrics: Where passes are counted.
    """

    def __init__(self, model: CrossEncoder, *, max_queue: int = 256, max_batch_tokens: int = 16384,
                 metrics: Optional[Metrics] = None) -> None:
        self._engine = model.engine
        self._num_labels = model.num_labels
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._max_queue = max_queue
        # Requests submitted and not finished: one running and max_queue waiting are allowed.
        self._outstanding = 0
        self._max_batch_tokens = max_batch_tokens
        self._round_tokens = 4 * max_batch_tokens
        self._metrics = metrics
        self._lock = threading.Lock()
        self._active: Optional[tuple] = None  # (CancelToken, jobs of the running pass)
        self._thread: Optional[threading.Thread] = None
        self._stopping = False

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the engine thread."""
        self._thread = threading.Thread(target=self._run, name="crossrank-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancels the running pass, fails the waiting requests and joins the engine thread."""
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
        self._queue.put_nowait(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """True while the engine thread runs and accepts work."""
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    @property
    def queue_depth(self) -> int:
        """Requests submitted and not finished, but for those in the running pass."""
        with self._lock:
            running = len(self._active[1]) if self._active is not None else 0
            return max(0, self._outstanding - running)

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
        with self._lock:
            full = self._outstanding > self._max_queue
            if not full:
                self._outstanding += 1
        if full:
            if self._metrics is not None:
                self._metrics.add("queue_full")
            raise QueueFull(f"{self._max_queue} requests are waiting already") from None
        self._queue.put_nowait(job)
        self._update_depth()
        return job

    def abandon(self, job: Job) -> None:
        """Nobody waits for ``job`` any more: skip its pairs, and cancel the running pass if every
        request with pairs in it has been abandoned."""
        with self._lock:
            job.abandoned = True
            active = self._active
            if active is not None and any(j is job for j in active[1]) and all(j.closed for j in active[1]):
                active[0].cancel()

    # -- engine thread -------------------------------------------------------------------------

    def _run(self) -> None:
        active: Deque[_Cursor] = collections.deque()
        stop = False
        while not stop:
            if not active:
                first = self._queue.get()
                if first is _STOP or self._stopping:
                    break
                self._admit(first, active)
            # Requests that arrived meanwhile join the rotation: up to _ROTATION of them, and beyond
            # that while the rotation holds less than a few passes of work (many small requests
            # still pack into one pass).
            while len(active) < _ROTATION or sum(c.tokens for c in active) < self._round_tokens:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                self._admit(nxt, active)
            if self._stopping:
                break
            batch = self._next_pass(active)
            if self._metrics is not None:
                self._metrics.set_gauge("engine_busy", 1)
            try:
                if batch:
                    self._run_pass(batch)
            except Exception as exc:  # the thread must outlive anything one pass raises
                logger.exception("engine pass failed")
                for job in _unique_jobs(batch):
                    if not job.future.done():
                        job._fail(exc)
            finally:
                if self._metrics is not None:
                    self._metrics.set_gauge("engine_busy", 0)
            for cursor in [c for c in active if c.done]:
                active.remove(cursor)
                self._release(cursor.job)
        for cursor in active:
            if not cursor.job.future.done():
                cursor.job._fail(EngineStopped("the server is shutting down"))
            self._release(cursor.job)

    def _admit(self, job: Job, active: "Deque[_Cursor]") -> None:
        if not job.future.set_running_or_notify_cancel() or job.closed:
            self._release(job)
            return
        # Packing estimate only: each pass is planned again with the pairs it holds.
        try:
            tails = plan_passes(job.ids, job.keys).tails
        except ValueError as exc:  # an empty prompt: the request fails, the engine thread goes on
            job._fail(exc)
            self._release(job)
            return
        pairs = [_Pair(job, i, ids, job.keys[i], int(tails[i])) for i, ids in enumerate(job.ids)]
        active.append(_Cursor(job, collections.deque(pairs), sum(p.tail for p in pairs)))

    def _next_pass(self, active: "Deque[_Cursor]") -> List[_Pair]:
        """The pairs of the next pass, taken fairly: each request in the rotation gets an equal share
        of ``max_batch_tokens`` (at least one pair), then any room left goes to the requests in
        rotation order; the rotation then moves on, so a request of 100,000 documents shares the
        engine with the ones that arrive after it instead of holding it until it is done."""
        batch: List[_Pair] = []
        tokens = 0
        live = [c for c in active if not c.done]
        quota = max(1, self._max_batch_tokens // max(1, len(live)))
        for sweep_quota in (quota, None):
            for cursor in live:
                taken = 0
                while cursor.pending and (sweep_quota is None or taken < sweep_quota):
                    pair = cursor.pending[0]
                    if batch and tokens + pair.tail > self._max_batch_tokens:
                        break
                    batch.append(cursor.pending.popleft())
                    cursor.tokens -= pair.tail
                    tokens += pair.tail
                    taken += pair.tail
                if tokens >= self._max_batch_tokens:
                    break
            if tokens >= self._max_batch_tokens:
                break
        if active:
            active.rotate(-1)
        return batch

    def _release(self, job: Job) -> None:
        with self._lock:
            if not job.released:
                job.released = True
                self._outstanding -= 1
        self._update_depth()

    def _update_depth(self) -> None:
        if self._metrics is not None:
            with self._lock:
                running = len(self._active[1]) if self._active is not None else 0
                self._metrics.set_gauge("queue_depth", max(0, self._outstanding - running))

    def _guarded(self, jobs: List[Job], call: Callable[[CancelToken], Any]) -> Any:
        """Runs one pass with its own cancel token, registered so :meth:`abandon` can stop
        it; returns ``_CANCELLED`` when it was stopped (or all its jobs were gone already)."""
        token = CancelToken()
        with self._lock:
            if all(j.closed for j in jobs):
                return _CANCELLED
            self._active = (token, jobs)
        self._update_depth()
        try:
            return call(token)
        except Cancelled:
            return _CANCELLED
        finally:
            with self._lock:
                self._active = None

    def _run_pass(self, batch: List[_Pair]) -> None:
        batch = [p for p in batch if not p.job.closed]
        if not batch:
            return
        ids = [p.ids for p in batch]
        keys = [p.key for p in batch]
        jobs = _unique_jobs(batch)
        t0 = time.perf_counter()
        try:
            plan = plan_passes(ids, keys)
            out = self._guarded(jobs, lambda token: self._engine.run(plan, batch_size=len(ids), cancel=token))
        except Exception as exc:
            logger.exception("forward pass of %d pairs failed", len(batch))
            for job in jobs:
                job._fail(exc)
            return
        elapsed = time.perf_counter() - t0
        if out is _CANCELLED:
            logger.info("forward pass cancelled: every request in it was abandoned")
            return
        reused, computed = plan.reused_tokens, plan.computed_tokens
        if self._metrics is not None:
            self._metrics.observe_pass(len(batch), computed)
            self._metrics.add("prefix_tokens_reused", reused)
        logger.info("forward pass: %d pairs from %d requests, %d tokens computed, %d prefix tokens reused, "
                    "%.1f ms", len(batch), len(jobs), computed, reused, 1e3 * elapsed)
        for k, pair in enumerate(batch):
            job = pair.job
            job.out[pair.index] = out[k]
            job.remaining -= 1
            if job.remaining == 0 and not job.closed:
                job._finish()


@dataclass(eq=False)
class _Cursor:
    """A request in the engine's rotation: its pairs not yet run."""

    job: Job
    pending: Deque[_Pair]
    tokens: int  # the pending pairs' tokens


    @property
    def done(self) -> bool:
        return self.job.closed or not self.pending


def _unique_jobs(pairs: Sequence[_Pair]) -> List[Job]:
    seen: Dict[int, Job] = {}
    for p in pairs:
        seen.setdefault(id(p.job), p.job)
    return list(seen.values())
