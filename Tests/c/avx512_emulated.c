// The AVX-512 GEMM microkernel and its loops (Sources/CKernels/gemm_avx512.h) against a naive
// double-precision GEMM, with the AVX-512 intrinsics mapped to SIMDe's portable implementations
// (Debian's libsimde-dev), so the kernel's logic is tested on machines without AVX-512: blocks and
// their row and column tails, one or two panels, K slices, bias, activations, panel ranges. The
// instructions themselves run only on a CPU with AVX-512, where scripts/test.sh also runs the
// Swift kernel tests with COVERGENRE_ISA=avx512.
// Usage: avx512_emulated   (exit 0 and "N passed, 0 failed" when every case matches)
#include <immintrin.h> // before SIMDe's aliases, which then take over the _mm512_* names
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>

#define CGK_AVX512_FUNCTION
#include "gemm_avx512.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t state = 0x9E3779B97F4A7C15ull;
static float next_float(void) { // xorshift64*, uniform in [-1, 1)
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return (float)((state * 0x2545F4914F6CDD1Dull) >> 40) / (float)(1u << 23) - 1.0f;
}

static int check(int32_t m, int32_t n, int32_t k, int with_bias, int activation, int32_t panel_begin, int32_t panel_end) {
    const int32_t panels = (n + CGK_NR - 1) / CGK_NR;
    float *a = malloc(sizeof(float) * (size_t)(m * k + 1)), *b = malloc(sizeof(float) * (size_t)(k * n + 1));
    float *packed = malloc(sizeof(float) * (cgk_pack_b_floats(k, n) + 1)), *bias = malloc(sizeof(float) * (size_t)n);
    float *c = malloc(sizeof(float) * (size_t)m * n);
    for (int32_t i = 0; i < m * k; i++) a[i] = next_float();
    for (int32_t i = 0; i < k * n; i++) b[i] = next_float();
    for (int32_t i = 0; i < n; i++) bias[i] = next_float();
    for (int32_t i = 0; i < m * n; i++) c[i] = NAN; // columns outside the panel range must stay NaN
    cgk_pack_b(b, n, k, n, packed);
    cgk_gemm_packed_avx512(m, n, k, a, k, packed, c, n, with_bias ? bias : NULL, activation, panel_begin, panel_end);
    int bad = 0;
    for (int32_t i = 0; i < m && !bad; i++)
        for (int32_t j = 0; j < n && !bad; j++) {
            const int inside = j / CGK_NR >= panel_begin && j / CGK_NR < panel_end;
            double expected = with_bias ? bias[j] : 0.0, scale = fabs(expected);
            for (int32_t kk = 0; kk < k; kk++) {
                expected += (double)a[i * k + kk] * b[kk * n + j];
                scale += fabs((double)a[i * k + kk] * b[kk * n + j]);
            }
            if (activation == CGK_ACT_RELU) expected = expected > 0 ? expected : 0;
            if (activation == CGK_ACT_RELU6) expected = expected > 0 ? (expected < 6 ? expected : 6) : 0;
            const float got = c[i * n + j];
            if (!inside ? !isnan(got) : !(fabs(got - expected) <= 1e-5 * (scale + 1.0))) {
                fprintf(stderr, "FAIL m=%d n=%d k=%d bias=%d act=%d panels [%d, %d) of %d: c[%d][%d] = %g, expected %s%g\n",
                        m, n, k, with_bias, activation, panel_begin, panel_end, panels, i, j, got,
                        inside ? "" : "untouched NaN, not ", expected);
                bad = 1;
            }
        }
    free(a); free(b); free(packed); free(bias); free(c);
    return bad;
}

int main(void) {
    static const int32_t ms[] = {1, 5, 12, 13, 25, 48, 61};
    static const int32_t ns[] = {1, 15, 16, 17, 32, 33, 48, 70};
    static const int32_t ks[] = {0, 1, 7, 128, 129, 300};
    int passed = 0, failed = 0;
    for (size_t mi = 0; mi < sizeof ms / sizeof *ms; mi++)
        for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++)
            for (size_t ki = 0; ki < sizeof ks / sizeof *ks; ki++) {
                const int32_t m = ms[mi], n = ns[ni], k = ks[ki], panels = (n + CGK_NR - 1) / CGK_NR;
                for (int activation = CGK_ACT_NONE; activation <= CGK_ACT_RELU6; activation++)
                    for (int with_bias = 0; with_bias <= 1; with_bias++) {
                        const int bad = check(m, n, k, with_bias, activation, 0, panels) ||
                                        (panels > 1 && check(m, n, k, with_bias, activation, 1, panels)) ||
                                        (panels > 2 && check(m, n, k, with_bias, activation, 0, panels - 1));
                        bad ? failed++ : passed++;
                    }
            }
    printf("AVX-512 GEMM kernel under emulation (SIMDe): %d passed, %d failed\n", passed, failed);
    return failed != 0;
}
