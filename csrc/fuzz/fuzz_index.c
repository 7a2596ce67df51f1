/* fuzz_index.c — libFuzzer target over cr_st_parse_index, the parser of
 * model.safetensors.index.json (safetensors.c + json.c), built with ASan and UBSan by run.sh.
 *
 * An accepted index must name only plain shard file names (nothing that leaves the model
 * directory), list each tensor once, sorted, and map it to a shard that exists. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int plain_file_name(const char *s) {
    if (!s[0] || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return 0;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++)
        if (*c == '/' || *c == '\\' || *c < 0x20 || *c == 0x7f) return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cr_st_index idx;
    if (cr_st_parse_index((const char *)data, size, "fuzz.index.json", &idx) != CR_OK) {
        CHECK(idx.shards == NULL && idx.names == NULL && idx.n_entries == 0);
        CHECK(cr_last_error()[0] != '\0');
        return 0;
    }
    for (size_t s = 0; s < idx.n_shards; s++) {
        CHECK(plain_file_name(idx.shards[s]));
        if (s > 0) CHECK(strcmp(idx.shards[s - 1], idx.shards[s]) < 0);
    }
    for (size_t i = 0; i < idx.n_entries; i++) {
        CHECK(idx.names[i] && idx.names[i][0] != '\0');
        if (i > 0) CHECK(strcmp(idx.names[i - 1], idx.names[i]) < 0);
        CHECK(idx.shard_of[i] < idx.n_shards);
    }
    cr_st_index_free(&idx);
    return 0;
}
