// The loops around a GEMM microkernel, shared by the AVX2 and AVX-512 variants (and compiled on
// its own by the AVX-512 emulation test, Tests/c/avx512_emulated.c).
//
// B is packed into panels of CGK_NR = 16 columns (panel p holds columns [16p, 16p + 16) for every
// k, row-major). Loops: K in slices of kc_max, rows in blocks of mc_max whose slice stays in L2
// while every panel passes, then mr-row micro-blocks against `step` adjacent panel slices (one
// for AVX2, two for AVX-512) held in L1. Rows of A are read in place (packing A into micro-panels,
// as BLIS does, measured no faster on the networks' shapes and slower on narrow layers). A partial
// last block runs a kernel compiled for its row count, so a 49-row product (a 7x7 image) does not
// compute 54 rows.
#ifndef CG_GEMM_BLOCKING_H
#define CG_GEMM_BLOCKING_H

#include "kernel_internal.h"

#define CGK_NR 16

// C[rows x width] (+)= A (rows x kc, row stride lda) * B (kc x width, in 16-column panels
// panel_stride floats apart); rows <= mr, width <= step * 16. `first`: C holds no partial sums
// yet; `last`: add bias (may be NULL) and apply the activation.
typedef void (*cgk_microkernel)(int32_t kc, const float *a, ptrdiff_t lda, const float *panel, ptrdiff_t panel_stride,
                                int32_t width, float *c, ptrdiff_t ldc, int32_t rows, int first, int last,
                                const float *bias, int activation);

// Stores one row of accumulated values where the block is narrower or shorter than the kernel's:
// adds the partial C when not the first K pass, applies bias and activation on the last pass.
CGK_INLINE void cgk_store_row(float *c, const float *acc, int32_t width, int first,
                                                                int last, const float *bias, int activation) {
    for (int32_t j = 0; j < width; j++) {
        float v = acc[j] + (first ? 0.0f : c[j]);
        if (last) {
            if (bias) v += bias[j];
            v = cgk_activate(v, activation);
        }
        c[j] = v;
    }
}

// c[m x n] = act(a * B + bias) for the panels [panel_begin, panel_end). Inlined with constant mr,
// kc_max, mc_max, step and kernel, so the calls are direct.
CGK_INLINE void
cgk_gemm_blocked(int32_t mr, int32_t kc_max, int32_t mc_max, int32_t step, cgk_microkernel kernel, int32_t m, int32_t n, int32_t k, const float *a, ptrdiff_t lda, const float *packed, float *c,
                 ptrdiff_t ldc, const float *bias, int activation, int32_t panel_begin, int32_t panel_end) {
    const ptrdiff_t panel_stride = (ptrdiff_t)k * CGK_NR;
    for (int32_t k0 = 0; k0 < k || (k == 0 && k0 == 0); k0 += kc_max) {
        const int32_t kc = k - k0 < kc_max ? k - k0 : kc_max;
        const int first = k0 == 0, last = k0 + kc_max >= k;
        for (int32_t i0 = 0; i0 < m; i0 += mc_max) {
            const int32_t mc = m - i0 < mc_max ? m - i0 : mc_max;
            const float *a_rows = a + (ptrdiff_t)i0 * lda + k0;
            for (int32_t p = panel_begin; p < panel_end; p += step) {
                const int32_t panels = panel_end - p < step ? panel_end - p : step;
                const float *panel = packed + (size_t)p * panel_stride + (size_t)k0 * CGK_NR;
                const int32_t c0 = p * CGK_NR, width = n - c0 < panels * CGK_NR ? n - c0 : panels * CGK_NR;
                const float *panel_bias = bias ? bias + c0 : NULL;
                for (int32_t r0 = 0; r0 < mc; r0 += mr) {
                    const int32_t rows = mc - r0 < mr ? mc - r0 : mr;
                    float *cr = c + (ptrdiff_t)(i0 + r0) * ldc + c0;
                    kernel(kc, a_rows + (ptrdiff_t)r0 * lda, lda, panel, panel_stride, width, cr, ldc, rows, first, last,
                           panel_bias, activation);
                }
            }
        }
        if (k == 0) break;
    }
}

#endif
