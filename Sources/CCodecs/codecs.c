// Format sniffing, dispatch, limits, EXIF orientation: the parts common to every codec.
#include "cg_codecs.h"
#include "codec_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cgc_set_message(char *message, const char *format, ...) {
    if (message == NULL) return;
    va_list args;
    va_start(args, format);
    vsnprintf(message, CGC_MESSAGE_SIZE, format, args);
    va_end(args);
}

int cgc_within_limits(uint32_t width, uint32_t height, const cgc_limits *limits, char *message) {
    if (width == 0 || height == 0) {
        cgc_set_message(message, "image has no pixels (%ux%u)", width, height);
        return 0;
    }
    if ((limits->max_width && width > limits->max_width) || (limits->max_height && height > limits->max_height) ||
        (limits->max_pixels && (uint64_t)width * height > limits->max_pixels)) {
        cgc_set_message(message, "image is %ux%u; the limit is %ux%u and %llu pixels", width, height,
                        limits->max_width, limits->max_height, (unsigned long long)limits->max_pixels);
        return 0;
    }
    return 1;
}

cgc_format cgc_sniff(const uint8_t *data, size_t size) {
    if (data == NULL) return CGC_FORMAT_UNKNOWN;
    if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return CGC_FORMAT_JPEG;
    static const uint8_t png_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (size >= 8 && memcmp(data, png_signature, 8) == 0) return CGC_FORMAT_PNG;
    if (size >= 12 && memcmp(data, "RIFF", 4) == 0 && memcmp(data + 8, "WEBP", 4) == 0) return CGC_FORMAT_WEBP;
    return CGC_FORMAT_UNKNOWN;
}

static cgc_status cgc_unknown_format(const uint8_t *data, size_t size, char *message) {
    if (size == 0 || data == NULL) cgc_set_message(message, "empty input (0 bytes)");
    else cgc_set_message(message, "not a JPEG, PNG or WebP image (first bytes %02x %02x %02x %02x)",
                         data[0], size > 1 ? data[1] : 0, size > 2 ? data[2] : 0, size > 3 ? data[3] : 0);
    return CGC_ERR_UNSUPPORTED;
}

cgc_status cgc_decode(const uint8_t *data, size_t size, const cgc_limits *limits, cgc_image *out) {
    switch (cgc_sniff(data, size)) {
    case CGC_FORMAT_JPEG: return cgc_decode_jpeg(data, size, limits, out);
    case CGC_FORMAT_PNG: return cgc_decode_png(data, size, limits, out);
    case CGC_FORMAT_WEBP: return cgc_decode_webp(data, size, limits, out);
    default:
        memset(out, 0, sizeof(*out));
        return cgc_unknown_format(data, size, out->message);
    }
}

cgc_status cgc_probe(const uint8_t *data, size_t size, cgc_format *format, uint32_t *width,
                     uint32_t *height, char message[192]) {
    *width = 0;
    *height = 0;
    *format = cgc_sniff(data, size);
    switch (*format) {
    case CGC_FORMAT_JPEG: return cgc_probe_jpeg(data, size, width, height, message);
    case CGC_FORMAT_PNG: return cgc_probe_png(data, size, width, height, message);
    case CGC_FORMAT_WEBP: return cgc_probe_webp(data, size, width, height, message);
    default: return cgc_unknown_format(data, size, message);
    }
}

void cgc_image_free(cgc_image *image) {
    if (image == NULL) return;
    free(image->pixels);
    image->pixels = NULL;
    image->width = image->height = 0;
}

void cgc_buffer_free(uint8_t *buffer) { free(buffer); }

static uint32_t cg_read16(const uint8_t *p, int big_endian) {
    return big_endian ? (uint32_t)p[0] << 8 | p[1] : (uint32_t)p[1] << 8 | p[0];
}

static uint32_t cg_read32(const uint8_t *p, int big_endian) {
    return big_endian ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
                      : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

uint32_t cgc_exif_orientation(const uint8_t *app1, size_t size) {
    if (app1 == NULL || size < 6 + 8 || memcmp(app1, "Exif\0\0", 6) != 0) return 1;
    const uint8_t *tiff = app1 + 6;
    size_t tiff_size = size - 6;
    int big_endian;
    if (memcmp(tiff, "MM\0*", 4) == 0) big_endian = 1;
    else if (memcmp(tiff, "II*\0", 4) == 0) big_endian = 0;
    else return 1;
    uint32_t ifd = cg_read32(tiff + 4, big_endian);
    if (ifd > tiff_size || tiff_size - ifd < 2) return 1;
    uint32_t count = cg_read16(tiff + ifd, big_endian);
    size_t entries = ifd + 2;
    for (uint32_t i = 0; i < count; i++) {
        size_t entry = entries + (size_t)i * 12;
        if (entry > tiff_size || tiff_size - entry < 12) return 1;
        const uint8_t *e = tiff + entry;
        if (cg_read16(e, big_endian) == 0x0112 && cg_read16(e + 2, big_endian) == 3) {
            uint32_t value = cg_read16(e + 8, big_endian);
            return value >= 1 && value <= 8 ? value : 1;
        }
    }
    return 1;
}

cgc_status cgc_apply_orientation(cgc_image *image, uint32_t orientation) {
    image->orientation = orientation;
    if (orientation <= 1 || orientation > 8) return CGC_OK;
    uint32_t w = image->width, h = image->height;
    int swap = orientation >= 5;
    uint32_t ow = swap ? h : w, oh = swap ? w : h;
    uint8_t *dst = (uint8_t *)malloc((size_t)ow * oh * 3);
    if (dst == NULL) {
        cgc_set_message(image->message, "out of memory while applying EXIF orientation");
        cgc_image_free(image);
        return CGC_ERR_NO_MEMORY;
    }
    const uint8_t *src = image->pixels;
    for (uint32_t y = 0; y < oh; y++) {
        for (uint32_t x = 0; x < ow; x++) {
            // (sx, sy): where output pixel (x, y) comes from, per the EXIF definitions.
            uint32_t sx, sy;
            switch (orientation) {
            case 2: sx = w - 1 - x; sy = y; break;
            case 3: sx = w - 1 - x; sy = h - 1 - y; break;
            case 4: sx = x; sy = h - 1 - y; break;
            case 5: sx = y; sy = x; break;
            case 6: sx = y; sy = h - 1 - x; break;
            case 7: sx = w - 1 - y; sy = h - 1 - x; break;
            default: sx = w - 1 - y; sy = x; break; // 8
            }
            memcpy(dst + ((size_t)y * ow + x) * 3, src + ((size_t)sy * w + sx) * 3, 3);
        }
    }
    free(image->pixels);
    image->pixels = dst;
    image->width = ow;
    image->height = oh;
    return CGC_OK;
}
