/* threads.c — the engine lock and the worker pool (see threads.h). */
#include "threads.h"

#include <pthread.h>
#include <stdlib.h>

#include "error.h"

#define CR_MAX_WORKERS 256

typedef struct pool_job {
    cr_task_fn fn;
    void *ctx;
    int64_t n_tasks;
    int n_threads;                  /* participants, caller included */
    const atomic_int *abort;
    atomic_llong next;              /* next task to claim */
    atomic_int aborted;
} pool_job;

static struct {
    pthread_mutex_t engine;         /* held for a whole forward */
    pthread_mutex_t mu;             /* guards the fields below */
    pthread_cond_t work;            /* a new generation was posted */
    pthread_cond_t done;            /* a worker finished its part */
    int n_workers;                  /* started threads (excluding the caller) */
    uint64_t generation;
    int pending;                    /* workers still inside the current job */
    pool_job *job;
} P = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
       PTHREAD_COND_INITIALIZER, 0, 0, 0, NULL};

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* In the child only the forking thread exists: forget the workers and reset every lock. */
static void after_fork_child(void) {
    pthread_mutex_init(&P.engine, NULL);
    pthread_mutex_init(&P.mu, NULL);
    pthread_cond_init(&P.work, NULL);
    pthread_cond_init(&P.done, NULL);
    P.n_workers = 0;
    P.pending = 0;
    P.job = NULL;
}

static void register_atfork(void) { pthread_atfork(NULL, NULL, after_fork_child); }

void cr_engine_lock(void) {
    pthread_once(&atfork_once, register_atfork);
    pthread_mutex_lock(&P.engine);
}

void cr_engine_unlock(void) { pthread_mutex_unlock(&P.engine); }

static void run_tasks(pool_job *job, int worker) {
    for (;;) {
        if (cr_aborted(job->abort)) {
            atomic_store(&job->aborted, 1);
            return;
        }
        int64_t t = atomic_fetch_add(&job->next, 1);
        if (t >= job->n_tasks) return;
        job->fn(job->ctx, t, worker);
    }
}

/* `seen` is the generation when the worker was created: a job posted before the new thread first
 * takes the lock must still count as new for it. */
typedef struct worker_arg { int id; uint64_t seen; } worker_arg;

static void *worker_main(void *arg) {
    int id = ((worker_arg *)arg)->id;
    uint64_t seen = ((worker_arg *)arg)->seen;
    free(arg);
    pthread_mutex_lock(&P.mu);
    for (;;) {
        while (P.generation == seen) pthread_cond_wait(&P.work, &P.mu);
        seen = P.generation;
        pool_job *job = P.job;
        if (!job || id >= job->n_threads) continue;
        pthread_mutex_unlock(&P.mu);
        run_tasks(job, id);
        pthread_mutex_lock(&P.mu);
        if (--P.pending == 0) pthread_cond_signal(&P.done);
    }
    return NULL;
}

/* Starts workers until n_threads - 1 exist; fewer is not an error (we run with what we have). */
static int grow_pool(int n_threads) {
    int want = n_threads - 1;
    if (want > CR_MAX_WORKERS) want = CR_MAX_WORKERS;
    while (P.n_workers < want) {
        worker_arg *arg = malloc(sizeof *arg);
        if (!arg) break;
        arg->id = P.n_workers + 1;
        arg->seen = P.generation;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_t th;
        int rc = pthread_create(&th, &attr, worker_main, arg);
        pthread_attr_destroy(&attr);
        if (rc != 0) {
            free(arg);
            break;
        }
        P.n_workers++;
    }
    return P.n_workers + 1;
}

cr_status cr_pool_run(int n_threads, int64_t n_tasks, cr_task_fn fn, void *ctx,
                      const atomic_int *abort) {
    if (n_tasks <= 0) return cr_aborted(abort) ? cr_fail(CR_E_ABORTED, "cancelled") : CR_OK;
    if (n_threads < 1) n_threads = 1;
    if (n_threads > n_tasks) n_threads = (int)n_tasks;
    pool_job job = {.fn = fn, .ctx = ctx, .n_tasks = n_tasks, .abort = abort};
    atomic_init(&job.next, 0);
    atomic_init(&job.aborted, 0);

    if (n_threads > 1) {
        pthread_mutex_lock(&P.mu);
        int available = grow_pool(n_threads);  /* the pool may hold more workers than this job uses */
        if (available < n_threads) n_threads = available;
        job.n_threads = n_threads;
        P.job = &job;
        P.pending = n_threads - 1;
        P.generation++;
        pthread_cond_broadcast(&P.work);
        pthread_mutex_unlock(&P.mu);
    } else {
        job.n_threads = 1;
    }

    run_tasks(&job, 0);

    if (n_threads > 1) {
        pthread_mutex_lock(&P.mu);
        while (P.pending > 0) pthread_cond_wait(&P.done, &P.mu);
        P.job = NULL;
        pthread_mutex_unlock(&P.mu);
    }
    if (atomic_load(&job.aborted) || cr_aborted(abort)) return cr_fail(CR_E_ABORTED, "cancelled");
    return CR_OK;
}
