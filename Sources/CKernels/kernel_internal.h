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

static inline float cgk_activate(float v, int activation) {
    if (activation == CGK_ACT_RELU) return v > 0.0f ? v : 0.0f;
    if (activation == CGK_ACT_RELU6) return v > 0.0f ? (v < 6.0f ? v : 6.0f) : 0.0f;
    return v;
}

#endif
