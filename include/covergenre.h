/*
 * covergenre.h - CoverGenre's C API: predict an album's genre from its cover art.
 *
 * Read top to bottom, this header is the manual. The library is one shared object,
 * libcovergenre.so, with the Swift runtime linked in statically: link with -lcovergenre
 * (pkg-config --cflags --libs covergenre) and nothing else.
 *
 *   cg_model *model = NULL;
 *   if (cg_model_load("models/covergenre-default.cgm", &model) != CG_OK) {
 *       fprintf(stderr, "%s\n", cg_last_error());
 *       return 1;
 *   }
 *   cg_prediction top[3];
 *   size_t n = 0;
 *   if (cg_classify_file(model, "cover.jpg", 3, top, &n) == CG_OK)
 *       for (size_t i = 0; i < n; i++) printf("%s %.3f\n", top[i].label, top[i].probability);
 *   cg_model_free(model);
 *
 * Conventions
 * - Every fallible function returns a cg_status; CG_OK is 0. On failure, cg_last_error() gives a
 *   sentence for a human, kept per thread until that thread's next failure.
 * - The library never prints, never exits, never aborts on bad input (images, model files,
 *   arguments), and never writes past a buffer whose size the caller passed. Every output array
 *   comes with its capacity; sizes are size_t and checked as such: a count whose product with
 *   another overflows, or a size no buffer can have, is CG_ERR_INVALID_ARGUMENT naming the argument.
 * - A model file is untrusted input: its checksum proves only that it was not damaged. Every graph
 *   is validated (each attribute in range, every product of them checked) before anything is
 *   computed from it; a hostile one is CG_ERR_MODEL_FORMAT naming the node and the attribute.
 * - Strings returned by the library are owned by it. Those from a model (labels, name, metadata)
 *   live until cg_model_free; the rest live for the process.
 * - A loaded model is immutable: any number of threads may call any function taking a
 *   `const cg_model *` at the same time. Only cg_model_free needs exclusive access.
 * - Threads: a model owns n_threads - 1 worker threads (load option; 0 = every core), started at
 *   load, shared by every call into that model and stopped by cg_model_free. The calling thread
 *   works too, so a model never adds more than n_threads - 1 threads to the process, however many
 *   threads call it. A call takes the workers that are idle when it reaches a parallel step and
 *   runs the rest itself: overlapping calls share the workers instead of waiting for each other,
 *   and with as many callers as cores each call simply runs on its own thread. Idle workers sleep,
 *   so a loaded model that nobody calls uses no CPU. Batch calls give each thread whole images.
 *   The library keeps OpenBLAS single-threaded (its process-wide setting, applied on first use) so
 *   that its pool and CoverGenre's never oversubscribe the CPU; OpenBLAS may still hold the idle
 *   threads it started when it was loaded.
 * - Determinism: an image's results (logits, probabilities, embeddings) are bit-identical whatever
 *   n_threads is, and whether the image runs alone, in a batch call or while other calls overlap.
 * - Images: JPEG (baseline, progressive, gray, CMYK, EXIF orientation applied), PNG (every bit
 *   depth and colour type, interlaced; alpha is dropped) and still WebP, recognised by content.
 *   A file, or encoded bytes, that are audio (MP3, FLAC, MP4/M4A, Ogg Vorbis/Opus, WAV, AIFF;
 *   recognised by content) stand for the embedded front cover (picture type 3, else its first picture), read with
 *   TagLib and then decoded under the same limits as an image file (max_image_bytes applies to
 *   the picture); an audio file without a picture is CG_ERR_NO_COVER.
 */
#ifndef COVERGENRE_H
#define COVERGENRE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Version ------------------------------------------------------------------------------ */

#define CG_API_VERSION_MAJOR 2
#define CG_API_VERSION_MINOR 3
#define CG_API_VERSION_PATCH 0
/* MAJOR * 10000 + MINOR * 100 + PATCH. A header and library with the same MAJOR are compatible.
 * These three macros are CoverGenre's one version number: the library (cg_version_string), the
 * command-line tools (--version), pkg-config, the SONAME (libcovergenre.so.MAJOR) and the Python
 * package all report this version. It is semantic versioning of the C API, the strictest promise
 * the project makes; releases before 2.2.0 also carried a separate 0.x product number, now gone.
 *
 * Changes
 * - 2.3.0: every *_file and *_image call (and the batch *_files calls) also takes an audio file
 *   or its bytes (MP3, FLAC, MP4/M4A, Ogg Vorbis/Opus, WAV, AIFF) and classifies its embedded
 *   front cover;
 *   CG_ERR_NO_COVER and CG_ERR_AUDIO_DECODE are new; cg_library_* list a music library's albums.
 *   Built against 2.2: nothing to change.
 * - 2.2.0: cg_kernel_variant is new.
 * - 2.1.0: cg_load_options gains mirror_view (at its end: a 2.0 caller's struct_size leaves it at
 *   its default, -1, which behaves as 2.0 did).
 * - 2.0.0: the batch calls (cg_classify_files, cg_probabilities_files) take the capacity of every
 *   output array and report each image's failure as a status and a message (cg_item_status);
 *   cg_embed_files is new; cg_run_tensor takes the length of its input. Single-image classify calls
 *   write only *out_count entries; cg_load_options gains min_confidence. Sizes and
 *   counts whose product overflows are refused as CG_ERR_INVALID_ARGUMENT. Built against 1.x:
 *   recompile, and pass the new capacity arguments.
 * - 1.0.0: the first release. */
#define CG_API_VERSION (CG_API_VERSION_MAJOR * 10000 + CG_API_VERSION_MINOR * 100 + CG_API_VERSION_PATCH)

/* The API version the library was built with; compare with CG_API_VERSION. Any thread. */
uint32_t cg_api_version(void);

/* The library's version, "MAJOR.MINOR.PATCH" as above (e.g. "2.2.0"). Static string. Any thread. */
const char *cg_version_string(void);

/* The instruction-set variant the kernels run in this process: "avx512", "avx2" or "generic".
 * The best the CPU executes, unless the environment variable COVERGENRE_ISA names a lower one
 * (for tests and benchmarks); decided on first use and fixed for the process. Static string. Any
 * thread. */
const char *cg_kernel_variant(void);

/* ---- Errors ------------------------------------------------------------------------------- */

typedef enum cg_status {
    CG_OK = 0,
    CG_ERR_INVALID_ARGUMENT = 1,  /* a NULL pointer, a zero size, top_k of 0, ... */
    CG_ERR_IO = 2,                /* a file could not be opened or read */
    CG_ERR_MODEL_FORMAT = 3,      /* not a valid .cgm file: bad magic, truncated, inconsistent */
    CG_ERR_MODEL_UNSUPPORTED = 4, /* a valid file of a newer format version or unknown operator */
    CG_ERR_CHECKSUM = 5,          /* the model file's checksum does not match: damaged */
    CG_ERR_IMAGE_DECODE = 6,      /* corrupt or truncated image data */
    CG_ERR_IMAGE_UNSUPPORTED = 7, /* not JPEG, PNG or WebP (or an animated WebP) */
    CG_ERR_IMAGE_TOO_LARGE = 8,   /* beyond the image limits, refused before decoding */
    CG_ERR_BUFFER_TOO_SMALL = 9,  /* the caller's buffer cannot hold the result */
    CG_ERR_OUT_OF_MEMORY = 10,
    CG_ERR_INTERNAL = 11,         /* a bug in CoverGenre; please report it with cg_last_error() */
    CG_ERR_LIMIT_EXCEEDED = 12,   /* a model file beyond the configured size/count limits */
    CG_ERR_NO_COVER = 13,         /* an audio file (or album folder) with no picture to classify */
    CG_ERR_AUDIO_DECODE = 14,     /* an audio file whose tags cannot be read: truncated or damaged */
} cg_status;

/* A short constant name for a status ("CG_ERR_IMAGE_DECODE"). Static string. Any thread. */
const char *cg_status_string(cg_status status);

/* Why the calling thread's most recent failed call failed; "" if none failed yet. The string
 * stays valid until this thread's next failing call. Any thread. */
const char *cg_last_error(void);

/* ---- Loading ------------------------------------------------------------------------------ */

/* The model: opaque, immutable once loaded, shared freely between threads. */
typedef struct cg_model cg_model;

/* Load-time settings. Always start from cg_default_load_options() and change fields: new fields
 * are appended in later versions, and struct_size tells the library which ones you know. */
typedef struct cg_load_options {
    size_t struct_size;           /* sizeof(cg_load_options), set by cg_default_load_options */
    int32_t n_threads;            /* threads per call: the caller's and n_threads - 1 workers the
                                     model owns (see Threads above); 0 = every core */
    int32_t verify_checksum;      /* nonzero (default): check the model file's checksum on load */
    uint64_t max_model_bytes;     /* refuse larger model files (default 2 GiB) */
    uint64_t max_metadata_bytes;  /* refuse larger metadata sections (default 16 MiB) */
    uint32_t max_tensors;         /* refuse more tensors (default 65536) */
    uint32_t max_image_width;     /* refuse wider images, before decoding (default 16384) */
    uint32_t max_image_height;    /* (default 16384) */
    uint32_t reserved;
    uint64_t max_image_pixels;    /* refuse images with more pixels (default 64 Mi) */
    uint64_t max_image_bytes;     /* refuse larger encoded images (default 64 MiB) */
    float min_confidence;         /* cg_classify_*: return only genres at least this probable,
                                     0..1; none returned (*out_count 0) means "unsure". Default 0 */
    int32_t mirror_view;          /* average each cover with its mirror image: -1 (default) as the
                                     model file says, 0 off (half the work per cover), 1 on (2.1) */
} cg_load_options;

/* Defaults for cg_load_options. Any thread. */
cg_load_options cg_default_load_options(void);

/* Loads a .cgm model file (memory-mapped, validated, checksum verified). On success *out_model
 * owns the model; release it with cg_model_free. On failure *out_model is set to NULL. */
cg_status cg_model_load(const char *path, cg_model **out_model);
cg_status cg_model_load_with_options(const char *path, const cg_load_options *options, cg_model **out_model);

/* Loads a model from `size` bytes in memory. The bytes are copied: free them when this returns. */
cg_status cg_model_load_memory(const void *data, size_t size, cg_model **out_model);
cg_status cg_model_load_memory_with_options(const void *data, size_t size, const cg_load_options *options,
                                            cg_model **out_model);

/* Frees a model and every string it returned. NULL is allowed. No other thread may be using it. */
void cg_model_free(cg_model *model);

/* ---- Describing a model ------------------------------------------------------------------- */

/* Number of genres the model tells apart (0 for NULL). */
size_t cg_model_class_count(const cg_model *model);

/* The label of class `index` (e.g. "HipHop"), or NULL when out of range. Owned by the model. */
const char *cg_model_label(const cg_model *model, size_t index);

/* Length of the embedding vector (cg_embed_*); 0 if the model has none. */
size_t cg_model_embedding_size(const cg_model *model);

/* The model's input size in pixels (images are resized to it). */
cg_status cg_model_input_size(const cg_model *model, int32_t *width, int32_t *height);

/* The model's name and architecture ("efficientnet-lite0", ...). Owned by the model. */
const char *cg_model_name(const cg_model *model);
const char *cg_model_architecture(const cg_model *model);

/* The model file's whole metadata (labels, graph, preprocessing, provenance) as JSON. */
const char *cg_model_metadata_json(const cg_model *model);

/* ---- Classifying one image ---------------------------------------------------------------- */

typedef struct cg_prediction {
    int32_t class_index;
    float probability;   /* softmax probability, 0..1 */
    const char *label;   /* owned by the model */
} cg_prediction;

/* The `top_k` most probable genres of the image, most probable first. `out` must hold top_k
 * entries; the first *out_count = min(top_k, class count) are written, the rest left untouched.
 * With the load option min_confidence, only genres at least that probable count: *out_count 0
 * then means the model is unsure. Probabilities are calibrated when the model file carries a
 * temperature (covergenre calibrate). The image is an encoded file (path, or
 * `size` bytes at `data`) or raw RGB pixels (3 bytes per pixel, rows `row_stride` bytes apart,
 * row_stride >= 3 * width). Any thread. */
cg_status cg_classify_file(const cg_model *model, const char *path, size_t top_k, cg_prediction *out, size_t *out_count);
cg_status cg_classify_image(const cg_model *model, const void *data, size_t size, size_t top_k, cg_prediction *out,
                            size_t *out_count);
cg_status cg_classify_rgb(const cg_model *model, const uint8_t *rgb, int32_t width, int32_t height, size_t row_stride,
                          size_t top_k, cg_prediction *out, size_t *out_count);

/* The probability of every class, in label order. `capacity` is the length of `out` in floats and
 * must be at least cg_model_class_count(). Any thread. */
cg_status cg_probabilities_file(const cg_model *model, const char *path, float *out, size_t capacity);
cg_status cg_probabilities_image(const cg_model *model, const void *data, size_t size, float *out, size_t capacity);
cg_status cg_probabilities_rgb(const cg_model *model, const uint8_t *rgb, int32_t width, int32_t height,
                               size_t row_stride, float *out, size_t capacity);

/* The cover's embedding: the model's pooled features (cg_model_embedding_size() floats), for
 * similarity search (compare with cosine similarity). Any thread. */
cg_status cg_embed_file(const cg_model *model, const char *path, float *out, size_t capacity);
cg_status cg_embed_image(const cg_model *model, const void *data, size_t size, float *out, size_t capacity);
cg_status cg_embed_rgb(const cg_model *model, const uint8_t *rgb, int32_t width, int32_t height, size_t row_stride,
                       float *out, size_t capacity);

/* ---- Running the network on prepared input ------------------------------------------------ */

/* Runs the network on `batch` images that the caller has already preprocessed: NHWC float32,
 * each height x width x 3 (cg_model_input_size), normalized as the model's metadata says;
 * `input_count` is the length of `input` in floats and must be at least batch x height x width x 3.
 * Writes batch * cg_model_class_count() logits (before softmax) to `logits`, whose length in
 * floats is `capacity`. For callers with their own image pipeline, and for checking the engine
 * against other runtimes. Batches are split into whole images per thread. Any thread. */
cg_status cg_run_tensor(const cg_model *model, const float *input, size_t input_count, size_t batch, float *logits,
                        size_t capacity);

/* ---- Classifying many images -------------------------------------------------------------- */

/* How one image of a batch call went: a status, and for a failure the library's sentence about
 * that image (what cg_last_error() would have said had it been classified alone). */
#define CG_ITEM_MESSAGE_SIZE 252
typedef struct cg_item_status {
    cg_status status;                    /* CG_OK or why this image failed */
    char message[CG_ITEM_MESSAGE_SIZE];  /* NUL-terminated; "" for CG_OK; cut at a character boundary */
} cg_item_status;

/* Classifies `count` image files on up to `n_threads` threads (0 = the model's setting; never more
 * than the model's, as the model's workers run them), each thread decoding and classifying whole
 * images. Image i's predictions go to out[i * top_k ...]: min(top_k, class count) of them, the
 * rest of its top_k entries {-1, 0, NULL}. `out_capacity` is the length of `out` in entries and
 * must be at least count * top_k; `items` receives each image's status and message and holds
 * `items_capacity` >= count entries. A NULL path or an image that fails only marks its own item:
 * the call returns CG_OK when every image was attempted, an error only for invalid arguments (and
 * then writes nothing). Any thread. */
cg_status cg_classify_files(const cg_model *model, const char *const *paths, size_t count, size_t top_k,
                            int32_t n_threads, cg_prediction *out, size_t out_capacity, cg_item_status *items,
                            size_t items_capacity);

/* As cg_classify_files, writing every class probability: out[i * class_count + c] (zeros for a
 * failed image). `out_capacity` is the length of `out` in floats, at least count * class_count. */
cg_status cg_probabilities_files(const cg_model *model, const char *const *paths, size_t count, int32_t n_threads,
                                 float *out, size_t out_capacity, cg_item_status *items, size_t items_capacity);

/* As cg_probabilities_files, writing each image's embedding: out[i * embedding_size + j], with
 * out_capacity >= count * cg_model_embedding_size(). CG_ERR_INVALID_ARGUMENT if the model has
 * no embedding. */
cg_status cg_embed_files(const cg_model *model, const char *const *paths, size_t count, int32_t n_threads, float *out,
                         size_t out_capacity, cg_item_status *items, size_t items_capacity);

/* ---- Music libraries ---------------------------------------------------------------------- */

/* A folder of albums, read once: an album is the audio files of one folder that share album and
 * album-artist tags (a folder of singles gives one album per tag pair). Its cover is the folder's
 * cover file (cover, folder, front or albumart*, any case, .jpg/.jpeg/.png/.webp), else the front
 * cover embedded in its first track (disc, track, name order) that has one. Classify an album by
 * passing cover_path to any cg_*_file call: an audio file stands for its embedded cover. Reading
 * a library reads tags only; it never decodes images or writes anything. (2.3) */
typedef struct cg_library cg_library;

typedef enum cg_cover_source {
    CG_COVER_NONE = 0,      /* neither a cover file nor a picture in any track */
    CG_COVER_FILE = 1,      /* cover_path is an image file in the album's folder */
    CG_COVER_EMBEDDED = 2,  /* cover_path is the track whose embedded front cover it is */
} cg_cover_source;

typedef struct cg_album {
    const char *folder;        /* the folder holding the tracks */
    const char *album_artist;  /* album artist tag, else artist; NULL when untagged */
    const char *album;         /* album tag; NULL when untagged */
    const char *cover_path;    /* NULL for CG_COVER_NONE */
    cg_cover_source cover_source;
    size_t genre_count;        /* genre tag values of its tracks, each once (cg_library_album_genre) */
    size_t track_count;        /* audio files (cg_library_album_track) */
} cg_album;

/* Reads every album under `folder` (recursively; hidden entries, links to folders and folders that
 * cannot be read skipped), sorted by folder. On success *out_library owns them; release with
 * cg_library_free. Tracks whose tags cannot be read still belong to their folder's album. Without
 * an album-artist tag an album is its folder's tracks with one album tag (a compilation), and
 * album_artist is the artist they share, if any. Any thread. */
cg_status cg_library_open(const char *folder, cg_library **out_library);

/* Number of albums (0 for NULL). */
size_t cg_library_album_count(const cg_library *library);

/* Album `index` (0 <= index < count). Its strings are owned by the library. */
cg_status cg_library_album(const cg_library *library, size_t index, cg_album *out_album);

/* The album's genre `index` and track `index` as UTF-8, or NULL when out of range. Owned by the
 * library. */
const char *cg_library_album_genre(const cg_library *library, size_t album, size_t index);
const char *cg_library_album_track(const cg_library *library, size_t album, size_t index);

/* Frees the library and every string it returned. NULL is allowed. */
void cg_library_free(cg_library *library);

#ifdef __cplusplus
}
#endif

#endif /* COVERGENRE_H */
