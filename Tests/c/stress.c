/* stress.c - CoverGenre's C API under load: many threads sharing one model, load/free cycles.
 *
 *   stress threads MODEL COVER_DIR CALLERS TOTAL N_THREADS [MAX_GROWTH_KIB]  -> TOTAL classifications
 *        on CALLERS threads sharing one model loaded with n_threads = N_THREADS (0 = every core),
 *        each compared bit for bit with a run of the same cover by a model loaded with n_threads = 1;
 *        fails on any error or mismatch, when the process ever holds more threads than it had before
 *        loading plus the callers plus the model's n_threads - 1 workers, and on RSS growth after
 *        warm-up beyond MAX_GROWTH_KIB (default 8192; 0 skips the check, e.g. under
 *        AddressSanitizer's quarantine)
 *   stress cycles MODEL IMAGE N                    -> N times: load, classify, free (valgrind, ASan)
 *   stress hostile MODEL                           -> bad arguments and inputs, each an error status
 * Exit status 0 only when every check passed.
 */
#include <covergenre.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define MAX_COVERS 512

static char *covers[MAX_COVERS];
static float *expected[MAX_COVERS];
static size_t cover_count, class_count;
static cg_model *model;
static int total_per_thread;
static long errors, mismatches;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static long status_field(const char *name) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long value = -1;
    size_t length = strlen(name);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, name, length) == 0) value = atol(line + length);
    if (f) fclose(f);
    return value;
}

static long rss_kib(void) { return status_field("VmRSS:"); }

/* The most threads the process held at once, sampled by every caller after each call. */
static long peak_threads;

static void sample_threads(void) {
    long now = status_field("Threads:");
    pthread_mutex_lock(&lock);
    if (now > peak_threads) peak_threads = now;
    pthread_mutex_unlock(&lock);
}

static void *worker(void *arg) {
    long index = (long)arg, local_errors = 0, local_mismatches = 0;
    float *p = malloc(class_count * sizeof(float));
    for (int i = 0; i < total_per_thread; i++) {
        size_t c = (size_t)(index * 7919 + i) % cover_count;
        if (cg_probabilities_file(model, covers[c], p, class_count) != CG_OK) {
            local_errors++;
            continue;
        }
        if (memcmp(p, expected[c], class_count * sizeof(float)) != 0) local_mismatches++;
        if (i % 8 == 0) sample_threads();
    }
    free(p);
    pthread_mutex_lock(&lock);
    errors += local_errors;
    mismatches += local_mismatches;
    pthread_mutex_unlock(&lock);
    return NULL;
}

static cg_model *load_with_threads(const char *path, int n_threads) {
    cg_load_options options = cg_default_load_options();
    options.n_threads = n_threads;
    cg_model *m = NULL;
    if (cg_model_load_with_options(path, &options, &m) != CG_OK) {
        fprintf(stderr, "load %s: %s\n", path, cg_last_error());
        exit(1);
    }
    return m;
}

static cg_model *load_single_threaded(const char *path) { return load_with_threads(path, 1); }

static int run_threads(const char *path, const char *dir, int threads, int total, int n_threads, long max_growth) {
    if (threads < 1 || threads > 64) return 2;
    /* Threads before any model exists (main, and OpenBLAS's own, which it starts when loaded). */
    long baseline_threads = status_field("Threads:");
    DIR *d = opendir(dir);
    if (!d) { perror(dir); return 1; }
    for (struct dirent *e; (e = readdir(d)) && cover_count < MAX_COVERS;) {
        if (e->d_name[0] == '.') continue;
        covers[cover_count] = malloc(strlen(dir) + strlen(e->d_name) + 2);
        sprintf(covers[cover_count++], "%s/%s", dir, e->d_name);
    }
    closedir(d);
    cg_model *reference = load_single_threaded(path);
    class_count = cg_model_class_count(reference);
    for (size_t c = 0; c < cover_count; c++) {
        expected[c] = malloc(class_count * sizeof(float));
        if (cg_probabilities_file(reference, covers[c], expected[c], class_count) != CG_OK) {
            fprintf(stderr, "%s: %s\n", covers[c], cg_last_error());
            return 1;
        }
    }
    cg_model_free(reference);
    model = load_with_threads(path, n_threads);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    long workers = (n_threads > 0 ? n_threads : cores) - 1;
    long allowed_threads = baseline_threads + threads + workers;
    total_per_thread = total / threads;
    /* Warm-up round: every thread's execution context exists afterwards. */
    int saved = total_per_thread;
    total_per_thread = 10;
    pthread_t ids[64];
    for (long t = 0; t < threads; t++) pthread_create(&ids[t], NULL, worker, (void *)t);
    for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
    long before = rss_kib();
    total_per_thread = saved;
    for (long t = 0; t < threads; t++) pthread_create(&ids[t], NULL, worker, (void *)t);
    for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
    long after = rss_kib();
    printf("stress covers=%zu callers=%d n_threads=%d classified=%d errors=%ld mismatches=%ld peak_threads=%ld "
           "allowed_threads=%ld rss_before_kib=%ld rss_after_kib=%ld growth_kib=%ld\n",
           cover_count, threads, n_threads, total_per_thread * threads, errors, mismatches, peak_threads, allowed_threads,
           before, after, after - before);
    cg_model_free(model);
    for (size_t c = 0; c < cover_count; c++) { free(covers[c]); free(expected[c]); }
    /* Growth beyond a few MiB after warm-up would be a leak (each call allocates only transiently). */
    return errors == 0 && mismatches == 0 && peak_threads <= allowed_threads &&
                   (max_growth == 0 || after - before <= max_growth) ? 0 : 1;
}

static int run_cycles(const char *path, const char *image, int n) {
    for (int i = 0; i < n; i++) {
        cg_model *m = load_single_threaded(path);
        cg_prediction top[3];
        size_t count = 0;
        if (cg_classify_file(m, image, 3, top, &count) != CG_OK || count == 0) {
            fprintf(stderr, "classify: %s\n", cg_last_error());
            return 1;
        }
        cg_model_free(m);
    }
    printf("cycles %d ok\n", n);
    return 0;
}

#define EXPECT(call, status) do { \
    cg_status s_ = (call); \
    if (s_ != (status)) { fprintf(stderr, "%s: got %s, expected %s\n", #call, cg_status_string(s_), cg_status_string(status)); failures++; } \
    else if (s_ != CG_OK && cg_last_error()[0] == 0) { fprintf(stderr, "%s: no message\n", #call); failures++; } \
} while (0)

static int run_hostile(const char *path) {
    int failures = 0;
    cg_model *m = NULL, *m2 = NULL;
    cg_prediction top[3];
    size_t count = 0;
    float probabilities[64];
    unsigned char junk[64] = {0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3};
    EXPECT(cg_model_load(NULL, &m), CG_ERR_INVALID_ARGUMENT);
    EXPECT(cg_model_load(path, NULL), CG_ERR_INVALID_ARGUMENT);
    EXPECT(cg_model_load("/nonexistent/model.cgm", &m), CG_ERR_IO);
    EXPECT(cg_model_load_memory(junk, sizeof junk, &m), CG_ERR_MODEL_FORMAT);
    if (m != NULL) { fprintf(stderr, "failed load left a model\n"); failures++; }
    EXPECT(cg_model_load(path, &m), CG_OK);
    EXPECT(cg_classify_file(NULL, "x.jpg", 3, top, &count), CG_ERR_INVALID_ARGUMENT);
    EXPECT(cg_classify_file(m, NULL, 3, top, &count), CG_ERR_INVALID_ARGUMENT);
    EXPECT(cg_classify_file(m, "x.jpg", 0, top, &count), CG_ERR_INVALID_ARGUMENT);
    EXPECT(cg_classify_image(m, junk, sizeof junk, 3, top, &count), CG_ERR_IMAGE_DECODE);
    EXPECT(cg_classify_image(m, junk, 0, 3, top, &count), CG_ERR_IMAGE_UNSUPPORTED);
    EXPECT(cg_classify_rgb(m, junk, 4, 4, 5, 3, top, &count), CG_ERR_INVALID_ARGUMENT);      /* stride < 3 * width */
    EXPECT(cg_classify_rgb(m, junk, 0, 4, 12, 3, top, &count), CG_ERR_INVALID_ARGUMENT);
    EXPECT(cg_classify_rgb(m, junk, 100000, 100000, 300000, 3, top, &count), CG_ERR_IMAGE_TOO_LARGE);
    /* A buffer one float short is refused and left untouched. */
    for (int i = 0; i < 64; i++) probabilities[i] = -1;
    size_t classes = cg_model_class_count(m);
    EXPECT(cg_probabilities_rgb(m, junk, 4, 4, 12, probabilities, classes - 1), CG_ERR_BUFFER_TOO_SMALL);
    for (int i = 0; i < 64; i++)
        if (probabilities[i] != -1) { fprintf(stderr, "buffer written after refusal\n"); failures++; break; }
    if (cg_model_label(m, classes) != NULL) { fprintf(stderr, "label past the end\n"); failures++; }
    if (cg_model_label(m, SIZE_MAX) != NULL) { fprintf(stderr, "label at SIZE_MAX\n"); failures++; }

    /* Sizes whose products overflow, and sizes no buffer can have: refused, nothing written. */
    float guard_floats[16];
    cg_item_status items[4];
    const char *paths[4] = {path, NULL, "/nonexistent/cover.jpg", path};
    for (int i = 0; i < 16; i++) guard_floats[i] = -1;
    EXPECT(cg_probabilities_files(m, paths, SIZE_MAX / 2, 0, guard_floats, 16, items, 4), CG_ERR_INVALID_ARGUMENT);
    EXPECT(cg_embed_files(m, paths, SIZE_MAX / 2, 0, guard_floats, 16, items, 4), CG_ERR_INVALID_ARGUMENT);
    EXPECT(cg_classify_files(m, paths, SIZE_MAX / 4, 8, 0, top, 3, items, 4), CG_ERR_INVALID_ARGUMENT);
    EXPECT(cg_classify_files(m, paths, 4, SIZE_MAX, 0, top, 3, items, 4), CG_ERR_INVALID_ARGUMENT);
    EXPECT(cg_classify_file(m, "x.jpg", SIZE_MAX, top, &count), CG_ERR_INVALID_ARGUMENT);
    if (strstr(cg_last_error(), "top_k") == NULL) { fprintf(stderr, "top_k overflow message: %s\n", cg_last_error()); failures++; }
    EXPECT(cg_classify_image(m, junk, SIZE_MAX, 3, top, &count), CG_ERR_INVALID_ARGUMENT);
    EXPECT(cg_probabilities_image(m, junk, SIZE_MAX - 7, probabilities, 64), CG_ERR_INVALID_ARGUMENT);
    EXPECT(cg_classify_rgb(m, junk, 4, 4, SIZE_MAX, 3, top, &count), CG_ERR_INVALID_ARGUMENT);
    EXPECT(cg_classify_rgb(m, junk, 4, 1 << 20, SIZE_MAX / 8, 3, top, &count), CG_ERR_INVALID_ARGUMENT);
    EXPECT(cg_run_tensor(m, guard_floats, 16, SIZE_MAX, guard_floats, 16), CG_ERR_INVALID_ARGUMENT);
    EXPECT(cg_run_tensor(m, guard_floats, 16, 1, guard_floats, 16), CG_ERR_INVALID_ARGUMENT); /* input too short */
    EXPECT(cg_model_load_memory(junk, SIZE_MAX, &m2), CG_ERR_INVALID_ARGUMENT);
    /* Capacities one short: refused before anything is written. */
    EXPECT(cg_probabilities_files(m, paths, 4, 0, guard_floats, 4 * classes - 1, items, 4), CG_ERR_BUFFER_TOO_SMALL);
    EXPECT(cg_probabilities_files(m, paths, 4, 0, guard_floats, 16, items, 3), CG_ERR_BUFFER_TOO_SMALL);
    EXPECT(cg_classify_files(m, paths, 4, 2, 0, top, 7, items, 4), CG_ERR_BUFFER_TOO_SMALL);
    for (int i = 0; i < 16; i++)
        if (guard_floats[i] != -1) { fprintf(stderr, "batch output written after refusal\n"); failures++; break; }
    /* One bad path or image fails only its own item, with the library's message for it. */
    if (cg_model_embedding_size(m) * 4 <= 64) {
        float embeddings[64];
        EXPECT(cg_embed_files(m, paths, 4, 2, embeddings, 64, items, 4), CG_OK);
    }
    cg_prediction batch_top[8];
    EXPECT(cg_classify_files(m, paths, 4, 2, 2, batch_top, 8, items, 4), CG_OK);
    if (items[0].status != CG_ERR_IMAGE_UNSUPPORTED && items[0].status != CG_ERR_IMAGE_DECODE) {
        fprintf(stderr, "a model file classified as an image: %s\n", cg_status_string(items[0].status)); failures++;
    }
    if (items[1].status != CG_ERR_INVALID_ARGUMENT || strstr(items[1].message, "paths[1]") == NULL) {
        fprintf(stderr, "NULL path: %s %s\n", cg_status_string(items[1].status), items[1].message); failures++;
    }
    if (items[2].status != CG_ERR_IO || strstr(items[2].message, "/nonexistent/cover.jpg") == NULL) {
        fprintf(stderr, "missing file: %s %s\n", cg_status_string(items[2].status), items[2].message); failures++;
    }
    if (items[0].message[0] == 0 || batch_top[2].label != NULL) { fprintf(stderr, "failed item has no message or predictions\n"); failures++; }
    cg_model_free(m);
    cg_model_free(NULL);
    printf("hostile %s\n", failures ? "FAILED" : "ok");
    return failures != 0;
}

int main(int argc, char **argv) {
    if ((argc == 7 || argc == 8) && strcmp(argv[1], "threads") == 0)
        return run_threads(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]), atoi(argv[6]), argc == 8 ? atol(argv[7]) : 8192);
    if (argc == 5 && strcmp(argv[1], "cycles") == 0) return run_cycles(argv[2], argv[3], atoi(argv[4]));
    if (argc == 3 && strcmp(argv[1], "hostile") == 0) return run_hostile(argv[2]);
    fprintf(stderr, "usage: see the comment at the top of stress.c\n");
    return 2;
}
