// libwebp's decoder (Debian: libwebp-dev, pkg-config name "libwebp").
#include <webp/decode.h>
#include <webp/encode.h>
