// libpng 1.6 (Debian: libpng-dev, pkg-config name "libpng").
#include <png.h>
