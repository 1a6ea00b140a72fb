"""The package's version: CoverGenre's one version number, kept in include/covergenre.h.

scripts/wheel.sh replaces this file in the wheel with the number itself; in the source tree it is
read from the header, so the two cannot disagree."""

import os
import re

__version__ = "0+unknown"


def _from_header():
    header = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "include", "covergenre.h")
    try:
        with open(header, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    parts = [re.search(r"^#define CG_API_VERSION_%s (\d+)$" % name, text, re.M) for name in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(m.group(1) for m in parts) if all(parts) else None


__version__ = _from_header() or __version__
