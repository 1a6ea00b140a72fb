// Shared by the kernel files: multiversioning and small inline helpers.
#ifndef CG_KERNEL_INTERNAL_H
#define CG_KERNEL_INTERNAL_H

#include "cg_kernels.h"

// One build serves every x86-64 CPU: a dispatched kernel's body is compiled three times, for
// x86-64-v4 (AVX-512), x86-64-v3 (AVX2, FMA) and the baseline, and each call runs the variant
// cgk_isa() chose for the process. An explicit switch rather than an ifunc (target_clones), so
// COVERGENRE_ISA can force a variant for tests and benchmarks, and sanitizer runtimes see
// ordinary calls. Sanitizer and fuzzing builds define CGK_NO_MULTIVERSION: the portable kernels
// are compiled for the baseline only (the GEMM microkernels, written with intrinsics, stay).
#if defined(__x86_64__) && defined(__clang__)
#define CGK_X86 1
#else
#define CGK_X86 0
#endif
#if CGK_X86
// Tuned for AMD Zen 4 (the EPYC servers AVX-512 was measured on), where 512-bit operations cost
// two 256-bit halves with no frequency penalty: with x86-64-v4's own tuning the compiler keeps the
// portable loops (written in blocks of 16 channels, one zmm register) at 256 bits.
#define CGK_TARGET_AVX512 __attribute__((target("arch=x86-64-v4,tune=znver4"), min_vector_width(512)))
#define CGK_TARGET_AVX2 __attribute__((target("arch=x86-64-v3")))
#endif
#if CGK_X86 && !defined(CGK_NO_MULTIVERSION)
// CGK_DISPATCH(linkage, name, (parameters), (arguments)) { body }: defines `name`, which runs the
// body compiled for the process's variant. linkage is empty or static. The body is inlined into
// one wrapper per variant and takes that wrapper's instruction set; so do the helpers it calls
// that are marked CGK_INLINE.
#define CGK_DISPATCH(linkage, name, params, args)                                                          \
    static inline __attribute__((always_inline)) void name##_body params;                                \
    CGK_TARGET_AVX512 __attribute__((noinline)) static void name##_avx512 params { name##_body args; }     \
    CGK_TARGET_AVX2 __attribute__((noinline)) static void name##_avx2 params { name##_body args; }         \
    __attribute__((noinline)) static void name##_generic params { name##_body args; }                      \
    linkage void name params {                                                                             \
        switch (cgk_isa()) {                                                                               \
        case CGK_ISA_AVX512: name##_avx512 args; break;                                                   \
        case CGK_ISA_AVX2: name##_avx2 args; break;                                                       \
        default: name##_generic args; break;                                                              \
        }                                                                                                  \
    }                                                                                                      \
    static inline __attribute__((always_inline)) void name##_body params
#else
#define CGK_DISPATCH(linkage, name, params, args) linkage void name params
#endif
// A helper a dispatched body calls: inlined, so it is compiled for the caller's variant.
#define CGK_INLINE static inline __attribute__((always_inline))

static inline int32_t cgk_max(int32_t a, int32_t b) { return a > b ? a : b; }
static inline int32_t cgk_min(int32_t a, int32_t b) { return a < b ? a : b; }

// The output columns [*lo, *hi) of a row whose whole window (kernel width KW, stride SW) lies
// inside the image: the depthwise kernels' fast loops; the columns outside go pixel by pixel.
static inline void cgk_interior_columns(const cgk_window *w, int32_t KW, int32_t SW, int32_t *lo, int32_t *hi) {
    const int32_t W = w->width, OW = w->out_width, PL = w->pad_left;
    int32_t l = (PL + SW - 1) / SW, h = W >= KW ? (W - KW + PL) / SW + 1 : 0;
    if (h > OW) h = OW;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

// The i-th of the out_width - (hi - lo) columns outside [lo, hi): 0 .. lo - 1, then hi onwards.
static inline int32_t cgk_edge_column(int32_t i, int32_t lo, int32_t hi) { return i < lo ? i : i - lo + hi; }

#if defined(__SSE2__)
#include <immintrin.h>
#endif
#include <string.h>

// Copies n floats. im2col copies a few floats at a time (a 3-channel stem: 9 per kernel row,
// 200,000 times per 256x256 image), where a memcpy call costs more than the copy: up to 16
// floats are moved with two to four overlapping 4-float loads and stores instead.
CGK_INLINE void cgk_copy_floats(float *dst, const float *src, size_t n) {
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

// Clang's vector of 16 floats: one zmm register in the AVX-512 variant, two ymm in the AVX2 one,
// four xmm in the baseline; `a += x * w` becomes one fused multiply-add where the variant has FMA.
// Loads and stores go through memcpy of a constant size, which compiles to plain vector moves.
typedef float cgk_v16 __attribute__((ext_vector_type(16), aligned(4)));

CGK_INLINE cgk_v16 cgk_load16(const float *p) {
    cgk_v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

CGK_INLINE void cgk_store16(float *p, cgk_v16 v) { memcpy(p, &v, sizeof v); }

CGK_INLINE float cgk_activate(float v, int activation) {
    if (activation == CGK_ACT_RELU) return v > 0.0f ? v : 0.0f;
    if (activation == CGK_ACT_RELU6) return v > 0.0f ? (v < 6.0f ? v : 6.0f) : 0.0f;
    return v;
}

#endif
