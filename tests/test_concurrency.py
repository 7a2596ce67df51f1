"""Threads and fork: one CrossEncoder shared by 8 Python threads gives the serial scores, the
GIL is released while the engine computes, two models side by side do not interfere, and a model
loaded before fork() scores correctly in the child (multiprocessing's "fork" start method), also
when the parent was in the middle of a forward at the moment of the fork. No torch.
"""
import multiprocessing
import threading

import numpy as np
import pytest

import crossrank
from crossrank import CrossEncoder
from _hardening import OVERRIDES, small_checkpoint, token_ids

DOCS = [f"document {i}: " + "lorem ipsum " * (i % 7) for i in range(24)]
QUERIES = ["what is lorem?", "ipsum", "a third query"]


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    # the real vocabulary: texts go through the template and the tokenizer
    return small_checkpoint(tmp_path_factory.mktemp("threads"), seed=21, vocab_size=151669)


@pytest.fixture(scope="module")
def other_path(tmp_path_factory):
    return small_checkpoint(tmp_path_factory.mktemp("threads-other"), seed=22, vocab_size=151669,
                            num_hidden_layers=3)


@pytest.fixture(scope="module")
def model(path):
    return CrossEncoder(path, hf_overrides=OVERRIDES, threads=2)


def ids_batch(seed, n=6):
    return [token_ids(10 + 13 * k, seed * 100 + k) for k in range(n)]


def test_eight_threads_on_one_model_give_the_serial_scores(model):
    work = [(q, DOCS[i::3]) for i, q in enumerate(QUERIES)] * 3 + [("ids", s) for s in range(5)]

    def run(item):
        kind, arg = item
        return model.forward_ids(ids_batch(arg)) if kind == "ids" else model.score(kind, arg)

    serial = [run(item) for item in work]
    results = [None] * len(work)
    errors = []
    barrier = threading.Barrier(8)

    def worker(w):
        try:
            barrier.wait()
            for i in range(w, len(work), 8):
                results[i] = run(work[i])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for got, want in zip(results, serial):
        np.testing.assert_array_equal(got, want)


def test_the_gil_is_released_while_the_engine_computes(model):
    # A Python thread spins a counter. The scoring thread reads it just before and just after
    # a long engine call: with the GIL held throughout, the counter could not move in between.
    long_batch = [token_ids(1500, 7)] * 4
    counter = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            counter[0] += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        before = counter[0]
        model.engine.core.forward(np.asarray(long_batch[0] * 4, np.int32),
                              np.tile(np.arange(1500, dtype=np.int32), 4),
                              np.array([0, 1500, 3000, 4500, 6000], np.int64))
        during = counter[0] - before
    finally:
        stop.set()
        spinner.join()
    assert during > 1000, f"the other thread ran {during} iterations during the forward"


def test_two_models_at_once_do_not_interfere(path, other_path):
    a = CrossEncoder(path, hf_overrides=OVERRIDES, threads=2)
    b = CrossEncoder(other_path, hf_overrides=OVERRIDES, threads=1)
    want_a = [a.forward_ids(ids_batch(s)) for s in range(4)]
    want_b = [b.forward_ids(ids_batch(s)) for s in range(4)]
    assert not np.allclose(want_a[0], want_b[0])  # different models, different scores
    got = {}

    def run(name, m):
        got[name] = [m.forward_ids(ids_batch(s)) for s in range(4) for _ in range(3)][::3]

    threads = [threading.Thread(target=run, args=("a", a)), threading.Thread(target=run, args=("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for x, y in zip(got["a"], want_a):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(got["b"], want_b):
        np.testing.assert_array_equal(x, y)


# ---- fork ------------------------------------------------------------------------------------------

_FORK_MODEL = None


def _score_in_child(seed):
    return _FORK_MODEL.forward_ids(ids_batch(seed)), _FORK_MODEL.score(QUERIES[0], DOCS[:5])


def test_a_model_loaded_before_fork_scores_correctly_in_the_child(path):
    global _FORK_MODEL
    _FORK_MODEL = CrossEncoder(path, hf_overrides=OVERRIDES, threads=2)
    want = [_score_in_child(s) for s in range(3)]   # the parent's pool threads exist now
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        result = pool.map_async(_score_in_child, range(3))
        got = result.get(timeout=120)   # a hang in the child fails here instead of blocking
    for (ids_g, docs_g), (ids_w, docs_w) in zip(got, want):
        np.testing.assert_array_equal(ids_g, ids_w)
        np.testing.assert_array_equal(docs_g, docs_w)
    np.testing.assert_array_equal(_score_in_child(0)[0], want[0][0])  # the parent still works


def _child_scores(queue):
    queue.put(_FORK_MODEL.forward_ids(ids_batch(1)))


def test_fork_while_another_thread_is_inside_a_forward_does_not_hang_the_child(path):
    # The engine lock and the pool are held by the parent's scoring thread at the moment of the
    # fork; the child must start with a fresh lock and pool.
    global _FORK_MODEL
    _FORK_MODEL = CrossEncoder(path, hf_overrides=OVERRIDES, threads=2)
    want = _FORK_MODEL.forward_ids(ids_batch(1))
    busy_started = threading.Event()
    busy_done = []

    def busy():
        busy_started.set()
        busy_done.append(_FORK_MODEL.forward_ids([token_ids(2000, 3)] * 6))

    t = threading.Thread(target=busy)
    t.start()
    busy_started.wait()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    children = [ctx.Process(target=_child_scores, args=(queue,)) for _ in range(2)]
    for c in children:
        c.start()
    got = [queue.get(timeout=120) for _ in children]
    for c in children:
        c.join(60)
        assert c.exitcode == 0
    t.join()
    assert busy_done and np.isfinite(busy_done[0]).all()
    for g in got:
        np.testing.assert_array_equal(g, want)


def test_arrays_and_prefixes_rewritten_by_another_thread_during_a_forward_do_not_reach_it(tmp_path):
    # The engine reads seq_start and the prefixes' K/V in every layer with the GIL released. Once
    # the forward is one layer in, another thread rewrites the caller's arrays with out-of-range
    # values and drops the only reference to the prefix: the call must not see any of it.
    from crossrank import _core
    from _hardening import core_model

    path = small_checkpoint(tmp_path, seed=23, hidden_size=256, num_hidden_layers=8, intermediate_size=1024,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=64)
    engine = core_model(path, threads=2)
    n, k = 1500, 4
    prefix_ids = np.asarray(token_ids(64, 5), np.int32)
    body = [np.asarray(token_ids(n, 10 + i), np.int32) for i in range(k)]

    def arrays():
        tokens = np.concatenate(body)
        pos = np.concatenate([np.arange(64, 64 + n, dtype=np.int32)] * k)
        start = np.arange(0, n * (k + 1), n, dtype=np.int64)
        return tokens, pos, start

    prefix = engine.build_prefix(prefix_ids)
    want = engine.forward(*arrays(), prefixes=[prefix] * k)
    tokens, pos, start = arrays()
    prefixes = [prefix] * k
    del prefix
    control = _core.Control()
    box = {}

    def run():
        try:
            box["out"] = engine.forward(tokens, pos, start, prefixes=prefixes, control=control)
        except BaseException as exc:
            box["err"] = exc

    t = threading.Thread(target=run)
    t.start()
    while control.progress[0] < 1 and t.is_alive():
        pass
    assert t.is_alive() and control.progress[0] < control.progress[1], "the forward finished too soon"
    start[:] = np.arange(start.size, dtype=np.int64) * 10**12
    tokens[:] = 10**9
    pos[:] = -1
    prefixes.clear()
    import gc

    gc.collect()
    t.join()
    assert "err" not in box, box.get("err")
    np.testing.assert_array_equal(box["out"], want)
