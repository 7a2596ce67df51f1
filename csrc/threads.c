/* threads.c — the engine lock and the worker pool (see threads.h).
 *
 * A forward posts a few thousand jobs (norms, conversions, GEMMs, attention), many of them a few
 * hundred microseconds long at 16 threads, so the cost of a post and of the wait for its end is
 * part of the scaling curve: one mutex and condition variable for all workers cost ~54 us per
 * empty job at 16 threads on a 16-core Xeon, this design ~10 us (~2 us at 2). Each worker has its
 * own mailbox (a cache line): the caller writes the job into the mailboxes of the workers it needs
 * and bumps their sequence numbers; a worker spins on its own line for a short while before it
 * sleeps on its own condition variable, and the caller spins on the count of unfinished workers
 * likewise. A sleeping side is woken through the mutex, so a wake-up is never lost: the waiter
 * announces itself (sleeping = 1) and re-checks under the mutex, the poster publishes and then
 * looks for the announcement (both sequentially consistent).
 * Spinning is off when the pool would have more threads than the process has CPUs, and after its
 * first 50 us a spinning thread yields between looks, so it gives way to a thread with work. */
#include "threads.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

#include "error.h"

#define CR_MAX_WORKERS 256

/* How a waiting thread spins before it sleeps: CR_SPIN_PAUSE_NS on pause instructions (the gaps
 * between the jobs of a forward, the caller's serial steps, are shorter), then up to CR_SPIN_NS
 * yielding the CPU between looks, so a spinning thread gives way to any runnable one. */
#define CR_SPIN_PAUSE_NS 50000
#define CR_SPIN_NS 300000

typedef struct pool_job {
    cr_task_fn fn;
    void *ctx;
    int64_t n_tasks;
    const atomic_int *abort;
    atomic_llong next;              /* next task to claim */
    atomic_int aborted;
} pool_job;

typedef struct mailbox {
    _Alignas(64) atomic_ullong posted;  /* sequence number of the last job posted to this worker */
    pool_job *job;                      /* that job (written before posted, read after it) */
    atomic_int sleeping;                /* the worker is (about to be) blocked on cv */
    pthread_cond_t cv;
} mailbox;

static struct {
    pthread_mutex_t engine;         /* held for a whole forward */
    pthread_mutex_t mu;             /* guards the sleeps on the condition variables */
    pthread_cond_t done;            /* the last worker of a job finished */
    atomic_int pending;             /* workers still inside the current job */
    atomic_int caller_sleeping;     /* the caller is (about to be) blocked on done */
    int n_workers;                  /* started threads (excluding the caller); engine lock held */
    uint64_t seq;                   /* jobs posted so far; engine lock held */
    atomic_int spin;                /* whether waits spin before sleeping */
    mailbox box[CR_MAX_WORKERS + 1];
} P = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* In the child only the forking thread exists: forget the workers and reset every lock. */
static void after_fork_child(void) {
    pthread_mutex_init(&P.engine, NULL);
    pthread_mutex_init(&P.mu, NULL);
    pthread_cond_init(&P.done, NULL);
    atomic_store(&P.pending, 0);
    atomic_store(&P.caller_sleeping, 0);
    P.n_workers = 0;
}

static void register_atfork(void) { pthread_atfork(NULL, NULL, after_fork_child); }

void cr_engine_lock(void) {
    pthread_once(&atfork_once, register_atfork);
    pthread_mutex_lock(&P.engine);
}

void cr_engine_unlock(void) { pthread_mutex_unlock(&P.engine); }

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* A spinning wait: spin_more() is called each time the awaited condition was still false. It
 * pauses, and every 64th call reads the clock: past CR_SPIN_PAUSE_NS it yields, past CR_SPIN_NS
 * (or at once when spinning is off) it returns 0, and the caller goes to sleep. */
typedef struct spin { int looks; int64_t start; } spin;

static int spin_more(spin *sp) {
    if (!atomic_load_explicit(&P.spin, memory_order_relaxed)) return 0;
    if (++sp->looks % 64) {
        cpu_relax();
        return 1;
    }
    int64_t t = now_ns();
    if (!sp->start) sp->start = t;
    if (t - sp->start > CR_SPIN_NS) return 0;
    if (t - sp->start > CR_SPIN_PAUSE_NS) sched_yield();
    return 1;
}

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

/* `seen` is the mailbox's sequence number when the worker was created. */
typedef struct worker_arg { int id; unsigned long long seen; } worker_arg;

static void *worker_main(void *arg) {
    int id = ((worker_arg *)arg)->id;
    unsigned long long seen = ((worker_arg *)arg)->seen;
    free(arg);
    mailbox *mb = &P.box[id];
    for (;;) {
        spin sp = {0, 0};
        while (atomic_load_explicit(&mb->posted, memory_order_acquire) == seen && spin_more(&sp)) {}
        if (atomic_load_explicit(&mb->posted, memory_order_acquire) == seen) {
            pthread_mutex_lock(&P.mu);
            atomic_store(&mb->sleeping, 1);
            while (atomic_load(&mb->posted) == seen) pthread_cond_wait(&mb->cv, &P.mu);
            atomic_store(&mb->sleeping, 0);
            pthread_mutex_unlock(&P.mu);
        }
        seen = atomic_load_explicit(&mb->posted, memory_order_acquire);
        run_tasks(mb->job, id);
        if (atomic_fetch_sub(&P.pending, 1) == 1 && atomic_load(&P.caller_sleeping)) {
            pthread_mutex_lock(&P.mu);
            pthread_cond_signal(&P.done);
            pthread_mutex_unlock(&P.mu);
        }
    }
    return NULL;
}

static int online_cpus(void) {
#ifdef CPU_COUNT
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Starts workers until n_threads - 1 exist; fewer is not an error (we run with what we have). */
static int grow_pool(int n_threads) {
    int want = n_threads - 1;
    if (want > CR_MAX_WORKERS) want = CR_MAX_WORKERS;
    while (P.n_workers < want) {
        int id = P.n_workers + 1;
        mailbox *mb = &P.box[id];
        worker_arg *arg = malloc(sizeof *arg);
        if (!arg || pthread_cond_init(&mb->cv, NULL) != 0) {
            free(arg);
            break;
        }
        atomic_store(&mb->sleeping, 0);
        arg->id = id;
        arg->seen = atomic_load(&mb->posted);
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_t th;
        int rc = pthread_create(&th, &attr, worker_main, arg);
        pthread_attr_destroy(&attr);
        if (rc != 0) {
            pthread_cond_destroy(&mb->cv);
            free(arg);
            break;
        }
        P.n_workers++;
    }
    atomic_store_explicit(&P.spin, P.n_workers + 1 <= online_cpus(), memory_order_relaxed);
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
        int available = grow_pool(n_threads);  /* the pool may hold more workers than this job uses */
        if (available < n_threads) n_threads = available;
        atomic_store(&P.pending, n_threads - 1);
        P.seq++;
        for (int w = 1; w < n_threads; w++) {
            mailbox *mb = &P.box[w];
            mb->job = &job;
            atomic_store(&mb->posted, P.seq);
            if (atomic_load(&mb->sleeping)) {
                pthread_mutex_lock(&P.mu);
                pthread_cond_signal(&mb->cv);
                pthread_mutex_unlock(&P.mu);
            }
        }
    }

    run_tasks(&job, 0);

    spin sp = {0, 0};
    while (n_threads > 1 && atomic_load_explicit(&P.pending, memory_order_acquire) > 0 && spin_more(&sp)) {}
    if (n_threads > 1 && atomic_load_explicit(&P.pending, memory_order_acquire) > 0) {
        pthread_mutex_lock(&P.mu);
        atomic_store(&P.caller_sleeping, 1);
        while (atomic_load(&P.pending) > 0) pthread_cond_wait(&P.done, &P.mu);
        atomic_store(&P.caller_sleeping, 0);
        pthread_mutex_unlock(&P.mu);
    }
    if (atomic_load(&job.aborted) || cr_aborted(abort)) return cr_fail(CR_E_ABORTED, "cancelled");
    return CR_OK;
}
