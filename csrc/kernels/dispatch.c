/* dispatch.c — CPU feature detection and kernel selection, done once.
 *
 * A feature counts only when both the CPUID bit is set and the OS saves the register state it
 * needs (XCR0 read with xgetbv): AVX needs XMM|YMM, AVX-512 also opmask|ZMM_Hi256|Hi16_ZMM.
 * CROSSRANK_ISA caps the level (for tests and for working around a bad kernel in the field).
 *
 * AMX also needs XTILECFG and XTILEDATA in XCR0 (bits 17, 18) and, on Linux, a per-process
 * permission (arch_prctl ARCH_REQ_XCOMP_PERM) that is asked lazily by cr_amx_usable(), not here:
 * the kernel may refuse it (e.g. when a thread has an alternate signal stack too small for the
 * tile state), and the process then runs the AVX512BF16 level. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if defined(CR_X86) && (defined(__x86_64__) || defined(__i386__))
#include <cpuid.h>
#define CR_HAVE_CPUID 1
#endif

typedef struct cpu_features {
    int avx2, fma, f16c, avx512f, avx512bw, avx512vl, avx512dq, avx512bf16, avx512vnni, avxvnni;
    int amx_tile, amx_bf16, amx_int8; /* CPUID bits, with the tile state enabled in XCR0 */
} cpu_features;

static char vendor[13];

static cpu_features features;
static cr_isa detected = CR_ISA_REF;
static char feature_text[256];
const cr_kernels *cr_kern;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

#ifdef CR_HAVE_CPUID
static unsigned long long read_xcr0(void) {
    unsigned int eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

static void detect(void) {
    unsigned int a, b, c, d;
    if (__get_cpuid(0, &a, &b, &c, &d)) {
        memcpy(vendor, &b, 4);
        memcpy(vendor + 4, &d, 4);
        memcpy(vendor + 8, &c, 4);
        vendor[12] = 0;
    }
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    int osxsave = (c >> 27) & 1;
    int fma = (c >> 12) & 1, f16c = (c >> 29) & 1, avx = (c >> 28) & 1;
    if (!osxsave || !avx) return;
    unsigned long long xcr0 = read_xcr0();
    int os_avx = (xcr0 & 0x6) == 0x6;
    int os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;
    if (!os_avx) return;
    unsigned int max_leaf = __get_cpuid_max(0, NULL);
    if (max_leaf < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    features.fma = fma;
    features.f16c = f16c;
    features.avx2 = (b >> 5) & 1;
    if (os_avx512) {
        features.avx512f = (b >> 16) & 1;
        features.avx512dq = (b >> 17) & 1;
        features.avx512bw = (b >> 30) & 1;
        features.avx512vl = (b >> 31) & 1;
        features.avx512vnni = (c >> 11) & 1;
        if ((xcr0 & 0x60000) == 0x60000) { /* XTILECFG and XTILEDATA */
            features.amx_tile = (d >> 24) & 1;
            features.amx_bf16 = features.amx_tile && ((d >> 22) & 1);
            features.amx_int8 = features.amx_tile && ((d >> 25) & 1);
        }
        unsigned int a1, b1, c1, d1;
        __cpuid_count(7, 1, a1, b1, c1, d1);
        features.avx512bf16 = (a1 >> 5) & 1;
        features.avxvnni = (a1 >> 4) & 1;
    } else {
        unsigned int a1, b1, c1, d1;
        __cpuid_count(7, 1, a1, b1, c1, d1);
        features.avxvnni = (a1 >> 4) & 1;
    }
}
#else
static void detect(void) {}
#endif

static cr_isa isa_from_features(void) {
    if (!(features.avx2 && features.fma && features.f16c)) return CR_ISA_REF;
    if (!(features.avx512f && features.avx512bw && features.avx512vl && features.avx512dq))
        return features.avxvnni ? CR_ISA_AVXVNNI : CR_ISA_AVX2;
    if (!features.avx512vnni) return CR_ISA_AVX512;
    if (!features.avx512bf16) return CR_ISA_AVX512VNNI;
    return features.amx_tile && features.amx_bf16 && features.amx_int8 ? CR_ISA_AMX : CR_ISA_AVX512BF16;
}

static const char *level_names[CR_ISA_COUNT] = {"ref", "avx2", "avxvnni", "avx512", "avx512vnni", "avx512bf16",
                                                "amx"};

const char *cr_isa_level_name(cr_isa isa) {
    return (isa >= 0 && isa < CR_ISA_COUNT) ? level_names[isa] : "unknown";
}

/* The table of each level, built once: a level's own file supplies what it speeds up and the
 * level below the rest (AVX-VNNI adds the 256-bit vpdpbusd to AVX2; AVX-512 takes the int8 GEMM
 * from AVX2, not AVX-VNNI, which AVX-512 CPUs may lack; VNNI adds vpdpbusd; BF16 adds vdpbf16ps
 * on top of VNNI). */
static cr_kernels level_tables[CR_ISA_COUNT];
static pthread_once_t levels_once = PTHREAD_ONCE_INIT;

static void build_levels(void) {
    level_tables[CR_ISA_REF] = *cr_kernels_ref();
#ifdef CR_HAVE_CPUID
    level_tables[CR_ISA_AVX2] = *cr_kernels_avx2();
    cr_kernels t = *cr_kernels_avx2();
    t.isa = CR_ISA_AVXVNNI;
    t.gemm_i8_tile = cr_kernels_avxvnni()->gemm_i8_tile;
    t.gemm_i8_mr = cr_kernels_avxvnni()->gemm_i8_mr;
    level_tables[CR_ISA_AVXVNNI] = t;
    t = *cr_kernels_avx512();
    t.gemm_i8_tile = cr_kernels_avx2()->gemm_i8_tile;
    t.gemm_i8_mr = cr_kernels_avx2()->gemm_i8_mr;
    level_tables[CR_ISA_AVX512] = t;
    t.isa = CR_ISA_AVX512VNNI;
    t.gemm_i8_tile = cr_kernels_avx512vnni()->gemm_i8_tile;
    t.gemm_i8_mr = cr_kernels_avx512vnni()->gemm_i8_mr;
    t.gemm_i8_tile_f32 = cr_kernels_avx512vnni()->gemm_i8_tile_f32;
    level_tables[CR_ISA_AVX512VNNI] = t;
    const cr_kernels *bf = cr_kernels_avx512bf16();
    t.isa = CR_ISA_AVX512BF16;
    t.gemm_bf16_tile = bf->gemm_bf16_tile;
    t.gemm_bf16_mr = bf->gemm_bf16_mr;
    t.f32_to_bf16 = bf->f32_to_bf16;
    t.gemm_bf16_amx = bf->gemm_bf16_amx;
    level_tables[CR_ISA_AVX512BF16] = t;
    const cr_kernels *amx = cr_kernels_amx();
    t.isa = CR_ISA_AMX;
    t.gemm_bf16_amx = amx->gemm_bf16_amx;
    t.gemm_i8_amx = amx->gemm_i8_amx;
    t.i8_dequant_f32 = amx->i8_dequant_f32;
    t.store_rows_stream = amx->store_rows_stream;
    level_tables[CR_ISA_AMX] = t;
    /* below AMX: the bf16 entry is the vector tables' model of the tiles (int8 models'
     * attention), the int8 one the scalar model (tests; no format uses it there) */
    const cr_kernels *ref = cr_kernels_ref();
    for (int i = CR_ISA_AVX2; i < CR_ISA_AMX; i++) level_tables[i].gemm_i8_amx = ref->gemm_i8_amx;
#else
    for (int i = 1; i < CR_ISA_COUNT; i++) level_tables[i] = level_tables[CR_ISA_REF];
#endif
}

const cr_kernels *cr_kernels_level(cr_isa level) {
    pthread_once(&levels_once, build_levels);
    if (level < 0 || level >= CR_ISA_COUNT) level = CR_ISA_REF;
    return &level_tables[level];
}

static void init(void) {
    detect();
    detected = isa_from_features();
    cr_isa chosen = detected;
    const char *cap = getenv("CROSSRANK_ISA");
    if (cap && *cap) {
        for (int i = 0; i < CR_ISA_COUNT; i++)
            if (strcmp(cap, level_names[i]) == 0 && (cr_isa)i < chosen) chosen = (cr_isa)i;
        /* a cap at AVX-VNNI on a CPU without it (an AVX-512 CPU may lack it) means AVX2 */
        if (chosen == CR_ISA_AVXVNNI && !features.avxvnni) chosen = CR_ISA_AVX2;
    }
    static cr_kernels active;
    active = *cr_kernels_level(chosen);
    active.isa = chosen;
    cr_kern = &active;

    struct { const char *name; int on; } list[] = {
        {"avx2", features.avx2}, {"fma", features.fma}, {"f16c", features.f16c},
        {"avx512f", features.avx512f}, {"avx512bw", features.avx512bw},
        {"avx512vl", features.avx512vl}, {"avx512dq", features.avx512dq},
        {"avx512_bf16", features.avx512bf16}, {"avx512_vnni", features.avx512vnni},
        {"avx_vnni", features.avxvnni}, {"amx_tile", features.amx_tile},
        {"amx_bf16", features.amx_bf16}, {"amx_int8", features.amx_int8},
    };
    size_t used = 0;
    for (size_t i = 0; i < sizeof list / sizeof list[0]; i++) {
        if (!list[i].on) continue;
        int w = snprintf(feature_text + used, sizeof feature_text - used, "%s%s",
                         used ? "," : "", list[i].name);
        if (w < 0 || (size_t)w >= sizeof feature_text - used) break;
        used += (size_t)w;
    }
}

void cr_kernels_init(void) { pthread_once(&init_once, init); }

cr_isa cr_isa_detected(void) { cr_kernels_init(); return detected; }

int cr_isa_runnable(cr_isa level) {
    cr_kernels_init();
    if (level < 0 || level > detected || cr_kernels_level(level)->isa != level) return 0;
    return level != CR_ISA_AVXVNNI || features.avxvnni;
}

const char *cr_cpu_features(void) { cr_kernels_init(); return feature_text; }

/* The AMX permission: 0 not asked yet, 1 granted, 2 refused or not applicable (amx_why says). */
static atomic_int amx_state;
static char amx_why[160];
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;

static void amx_request(void) {
    const char *deny = getenv("CROSSRANK_AMX_DENY");
    if (cr_kern->isa != CR_ISA_AMX) {
        snprintf(amx_why, sizeof amx_why, "%s",
                 detected == CR_ISA_AMX ? "not used: CROSSRANK_ISA caps the kernels below amx"
                                        : "not supported: this CPU or OS has no AMX-BF16/AMX-INT8 tile state");
        atomic_store(&amx_state, 2);
        return;
    }
    if (deny && strcmp(deny, "1") == 0) {
        snprintf(amx_why, sizeof amx_why, "refused: CROSSRANK_AMX_DENY=1 simulates the kernel's refusal");
        atomic_store(&amx_state, 2);
        return;
    }
#if defined(__linux__) && defined(SYS_arch_prctl)
    /* ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18) */
    if (syscall(SYS_arch_prctl, 0x1023, 18) != 0) {
        int e = errno;
        snprintf(amx_why, sizeof amx_why, "refused by the kernel: arch_prctl(ARCH_REQ_XCOMP_PERM) failed (%s)",
                 strerror(e));
        atomic_store(&amx_state, 2);
        return;
    }
    snprintf(amx_why, sizeof amx_why, "usable");
    atomic_store(&amx_state, 1);
#else
    snprintf(amx_why, sizeof amx_why, "not supported: no way to ask this OS for the tile state");
    atomic_store(&amx_state, 2);
#endif
}

int cr_amx_usable(void) {
    cr_kernels_init();
    pthread_once(&amx_once, amx_request);
    return atomic_load(&amx_state) == 1;
}

const cr_kernels *cr_kernels_runnable(void) {
    cr_kernels_init();
    if (cr_kern->isa == CR_ISA_AMX && !cr_amx_usable()) return cr_kernels_level(CR_ISA_AVX512BF16);
    return cr_kern;
}

const char *cr_amx_state(void) {
    cr_kernels_init();
    return atomic_load(&amx_state) == 0 ? "not asked yet" : amx_why;
}

const char *cr_cpu_vendor(void) { cr_kernels_init(); return vendor; }

void cr_cpu_describe(cr_cpu_info *out) {
    cr_kernels_init();
    *out = (cr_cpu_info){.isa = cr_isa_name(), .detected = cr_isa_level_name(cr_isa_detected()),
                         .features = cr_cpu_features(), .vendor = cr_cpu_vendor(), .amx = cr_amx_state()};
}

const char *cr_isa_name(void) {
    cr_kernels_init();
    /* refused: every call runs the AVX512BF16 kernels (no AMX format is ever packed) */
    if (cr_kern->isa == CR_ISA_AMX && atomic_load(&amx_state) == 2) return level_names[CR_ISA_AVX512BF16];
    return level_names[cr_kern->isa];
}

#ifndef CR_HAVE_CPUID
const cr_kernels *cr_kernels_avx2(void) { return NULL; }
const cr_kernels *cr_kernels_avx512(void) { return NULL; }
const cr_kernels *cr_kernels_avx512bf16(void) { return NULL; }
const cr_kernels *cr_kernels_avx512vnni(void) { return NULL; }
const cr_kernels *cr_kernels_avxvnni(void) { return NULL; }
const cr_kernels *cr_kernels_amx(void) { return NULL; }
#endif
