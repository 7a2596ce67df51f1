/* checkpoint.c — a checkpoint directory: one model.safetensors, or the shards that
 * model.safetensors.index.json names, each mapped read-only and validated by cr_st_parse, with the
 * index checked against the shards' own headers. One sorted table of every tensor serves lookups
 * by name; pages are handed back to the OS once the loader has packed what they held. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

#define INDEX_FILE_NAME "model.safetensors.index.json"
#define SINGLE_FILE_NAME "model.safetensors"

typedef struct cr_shard {
    char *file_name;           /* as named by the index, or "model.safetensors" */
    const uint8_t *map;        /* the whole file, read-only; NULL for an empty file */
    size_t map_len;
    cr_st_header header;
} cr_shard;

typedef struct cr_checkpoint_entry {
    const cr_st_tensor *tensor;
    size_t shard;              /* index into cr_checkpoint.shards */
} cr_checkpoint_entry;

struct cr_checkpoint {
    cr_shard *shards;          /* [n_shards], in the order of cr_st_index.shards */
    size_t n_shards;
    cr_checkpoint_entry *entries;   /* [n_entries] every tensor of every shard, sorted by name */
    size_t n_entries;
    uintptr_t page_size;
};

static char *join_path(const char *dir, const char *name) {
    size_t dir_len = strlen(dir), name_len = strlen(name), bytes;
    if (!cr_add_size(dir_len, name_len, &bytes) || !cr_add_size(bytes, 2, &bytes)) {
        cr_fail(CR_E_NOMEM, "path length overflows");
        return NULL;
    }
    char *path = cr_malloc(bytes, "file path");
    if (path) snprintf(path, bytes, "%s/%s", dir, name);
    return path;
}

static cr_status check_directory(const char *dir) {
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (errno == ENOENT) return cr_fail(CR_E_IO, "model directory %s does not exist", dir);
        return cr_fail(CR_E_IO, "cannot access model directory %s: %s", dir, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) return cr_fail(CR_E_IO, "%s is not a directory", dir);
    return CR_OK;
}

/* Opens a file for reading without blocking: open() of a FIFO waits for a writer, so a FIFO named
 * like a checkpoint file would hang the load before stat_regular_file could refuse it. Regular
 * files ignore O_NONBLOCK; it is cleared anyway so reads behave the same everywhere. */
static int open_for_reading(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0) {
        int flags = fcntl(fd, F_GETFL);
        if (flags != -1) (void)fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    }
    return fd;
}

/* fstat of an open file that must be a regular one (not a directory, FIFO or device). */
static cr_status stat_regular_file(int fd, const char *path, struct stat *info) {
    if (fstat(fd, info) != 0) return cr_fail(CR_E_IO, "cannot stat %s: %s", path, strerror(errno));
    if (!S_ISREG(info->st_mode)) return cr_fail(CR_E_IO, "%s is not a regular file", path);
    return CR_OK;
}

/* Reads the whole index file. *exists = 0 (and CR_OK) when there is none. */
static cr_status read_index_file(const char *path, char **text, size_t *len, int *exists) {
    struct stat info;
    char *buf = NULL;
    size_t got = 0;
    cr_status st = CR_OK;
    int fd = open_for_reading(path);

    *text = NULL;
    *len = 0;
    *exists = 0;
    if (fd < 0) {
        /* A dangling link (a half-downloaded HF cache snapshot) must not fall back to the
         * single-file layout silently. */
        int err = errno;
        if (err == ENOENT && lstat(path, &info) != 0) return CR_OK;
        if (err == ENOENT) return cr_fail(CR_E_IO, "%s is a broken symbolic link", path);
        return cr_fail(CR_E_IO, "cannot open %s: %s", path, strerror(err));
    }
    *exists = 1;
    if ((st = stat_regular_file(fd, path, &info)) != CR_OK) goto done;
    if ((uint64_t)info.st_size > CR_ST_MAX_HEADER) {
        st = cr_fail(CR_E_FORMAT, "%s is %" PRIu64 " bytes, more than the %u-byte limit for an index",
                     path, (uint64_t)info.st_size, CR_ST_MAX_HEADER);
        goto done;
    }
    buf = cr_malloc((size_t)info.st_size, "index file");
    if (!buf) {
        st = CR_E_NOMEM;
        goto done;
    }
    while (got < (size_t)info.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)info.st_size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            st = cr_fail(CR_E_IO, "cannot read %s: %s", path, strerror(errno));
            goto done;
        }
        if (r == 0) break;   /* the file shrank since fstat: parse what is there */
        got += (size_t)r;
    }
    *text = buf;
    *len = got;
    buf = NULL;
done:
    free(buf);
    close(fd);
    return st;
}

/* Maps model_dir/file_name and validates its header into *shard. `index_path` is the index that
 * named it, or NULL for the single-file layout (which changes the message when it is missing). */
static cr_status open_shard(const char *model_dir, const char *file_name, const char *index_path, cr_shard *shard) {
    struct stat info;
    void *map = NULL;
    cr_status st = CR_OK;
    int fd = -1;
    char *path = join_path(model_dir, file_name);

    if (!path) return CR_E_NOMEM;
    shard->file_name = cr_strndup(file_name, strlen(file_name), "shard name");
    if (!shard->file_name) {
        st = CR_E_NOMEM;
        goto done;
    }
    fd = open_for_reading(path);
    if (fd < 0) {
        if (errno == ENOENT && index_path)
            st = cr_fail(CR_E_IO, "shard %s listed in %s does not exist", path, index_path);
        else if (errno == ENOENT)
            st = cr_fail(CR_E_IO, "no checkpoint in %s: looked for %s and %s, found neither",
                         model_dir, INDEX_FILE_NAME, SINGLE_FILE_NAME);
        else
            st = cr_fail(CR_E_IO, "cannot open %s: %s", path, strerror(errno));
        goto done;
    }
    if ((st = stat_regular_file(fd, path, &info)) != CR_OK) goto done;
    if ((uint64_t)info.st_size > SIZE_MAX) {
        st = cr_fail(CR_E_NOMEM, "%s is too large to map (%" PRIu64 " bytes)", path, (uint64_t)info.st_size);
        goto done;
    }
    /* mmap rejects length 0; an empty file is left unmapped and fails the length check below. */
    if (info.st_size > 0) {
        map = mmap(NULL, (size_t)info.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            /* ENOMEM: no address space left (a ulimit, or a 32-bit process): MemoryError, not OSError */
            st = errno == ENOMEM ? cr_fail(CR_E_NOMEM, "out of memory mapping %s (%" PRIu64 " bytes)", path,
                                           (uint64_t)info.st_size)
                                 : cr_fail(CR_E_IO, "cannot map %s: %s", path, strerror(errno));
            goto done;
        }
        shard->map = map;
        shard->map_len = (size_t)info.st_size;
    }
    close(fd);
    fd = -1;
    st = cr_st_parse(shard->map, shard->map_len, path, &shard->header);
done:
    if (fd >= 0) close(fd);
    free(path);
    return st;
}

static int compare_entries(const void *a, const void *b) {
    const cr_checkpoint_entry *x = a, *y = b;
    int c = strcmp(x->tensor->name, y->tensor->name);
    if (c) return c;
    return (x->shard > y->shard) - (x->shard < y->shard);
}

/* Merges the shards' tensor tables into one table sorted by name; a name held twice is an error. */
static cr_status build_entries(cr_checkpoint *ck, const char *label) {
    size_t total = 0, k = 0;
    for (size_t s = 0; s < ck->n_shards; s++)
        if (!cr_add_size(total, ck->shards[s].header.n_tensors, &total))
            return cr_fail(CR_E_NOMEM, "%s: tensor count overflows", label);
    ck->entries = cr_malloc_array(total, sizeof *ck->entries, "checkpoint tensor table");
    if (!ck->entries) return CR_E_NOMEM;
    for (size_t s = 0; s < ck->n_shards; s++)
        for (size_t i = 0; i < ck->shards[s].header.n_tensors; i++) {
            ck->entries[k].tensor = &ck->shards[s].header.tensors[i];
            ck->entries[k++].shard = s;
        }
    ck->n_entries = total;
    qsort(ck->entries, total, sizeof *ck->entries, compare_entries);
    for (size_t i = 1; i < total; i++) {
        const cr_checkpoint_entry *a = &ck->entries[i - 1], *b = &ck->entries[i];
        if (strcmp(a->tensor->name, b->tensor->name) == 0)
            return cr_fail(CR_E_FORMAT, "%s: tensor %s is in two shards, %s and %s", label, a->tensor->name,
                           ck->shards[a->shard].file_name, ck->shards[b->shard].file_name);
    }
    return CR_OK;
}

/* The index and the shards must agree exactly. Both name lists are sorted, so one merge pass
 * finds the first disagreement. ck->shards[s] is the file of idx->shards[s]. */
static cr_status check_index_matches(const cr_checkpoint *ck, const cr_st_index *idx, const char *label) {
    size_t i = 0, j = 0;
    while (i < ck->n_entries || j < idx->n_entries) {
        const cr_checkpoint_entry *e = i < ck->n_entries ? &ck->entries[i] : NULL;
        int c = !e ? 1 : j >= idx->n_entries ? -1 : strcmp(e->tensor->name, idx->names[j]);
        if (c < 0)
            return cr_fail(CR_E_FORMAT, "%s: tensor %s is in shard %s but missing from the index", label,
                           e->tensor->name, ck->shards[e->shard].file_name);
        if (c > 0)
            return cr_fail(CR_E_FORMAT, "%s: the index lists tensor %s in shard %s, which does not contain it",
                           label, idx->names[j], idx->shards[idx->shard_of[j]]);
        if (e->shard != idx->shard_of[j])
            return cr_fail(CR_E_FORMAT, "%s: the index lists tensor %s in shard %s, but it is in shard %s", label,
                           idx->names[j], idx->shards[idx->shard_of[j]], ck->shards[e->shard].file_name);
        i++;
        j++;
    }
    return CR_OK;
}

cr_status cr_checkpoint_open(const char *model_dir, cr_checkpoint **out) {
    cr_checkpoint *ck = NULL;
    cr_st_index idx = {0};
    char *index_path = NULL, *index_text = NULL;
    size_t index_len = 0;
    int have_index = 0;
    long page_size = sysconf(_SC_PAGESIZE);
    cr_status st;

    if (!out) return cr_fail(CR_E_ARG, "cr_checkpoint_open: out is NULL");
    *out = NULL;
    if (!model_dir) return cr_fail(CR_E_ARG, "cr_checkpoint_open: model_dir is NULL");
    st = check_directory(model_dir);
    if (st) goto fail;
    ck = cr_calloc(1, sizeof *ck, "checkpoint");
    index_path = join_path(model_dir, INDEX_FILE_NAME);
    if (!ck || !index_path) {
        st = CR_E_NOMEM;
        goto fail;
    }
    ck->page_size = page_size > 0 ? (uintptr_t)page_size : 4096;

    st = read_index_file(index_path, &index_text, &index_len, &have_index);
    if (st) goto fail;
    if (have_index) {
        st = cr_st_parse_index(index_text, index_len, index_path, &idx);
        if (st) goto fail;
        ck->shards = cr_calloc(idx.n_shards, sizeof *ck->shards, "shard table");
        if (!ck->shards) {
            st = CR_E_NOMEM;
            goto fail;
        }
        ck->n_shards = idx.n_shards;
        for (size_t s = 0; s < idx.n_shards; s++) {
            st = open_shard(model_dir, idx.shards[s], index_path, &ck->shards[s]);
            if (st) goto fail;
        }
        st = build_entries(ck, index_path);
        if (!st) st = check_index_matches(ck, &idx, index_path);
    } else {
        ck->shards = cr_calloc(1, sizeof *ck->shards, "shard table");
        if (!ck->shards) {
            st = CR_E_NOMEM;
            goto fail;
        }
        ck->n_shards = 1;
        st = open_shard(model_dir, SINGLE_FILE_NAME, NULL, &ck->shards[0]);
        if (!st) st = build_entries(ck, SINGLE_FILE_NAME);
    }
    if (st) goto fail;

    *out = ck;
    ck = NULL;
fail:
    cr_checkpoint_close(ck);
    cr_st_index_free(&idx);
    free(index_text);
    free(index_path);
    return st;
}

void cr_checkpoint_close(cr_checkpoint *ck) {
    if (!ck) return;
    for (size_t s = 0; s < ck->n_shards; s++) {
        cr_shard *shard = &ck->shards[s];
        if (shard->map) munmap((void *)shard->map, shard->map_len);
        cr_st_header_free(&shard->header);
        free(shard->file_name);
    }
    free(ck->shards);
    free(ck->entries);
    free(ck);
}

size_t cr_checkpoint_n_tensors(const cr_checkpoint *ck) {
    return ck ? ck->n_entries : 0;
}

void cr_checkpoint_get(const cr_checkpoint *ck, size_t i, cr_tensor_view *out) {
    memset(out, 0, sizeof *out);
    if (!ck || i >= ck->n_entries) return;
    const cr_checkpoint_entry *e = &ck->entries[i];
    const cr_shard *shard = &ck->shards[e->shard];
    const cr_st_tensor *t = e->tensor;
    out->name = t->name;
    out->dtype = t->dtype;
    out->ndim = t->ndim;
    out->shape = t->shape;
    out->nbytes = t->end - t->begin;
    /* In bounds: cr_st_parse proved data_offset + end <= the file length. */
    out->data = shard->map ? shard->map + shard->header.data_offset + t->begin : NULL;
    out->file = shard->file_name;
}

int cr_checkpoint_find(const cr_checkpoint *ck, const char *name, cr_tensor_view *out) {
    size_t lo = 0, hi = ck ? ck->n_entries : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(ck->entries[mid].tensor->name, name);
        if (c == 0) {
            cr_checkpoint_get(ck, mid, out);
            return 1;
        }
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

void cr_checkpoint_tensor(const cr_checkpoint *ck, size_t i, cr_tensor_info *out) {
    cr_tensor_view view;
    cr_checkpoint_get(ck, i, &view);
    *out = (cr_tensor_info){.name = view.name, .dtype = view.dtype, .ndim = view.ndim, .shape = view.shape,
                            .file = view.file};
}

void cr_checkpoint_release(const cr_checkpoint *ck, const cr_tensor_view *t) {
    if (!ck || !t || !t->data || t->nbytes == 0) return;
    uintptr_t begin = (uintptr_t)t->data, end = begin + t->nbytes;
    /* Only ever advise pages of our own read-only mappings: MADV_DONTNEED on anonymous memory
     * would zero it. */
    int ours = 0;
    for (size_t s = 0; s < ck->n_shards && !ours; s++) {
        uintptr_t map = (uintptr_t)ck->shards[s].map;
        ours = map && begin >= map && end >= begin && end <= map + ck->shards[s].map_len;
    }
    if (!ours) return;
    /* Pages shared with a neighbouring tensor stay: it may not have been copied yet. */
    uintptr_t first = (begin + ck->page_size - 1) & ~(ck->page_size - 1);
    uintptr_t last = end & ~(ck->page_size - 1);
    if (first < last) (void)madvise((void *)first, last - first, MADV_DONTNEED);
}
