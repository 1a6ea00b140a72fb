// A GEMM for inference with weights packed once at model load: C = act(A * B + bias).
//
// Why not only OpenBLAS: sgemm packs B (the weights) again on every call. For the small-M products
// of an image network (7x7 = 49 rows against a 1152-wide weight matrix) that packing costs as much
// as the arithmetic. Here B is packed when the model loads into panels of 16 columns (zero-padded),
// A is read in place, and bias plus activation are applied while the results are in registers.
// AVX-512 and AVX2+FMA microkernels are chosen at run time; other CPUs use OpenBLAS instead
// (cgk_gemm_packed_available() == 0).
#include "kernel_internal.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>
#define CGK_X86 1
#else
#define CGK_X86 0
#endif

#define NR 16   // columns per packed panel
#define KC 384  // depth of one pass: a 16-column panel slice (24 KB) stays in L1
#define MB 96   // rows per block: their K slice (144 KB) stays in L2 while every panel passes

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

#if CGK_X86
static int cgk_isa(void) {
    static int isa = -1; // computed once; a race writes the same value
    if (isa < 0) {
        __builtin_cpu_init();
        isa = __builtin_cpu_supports("avx512f") ? 2 : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? 1 : 0;
    }
    return isa;
}
#endif

int cgk_gemm_packed_available(void) {
#if CGK_X86
    return cgk_isa() > 0;
#else
    return 0;
#endif
}

// Stores one row of 16 accumulated values: adds the partial C when not the first K pass,
// applies bias and activation on the last pass, writes only the columns that exist.
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
#define MR512 12

__attribute__((target("avx512f")))
static void cgk_kernel_avx512(int32_t rows, int32_t kc, const float *a, ptrdiff_t lda, const float *b, float *c, ptrdiff_t ldc,
                              int32_t width, int first, int last, const float *bias, int activation) {
    __m512 acc[MR512];
    for (int r = 0; r < MR512; r++) acc[r] = _mm512_setzero_ps();
    if (rows == MR512) {
        for (int32_t kk = 0; kk < kc; kk++) {
            const __m512 bv = _mm512_loadu_ps(b + (size_t)kk * NR);
            for (int r = 0; r < MR512; r++) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(a[r * lda + kk]), bv, acc[r]);
        }
    } else {
        for (int32_t kk = 0; kk < kc; kk++) {
            const __m512 bv = _mm512_loadu_ps(b + (size_t)kk * NR);
            for (int r = 0; r < rows; r++) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(a[r * lda + kk]), bv, acc[r]);
        }
    }
    if (width == NR) {
        // Full-width rows: finish in registers.
        const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6.0f);
        const __m512 bv = bias && last ? _mm512_loadu_ps(bias) : zero;
        for (int r = 0; r < rows; r++) {
            __m512 v = acc[r];
            if (!first) v = _mm512_add_ps(v, _mm512_loadu_ps(c + r * ldc));
            if (last) {
                v = _mm512_add_ps(v, bv);
                if (activation == CGK_ACT_RELU) v = _mm512_max_ps(v, zero);
                else if (activation == CGK_ACT_RELU6) v = _mm512_min_ps(_mm512_max_ps(v, zero), six);
            }
            _mm512_storeu_ps(c + r * ldc, v);
        }
        return;
    }
    float tmp[NR];
    for (int r = 0; r < rows; r++) {
        _mm512_storeu_ps(tmp, acc[r]);
        cgk_store_row(c + r * ldc, tmp, width, first, last, bias, activation);
    }
}

#define MR256 6

__attribute__((target("avx2,fma")))
static void cgk_kernel_avx2(int32_t rows, int32_t kc, const float *a, ptrdiff_t lda, const float *b, float *c, ptrdiff_t ldc,
                            int32_t width, int first, int last, const float *bias, int activation) {
    __m256 lo[MR256], hi[MR256];
    for (int r = 0; r < MR256; r++) lo[r] = hi[r] = _mm256_setzero_ps();
    for (int32_t kk = 0; kk < kc; kk++) {
        const __m256 b0 = _mm256_loadu_ps(b + (size_t)kk * NR), b1 = _mm256_loadu_ps(b + (size_t)kk * NR + 8);
        for (int r = 0; r < rows; r++) {
            const __m256 av = _mm256_broadcast_ss(a + r * lda + kk);
            lo[r] = _mm256_fmadd_ps(av, b0, lo[r]);
            hi[r] = _mm256_fmadd_ps(av, b1, hi[r]);
        }
    }
    float tmp[NR];
    for (int r = 0; r < rows; r++) {
        _mm256_storeu_ps(tmp, lo[r]);
        _mm256_storeu_ps(tmp + 8, hi[r]);
        cgk_store_row(c + r * ldc, tmp, width, first, last, bias, activation);
    }
}
#endif

void cgk_gemm_packed(int32_t m, int32_t n, int32_t k, const float *a, ptrdiff_t lda, const float *packed, float *c,
                     ptrdiff_t ldc, const float *bias, int activation, int32_t panel_begin, int32_t panel_end) {
#if CGK_X86
    const int isa = cgk_isa();
    const int mr = isa == 2 ? MR512 : MR256;
    for (int32_t k0 = 0; k0 < k || (k == 0 && k0 == 0); k0 += KC) {
        const int32_t kc = k - k0 < KC ? k - k0 : KC;
        const int first = k0 == 0, last = k0 + KC >= k;
        for (int32_t b0 = 0; b0 < m; b0 += MB) {
            const int32_t b1 = m - b0 < MB ? m : b0 + MB;
            for (int32_t p = panel_begin; p < panel_end; p++) {
                const float *panel = packed + (size_t)p * k * NR + (size_t)k0 * NR;
                const int32_t c0 = p * NR, width = n - c0 < NR ? n - c0 : NR;
                for (int32_t r0 = b0; r0 < b1; r0 += mr) {
                    const int32_t rows = b1 - r0 < mr ? b1 - r0 : mr;
                    const float *ar = a + (ptrdiff_t)r0 * lda + k0;
                    float *cr = c + (ptrdiff_t)r0 * ldc + c0;
                    if (isa == 2) cgk_kernel_avx512(rows, kc, ar, lda, panel, cr, ldc, width, first, last, bias ? bias + c0 : NULL, activation);
                    else cgk_kernel_avx2(rows, kc, ar, lda, panel, cr, ldc, width, first, last, bias ? bias + c0 : NULL, activation);
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
