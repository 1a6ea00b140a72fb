// A GEMM for inference with weights packed once at model load: C = act(A * B + bias).
//
// B (the weights) is packed at load into panels of NR = 16 columns, so the per-call packing
// OpenBLAS does is gone. The microkernel keeps a 6 x 16 block of C in 12 AVX registers and
// reads six rows of A in place (packing A into micro-panels, as BLIS does, measured no faster on
// the network's shapes and slower on narrow layers, so only a partial last block of rows is
// copied, with zero rows added). Bias plus activation are applied while results are still in
// registers. Loops: K in KC slices, rows in MC blocks whose slice stays in L2 while every panel
// passes, then 6-row micro-blocks against one panel slice held in L1. On this project's test
// machine it runs at 67-93 GFLOP/s on the networks' shapes on one core, OpenBLAS sgemm at 42-80.
//
// One microkernel (AVX2 + FMA) serves every x86-64 CPU that has those instructions, AVX-512 ones
// included. An AVX-512 variant existed but was removed: the machine these kernels were measured
// and tested on lacks AVX-512, and an untested kernel is not one we ship. Other CPUs use
// OpenBLAS instead (cgk_gemm_packed_available() == 0).
#include "kernel_internal.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>
#define CGK_X86 1
#else
#define CGK_X86 0
#endif

#define NR 16  // columns per packed B panel
#define MR 6   // rows per A micro-panel: 6 x 16 accumulators use 12 of the 16 AVX registers
#define KC 256 // depth of one pass: a B panel slice (16 KB) and an A micro-panel (6 KB) stay in L1
#define MC 48  // rows of A per pass: their KC slice (48 KB) stays in L2 while every panel passes

size_t cgk_pack_b_floats(int32_t k, int32_t n) { return (size_t)k * (size_t)((n + NR - 1) / NR) * NR; }

void cgk_pack_b(const float *b, ptrdiff_t ldb, int32_t k, int32_t n, float *packed) {
    const int32_t panels = (n + NR - 1) / NR;
    for (int32_t p = 0; p < panels; p++) {
        float *dst = packed + (size_t)p * k * NR;
        const int32_t c0 = p * NR, width = n - c0 < NR ? n - c0 : NR;
        for (int32_t kk = 0; kk < k; kk++) {
            const float *src = b + (ptrdiff_t)kk * ldb + c0;
            for (int32_t j = 0; j < width; j++) dst[(size_t)kk * NR + j] = src[j];
            for (int32_t j = width; j < NR; j++) dst[(size_t)kk * NR + j] = 0.0f;
        }
    }
}

int cgk_cpu_has_avx2_fma(void) {
#if CGK_X86
    static int has = -1; // computed once; a race writes the same value
    if (has < 0) {
        __builtin_cpu_init();
        has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return has;
#else
    return 0;
#endif
}

int cgk_gemm_packed_available(void) { return cgk_cpu_has_avx2_fma(); }

// Copies the last, partial block of rows (rows < MR) x depth kc of A into one micro-panel:
// element (r, kk) goes to dst[kk * MR + r], and the missing rows are zeros, so the microkernel
// computes MR rows and the store drops the extra ones.
static void cgk_pack_a_tail(int32_t rows, int32_t kc, const float *a, ptrdiff_t lda, float *dst) {
    for (int32_t r = 0; r < MR; r++) {
        const float *src = a + (ptrdiff_t)r * lda;
        for (int32_t kk = 0; kk < kc; kk++) dst[(size_t)kk * MR + r] = r < rows ? src[kk] : 0.0f;
    }
}

// Stores one row of accumulated values where the block is narrower than NR or shorter than MR:
// adds the partial C when not the first K pass, applies bias and activation on the last pass.
static inline void cgk_store_row(float *c, const float *acc, int32_t width, int first, int last, const float *bias,
                                 int activation) {
    for (int32_t j = 0; j < width; j++) {
        float v = acc[j] + (first ? 0.0f : c[j]);
        if (last) {
            if (bias) v += bias[j];
            v = cgk_activate(v, activation);
        }
        c[j] = v;
    }
}

#if CGK_X86
// 16 halves to floats with F16C.
__attribute__((target("avx,f16c")))
static void cgk_half16_to_float(const uint16_t *src, float *dst) {
    _mm256_storeu_ps(dst, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)src)));
    _mm256_storeu_ps(dst + 8, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + 8))));
}
#endif

void cgk_pack_b_f16(const uint16_t *b, ptrdiff_t ldb, int32_t k, int32_t n, float *packed) {
#if CGK_X86
    const int f16c = __builtin_cpu_supports("f16c");
#endif
    const int32_t panels = (n + NR - 1) / NR;
    for (int32_t p = 0; p < panels; p++) {
        float *dst = packed + (size_t)p * k * NR;
        const int32_t c0 = p * NR, width = n - c0 < NR ? n - c0 : NR;
        for (int32_t kk = 0; kk < k; kk++, dst += NR) {
            const uint16_t *src = b + (ptrdiff_t)kk * ldb + c0;
#if CGK_X86
            if (f16c && width == NR) {
                cgk_half16_to_float(src, dst);
                continue;
            }
#endif
            cgk_half_to_float(src, dst, (size_t)width);
            for (int32_t j = width; j < NR; j++) dst[j] = 0.0f;
        }
    }
}

#if CGK_X86
__attribute__((target("avx2,fma")))
static inline __m256 cgk_finish8(__m256 v, const float *c, int first, int last, __m256 bias, int activation) {
    if (!first) v = _mm256_add_ps(v, _mm256_loadu_ps(c));
    if (last) {
        v = _mm256_add_ps(v, bias);
        if (activation == CGK_ACT_RELU) v = _mm256_max_ps(v, _mm256_setzero_ps());
        else if (activation == CGK_ACT_RELU6) v = _mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), _mm256_set1_ps(6.0f));
    }
    return v;
}

// C[rows x width] (+)= A (MR x kc) * B panel slice (kc x NR); rows <= MR, width <= NR. Element
// (r, kk) of A is ap[r * row_step + kk * k_step]: a packed micro-panel (1, MR) or rows in place (lda, 1).
__attribute__((target("avx2,fma")))
static void cgk_kernel_6x16(int32_t kc, const float *ap, ptrdiff_t row_step, ptrdiff_t k_step, const float *restrict bp,
                            float *c, ptrdiff_t ldc, int32_t rows, int32_t width, int first, int last, const float *bias,
                            int activation) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float *a0 = ap, *a1 = a0 + row_step, *a2 = a1 + row_step, *a3 = a2 + row_step, *a4 = a3 + row_step, *a5 = a4 + row_step;
    for (int32_t kk = 0; kk < kc; kk++, bp += NR) {
        const ptrdiff_t o = kk * k_step;
        const __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
        __m256 a = _mm256_broadcast_ss(a0 + o);
        c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
        a = _mm256_broadcast_ss(a1 + o);
        c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
        a = _mm256_broadcast_ss(a2 + o);
        c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
        a = _mm256_broadcast_ss(a3 + o);
        c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
        a = _mm256_broadcast_ss(a4 + o);
        c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
        a = _mm256_broadcast_ss(a5 + o);
        c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
    }
    const __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    if (rows == MR && width == NR) {
        const __m256 bias0 = bias && last ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
        const __m256 bias1 = bias && last ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
        for (int r = 0; r < MR; r++) {
            float *cr = c + r * ldc;
            const __m256 lo = cgk_finish8(acc[r][0], cr, first, last, bias0, activation);
            const __m256 hi = cgk_finish8(acc[r][1], cr + 8, first, last, bias1, activation);
            _mm256_storeu_ps(cr, lo);
            _mm256_storeu_ps(cr + 8, hi);
        }
        return;
    }
    float tmp[NR];
    for (int r = 0; r < rows; r++) {
        _mm256_storeu_ps(tmp, acc[r][0]);
        _mm256_storeu_ps(tmp + 8, acc[r][1]);
        cgk_store_row(c + r * ldc, tmp, width, first, last, bias, activation);
    }
}
#endif

void cgk_gemm_packed(int32_t m, int32_t n, int32_t k, const float *a, ptrdiff_t lda, const float *packed, float *c,
                     ptrdiff_t ldc, const float *bias, int activation, int32_t panel_begin, int32_t panel_end) {
#if CGK_X86
    float a_tail[MR * KC] __attribute__((aligned(64)));
    for (int32_t k0 = 0; k0 < k || (k == 0 && k0 == 0); k0 += KC) {
        const int32_t kc = k - k0 < KC ? k - k0 : KC;
        const int first = k0 == 0, last = k0 + KC >= k;
        for (int32_t i0 = 0; i0 < m; i0 += MC) {
            const int32_t mc = m - i0 < MC ? m - i0 : MC;
            const float *a_rows = a + (ptrdiff_t)i0 * lda + k0;
            // Only a partial last micro-panel is copied (zero rows added); full ones are read in place.
            const int32_t full = mc / MR * MR;
            if (full < mc) cgk_pack_a_tail(mc - full, kc, a_rows + (ptrdiff_t)full * lda, lda, a_tail);
            for (int32_t p = panel_begin; p < panel_end; p++) {
                const float *panel = packed + (size_t)p * k * NR + (size_t)k0 * NR;
                const int32_t c0 = p * NR, width = n - c0 < NR ? n - c0 : NR;
                const float *panel_bias = bias ? bias + c0 : NULL;
                for (int32_t r0 = 0; r0 < mc; r0 += MR) {
                    const int32_t rows = mc - r0 < MR ? mc - r0 : MR;
                    float *cr = c + (ptrdiff_t)(i0 + r0) * ldc + c0;
                    if (r0 < full)
                        cgk_kernel_6x16(kc, a_rows + (ptrdiff_t)r0 * lda, lda, 1, panel, cr, ldc, rows, width, first, last, panel_bias, activation);
                    else
                        cgk_kernel_6x16(kc, a_tail, 1, MR, panel, cr, ldc, rows, width, first, last, panel_bias, activation);
                }
            }
        }
        if (k == 0) break;
    }
#else
    (void)m; (void)n; (void)k; (void)a; (void)lda; (void)packed; (void)c; (void)ldc; (void)bias; (void)activation;
    (void)panel_begin; (void)panel_end;
#endif
}
