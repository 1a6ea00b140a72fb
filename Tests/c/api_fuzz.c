/* api_fuzz.c - the C API under random calls: sizes, counts, capacities, top_k, strides and thread
 * counts drawn from edge values (0, 1, the exact need, one short, SIZE_MAX, SIZE_MAX / 2, ...) and
 * at random, on output buffers that end at a page the process cannot touch, so any write past a
 * capacity the caller gave faults at once.
 *
 *   api_fuzz MODEL IMAGE_DIR ITERATIONS SEED
 *
 * Built against the AddressSanitizer library by Tests/c/run.sh (fixed seed and count in CI) and
 * run for longer by fuzz/run.sh. Every call must return a known status, with a message when it is
 * not CG_OK; outputs must lie within what the call may write. Capacities passed are always true
 * (the buffer has that many elements); counts and sizes that no buffer could satisfy are passed
 * with small real arrays, as the library must refuse them before reading or writing anything.
 * Exit status 1 on the first violation, with the seed and iteration to replay it.
 */
#include <covergenre.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static uint64_t state;
static uint64_t next(void) { /* xorshift64* */
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 2685821657736338717ull;
}
static size_t below(size_t n) { return n ? (size_t)(next() % n) : 0; }

/* A size: an edge value around `need`, or any 64-bit value. */
static size_t size_around(size_t need) {
    switch (below(10)) {
    case 0: return 0;
    case 1: return 1;
    case 2: return need;
    case 3: return need ? need - 1 : 0;
    case 4: return need + 1;
    case 5: return SIZE_MAX;
    case 6: return SIZE_MAX / 2 + below(3);
    case 7: return (size_t)next();
    case 8: return (size_t)1 << below(64);
    default: return below(2 * need + 8);
    }
}

/* A buffer of `bytes` that ends where an inaccessible page begins. */
typedef struct {
    void *map;
    size_t map_bytes;
    void *data;
} guarded;

static guarded guarded_alloc(size_t bytes) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages = (bytes + page - 1) / page + 1;
    guarded g = {0};
    g.map_bytes = pages * page;
    g.map = mmap(NULL, g.map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g.map == MAP_FAILED) { perror("mmap"); exit(2); }
    char *guard = (char *)g.map + (pages - 1) * page;
    mprotect(guard, page, PROT_NONE);
    g.data = guard - bytes;
    memset((char *)g.map, 0xA5, (pages - 1) * page);
    return g;
}

static void guarded_free(guarded g) { munmap(g.map, g.map_bytes); }

static long iteration;
static unsigned long long seed;

static void fail(const char *what, cg_status s) {
    fprintf(stderr, "api_fuzz: seed %llu iteration %ld: %s (status %s, message \"%s\")\n", seed, iteration, what,
            cg_status_string(s), cg_last_error());
    exit(1);
}

static void check_status(cg_status s) {
    if (s > CG_ERR_LIMIT_EXCEEDED) fail("unknown status", s);
    if (s != CG_OK && cg_last_error()[0] == 0) fail("failure without a message", s);
}

#define MAX_IMAGES 32
static char *images[MAX_IMAGES];
static size_t image_count;

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: api_fuzz MODEL IMAGE_DIR ITERATIONS SEED\n");
        return 2;
    }
    long iterations = atol(argv[3]);
    seed = strtoull(argv[4], NULL, 10);
    state = seed * 0x9E3779B97F4A7C15ull + 1;
    DIR *d = opendir(argv[2]);
    if (!d) { perror(argv[2]); return 2; }
    for (struct dirent *e; (e = readdir(d)) && image_count < MAX_IMAGES - 2;) {
        if (e->d_name[0] == '.') continue;
        images[image_count] = malloc(strlen(argv[2]) + strlen(e->d_name) + 2);
        sprintf(images[image_count++], "%s/%s", argv[2], e->d_name);
    }
    closedir(d);
    images[image_count++] = argv[1];                    /* not an image */
    images[image_count++] = "/nonexistent/cover.jpg";  /* not a file */

    cg_load_options options = cg_default_load_options();
    options.max_image_pixels = 1 << 16; /* larger rgb images must be refused before they are read */
    options.max_image_width = 1024;
    options.max_image_height = 1024;
    options.n_threads = 2;
    cg_model *model = NULL;
    cg_status s = cg_model_load_with_options(argv[1], &options, &model);
    if (s != CG_OK) fail("cannot load the model", s);
    const size_t classes = cg_model_class_count(model), embedding = cg_model_embedding_size(model);
    int32_t width = 0, height = 0;
    cg_model_input_size(model, &width, &height);
    const size_t input_floats = (size_t)width * height * 3;
    long ok = 0, refused = 0;

    for (iteration = 0; iteration < iterations; iteration++) {
        const int function = (int)below(9);
        const int32_t threads_choices[] = {-5, 0, 1, 2, 3, 64, INT32_MAX};
        const int32_t n_threads = threads_choices[below(7)];
        /* Up to 64 real paths; a larger count always comes with fewer than `count` items of
         * capacity, so the library must refuse it before reading any path. */
        size_t count = below(4) ? below(6) : size_around(4);
        const char *paths[64];
        for (size_t i = 0; i < 64; i++) paths[i] = below(8) ? images[below(image_count)] : NULL;
        size_t top_k = below(3) ? 1 + below(classes + 2) : size_around(classes);
        /* Output capacity: true, drawn around what the call needs, at most 64 Ki elements. */
        size_t need = function <= 2 ? count * (function == 0 ? top_k : function == 1 ? classes : embedding) : classes;
        size_t capacity = size_around(need);
        if (capacity > 65536) capacity = below(65536);
        size_t items_capacity = below(4) ? count : size_around(count);
        if (items_capacity > 64) items_capacity = below(64);
        if (count > 64 && items_capacity >= count) items_capacity = 0;
        cg_status status;
        switch (function) {
        case 0: { /* cg_classify_files */
            guarded out = guarded_alloc(capacity * sizeof(cg_prediction));
            guarded items = guarded_alloc(items_capacity * sizeof(cg_item_status));
            status = cg_classify_files(model, paths, count, top_k, n_threads, out.data, capacity,
                                       items.data, items_capacity);
            if (status == CG_OK) {
                cg_item_status *it = items.data;
                for (size_t i = 0; i < count; i++) {
                    if (it[i].status > CG_ERR_LIMIT_EXCEEDED) fail("item status unknown", it[i].status);
                    if (it[i].status != CG_OK && it[i].message[0] == 0) fail("failed item without a message", it[i].status);
                    if (memchr(it[i].message, 0, CG_ITEM_MESSAGE_SIZE) == NULL) fail("item message not terminated", status);
                }
            }
            guarded_free(out);
            guarded_free(items);
            break;
        }
        case 1:   /* cg_probabilities_files */
        case 2: { /* cg_embed_files */
            guarded out = guarded_alloc(capacity * sizeof(float));
            guarded items = guarded_alloc(items_capacity * sizeof(cg_item_status));
            status = (function == 1 ? cg_probabilities_files : cg_embed_files)(model, paths, count, n_threads, out.data,
                                                                               capacity, items.data, items_capacity);
            guarded_free(out);
            guarded_free(items);
            break;
        }
        case 3: { /* cg_classify_file: the buffer holds top_k entries, or all classes when top_k is
                   * larger, as the library writes only min(top_k, classes) */
            size_t entries = top_k < classes ? top_k : classes;
            guarded out = guarded_alloc(entries * sizeof(cg_prediction));
            size_t n = 12345;
            status = cg_classify_file(model, images[below(image_count)], top_k, out.data, &n);
            if (status == CG_OK && n > entries) fail("out_count beyond min(top_k, classes)", status);
            guarded_free(out);
            break;
        }
        case 4: { /* cg_classify_image on random or real bytes */
            size_t bytes = below(2048);
            guarded data = guarded_alloc(bytes);
            for (size_t i = 0; i < bytes; i++) ((unsigned char *)data.data)[i] = (unsigned char)next();
            if (bytes >= 3) memcpy(data.data, below(2) ? "\xFF\xD8\xFF" : "\x89PN", 3);
            size_t k = 1 + below(classes + 1);
            guarded out = guarded_alloc(k * sizeof(cg_prediction));
            size_t n = 0;
            size_t claimed = below(8) ? bytes : size_around(bytes);
            if (claimed > bytes && claimed <= (size_t)INTPTR_MAX) claimed = bytes; /* a lie the library cannot see */
            status = cg_classify_image(model, data.data, claimed, k, out.data, &n);
            guarded_free(out);
            guarded_free(data);
            break;
        }
        case 5: { /* cg_probabilities_rgb with random geometry */
            int32_t w = (int32_t)(below(3) ? below(300) : next()), h = (int32_t)(below(3) ? below(300) : next());
            size_t stride = below(2) ? (size_t)(w > 0 ? w : 1) * 3 : size_around((size_t)(w > 0 ? w : 1) * 3);
            /* Geometry the library accepts must come with stride x height readable bytes. */
            int acceptable = w > 0 && h > 0 && w <= 1024 && h <= 1024 && (size_t)w * (size_t)h <= (1 << 16) &&
                             stride >= (size_t)w * 3;
            if (acceptable && stride > ((size_t)1 << 16)) stride = (size_t)w * 3;
            size_t readable = acceptable ? stride * (size_t)h : 64;
            guarded pixels = guarded_alloc(readable);
            guarded out = guarded_alloc(capacity * sizeof(float));
            status = cg_probabilities_rgb(model, pixels.data, w, h, stride, out.data, capacity);
            if (status == CG_OK && !acceptable) fail("accepted impossible geometry", status);
            guarded_free(out);
            guarded_free(pixels);
            break;
        }
        case 6: { /* cg_run_tensor */
            size_t batch = below(3) ? 1 + below(3) : size_around(3);
            size_t floats = batch <= 3 ? batch * input_floats : input_floats;
            if (below(4) == 0 && floats > 0) floats -= 1 + below(floats); /* an input one or more floats short */
            guarded input = guarded_alloc(floats * sizeof(float));
            memset(input.data, 0, floats * sizeof(float));
            guarded out = guarded_alloc(capacity * sizeof(float));
            size_t count = below(8) ? floats : size_around(floats);
            /* A count beyond the buffer but within what a buffer could be is a lie the library cannot
             * see; beyond SSIZE_MAX it must refuse. */
            if (count > floats && count <= (size_t)INTPTR_MAX) count = floats;
            status = cg_run_tensor(model, below(16) ? input.data : NULL, count, batch, out.data, capacity);
            if (status == CG_OK && batch * input_floats > floats) fail("ran a batch larger than its input", status);
            guarded_free(out);
            guarded_free(input);
            break;
        }
        case 7: { /* cg_embed_file and cg_probabilities_file */
            guarded out = guarded_alloc(capacity * sizeof(float));
            status = below(2) ? cg_embed_file(model, images[below(image_count)], out.data, capacity)
                              : cg_probabilities_file(model, images[below(image_count)], out.data, capacity);
            guarded_free(out);
            break;
        }
        default: { /* describing calls with edge indices */
            size_t index = size_around(classes);
            const char *label = cg_model_label(model, index);
            if ((label != NULL) != (index < classes)) fail("label for an index out of range", CG_OK);
            status = cg_model_input_size(below(4) ? model : NULL, &width, &height);
            break;
        }
        }
        check_status(status);
        if (status == CG_OK) ok++;
        else refused++;
    }
    cg_model_free(model);
    for (size_t i = 0; i + 2 < image_count; i++) free(images[i]);
    printf("api_fuzz: seed %llu, %ld calls: %ld succeeded, %ld refused with a status and a message\n", seed, iterations, ok,
           refused);
    return 0;
}
