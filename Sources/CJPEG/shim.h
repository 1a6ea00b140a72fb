// libjpeg(-turbo) (Debian: libjpeg-dev, pkg-config name "libjpeg"). jpeglib.h needs stdio.h first.
#include <stdio.h>
#include <jpeglib.h>
