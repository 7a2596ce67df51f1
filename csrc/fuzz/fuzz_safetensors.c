/* fuzz_safetensors.c — libFuzzer target over cr_st_parse, the safetensors header and layout
 * validator (safetensors.c + json.c), built with ASan and UBSan by run.sh.
 *
 * The input is a whole file. libFuzzer hands it over in a heap block of exactly `size` bytes, so
 * any read past the end is an ASan report. A file the parser accepts must satisfy every rule
 * safetensors.h promises; the checks below trap (a crash the fuzzer reports) when one does not,
 * and read the first and last byte of every tensor so a range that escapes the file is caught. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cr_st_header h;
    volatile uint8_t sink = 0;
    if (cr_st_parse(data, size, "fuzz.safetensors", &h) != CR_OK) {
        CHECK(h.tensors == NULL && h.n_tensors == 0);
        CHECK(cr_last_error()[0] != '\0');
        return 0;
    }
    CHECK(h.data_offset >= 8 && h.data_offset <= size);
    uint64_t data_len = size - h.data_offset, total = 0;
    for (size_t i = 0; i < h.n_tensors; i++) {
        const cr_st_tensor *t = &h.tensors[i];
        CHECK(t->name && t->name[0] != '\0');
        if (i > 0) CHECK(strcmp(h.tensors[i - 1].name, t->name) < 0);   /* sorted, no duplicates */
        CHECK(t->dtype < CR_DT_COUNT && t->ndim >= 0 && t->ndim <= CR_ST_MAX_DIMS);
        CHECK(t->begin <= t->end && t->end <= data_len);
        uint64_t nbytes = cr_dtype_size(t->dtype);
        int empty = 0;
        for (int d = 0; d < t->ndim; d++) {
            CHECK(t->shape[d] >= 0);
            if (t->shape[d] == 0) empty = 1;
        }
        for (int d = 0; d < t->ndim && !empty; d++)
            CHECK(!__builtin_mul_overflow(nbytes, (uint64_t)t->shape[d], &nbytes));
        CHECK((empty ? 0 : nbytes) == t->end - t->begin);
        total += t->end - t->begin;
        if (t->end > t->begin) {
            sink ^= data[h.data_offset + t->begin];
            sink ^= data[h.data_offset + t->end - 1];
        }
    }
    /* No holes and no overlaps: the sizes add up to the data section exactly. */
    CHECK(total == data_len);
    (void)sink;
    cr_st_header_free(&h);
    return 0;
}
