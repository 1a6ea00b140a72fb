/* sgemm_ceiling.c - OpenBLAS single-precision GEMM throughput (GFLOP/s) for N x N x N on 1 and 2
 * threads: the ceiling the benchmark compares every model's achieved GFLOP/s against. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1024;
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
    for (int i = 0; i < n * n; i++) { a[i] = (float)(i % 7) / 7; b[i] = (float)(i % 5) / 5; }
    for (int threads = 1; threads <= 2; threads++) {
        openblas_set_num_threads(threads);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        double best = 1e9;
        for (int r = 0; r < 10; r++) {
            double t = now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
            t = now() - t;
            if (t < best) best = t;
        }
        printf("sgemm n=%d threads=%d gflops=%.1f\n", n, threads, 2.0 * n * n * n / best / 1e9);
    }
    return 0;
}
