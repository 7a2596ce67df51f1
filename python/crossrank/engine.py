"""The engine: token ids in, raw logits out, through the C model in passes.

One job: plan the passes of a set of tokenized prompts (which share a prompt prefix, in which order
they run, how many go in one pass), build the shared prefixes' keys and values once, run the passes
and stop them on request. It knows nothing of texts, templates or activations; it imports only
``_core`` and the pure helpers of :mod:`crossrank.passes`.

:func:`plan_passes` is the one planner: :meth:`Engine.run` executes a plan, and the server's
batcher uses the same plan to estimate a request's work and to count the tokens a pass computed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, Hashable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import _core
from .integers import positive_int
from .passes import interruptible, shared_prefix_groups

__all__ = ["Engine", "PassPlan", "plan_passes", "CancelToken", "TOKEN_BUDGET"]

logger = logging.getLogger("crossrank")

#: A per-call cancellation flag: pass it as ``cancel=`` and call ``.cancel()`` from any thread;
#: the call raises :class:`crossrank.Cancelled` within one GEMM block and the model stays usable.
CancelToken = _core.Control

#: Tokens per engine call: bounds the activations a pass allocates, whatever the batch size says.
TOKEN_BUDGET = 16384


@dataclass(frozen=True)
class PassPlan:
    """How a set of sequences runs: prefix groups, run order, and the work it takes.

    Attributes:
        seqs: The sequences (``int64`` arrays), in the caller's order.
        groups: ``(members, shared length)`` per prefix group (see
            :func:`~crossrank.passes.shared_prefix_groups`).
        group_of: Per sequence, its group's index, or -1.
        shared: Per sequence, the leading tokens it takes from its group's prefix (0 for none).
        order: The run order: each group's members longest first, then the ungrouped ones
            longest first.
    """

    seqs: List[np.ndarray]
    groups: List[Tuple[List[int], int]]
    group_of: np.ndarray
    shared: np.ndarray
    order: List[int]

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def tails(self) -> np.ndarray:
        """Per sequence, the tokens it runs itself (its length less its shared prefix)."""
        return np.array([len(s) for s in self.seqs], dtype=np.int64) - self.shared

    @property
    def reused_tokens(self) -> int:
        """Prompt tokens whose keys and values come from a shared prefix."""
        return int(sum(length * len(members) for members, length in self.groups))

    @property
    def computed_tokens(self) -> int:
        """Tokens run through the model: the tails and each shared prefix once."""
        return int(sum(len(s) for s in self.seqs)) - self.reused_tokens + int(sum(n for _, n in self.groups))

    def passes(self, batch_size: int, token_budget: int = TOKEN_BUDGET) -> Iterator[List[int]]:
        """The sequences of each pass, in run order: at most ``batch_size`` sequences and
        ``token_budget`` tail tokens (a single longer sequence runs alone)."""
        order, shared, n = self.order, self.shared, len(self.seqs)
        start = 0
        while start < n:
            stop, tokens = start, 0
            while stop < n and stop - start < batch_size and (
                    stop == start or tokens + len(self.seqs[order[stop]]) - shared[order[stop]] <= token_budget):
                tokens += len(self.seqs[order[stop]]) - shared[order[stop]]
                stop += 1
            yield order[start:stop]
            start = stop


def plan_passes(input_ids: Sequence[Sequence[int]],
                share_keys: Optional[Sequence[Optional[Hashable]]] = None) -> PassPlan:
    """The :class:`PassPlan` of tokenized prompts.

    ``share_keys`` (one hashable per sequence, ``None`` for none) marks sequences that start
    alike, e.g. the documents of one query: the common leading tokens of each group with the
    same key run once.

    Raises:
        ValueError: a sequence is empty, or ``share_keys`` has another length.
    """
    n = len(input_ids)
    seqs = [np.asarray(ids, dtype=np.int64) for ids in input_ids]
    for i, ids in enumerate(seqs):
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError(f"sequence {i} is empty: every prompt needs at least one token")
    if share_keys is not None and len(share_keys) != n:
        raise ValueError(f"share_keys has {len(share_keys)} entries for {n} sequences")
    groups = shared_prefix_groups(seqs, share_keys)
    group_of = np.full(n, -1, dtype=np.int64)
    shared = np.zeros(n, dtype=np.int64)
    order: List[int] = []
    for g, (members, length) in enumerate(groups):
        group_of[members] = g
        shared[members] = length
        order.extend(sorted(members, key=lambda i: -len(seqs[i])))
    order.extend(sorted((i for i in range(n) if group_of[i] < 0), key=lambda i: -len(seqs[i])))
    return PassPlan(seqs, groups, group_of, shared, order)


class Engine:
    """A loaded C model and the passes it runs.

    Args:
        core: The C model (:class:`crossrank._core.Model`).

    Attributes:
        core: The C model.
        num_labels: Logits per sequence.
        token_budget: Tail tokens per engine call (default :data:`TOKEN_BUDGET`).
    """

    def __init__(self, core: Any) -> None:
        self.core = core
        self.num_labels: int = core.num_labels
        self.token_budget: int = TOKEN_BUDGET

    @classmethod
    def load(cls, path: str, params: Mapping[str, Any], head: Mapping[str, Any], *, dtype: str, threads: int,
             check_finite: Optional[bool]) -> "Engine":
        """Maps the checkpoint at ``path`` with the config ``params`` and the ``head`` description."""
        return cls(_core.Model(path, dict(params), dict(head), dtype=dtype, threads=threads,
                               check_finite=check_finite))

    def run(self, plan: PassPlan, *, batch_size: int, cancel: Optional[CancelToken] = None,
            on_pass: Optional[Callable[[int], None]] = None) -> np.ndarray:
        """Raw logits ``[n, num_labels]`` (float32) of the plan's sequences, in the caller's order.

        Passes hold at most ``batch_size`` sequences and :attr:`token_budget` tokens; a group's
        prefix is built before its first member runs and freed after its last one. ``cancel``
        stops the call (:class:`crossrank.Cancelled`); on the main thread Ctrl-C does too.
        ``on_pass`` is told the number of sequences of each finished pass.
        """
        batch_size = positive_int(batch_size, "batch_size")
        n = len(plan)
        out = np.empty((n, self.num_labels), dtype=np.float32)
        if n == 0:
            return out
        seqs, group_of, shared = plan.seqs, plan.group_of, plan.shared
        left_in_group = [len(members) for members, _ in plan.groups]
        handles: Dict[int, Any] = {}
        control = cancel if cancel is not None else _core.Control()
        core = self.core
        try:
            for chunk in plan.passes(batch_size, self.token_budget):
                for i in chunk:
                    g = int(group_of[i])
                    if g >= 0 and g not in handles:
                        head = seqs[i][:shared[i]].astype(np.int32)
                        handles[g] = interruptible(lambda: core.build_prefix(head, control=control), control)
                lengths = np.array([len(seqs[i]) - shared[i] for i in chunk], dtype=np.int64)
                flat = np.concatenate([seqs[i][shared[i]:] for i in chunk]).astype(np.int32)
                positions = np.concatenate([np.arange(shared[i], len(seqs[i]), dtype=np.int32) for i in chunk])
                seq_start = np.zeros(len(chunk) + 1, dtype=np.int64)
                np.cumsum(lengths, out=seq_start[1:])
                if any(group_of[i] >= 0 for i in chunk):
                    prefixes = [handles[int(group_of[i])] if group_of[i] >= 0 else None for i in chunk]
                    prefix_lens = np.array([shared[i] for i in chunk], dtype=np.int64)
                    call = lambda: core.forward(flat, positions, seq_start, prefixes=prefixes,  # noqa: E731
                                                prefix_lens=prefix_lens, control=control)
                else:
                    call = lambda: core.forward(flat, positions, seq_start, control=control)  # noqa: E731
                out[chunk] = interruptible(call, control)
                for i in chunk:  # a group's keys and values are freed once its last member ran
                    g = int(group_of[i])
                    if g >= 0:
                        left_in_group[g] -= 1
                        if left_in_group[g] == 0:
                            del handles[g]
                if on_pass is not None:
                    on_pass(len(chunk))
        finally:
            handles.clear()
        return out

    def forward_ids(self, input_ids: Sequence[Sequence[int]], *, batch_size: int = 32,
                    cancel: Optional[CancelToken] = None,
                    share_keys: Optional[Sequence[Optional[Hashable]]] = None,
                    on_pass: Optional[Callable[[int], None]] = None) -> np.ndarray:
        """:func:`plan_passes` then :meth:`run`: raw logits of tokenized prompts."""
        batch_size = positive_int(batch_size, "batch_size")
        if len(input_ids) == 0:
            return np.empty((0, self.num_labels), dtype=np.float32)
        return self.run(plan_passes(input_ids, share_keys), batch_size=batch_size, cancel=cancel, on_pass=on_pass)
