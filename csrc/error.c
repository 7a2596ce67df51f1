/* error.c — thread-local error messages, checked allocation helpers, and returning the heap's
 * free pages. */
#include "error.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#define CR_ERROR_CAP 1024

static _Thread_local char last_error[CR_ERROR_CAP];

const char *cr_last_error(void) { return last_error; }

void cr_error_clear(void) { last_error[0] = '\0'; }

cr_status cr_fail(cr_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

void cr_error_prefix(const char *fmt, ...) {
    char head[CR_ERROR_CAP], old[CR_ERROR_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, last_error, sizeof old);
    snprintf(last_error, sizeof last_error, "%.400s: %.600s", head, old);
}

void *cr_malloc(size_t n, const char *what) {
    void *p = malloc(n ? n : 1);
    if (!p) cr_fail(CR_E_NOMEM, "out of memory allocating %zu bytes for %s", n, what);
    return p;
}

void *cr_calloc(size_t count, size_t size, const char *what) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) cr_fail(CR_E_NOMEM, "out of memory allocating %zu x %zu bytes for %s", count, size, what);
    return p;
}

void *cr_malloc_array(size_t count, size_t size, const char *what) {
    size_t n;
    if (!cr_mul_size(count, size, &n)) {
        cr_fail(CR_E_NOMEM, "size of %s overflows (%zu x %zu bytes)", what, count, size);
        return NULL;
    }
    return cr_malloc(n, what);
}

char *cr_strndup(const char *s, size_t len, const char *what) {
    size_t bytes;
    if (!cr_add_size(len, 1, &bytes)) {
        cr_fail(CR_E_NOMEM, "size of %s overflows", what);
        return NULL;
    }
    char *copy = cr_malloc(bytes, what);
    if (!copy) return NULL;
    memcpy(copy, s, len);
    copy[len] = '\0';
    return copy;
}

/* n bytes rounded up to whole 64-byte lines, `align`-aligned */
static void *aligned_lines(size_t n, size_t align, const char *what) {
    void *p = NULL;
    size_t rounded;
    if (!cr_add_size(n, 63, &rounded)) {
        cr_fail(CR_E_NOMEM, "size of %s overflows (%zu bytes)", what, n);
        return NULL;
    }
    rounded &= ~(size_t)63;
    if (posix_memalign(&p, align, rounded ? rounded : 64) != 0) {
        cr_fail(CR_E_NOMEM, "out of memory allocating %zu bytes for %s", n, what);
        return NULL;
    }
    return p;
}

void *cr_aligned_alloc(size_t n, const char *what) { return aligned_lines(n, 64, what); }

void *cr_buf_get(cr_buf *b, size_t count, size_t size, int zero, const char *what) {
    size_t bytes;
    if (!cr_mul_size(count, size, &bytes)) {
        cr_fail(CR_E_NOMEM, "size of %s overflows", what);
        return NULL;
    }
    if (b->p && b->bytes >= bytes) return b->p;
    cr_buf_free(b);
    if (!(b->p = cr_aligned_alloc(bytes, what))) return NULL;
    b->bytes = bytes;
    if (zero) memset(b->p, 0, bytes);
    return b->p;
}

void cr_buf_free(cr_buf *b) {
    free(b->p);
    b->p = NULL;
    b->bytes = 0;
}

/* From CR_HUGE_BYTES up, a model's packed weights are 2 MiB aligned and asked to be backed by
 * transparent huge pages where the kernel has them ("madvise" mode, most distributions' default,
 * backs only regions that ask): the GEMMs stream all of them at every pass, and in 4 KiB pages
 * that is a TLB miss every 4 KiB. Only buffers that live as long as the model: a pass's own
 * buffers, mapped anew at every call, measured slower on huge pages at 16 threads (each fault
 * zeroes, and may compact, 2 MiB). CROSSRANK_HUGEPAGES=0 keeps plain pages. */
#define CR_HUGE_BYTES ((size_t)2 << 20)

static int huge_pages_wanted(void) {
    static int wanted = -1; /* a benign race: every thread computes the same value */
    int w = __atomic_load_n(&wanted, __ATOMIC_RELAXED);
    if (w < 0) {
        const char *v = getenv("CROSSRANK_HUGEPAGES");
        w = !(v && strcmp(v, "0") == 0);
        __atomic_store_n(&wanted, w, __ATOMIC_RELAXED);
    }
    return w;
}

void *cr_weight_alloc(size_t n, const char *what) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (n >= CR_HUGE_BYTES && huge_pages_wanted()) {
        void *p = aligned_lines(n, CR_HUGE_BYTES, what);
        /* whole huge pages only: the tail past the last stays in small pages; a kernel without
         * them refuses the advice, and the weights keep small pages */
        if (p) (void)madvise(p, n & ~(CR_HUGE_BYTES - 1), MADV_HUGEPAGE);
        return p;
    }
#endif
    return cr_aligned_alloc(n, what);
}

int cr_release_free_memory(void) {
#if defined(__GLIBC__)
    return malloc_trim(0);
#else
    return 0;
#endif
}
