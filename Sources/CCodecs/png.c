// PNG decoding and encoding through libpng, with its longjmp errors kept inside this file.
#include "cg_codecs.h"
#include "codec_internal.h"

#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>

typedef struct {
    const uint8_t *data;
    size_t size;
    size_t offset;
} cg_png_reader;

static void cg_png_error(png_structp png, png_const_charp text) {
    char *message = (char *)png_get_error_ptr(png);
    cgc_set_message(message, "PNG: %s", text);
    png_longjmp(png, 1);
}

static void cg_png_warning(png_structp png, png_const_charp text) {
    (void)png;
    (void)text;
}

static void cg_png_read(png_structp png, png_bytep target, size_t length) {
    cg_png_reader *reader = (cg_png_reader *)png_get_io_ptr(png);
    if (length > reader->size - reader->offset) png_error(png, "data ends before the image is complete (truncated file)");
    memcpy(target, reader->data + reader->offset, length);
    reader->offset += length;
}

// libpng's own guards against hostile files: bounded ancillary chunk count and size. Dimensions
// are checked by us right after the header (before any row is allocated), so that an oversized
// image is reported as too large rather than as corrupt.
static void cg_png_set_limits(png_structp png) {
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
    png_set_chunk_cache_max(png, 1000);
    png_set_chunk_malloc_max(png, 16u << 20);
}

cgc_status cgc_decode_png(const uint8_t *data, size_t size, const cgc_limits *limits, cgc_image *out) {
    memset(out, 0, sizeof(*out));
    out->format = CGC_FORMAT_PNG;
    out->orientation = 1;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, out->message, cg_png_error, cg_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (png == NULL || info == NULL) {
        png_destroy_read_struct(&png, &info, NULL);
        cgc_set_message(out->message, "PNG: out of memory");
        return CGC_ERR_NO_MEMORY;
    }
    cg_png_reader reader = {data, size, 0};
    uint8_t *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    volatile cgc_status status = CGC_ERR_DECODE;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(rows);
        free(pixels);
        return status;
    }
    cg_png_set_limits(png);
    png_set_read_fn(png, &reader, cg_png_read);
    png_read_info(png, info);

    png_uint_32 width = 0, height = 0;
    int bit_depth = 0, color_type = 0, interlace = 0;
    png_get_IHDR(png, info, &width, &height, &bit_depth, &color_type, &interlace, NULL, NULL);
    out->source_width = width;
    out->source_height = height;
    if (!cgc_within_limits(width, height, limits, out->message)) {
        status = CGC_ERR_TOO_LARGE;
        png_longjmp(png, 1);
    }
    // Everything becomes 8-bit RGB: palettes expanded, gray replicated, 16-bit scaled with
    // rounding, alpha dropped (the colour under transparent pixels is kept, as PIL's convert("RGB")).
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (bit_depth == 16) png_set_scale_16(png);
    if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    // Unconditional: palette expansion turns a tRNS chunk into an alpha channel too.
    png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)width * 3) {
        cgc_set_message(out->message, "PNG: unexpected row size after conversion to RGB");
        png_longjmp(png, 1);
    }
    pixels = (uint8_t *)malloc((size_t)width * height * 3);
    rows = (png_bytep *)malloc(sizeof(png_bytep) * height);
    if (pixels == NULL || rows == NULL) {
        cgc_set_message(out->message, "PNG: out of memory for %ux%u pixels", (unsigned)width, (unsigned)height);
        status = CGC_ERR_NO_MEMORY;
        png_longjmp(png, 1);
    }
    for (png_uint_32 y = 0; y < height; y++) rows[y] = pixels + (size_t)y * width * 3;
    png_read_image(png, rows);
    // The image data is complete here; a missing IEND or trailing chunks do not spoil the pixels,
    // so png_read_end (which would fail on them) is not called.
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    out->pixels = pixels;
    out->width = width;
    out->height = height;
    return CGC_OK;
}

cgc_status cgc_probe_png(const uint8_t *data, size_t size, uint32_t *width, uint32_t *height, char message[192]) {
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, message, cg_png_error, cg_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (png == NULL || info == NULL) {
        png_destroy_read_struct(&png, &info, NULL);
        cgc_set_message(message, "PNG: out of memory");
        return CGC_ERR_NO_MEMORY;
    }
    cg_png_reader reader = {data, size, 0};
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        return CGC_ERR_DECODE;
    }
    cg_png_set_limits(png);
    png_set_read_fn(png, &reader, cg_png_read);
    png_read_info(png, info);
    *width = png_get_image_width(png, info);
    *height = png_get_image_height(png, info);
    png_destroy_read_struct(&png, &info, NULL);
    return CGC_OK;
}

typedef struct {
    uint8_t *data;
    size_t size;
    size_t capacity;
    int failed;
} cg_png_writer;

static void cg_png_write(png_structp png, png_bytep chunk, size_t length) {
    cg_png_writer *writer = (cg_png_writer *)png_get_io_ptr(png);
    if (length > writer->capacity - writer->size) {
        size_t capacity = writer->capacity ? writer->capacity : 4096;
        while (capacity - writer->size < length) capacity *= 2;
        uint8_t *grown = (uint8_t *)realloc(writer->data, capacity);
        if (grown == NULL) {
            writer->failed = 1;
            png_error(png, "out of memory");
        }
        writer->data = grown;
        writer->capacity = capacity;
    }
    memcpy(writer->data + writer->size, chunk, length);
    writer->size += length;
}

static void cg_png_flush(png_structp png) { (void)png; }

cgc_status cgc_encode_png(const uint8_t *pixels, uint32_t width, uint32_t height, uint32_t channels,
                          uint8_t **out, size_t *out_size, char message[192]) {
    *out = NULL;
    *out_size = 0;
    if (pixels == NULL || width == 0 || height == 0 || (channels != 1 && channels != 3)) {
        cgc_set_message(message, "PNG: cannot encode %ux%u with %u channels", width, height, channels);
        return CGC_ERR_UNSUPPORTED;
    }
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, message, cg_png_error, cg_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (png == NULL || info == NULL) {
        png_destroy_write_struct(&png, &info);
        cgc_set_message(message, "PNG: out of memory");
        return CGC_ERR_NO_MEMORY;
    }
    cg_png_writer writer = {NULL, 0, 0, 0};
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(writer.data);
        return writer.failed ? CGC_ERR_NO_MEMORY : CGC_ERR_DECODE;
    }
    png_set_write_fn(png, &writer, cg_png_write, cg_png_flush);
    png_set_IHDR(png, info, width, height, 8, channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (uint32_t y = 0; y < height; y++) png_write_row(png, (png_const_bytep)(pixels + (size_t)y * width * channels));
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    *out = writer.data;
    *out_size = writer.size;
    return CGC_OK;
}
