// WebP decoding through libwebp (still images only), and encoding for test fixtures.
#include "cg_codecs.h"
#include "codec_internal.h"

#include <stdlib.h>
#include <string.h>

#include <webp/decode.h>
#include <webp/encode.h>

static const char *cg_webp_reason(VP8StatusCode code) {
    switch (code) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "corrupt bitstream";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "data ends before the image is complete (truncated file)";
    default: return "decoding failed";
    }
}

cgc_status cgc_decode_webp(const uint8_t *data, size_t size, const cgc_limits *limits, cgc_image *out) {
    memset(out, 0, sizeof(*out));
    out->format = CGC_FORMAT_WEBP;
    out->orientation = 1;
    WebPBitstreamFeatures features;
    VP8StatusCode code = WebPGetFeatures(data, size, &features);
    if (code != VP8_STATUS_OK) {
        cgc_set_message(out->message, "WebP: %s", cg_webp_reason(code));
        return code == VP8_STATUS_OUT_OF_MEMORY ? CGC_ERR_NO_MEMORY : CGC_ERR_DECODE;
    }
    out->source_width = (uint32_t)features.width;
    out->source_height = (uint32_t)features.height;
    if (features.has_animation) {
        cgc_set_message(out->message, "WebP: animated images are not supported");
        return CGC_ERR_UNSUPPORTED;
    }
    if (!cgc_within_limits((uint32_t)features.width, (uint32_t)features.height, limits, out->message))
        return CGC_ERR_TOO_LARGE;
    // Always full size, unlike JPEG's DCT scaling: libwebp's rescaler (use_scaling, to 1/2) made a
    // 500x500 cover's decode slower, 1.68 against 1.22 ms, more than the smaller resize saves.
    size_t stride = (size_t)features.width * 3;
    size_t bytes = stride * (size_t)features.height;
    uint8_t *pixels = (uint8_t *)malloc(bytes);
    if (pixels == NULL) {
        cgc_set_message(out->message, "WebP: out of memory for %dx%d pixels", features.width, features.height);
        return CGC_ERR_NO_MEMORY;
    }
    if (WebPDecodeRGBInto(data, size, pixels, bytes, (int)stride) == NULL) {
        // WebPDecodeRGBInto gives no reason; an incremental decode tells truncation from corruption.
        WebPDecoderConfig config;
        VP8StatusCode detail = VP8_STATUS_BITSTREAM_ERROR;
        if (WebPInitDecoderConfig(&config)) {
            config.output.colorspace = MODE_RGB;
            config.output.is_external_memory = 1;
            config.output.u.RGBA.rgba = pixels;
            config.output.u.RGBA.stride = (int)stride;
            config.output.u.RGBA.size = bytes;
            detail = WebPDecode(data, size, &config);
            WebPFreeDecBuffer(&config.output);
        }
        free(pixels);
        cgc_set_message(out->message, "WebP: %s", cg_webp_reason(detail == VP8_STATUS_OK ? VP8_STATUS_BITSTREAM_ERROR : detail));
        return CGC_ERR_DECODE;
    }
    out->pixels = pixels;
    out->width = (uint32_t)features.width;
    out->height = (uint32_t)features.height;
    return CGC_OK;
}

cgc_status cgc_probe_webp(const uint8_t *data, size_t size, uint32_t *width, uint32_t *height, char message[192]) {
    int w = 0, h = 0;
    if (!WebPGetInfo(data, size, &w, &h)) {
        cgc_set_message(message, "WebP: not a valid header");
        return CGC_ERR_DECODE;
    }
    *width = (uint32_t)w;
    *height = (uint32_t)h;
    return CGC_OK;
}


cgc_status cgc_encode_webp(const uint8_t *rgb, uint32_t width, uint32_t height, float quality, uint8_t **out,
                           size_t *out_size, char message[192]) {
    *out = NULL;
    *out_size = 0;
    if (rgb == NULL || width == 0 || height == 0 || width > 16383 || height > 16383) {
        cgc_set_message(message, "WebP: cannot encode %ux%u", width, height);
        return CGC_ERR_UNSUPPORTED;
    }
    uint8_t *encoded = NULL;
    size_t size = quality < 0 ? WebPEncodeLosslessRGB(rgb, (int)width, (int)height, (int)width * 3, &encoded)
                              : WebPEncodeRGB(rgb, (int)width, (int)height, (int)width * 3, quality, &encoded);
    if (size == 0 || encoded == NULL) {
        cgc_set_message(message, "WebP: encoding failed");
        return CGC_ERR_NO_MEMORY;
    }
    // Hand back a malloc'd copy so every encoder's output is released with cgc_buffer_free.
    *out = (uint8_t *)malloc(size);
    if (*out == NULL) {
        WebPFree(encoded);
        cgc_set_message(message, "WebP: out of memory");
        return CGC_ERR_NO_MEMORY;
    }
    memcpy(*out, encoded, size);
    *out_size = size;
    WebPFree(encoded);
    return CGC_OK;
}
