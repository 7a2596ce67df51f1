/* avx512_inline.h — small AVX-512F helpers shared by the files compiled with the AVX-512 flags
 * (kernels_avx512.c, attention_avx512.c); include it only there. */
#ifndef CR_AVX512_INLINE_H
#define CR_AVX512_INLINE_H

#include <immintrin.h>

/* cr_f32_to_bf16_one on 16 lanes (nearest even; a NaN keeps its top bits and is quieted), packed
 * to 16 bits. */
static inline __m256i cr_bf16_round16_avx512(__m512 x) {
    const __m512i b = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    __m512i out = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7fff)), lsb), 16);
    const __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(b, _mm512_set1_epi32(0x7fffffff)),
                                                  _mm512_set1_epi32(0x7f800000));
    out = _mm512_mask_or_epi32(out, nan, _mm512_srli_epi32(b, 16), _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(out);
}

#endif
