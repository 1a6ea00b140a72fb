// Image codecs behind CoverGenre's ImageIO module: JPEG (libjpeg), PNG (libpng), WebP (libwebp).
//
// Why C: libjpeg reports fatal errors by calling exit() unless its error manager is replaced, and
// libpng reports them with longjmp. Both need setjmp in a C frame that outlives the library call,
// which Swift cannot provide. Every function here returns a status and never prints, exits or
// longjmps past its caller. All outputs are 8-bit RGB, rows contiguous, 3 bytes per pixel.
#ifndef CG_CODECS_H
#define CG_CODECS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CGC_OK = 0,
    CGC_ERR_DECODE = 1,      // corrupt, truncated or internally inconsistent data
    CGC_ERR_UNSUPPORTED = 2, // not JPEG/PNG/WebP, or a variant we refuse (animated WebP)
    CGC_ERR_TOO_LARGE = 3,   // dimensions or pixel count beyond the caller's limits
    CGC_ERR_NO_MEMORY = 4,
} cgc_status;

typedef enum {
    CGC_FORMAT_UNKNOWN = 0,
    CGC_FORMAT_JPEG = 1,
    CGC_FORMAT_PNG = 2,
    CGC_FORMAT_WEBP = 3,
} cgc_format;

typedef struct {
    uint32_t max_width;     // refuse images wider than this (checked before any pixel allocation)
    uint32_t max_height;
    uint64_t max_pixels;    // refuse width*height beyond this (decompression bombs)
    uint32_t max_jpeg_scans;// progressive JPEG scan limit (libjpeg-turbo's advice against scan DoS)
    // JPEG only: the decoder may use DCT scaling (1/2, 1/4, 1/8) while the scaled image stays at
    // least this large in both directions. 0 disables scaling (full-size decode). WebP ignores it:
    // libwebp's rescaler is slower than a full-size decode (webp.c).
    uint32_t scale_min_width;
    uint32_t scale_min_height;
} cgc_limits;

typedef struct {
    uint8_t *pixels;          // malloc'd RGB888; owned by the struct, release with cgc_image_free
    uint32_t width, height;   // of `pixels`, after DCT scaling and EXIF orientation
    uint32_t source_width, source_height; // as stored in the file
    uint32_t orientation;     // EXIF orientation found (1 = upright); already applied to pixels
    cgc_format format;
    char message[192];        // why decoding failed, for the caller's error
} cgc_image;

cgc_format cgc_sniff(const uint8_t *data, size_t size);

// Decodes any supported format (sniffed from the bytes, never from a file name).
cgc_status cgc_decode(const uint8_t *data, size_t size, const cgc_limits *limits, cgc_image *out);

cgc_status cgc_decode_jpeg(const uint8_t *data, size_t size, const cgc_limits *limits, cgc_image *out);
cgc_status cgc_decode_png(const uint8_t *data, size_t size, const cgc_limits *limits, cgc_image *out);
cgc_status cgc_decode_webp(const uint8_t *data, size_t size, const cgc_limits *limits, cgc_image *out);

void cgc_image_free(cgc_image *image);

// Reads only the header: format and stored dimensions. No pixel allocation.
cgc_status cgc_probe(const uint8_t *data, size_t size, cgc_format *format, uint32_t *width,
                     uint32_t *height, char message[192]);

// Encodes 8-bit RGB (channels = 3) or gray (channels = 1) rows as PNG into a malloc'd buffer
// (*out, *out_size); free it with cgc_buffer_free.
cgc_status cgc_encode_png(const uint8_t *pixels, uint32_t width, uint32_t height, uint32_t channels,
                          uint8_t **out, size_t *out_size, char message[192]);

// Encodes 8-bit pixels as JPEG: channels 1 (gray), 3 (RGB) or 4 (CMYK, stored as given, with
// libjpeg's Adobe marker, so readers treat it as Adobe's inverted CMYK). Quality 1-100.
// Tests and tools use it to make fixtures; the library itself never writes JPEG.
cgc_status cgc_encode_jpeg(const uint8_t *pixels, uint32_t width, uint32_t height, uint32_t channels,
                           int quality, int progressive, uint8_t **out, size_t *out_size,
                           char message[192]);

// Encodes 8-bit RGB as WebP (lossless when quality < 0, else lossy at that quality). For tests and
// tools; the library only decodes WebP.
cgc_status cgc_encode_webp(const uint8_t *rgb, uint32_t width, uint32_t height, float quality, uint8_t **out,
                           size_t *out_size, char message[192]);

void cgc_buffer_free(uint8_t *buffer);

// Applies EXIF orientation 2..8 to an RGB image in place of `image->pixels` (may reallocate).
cgc_status cgc_apply_orientation(cgc_image *image, uint32_t orientation);

// Parses an EXIF APP1 payload ("Exif\0\0" + TIFF) and returns the orientation (1..8), or 1 when
// absent or malformed. Every offset is bounds-checked against `size`.
uint32_t cgc_exif_orientation(const uint8_t *app1, size_t size);

#ifdef __cplusplus
}
#endif

#endif
