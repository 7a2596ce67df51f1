/* threads.h — the engine: one process-wide lock that serializes compute, and one worker pool.
 *
 * cr_forward takes the engine lock for the whole call, so at most one job runs at a time and the
 * pool and OpenBLAS never compete for the cores. The caller of cr_pool_run works too (worker 0).
 * After fork() the child starts with no workers and a fresh lock; the pool re-grows on demand. */
#ifndef CR_THREADS_H
#define CR_THREADS_H

#include <stdatomic.h>
#include <stdint.h>

#include "crossrank.h"

void cr_engine_lock(void);
void cr_engine_unlock(void);

/* fn(ctx, task, worker) for every task in [0, n_tasks), spread over n_threads threads (worker ids
 * 0..n_threads-1). Tasks are claimed dynamically; once *abort becomes non-zero no further task
 * starts and CR_E_ABORTED is returned. Must be called with the engine lock held. */
typedef void (*cr_task_fn)(void *ctx, int64_t task, int worker);
cr_status cr_pool_run(int n_threads, int64_t n_tasks, cr_task_fn fn, void *ctx,
                      const atomic_int *abort);

static inline int cr_aborted(const atomic_int *abort) {
    return abort && atomic_load_explicit(abort, memory_order_relaxed) != 0;
}

#endif
