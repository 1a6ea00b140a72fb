// A GEMM for inference with weights packed once at model load: C = act(A * B + bias).
//
// B (the weights) is packed at load into panels of 16 columns, so the per-call packing OpenBLAS
// does is gone. The loops around the microkernels are in gemm_blocking.h. The AVX2 microkernel
// keeps a 6 x 16 block of C in 12 ymm registers; the AVX-512 one (gemm_avx512.h) a 12 x 32 block
// in 24 zmm registers. Each is compiled for every row count, for the last partial block of rows.
// Bias plus activation are applied while results are still in registers. On this project's AVX2
// test machine the AVX2 kernel runs at 67-93 GFLOP/s on the networks' shapes on one core,
// OpenBLAS sgemm at 42-80.
//
// The variant follows cgk_isa(): AVX-512, AVX2, or none (the baseline variant and other CPUs use
// OpenBLAS instead: cgk_gemm_packed_available() == 0).
#include "kernel_internal.h"

#include "gemm_blocking.h"

#include <string.h>

#if CGK_X86
#include <immintrin.h>
#define CGK_AVX512_FUNCTION CGK_TARGET_AVX512
#include "gemm_avx512.h"
#endif

#define NR CGK_NR
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

int cgk_gemm_packed_available(void) { return cgk_isa() >= CGK_ISA_AVX2; }

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
    const int f16c = cgk_isa() >= CGK_ISA_AVX2;
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

// `rows` rows (1..MR, a constant where this is inlined) against one panel (width <= NR): a partial
// block computes only its rows.
__attribute__((target("avx2,fma")))
static inline __attribute__((always_inline)) void
cgk_kernel_rx16(const int rows, int32_t kc, const float *ap, ptrdiff_t lda, const float *restrict bp, int32_t width,
                float *c, ptrdiff_t ldc, int first, int last, const float *bias, int activation) {
    __m256 acc[MR][2];
    for (int r = 0; r < rows; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int32_t kk = 0; kk < kc; kk++, bp += NR) {
        const __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
#pragma clang loop unroll(full)
        for (int r = 0; r < rows; r++) {
            const __m256 a = _mm256_broadcast_ss(ap + r * lda + kk);
            acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
        }
    }
    if (width == NR) {
        const __m256 bias0 = bias && last ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
        const __m256 bias1 = bias && last ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
        for (int r = 0; r < rows; r++) {
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

// A cgk_microkernel: up to 6 rows, one panel.
__attribute__((target("avx2,fma")))
static void cgk_kernel_6x16(int32_t kc, const float *ap, ptrdiff_t lda, const float *bp, ptrdiff_t panel_stride,
                            int32_t width, float *c, ptrdiff_t ldc, int32_t rows, int first, int last, const float *bias,
                            int activation) {
    (void)panel_stride;
    switch (rows) {
    case 6: cgk_kernel_rx16(6, kc, ap, lda, bp, width, c, ldc, first, last, bias, activation); break;
    case 5: cgk_kernel_rx16(5, kc, ap, lda, bp, width, c, ldc, first, last, bias, activation); break;
    case 4: cgk_kernel_rx16(4, kc, ap, lda, bp, width, c, ldc, first, last, bias, activation); break;
    case 3: cgk_kernel_rx16(3, kc, ap, lda, bp, width, c, ldc, first, last, bias, activation); break;
    case 2: cgk_kernel_rx16(2, kc, ap, lda, bp, width, c, ldc, first, last, bias, activation); break;
    case 1: cgk_kernel_rx16(1, kc, ap, lda, bp, width, c, ldc, first, last, bias, activation); break;
    }
}
#endif

void cgk_gemm_packed(int32_t m, int32_t n, int32_t k, const float *a, ptrdiff_t lda, const float *packed, float *c,
                     ptrdiff_t ldc, const float *bias, int activation, int32_t panel_begin, int32_t panel_end) {
#if CGK_X86
    const int isa = cgk_isa();
    // One row (a linear layer at batch 1) streams B and does little else: there the AVX2 kernel,
    // valid on every AVX-512 CPU, ran a 1 x 25088 x 4096 product (VGG-16's first linear layer,
    // weights from memory) in 23-29 ms against the AVX-512 kernel's 32-41 (one panel per call or
    // two; four runs each, a Zen 4 EPYC). From two rows up the two were even or AVX-512 ahead.
    if (isa == CGK_ISA_AVX512 && m > 1) {
        cgk_gemm_packed_avx512(m, n, k, a, lda, packed, c, ldc, bias, activation, panel_begin, panel_end);
    } else if (isa >= CGK_ISA_AVX2) {
        cgk_gemm_blocked(MR, KC, MC, 1, cgk_kernel_6x16, m, n, k, a, lda, packed, c, ldc, bias, activation, panel_begin,
                         panel_end);
    }
#else
    (void)m; (void)n; (void)k; (void)a; (void)lda; (void)packed; (void)c; (void)ldc; (void)bias; (void)activation;
    (void)panel_begin; (void)panel_end;
#endif
}
