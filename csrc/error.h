/* error.h — the thread-local last-error message behind cr_last_error(). */
#ifndef CR_ERROR_H
#define CR_ERROR_H

#include "crossrank.h"

/* Records a printf-style message for the calling thread and returns `status`, so failures read
 * `return cr_fail(CR_E_FORMAT, "%s: tensor %s ...", file, name);`. */
cr_status cr_fail(cr_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "context: " to the current message (used when an inner failure needs the outer name). */
void cr_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void cr_error_clear(void);

/* Overflow-checked size arithmetic: return 0 on overflow, 1 on success. */
static inline int cr_mul_size(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline int cr_add_size(size_t a, size_t b, size_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

/* Checked allocations: on failure they record a CR_E_NOMEM message naming `what` and return NULL. */
void *cr_malloc(size_t n, const char *what);
void *cr_calloc(size_t count, size_t size, const char *what);
void *cr_malloc_array(size_t count, size_t size, const char *what);   /* overflow-checked */
void *cr_aligned_alloc(size_t n, const char *what);                   /* 64-byte aligned */
void *cr_weight_alloc(size_t n, const char *what); /* the same, huge pages from 2 MiB (model-lifetime buffers) */
char *cr_strndup(const char *s, size_t len, const char *what);        /* s[0..len) + NUL */

/* A buffer kept from one use to the next and grown when a use needs more: the buffers of a
 * forward pass are ~150 MiB at 16 documents, and fresh ones are fresh pages, each mapped and
 * zeroed by the OS at its first touch. Zero-initialize. */
typedef struct cr_buf {
    void *p;
    size_t bytes;
} cr_buf;

/* At least count x size bytes, 64-byte aligned: b's buffer when it is large enough (holding
 * whatever its last use left there), else a fresh one in its place, all zero when `zero` asks.
 * NULL on overflow or failure (recorded, as cr_aligned_alloc does; b is then empty). */
void *cr_buf_get(cr_buf *b, size_t count, size_t size, int zero, const char *what);
void cr_buf_free(cr_buf *b);

#endif
