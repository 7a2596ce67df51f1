/* pool.c — crossrank._testing.pool_stress:
 *
 *   pool_stress(threads, jobs=2000, max_tasks=64, pause_every=0, abort_at=-1) -> int
 *       Posts `jobs` jobs to the worker pool, job j with 1 + h(j) % max_tasks tasks on
 *       1 + h'(j) % threads threads (h, h' fixed hashes), and checks after each that every task
 *       ran exactly once (each task bumps its own counter). Every `pause_every`-th job (when > 0)
 *       is preceded by a 2 ms sleep of the caller, longer than the workers' spin, so the workers
 *       are asleep and must be woken. abort_at >= 0 raises the abort flag from inside task
 *       abort_at of job 0 and expects CR_E_ABORTED for it, then carries on. Returns the number of
 *       tasks run; RuntimeError names the first job whose counts were wrong. A lost wake-up shows
 *       as a hang: run it under a timeout. */
#include "testing.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "error.h"
#include "threads.h"

typedef struct stress_job {
    atomic_int *count;
    atomic_int *abort;
    int64_t abort_at;
} stress_job;

static void stress_task(void *ctx, int64_t task, int worker) {
    stress_job *j = ctx;
    (void)worker;
    atomic_fetch_add(&j->count[task], 1);
    if (task == j->abort_at) atomic_store(j->abort, 1);
}

static uint32_t mix(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

PyObject *cr_test_pool_stress(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"threads", "jobs", "max_tasks", "pause_every", "abort_at", NULL};
    int threads, jobs = 2000, max_tasks = 64, pause_every = 0;
    long long abort_at = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "i|iiiL", kwlist, &threads, &jobs, &max_tasks, &pause_every,
                                     &abort_at))
        return NULL;
    if (threads < 1 || jobs < 0 || max_tasks < 1 || max_tasks > 1 << 20 || abort_at >= max_tasks) {
        PyErr_SetString(PyExc_ValueError, "pool_stress: threads >= 1, jobs >= 0, 1 <= max_tasks <= 2^20, "
                                          "abort_at < max_tasks");
        return NULL;
    }
    atomic_int *count = calloc((size_t)max_tasks, sizeof *count);
    if (!count) return PyErr_NoMemory();
    atomic_int abort_flag;
    long long ran = 0;
    int bad_job = -1;
    const char *bad = NULL;
    Py_BEGIN_ALLOW_THREADS
    cr_engine_lock();
    for (int j = 0; j < jobs && !bad; j++) {
        int64_t n = 1 + (int64_t)(mix((uint32_t)j) % (uint32_t)max_tasks);
        int t = 1 + (int)(mix((uint32_t)j ^ 0x9e3779b9U) % (uint32_t)threads);
        int64_t stop = j == 0 && abort_at >= 0 ? abort_at : -1;
        if (stop >= n) n = stop + 1;
        if (pause_every > 0 && j % pause_every == 0) {
            struct timespec ts = {0, 2000000};
            nanosleep(&ts, NULL);
        }
        atomic_store(&abort_flag, 0);
        for (int64_t i = 0; i < n; i++) atomic_store(&count[i], 0);
        stress_job sj = {count, &abort_flag, stop};
        cr_status st = cr_pool_run(t, n, stress_task, &sj, &abort_flag);
        if (stop >= 0) {
            /* tasks claimed before the flag was seen ran once; none ran twice; the flag was reported */
            if (st != CR_E_ABORTED) bad = "an aborted job did not report CR_E_ABORTED";
            for (int64_t i = 0; i < n && !bad; i++)
                if (atomic_load(&count[i]) > 1) bad = "a task ran twice";
            if (bad) bad_job = j;
            continue;
        }
        if (st != CR_OK) bad = "a job failed";
        for (int64_t i = 0; i < n && !bad; i++) {
            if (atomic_load(&count[i]) != 1) bad = "a task did not run exactly once";
            ran++;
        }
        if (bad) bad_job = j;
    }
    cr_engine_unlock();
    Py_END_ALLOW_THREADS
    free(count);
    if (bad) return PyErr_Format(PyExc_RuntimeError, "pool_stress: job %d: %s", bad_job, bad);
    return PyLong_FromLongLong(ran);
}
