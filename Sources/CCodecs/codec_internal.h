// Helpers shared by the codec files; not part of the module's public header.
#ifndef CG_CODEC_INTERNAL_H
#define CG_CODEC_INTERNAL_H

#include "cg_codecs.h"

#define CGC_MESSAGE_SIZE 192

void cgc_set_message(char *message, const char *format, ...) __attribute__((format(printf, 2, 3)));

// Checks width/height/pixel count against the limits; on refusal writes the reason.
int cgc_within_limits(uint32_t width, uint32_t height, const cgc_limits *limits, char *message);

cgc_status cgc_probe_jpeg(const uint8_t *data, size_t size, uint32_t *width, uint32_t *height, char message[192]);
cgc_status cgc_probe_png(const uint8_t *data, size_t size, uint32_t *width, uint32_t *height, char message[192]);
cgc_status cgc_probe_webp(const uint8_t *data, size_t size, uint32_t *width, uint32_t *height, char message[192]);

#endif
