// The AVX-512 GEMM microkernel: a 12 x 32 block of C in 24 of the 32 zmm registers, against two
// adjacent 16-column panels of B (the packing AVX2 uses, so one packed model serves both).
// Per step of k: two loads of B, twelve broadcasts of A, 24 FMAs.
//
// Included by gemm.c, which defines CGK_AVX512_FUNCTION as the x86-64-v4 target, and by the
// emulation test (Tests/c/avx512_emulated.c), which defines it empty and maps the intrinsics to
// SIMDe's portable implementations: the kernel's logic (blocks, tails, bias, activations, K
// slices) is tested on every machine, its instructions only where the CPU has AVX-512.
#ifndef CG_GEMM_AVX512_H
#define CG_GEMM_AVX512_H

#include "gemm_blocking.h"

#define CGK_MR512 12  // rows per micro-block: 12 x 2 accumulators + 2 of B + 1 of A = 27 registers
#define CGK_KC512 128 // depth of one pass: two panel slices (16 KB) and 12 rows of A (6 KB) in L1
#define CGK_MC512 48  // rows per pass: their slice (24 KB) stays in L2 while every panel passes

CGK_AVX512_FUNCTION
CGK_INLINE __m512 cgk_finish16(__m512 v, const float *c, int first, int last, __m512 bias, int activation) {
    if (!first) v = _mm512_add_ps(v, _mm512_loadu_ps(c));
    if (last) {
        v = _mm512_add_ps(v, bias);
        if (activation == CGK_ACT_RELU) v = _mm512_max_ps(v, _mm512_setzero_ps());
        else if (activation == CGK_ACT_RELU6)
            v = _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(6.0f));
    }
    return v;
}

// `rows` rows (1..12) against one or two panels: both are constants where this is inlined, so a
// partial block computes only its rows and a single panel drops the other half.
//
// Rows of A are addressed from three pointers (rows 0-3, 4-7, 8-11) plus lda and 3 * lda, so the
// loop needs eight general registers, not twelve row pointers; the k loop is not unrolled, so the
// 24 accumulators, two B vectors and the broadcast fit in the 32 zmm registers. On a Zen 4 EPYC
// the compiler's own choice (twelve row pointers, the loop unrolled twice) spilled accumulators
// to the stack and ran 30% slower than the AVX2 kernel.
CGK_AVX512_FUNCTION
CGK_INLINE void cgk_kernel_rxn(const int rows, const int panels, int32_t kc, const float *ap, ptrdiff_t lda,
                               const float *restrict bp, ptrdiff_t panel_stride, int32_t width, float *c, ptrdiff_t ldc,
                               int first, int last, const float *bias, int activation) {
    __m512 acc0[CGK_MR512], acc1[CGK_MR512];
    for (int r = 0; r < rows; r++) acc0[r] = acc1[r] = _mm512_setzero_ps();
    const float *b0 = bp, *b1 = bp + (panels == 2 ? panel_stride : 0);
    const float *a0 = ap, *a4 = rows > 4 ? ap + 4 * lda : ap, *a8 = rows > 8 ? ap + 8 * lda : ap;
    const ptrdiff_t lda3 = 3 * lda;
#define CGK_ROW512(r, base, offset)                                                                                   \
    if (r < rows) {                                                                                                   \
        const __m512 a = _mm512_set1_ps(base[offset]);                                                                \
        acc0[r] = _mm512_fmadd_ps(a, x0, acc0[r]);                                                                    \
        if (panels == 2) acc1[r] = _mm512_fmadd_ps(a, x1, acc1[r]);                                                   \
    }
#pragma clang loop unroll(disable)
    for (int32_t kk = 0; kk < kc; kk++) {
        const __m512 x0 = _mm512_loadu_ps(b0);
        const __m512 x1 = panels == 2 ? _mm512_loadu_ps(b1) : x0;
        b0 += CGK_NR;
        b1 += CGK_NR;
        CGK_ROW512(0, a0, 0) CGK_ROW512(1, a0, lda) CGK_ROW512(2, a0, 2 * lda) CGK_ROW512(3, a0, lda3)
        CGK_ROW512(4, a4, 0) CGK_ROW512(5, a4, lda) CGK_ROW512(6, a4, 2 * lda) CGK_ROW512(7, a4, lda3)
        CGK_ROW512(8, a8, 0) CGK_ROW512(9, a8, lda) CGK_ROW512(10, a8, 2 * lda) CGK_ROW512(11, a8, lda3)
        a0++;
        a4++;
        a8++;
    }
#undef CGK_ROW512
    if (width == panels * CGK_NR) {
        const int with_bias = bias != NULL && last;
        const __m512 bias0 = with_bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
        const __m512 bias1 = with_bias && panels == 2 ? _mm512_loadu_ps(bias + CGK_NR) : _mm512_setzero_ps();
        for (int r = 0; r < rows; r++) {
            float *cr = c + r * ldc;
            _mm512_storeu_ps(cr, cgk_finish16(acc0[r], cr, first, last, bias0, activation));
            if (panels == 2) _mm512_storeu_ps(cr + CGK_NR, cgk_finish16(acc1[r], cr + CGK_NR, first, last, bias1, activation));
        }
        return;
    }
    float tmp[2 * CGK_NR];
    for (int r = 0; r < rows; r++) {
        _mm512_storeu_ps(tmp, acc0[r]);
        if (panels == 2) _mm512_storeu_ps(tmp + CGK_NR, acc1[r]);
        cgk_store_row(c + r * ldc, tmp, width, first, last, bias, activation);
    }
}

// A cgk_microkernel: up to 12 rows, up to 32 columns.
CGK_AVX512_FUNCTION
static void cgk_kernel_12x32(int32_t kc, const float *ap, ptrdiff_t lda, const float *bp, ptrdiff_t panel_stride,
                             int32_t width, float *c, ptrdiff_t ldc, int32_t rows, int first, int last, const float *bias,
                             int activation) {
#define CGK_ROWS(r)                                                                                                   \
    case r:                                                                                                           \
        if (width > CGK_NR)                                                                                           \
            cgk_kernel_rxn(r, 2, kc, ap, lda, bp, panel_stride, width, c, ldc, first, last, bias, activation);         \
        else                                                                                                          \
            cgk_kernel_rxn(r, 1, kc, ap, lda, bp, panel_stride, width, c, ldc, first, last, bias, activation);         \
        break;
    switch (rows) {
        CGK_ROWS(12) CGK_ROWS(11) CGK_ROWS(10) CGK_ROWS(9) CGK_ROWS(8) CGK_ROWS(7)
        CGK_ROWS(6) CGK_ROWS(5) CGK_ROWS(4) CGK_ROWS(3) CGK_ROWS(2) CGK_ROWS(1)
    }
#undef CGK_ROWS
}

// cgk_gemm_packed's AVX-512 variant.
CGK_AVX512_FUNCTION
static void cgk_gemm_packed_avx512(int32_t m, int32_t n, int32_t k, const float *a, ptrdiff_t lda, const float *packed,
                                   float *c, ptrdiff_t ldc, const float *bias, int activation, int32_t panel_begin,
                                   int32_t panel_end) {
    cgk_gemm_blocked(CGK_MR512, CGK_KC512, CGK_MC512, 2, cgk_kernel_12x32, m, n, k, a, lda, packed, c, ldc, bias,
                     activation, panel_begin, panel_end);
}

#endif
