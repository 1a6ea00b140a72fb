/* bench_infer.c - latency, throughput, load time and memory of libcovergenre, driven by bench/run.sh.
 *
 *   bench_infer latency MODEL THREADS BATCH RUNS      -> median/p90 ms of cg_run_tensor on random input
 *   bench_infer end-to-end MODEL THREADS IMAGE RUNS   -> median/p90 ms of cg_classify_file (decode+resize+infer)
 *   bench_infer throughput MODEL THREADS DIR          -> covers/s of cg_classify_files over every file in DIR
 *   bench_infer load MODEL RUNS                       -> ms of the first cg_model_load, median of RUNS more
 *   bench_infer rss MODEL THREADS                     -> peak RSS (KiB) before and after 20 classifications
 * Output: one line of key=value pairs, parsed by bench/bench.py; timed lines end with variant=,
 * the kernel variant that ran (COVERGENRE_ISA can ask for a lower one than the CPU's best).
 */
#include <covergenre.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(const char *what, double *times, int runs) {
    qsort(times, runs, sizeof(double), compare);
    printf("%s median_ms=%.4f p90_ms=%.4f min_ms=%.4f runs=%d variant=%s\n", what, times[runs / 2], times[(runs * 9) / 10],
           times[0], runs, cg_kernel_variant());
}

static cg_model *load(const char *path, int threads) {
    cg_load_options options = cg_default_load_options();
    options.n_threads = threads;
    cg_model *model = NULL;
    if (cg_model_load_with_options(path, &options, &model) != CG_OK) {
        fprintf(stderr, "cannot load %s: %s\n", path, cg_last_error());
        exit(1);
    }
    return model;
}

static long peak_rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0) kib = atol(line + 6);
    if (f) fclose(f);
    return kib;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: see the comment at the top of bench_infer.c\n");
        return 2;
    }
    const char *mode = argv[1], *path = argv[2];
    if (strcmp(mode, "latency") == 0 && argc == 6) {
        int threads = atoi(argv[3]), batch = atoi(argv[4]), runs = atoi(argv[5]);
        cg_model *model = load(path, threads);
        int32_t w, h;
        cg_model_input_size(model, &w, &h);
        size_t n = (size_t)batch * w * h * 3, classes = cg_model_class_count(model);
        float *input = malloc(n * sizeof(float)), *logits = malloc((size_t)batch * classes * sizeof(float));
        srand(1);
        for (size_t i = 0; i < n; i++) input[i] = (float)rand() / RAND_MAX * 2 - 1;
        for (int i = 0; i < 5; i++) cg_run_tensor(model, input, n, batch, logits, batch * classes); /* warm-up */
        double *times = malloc(runs * sizeof(double));
        for (int i = 0; i < runs; i++) {
            double t = now_ms();
            if (cg_run_tensor(model, input, n, batch, logits, batch * classes) != CG_OK) { fprintf(stderr, "%s\n", cg_last_error()); return 1; }
            times[i] = now_ms() - t;
        }
        report("latency", times, runs);
        cg_model_free(model);
        return 0;
    }
    if (strcmp(mode, "end-to-end") == 0 && argc == 6) {
        int threads = atoi(argv[3]), runs = atoi(argv[5]);
        cg_model *model = load(path, threads);
        cg_prediction top[3];
        size_t count;
        for (int i = 0; i < 5; i++) cg_classify_file(model, argv[4], 3, top, &count);
        double *times = malloc(runs * sizeof(double));
        for (int i = 0; i < runs; i++) {
            double t = now_ms();
            if (cg_classify_file(model, argv[4], 3, top, &count) != CG_OK) { fprintf(stderr, "%s\n", cg_last_error()); return 1; }
            times[i] = now_ms() - t;
        }
        report("end_to_end", times, runs);
        cg_model_free(model);
        return 0;
    }
    if (strcmp(mode, "throughput") == 0 && argc == 5) {
        int threads = atoi(argv[3]);
        cg_model *model = load(path, threads);
        DIR *dir = opendir(argv[4]);
        if (!dir) { perror(argv[4]); return 1; }
        char **paths = NULL;
        size_t count = 0;
        for (struct dirent *e; (e = readdir(dir));) {
            if (e->d_name[0] == '.') continue;
            paths = realloc(paths, (count + 1) * sizeof(char *));
            paths[count] = malloc(strlen(argv[4]) + strlen(e->d_name) + 2);
            sprintf(paths[count], "%s/%s", argv[4], e->d_name);
            count++;
        }
        closedir(dir);
        cg_prediction *out = malloc(count * 3 * sizeof(cg_prediction));
        cg_item_status *items = malloc(count * sizeof(cg_item_status));
        size_t warm = count < 20 ? count : 20;
        cg_classify_files(model, (const char *const *)paths, warm, 3, threads, out, warm * 3, items, warm); /* warm-up */
        double t = now_ms();
        cg_classify_files(model, (const char *const *)paths, count, 3, threads, out, count * 3, items, count);
        double ms = now_ms() - t;
        size_t failed = 0;
        for (size_t i = 0; i < count; i++) failed += items[i].status != CG_OK;
        printf("throughput covers=%zu failed=%zu seconds=%.3f covers_per_second=%.2f\n", count, failed, ms / 1e3, count / (ms / 1e3));
        cg_model_free(model);
        return 0;
    }
    if (strcmp(mode, "load") == 0 && argc == 4) {
        int runs = atoi(argv[3]);
        double *times = malloc(runs * sizeof(double)), first = 0;
        for (int i = 0; i < runs + 3; i++) {
            double t = now_ms();
            cg_model *model = load(path, 0);
            double ms = now_ms() - t;
            cg_model_free(model);
            if (i == 0) first = ms;
            if (i >= 3) times[i - 3] = ms;
        }
        qsort(times, runs, sizeof(double), compare);
        printf("load first_ms=%.4f median_ms=%.4f p90_ms=%.4f min_ms=%.4f runs=%d\n", first, times[runs / 2], times[(runs * 9) / 10],
               times[0], runs);
        return 0;
    }
    if (strcmp(mode, "rss") == 0 && argc == 5) {
        long before = peak_rss_kib();
        cg_model *model = load(path, atoi(argv[3]));
        cg_prediction top[3];
        size_t count;
        for (int i = 0; i < 20; i++)
            if (cg_classify_file(model, argv[4], 3, top, &count) != CG_OK) { fprintf(stderr, "%s\n", cg_last_error()); return 1; }
        long after = peak_rss_kib();
        printf("rss baseline_kib=%ld peak_kib=%ld growth_kib=%ld\n", before, after, after - before);
        cg_model_free(model);
        return 0;
    }
    fprintf(stderr, "unknown mode or wrong arguments: %s\n", mode);
    return 2;
}
