/* bench_callers.c - many threads sharing one loaded model, driven by bench/bench.py.
 *
 *   bench_callers MODEL N_THREADS CALLERS SECONDS
 *
 * Loads MODEL once with the load option n_threads = N_THREADS (0 = every core), starts CALLERS
 * threads that each loop on cg_run_tensor (batch 1, random input) for SECONDS, and prints one line
 * of key=value pairs: inferences/s over all callers, the median and p99 latency of one call, and
 * the process's peak thread count (sampled every millisecond from /proc/self/status while the
 * callers run, callers and the sampling thread included).
 */
#include <covergenre.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static int process_threads(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int threads = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "Threads:", 8) == 0) threads = atoi(line + 8);
    if (f) fclose(f);
    return threads;
}

typedef struct {
    const cg_model *model;
    const float *input;
    size_t input_count;
    size_t classes;
    double deadline;
    long calls;
    double *latencies;  /* one per call, up to `capacity` */
    long capacity;
    int failed;
} caller;

static atomic_int go, done;

static void *run_caller(void *raw) {
    caller *c = raw;
    float logits[4096];
    while (!atomic_load(&go)) usleep(100);
    while (now_s() < c->deadline) {
        double t0 = now_s();
        if (cg_run_tensor(c->model, c->input, c->input_count, 1, logits, c->classes) != CG_OK) {
            fprintf(stderr, "cg_run_tensor: %s\n", cg_last_error());
            c->failed = 1;
            break;
        }
        if (c->calls < c->capacity) c->latencies[c->calls] = now_s() - t0;
        c->calls++;
    }
    atomic_fetch_add(&done, 1);
    return NULL;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: bench_callers MODEL N_THREADS CALLERS SECONDS\n");
        return 2;
    }
    const char *path = argv[1];
    int n_threads = atoi(argv[2]), callers = atoi(argv[3]);
    double seconds = atof(argv[4]);
    if (callers < 1 || seconds <= 0) return 2;
    cg_load_options options = cg_default_load_options();
    options.n_threads = n_threads;
    cg_model *model = NULL;
    if (cg_model_load_with_options(path, &options, &model) != CG_OK) {
        fprintf(stderr, "cannot load %s: %s\n", path, cg_last_error());
        return 1;
    }
    int32_t width = 0, height = 0;
    cg_model_input_size(model, &width, &height);
    size_t classes = cg_model_class_count(model), count = (size_t)width * height * 3;
    if (classes > 4096) return 1;
    float *input = malloc(count * sizeof(float));
    srand(7);
    for (size_t i = 0; i < count; i++) input[i] = (float)rand() / RAND_MAX * 2 - 1;
    float warm[4096];
    for (int i = 0; i < 3; i++) cg_run_tensor(model, input, count, 1, warm, classes); /* contexts, pages */

    caller *c = calloc((size_t)callers, sizeof(caller));
    pthread_t *threads = calloc((size_t)callers, sizeof(pthread_t));
    long capacity = (long)(seconds * 2000) + 16;
    double start = now_s() + 0.05;
    for (int i = 0; i < callers; i++) {
        c[i] = (caller){model, input, count, classes, start + seconds, 0, malloc((size_t)capacity * sizeof(double)), capacity, 0};
        pthread_create(&threads[i], NULL, run_caller, &c[i]);
    }
    while (now_s() < start) usleep(100);
    atomic_store(&go, 1);
    int peak = 0;
    while (atomic_load(&done) < callers) {
        int t = process_threads();
        if (t > peak) peak = t;
        usleep(1000);
    }
    double elapsed = now_s() - start;
    long total = 0, kept = 0;
    int failed = 0;
    for (int i = 0; i < callers; i++) {
        pthread_join(threads[i], NULL);
        total += c[i].calls;
        failed |= c[i].failed;
    }
    double *all = malloc((size_t)(total > 0 ? total : 1) * sizeof(double));
    for (int i = 0; i < callers; i++)
        for (long k = 0; k < c[i].calls && k < c[i].capacity; k++) all[kept++] = c[i].latencies[k];
    qsort(all, (size_t)kept, sizeof(double), compare);
    /* peak_threads counts the whole process (main thread, callers, library); library_threads is
     * what the library added beyond them. */
    printf("callers=%d n_threads=%d inferences_per_s=%.1f p50_ms=%.3f p99_ms=%.3f peak_threads=%d library_threads=%d\n",
           callers, n_threads, total / elapsed, kept ? all[kept / 2] * 1e3 : 0, kept ? all[(kept * 99) / 100] * 1e3 : 0,
           peak, peak - 1 - callers);
    cg_model_free(model);
    return failed;
}
