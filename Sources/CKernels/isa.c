// Which instruction-set variant of the kernels this process runs: the best the CPU has, or the one
// COVERGENRE_ISA names (tests and benchmarks run every variant the machine can execute this way).
// Decided once, on first use, and never changed: every kernel of one process runs one variant.
#include "kernel_internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static const char *const cgk_isa_names[] = {"generic", "avx2", "avx512"};

const char *cgk_isa_name(int isa) {
    return isa >= CGK_ISA_GENERIC && isa <= CGK_ISA_AVX512 ? cgk_isa_names[isa] : "unknown";
}

int cgk_isa_best(void) {
#if CGK_X86
    __builtin_cpu_init();
    // The AVX-512 variant is compiled for x86-64-v4 (F, BW, CD, DQ, VL); the AVX2 one for x86-64-v3.
    // __builtin_cpu_supports also checks that the OS saves the wider registers (XCR0).
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2"))
        return CGK_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") &&
        __builtin_cpu_supports("bmi2"))
        return CGK_ISA_AVX2;
#endif
    return CGK_ISA_GENERIC;
}

int cgk_isa_requested(void) {
    const char *value = getenv("COVERGENRE_ISA");
    if (value == NULL) return -1;
    for (int isa = CGK_ISA_GENERIC; isa <= CGK_ISA_AVX512; isa++)
        if (strcmp(value, cgk_isa_names[isa]) == 0) return isa;
    return -1;
}

// -1 until decided. Two threads deciding at once compute the same value.
static _Atomic int cgk_isa_decided = -1;

int cgk_isa(void) {
    int isa = atomic_load_explicit(&cgk_isa_decided, memory_order_relaxed);
    if (isa >= 0) return isa;
    const int best = cgk_isa_best(), requested = cgk_isa_requested();
    // A variant the CPU cannot execute is never run: the request falls back to the best one.
    isa = requested >= 0 && requested <= best ? requested : best;
    atomic_store_explicit(&cgk_isa_decided, isa, memory_order_relaxed);
    return isa;
}
