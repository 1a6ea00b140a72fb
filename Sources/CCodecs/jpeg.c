// JPEG decoding and encoding through libjpeg(-turbo), with errors turned into status codes.
#include "cg_codecs.h"
#include "codec_internal.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

// libjpeg calls error_exit on fatal errors and by default exits the process; ours longjmps back
// to the frame that called into libjpeg. Warnings are counted, and the one that means "the data
// ended early" (libjpeg would pad the image with gray) becomes a failure: a half-decoded cover
// would otherwise be classified silently.
typedef struct {
    struct jpeg_error_mgr base;
    jmp_buf jump;
    char *message;
    uint32_t max_scans;
    // libjpeg's own sample-array allocator, wrapped by cg_jpeg_alloc_zeroed_sarray.
    JSAMPARRAY (*alloc_sarray)(j_common_ptr, int, JDIMENSION, JDIMENSION);
} cg_jpeg_error;

// libjpeg-turbo's SIMD upsamplers (AVX2) read whole vectors, past the samples the IDCT wrote into
// its sample arrays, into the rows' alignment padding, which nothing initializes. The pixels never
// depend on those lanes (decoding with JSIMD_FORCENONE=1, or with MALLOC_PERTURB_ filling fresh
// memory with any byte, gives identical output), but memcheck cannot prove it and reports
// undefined values reaching the logits (seen with DCT scaling to 1/8, e.g. a 32-pixel model). So
// every sample array starts zeroed, padding included: a few rows per image, and the decoder
// reads only memory it owns and has defined.
static JSAMPARRAY cg_jpeg_alloc_zeroed_sarray(j_common_ptr cinfo, int pool, JDIMENSION samples, JDIMENSION rows) {
    cg_jpeg_error *err = (cg_jpeg_error *)cinfo->err;
    JSAMPARRAY array = err->alloc_sarray(cinfo, pool, samples, rows);
    // Rows of one chunk are allocated back to back with the padded stride; the last row of each
    // chunk has that stride too, so a chunk's stride is read off its first two rows.
    size_t stride = samples;
    if (rows >= 2 && array[1] > array[0] && (size_t)(array[1] - array[0]) >= samples &&
        (size_t)(array[1] - array[0]) < (size_t)samples + 128 && (array[1] - array[0]) % 16 == 0)
        stride = (size_t)(array[1] - array[0]);
    for (JDIMENSION r = 0; r < rows; r++) memset(array[r], 0, stride * sizeof(JSAMPLE));
    return array;
}

static void cg_jpeg_format_message(j_common_ptr cinfo) {
    cg_jpeg_error *err = (cg_jpeg_error *)cinfo->err;
    char buffer[JMSG_LENGTH_MAX];
    err->base.format_message(cinfo, buffer);
    cgc_set_message(err->message, "JPEG: %s", buffer);
}

static void cg_jpeg_error_exit(j_common_ptr cinfo) {
    cg_jpeg_format_message(cinfo);
    longjmp(((cg_jpeg_error *)cinfo->err)->jump, 1);
}

static void cg_jpeg_emit_message(j_common_ptr cinfo, int level) {
    if (level < 0) {
        cinfo->err->num_warnings++;
        if (cinfo->err->msg_code == JWRN_JPEG_EOF) {
            cgc_set_message(((cg_jpeg_error *)cinfo->err)->message,
                            "JPEG: data ends before the image is complete (truncated file)");
            longjmp(((cg_jpeg_error *)cinfo->err)->jump, 1);
        }
    }
}

static void cg_jpeg_output_message(j_common_ptr cinfo) { (void)cinfo; }

// A progressive JPEG may hold thousands of tiny scans that each cost a full pass over the image;
// libjpeg-turbo's documentation recommends capping them.
static void cg_jpeg_progress(j_common_ptr cinfo) {
    cg_jpeg_error *err = (cg_jpeg_error *)cinfo->err;
    if (cinfo->is_decompressor) {
        j_decompress_ptr d = (j_decompress_ptr)cinfo;
        if (d->input_scan_number > (int)err->max_scans) {
            cgc_set_message(err->message, "JPEG: more than %u progressive scans", err->max_scans);
            longjmp(err->jump, 1);
        }
    }
}

static void cg_jpeg_install_errors(cg_jpeg_error *err, char *message, uint32_t max_scans) {
    jpeg_std_error(&err->base);
    err->base.error_exit = cg_jpeg_error_exit;
    err->base.emit_message = cg_jpeg_emit_message;
    err->base.output_message = cg_jpeg_output_message;
    err->message = message;
    err->max_scans = max_scans ? max_scans : 500;
}

static uint32_t cg_jpeg_orientation(j_decompress_ptr cinfo) {
    for (jpeg_saved_marker_ptr m = cinfo->marker_list; m != NULL; m = m->next) {
        if (m->marker == JPEG_APP0 + 1) {
            uint32_t orientation = cgc_exif_orientation(m->data, m->data_length);
            if (orientation != 1) return orientation;
        }
    }
    return 1;
}

// Chooses the strongest DCT reduction (1/8 .. 1/1) that keeps the image at least min_w x min_h,
// so a 3000-pixel photo is not fully decoded only to be shrunk to 224.
static unsigned cg_jpeg_scale_denom(uint32_t width, uint32_t height, uint32_t min_w, uint32_t min_h) {
    if (min_w == 0 || min_h == 0) return 1;
    unsigned denom = 1;
    for (unsigned d = 2; d <= 8; d *= 2) {
        uint32_t w = (width + d - 1) / d, h = (height + d - 1) / d;
        if (w >= min_w && h >= min_h) denom = d;
    }
    return denom;
}

static void cg_cmyk_to_rgb(const uint8_t *cmyk, uint8_t *rgb, uint32_t width, int inverted) {
    for (uint32_t x = 0; x < width; x++) {
        unsigned c = cmyk[4 * x], m = cmyk[4 * x + 1], y = cmyk[4 * x + 2], k = cmyk[4 * x + 3];
        if (!inverted) { c = 255 - c; m = 255 - m; y = 255 - y; k = 255 - k; }
        // Inverted (Adobe) CMYK stores 255 - ink, so the remaining light is simply value * k / 255.
        rgb[3 * x] = (uint8_t)((c * k + 127) / 255);
        rgb[3 * x + 1] = (uint8_t)((m * k + 127) / 255);
        rgb[3 * x + 2] = (uint8_t)((y * k + 127) / 255);
    }
}

cgc_status cgc_decode_jpeg(const uint8_t *data, size_t size, const cgc_limits *limits, cgc_image *out) {
    memset(out, 0, sizeof(*out));
    out->format = CGC_FORMAT_JPEG;
    out->orientation = 1;
    if (data == NULL || size < 4) {
        cgc_set_message(out->message, "JPEG: %zu bytes is too short to be an image", size);
        return CGC_ERR_DECODE;
    }
    struct jpeg_decompress_struct cinfo;
    cg_jpeg_error err;
    struct jpeg_progress_mgr progress;
    // Written between setjmp and longjmp, so volatile keeps their values valid after the jump.
    uint8_t *volatile pixels = NULL;
    uint8_t *volatile scratch = NULL;
    volatile cgc_status status = CGC_ERR_DECODE;

    cinfo.err = &err.base;
    cg_jpeg_install_errors(&err, out->message, limits->max_jpeg_scans);
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        free(scratch);
        return status;
    }
    jpeg_create_decompress(&cinfo);
    err.alloc_sarray = cinfo.mem->alloc_sarray;
    cinfo.mem->alloc_sarray = cg_jpeg_alloc_zeroed_sarray;
    progress.progress_monitor = cg_jpeg_progress;
    cinfo.progress = &progress;
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&cinfo, TRUE);

    out->source_width = cinfo.image_width;
    out->source_height = cinfo.image_height;
    if (!cgc_within_limits(cinfo.image_width, cinfo.image_height, limits, out->message)) {
        status = CGC_ERR_TOO_LARGE;
        longjmp(err.jump, 1);
    }
    uint32_t orientation = cg_jpeg_orientation(&cinfo);
    // Orientations 5..8 swap the axes: the scaling bound applies to the rotated image.
    uint32_t min_w = limits->scale_min_width, min_h = limits->scale_min_height;
    if (orientation >= 5) { uint32_t t = min_w; min_w = min_h; min_h = t; }

    int cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    cinfo.scale_num = 1;
    cinfo.scale_denom = cg_jpeg_scale_denom(cinfo.image_width, cinfo.image_height, min_w, min_h);
    cinfo.dct_method = JDCT_ISLOW;
    jpeg_start_decompress(&cinfo);

    uint32_t width = cinfo.output_width, height = cinfo.output_height;
    size_t row_bytes = (size_t)width * 3;
    pixels = (uint8_t *)malloc(row_bytes * height);
    if (cmyk) scratch = (uint8_t *)malloc((size_t)width * 4);
    if (pixels == NULL || (cmyk && scratch == NULL)) {
        cgc_set_message(out->message, "JPEG: out of memory for %ux%u pixels", width, height);
        status = CGC_ERR_NO_MEMORY;
        longjmp(err.jump, 1);
    }
    while (cinfo.output_scanline < height) {
        uint8_t *row = pixels + row_bytes * cinfo.output_scanline;
        JSAMPROW target = cmyk ? scratch : row;
        if (jpeg_read_scanlines(&cinfo, &target, 1) != 1) {
            cgc_set_message(out->message, "JPEG: decoder stopped at row %u of %u",
                            cinfo.output_scanline, height);
            longjmp(err.jump, 1);
        }
        if (cmyk) cg_cmyk_to_rgb(scratch, row, width, cinfo.saw_Adobe_marker);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    free(scratch);

    out->pixels = pixels;
    out->width = width;
    out->height = height;
    if (orientation != 1) return cgc_apply_orientation(out, orientation);
    return CGC_OK;
}

cgc_status cgc_probe_jpeg(const uint8_t *data, size_t size, uint32_t *width, uint32_t *height,
                          char message[192]) {
    struct jpeg_decompress_struct cinfo;
    cg_jpeg_error err;
    cinfo.err = &err.base;
    cg_jpeg_install_errors(&err, message, 0);
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        return CGC_ERR_DECODE;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    *width = cinfo.image_width;
    *height = cinfo.image_height;
    jpeg_destroy_decompress(&cinfo);
    return CGC_OK;
}

cgc_status cgc_encode_jpeg(const uint8_t *pixels, uint32_t width, uint32_t height, uint32_t channels,
                           int quality, int progressive, uint8_t **out, size_t *out_size,
                           char message[192]) {
    *out = NULL;
    *out_size = 0;
    if (pixels == NULL || width == 0 || height == 0 || (channels != 1 && channels != 3 && channels != 4)) {
        cgc_set_message(message, "JPEG: cannot encode %ux%u with %u channels", width, height, channels);
        return CGC_ERR_UNSUPPORTED;
    }
    struct jpeg_compress_struct cinfo;
    cg_jpeg_error err;
    unsigned char *volatile buffer = NULL;
    unsigned long buffer_size = 0;
    cinfo.err = &err.base;
    cg_jpeg_install_errors(&err, message, 0);
    if (setjmp(err.jump)) {
        jpeg_destroy_compress(&cinfo);
        free(buffer);
        return CGC_ERR_DECODE;
    }
    jpeg_create_compress(&cinfo);
    unsigned char *target = NULL;
    jpeg_mem_dest(&cinfo, &target, &buffer_size);
    cinfo.image_width = width;
    cinfo.image_height = height;
    cinfo.input_components = (int)channels;
    cinfo.in_color_space = channels == 1 ? JCS_GRAYSCALE : channels == 3 ? JCS_RGB : JCS_CMYK;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality < 1 ? 1 : quality > 100 ? 100 : quality, TRUE);
    if (progressive) jpeg_simple_progression(&cinfo);
    jpeg_start_compress(&cinfo, TRUE);
    size_t row_bytes = (size_t)width * channels;
    while (cinfo.next_scanline < height) {
        JSAMPROW row = (JSAMPROW)(pixels + row_bytes * cinfo.next_scanline);
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    buffer = target;
    jpeg_destroy_compress(&cinfo);
    *out = buffer;
    *out_size = buffer_size;
    return CGC_OK;
}
