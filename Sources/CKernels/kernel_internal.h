// Shared by the kernel files: multiversioning and small inline helpers.
#ifndef CG_KERNEL_INTERNAL_H
#define CG_KERNEL_INTERNAL_H

#include "cg_kernels.h"

// One build serves every x86-64 CPU: each marked function is compiled three times and the best
// version for the running CPU is chosen once, when the library loads (an ifunc).
// Sanitizer and fuzzing builds define CGK_NO_MULTIVERSION to keep the call graph simple.
#if defined(__x86_64__) && defined(__clang__) && !defined(CGK_NO_MULTIVERSION)
#define CGK_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CGK_MULTIVERSION
#endif

static inline int32_t cgk_max(int32_t a, int32_t b) { return a > b ? a : b; }
static inline int32_t cgk_min(int32_t a, int32_t b) { return a < b ? a : b; }

// 1 when the CPU runs AVX2 and FMA, which the hand-written GEMM microkernel needs.
int cgk_cpu_has_avx2_fma(void);

#if defined(__SSE2__)
#include <immintrin.h>
#endif
#include <string.h>

// Copies n floats. im2col copies a few floats at a time (a 3-channel stem: 9 per kernel row,
// 200,000 times per 256x256 image), where a memcpy call costs more than the copy: up to 16
// floats are moved with two to four overlapping 4-float loads and stores instead.
static inline void cgk_copy_floats(float *dst, const float *src, size_t n) {
#if defined(__SSE2__)
    if (n >= 4 && n <= 16) {
        const __m128 a = _mm_loadu_ps(src), b = _mm_loadu_ps(src + n - 4);
        if (n > 8) {
            const __m128 c = _mm_loadu_ps(src + 4), d = _mm_loadu_ps(src + n - 8);
            _mm_storeu_ps(dst + 4, c);
            _mm_storeu_ps(dst + n - 8, d);
        }
        _mm_storeu_ps(dst, a);
        _mm_storeu_ps(dst + n - 4, b);
        return;
    }
    if (n < 4) {
        for (size_t i = 0; i < n; i++) dst[i] = src[i];
        return;
    }
#endif
    memcpy(dst, src, n * sizeof(float));
}

static inline float cgk_activate(float v, int activation) {
    if (activation == CGK_ACT_RELU) return v > 0.0f ? v : 0.0f;
    if (activation == CGK_ACT_RELU6) return v > 0.0f ? (v < 6.0f ? v : 6.0f) : 0.0f;
    return v;
}

#endif
