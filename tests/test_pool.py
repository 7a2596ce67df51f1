"""The worker pool: every task of every job runs exactly once, whatever the thread count (more
threads than CPUs included, where the pool does not spin), when workers were asleep and must be
woken, when a job is cancelled, and in a child forked after the pool ran.

A lost wake-up would hang, so each case runs in a child process under a timeout."""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("crossrank._testing")

TIMEOUT_S = 120


def _run(code: str) -> str:
    """Runs `code` in a fresh interpreter (the pool is process-wide) and returns its stdout."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@pytest.mark.parametrize("threads", sorted({1, 2, 3, 4, _cpus(), 2 * _cpus() + 1}))
def test_every_task_runs_once(threads):
    out = _run(f"""
        from crossrank import _testing as t
        busy = t.pool_stress({threads}, jobs=3000, max_tasks=64)
        woken = t.pool_stress({threads}, jobs=150, max_tasks=16, pause_every=2)
        print(busy, woken)
    """)
    busy, woken = map(int, out.split())
    # the same fixed job sizes whatever the thread count: 1 + hash % max_tasks tasks each
    assert busy > 3000 and woken > 150


def test_task_counts_do_not_depend_on_threads():
    out = _run("""
        from crossrank import _testing as t
        print(*[t.pool_stress(n, jobs=500, max_tasks=33) for n in (1, 2, 5)])
    """)
    counts = set(out.split())
    assert len(counts) == 1


def test_cancelled_job_reports_and_pool_goes_on():
    out = _run("""
        from crossrank import _testing as t
        # job 0 raises the abort flag from its task 5: it must say so, run no task twice, and the
        # jobs after it must all run in full
        print(t.pool_stress(4, jobs=300, max_tasks=64, abort_at=5))
    """)
    assert int(out) > 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_pool_in_forked_child():
    out = _run("""
        import os
        from crossrank import _testing as t
        t.pool_stress(3, jobs=200)
        pid = os.fork()
        if pid == 0:
            try:
                t.pool_stress(3, jobs=200, pause_every=4)
                os._exit(0)
            except BaseException:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        t.pool_stress(3, jobs=200)
        print(os.waitstatus_to_exitcode(status))
    """)
    assert out.strip() == "0"


def test_bad_arguments():
    from crossrank import _testing as t
    with pytest.raises(ValueError):
        t.pool_stress(0)
    with pytest.raises(ValueError):
        t.pool_stress(2, max_tasks=0)
