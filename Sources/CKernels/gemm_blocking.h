// The loops around a GEMM microkernel, shared by the AVX2 and AVX-512 variants (and compiled on
// its own by the AVX-512 emulation test, Tests/c/avx512_emulated.c).
//
// B is packed into panels of CGK_NR = 16 columns (panel p holds columns [16p, 16p + 16) for every
// k, row-major). Loops: K in slices of kc_max, rows in blocks of mc_max whose slice stays in L2
// while every panel passes, then mr-row micro-blocks against `step` adjacent panel slices (one
// for AVX2, two for AVX-512) held in L1. Rows of A are read in place (packing A into micro-panels,
// as BLIS does, measured no faster on the networks' shapes and slower on narrow layers); only a
// partial last block of rows is copied, with zero rows added.
#ifndef CG_GEMM_BLOCKING_H
#define CG_GEMM_BLOCKING_H

#include "kernel_internal.h"

#define CGK_NR 16

// C[rows x width] (+)= A (mr x kc) * B (kc x width, in 16-column panels panel_stride floats
// apart); rows <= mr, width <= step * 16. Element (r, kk) of A is a[r * row_step + kk * k_step]: a
// packed micro-panel (1, mr) or rows in place (lda, 1). `first`: C holds no partial sums yet;
// `last`: add bias (may be NULL) and apply the activation.
typedef void (*cgk_microkernel)(int32_t kc, const float *a, ptrdiff_t row_step, ptrdiff_t k_step, const float *panel,
                                ptrdiff_t panel_stride, int32_t width, float *c, ptrdiff_t ldc, int32_t rows, int first,
                                int last, const float *bias, int activation);

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

// Copies the last, partial block of rows (rows < mr) x depth kc of A into one micro-panel:
// element (r, kk) goes to dst[kk * mr + r], and the missing rows are zeros, so the microkernel
// computes mr rows and the store drops the extra ones.
CGK_INLINE void cgk_pack_a_tail(int32_t mr, int32_t rows, int32_t kc, const float *a,
                                                                  ptrdiff_t lda, float *dst) {
    for (int32_t r = 0; r < mr; r++) {
        const float *src = a + (ptrdiff_t)r * lda;
        for (int32_t kk = 0; kk < kc; kk++) dst[(size_t)kk * mr + r] = r < rows ? src[kk] : 0.0f;
    }
}

// c[m x n] = act(a * B + bias) for the panels [panel_begin, panel_end). a_tail holds mr * kc_max
// floats. Inlined with constant mr, kc_max, mc_max, step and kernel, so the calls are direct.
CGK_INLINE void
cgk_gemm_blocked(int32_t mr, int32_t kc_max, int32_t mc_max, int32_t step, cgk_microkernel kernel, float *a_tail,
                 int32_t m, int32_t n, int32_t k, const float *a, ptrdiff_t lda, const float *packed, float *c,
                 ptrdiff_t ldc, const float *bias, int activation, int32_t panel_begin, int32_t panel_end) {
    const ptrdiff_t panel_stride = (ptrdiff_t)k * CGK_NR;
    for (int32_t k0 = 0; k0 < k || (k == 0 && k0 == 0); k0 += kc_max) {
        const int32_t kc = k - k0 < kc_max ? k - k0 : kc_max;
        const int first = k0 == 0, last = k0 + kc_max >= k;
        for (int32_t i0 = 0; i0 < m; i0 += mc_max) {
            const int32_t mc = m - i0 < mc_max ? m - i0 : mc_max;
            const float *a_rows = a + (ptrdiff_t)i0 * lda + k0;
            const int32_t full = mc / mr * mr;
            if (full < mc) cgk_pack_a_tail(mr, mc - full, kc, a_rows + (ptrdiff_t)full * lda, lda, a_tail);
            for (int32_t p = panel_begin; p < panel_end; p += step) {
                const int32_t panels = panel_end - p < step ? panel_end - p : step;
                const float *panel = packed + (size_t)p * panel_stride + (size_t)k0 * CGK_NR;
                const int32_t c0 = p * CGK_NR, width = n - c0 < panels * CGK_NR ? n - c0 : panels * CGK_NR;
                const float *panel_bias = bias ? bias + c0 : NULL;
                for (int32_t r0 = 0; r0 < mc; r0 += mr) {
                    const int32_t rows = mc - r0 < mr ? mc - r0 : mr;
                    float *cr = c + (ptrdiff_t)(i0 + r0) * ldc + c0;
                    if (r0 < full)
                        kernel(kc, a_rows + (ptrdiff_t)r0 * lda, lda, 1, panel, panel_stride, width, cr, ldc, rows, first,
                               last, panel_bias, activation);
                    else
                        kernel(kc, a_tail, 1, mr, panel, panel_stride, width, cr, ldc, rows, first, last, panel_bias,
                               activation);
                }
            }
        }
        if (k == 0) break;
    }
}

#endif
