"""ctypes declarations for include/covergenre.h, one per C function, and the library lookup.

This layer mirrors the header and nothing more; the Pythonic API lives in ``_model``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
import warnings
from pathlib import Path

# The header's CG_API_VERSION_MAJOR this binding was written against: a library with another
# major version may lay out structs or enums differently.
API_VERSION_MAJOR = 2

ENV_VAR = "COVERGENRE_LIBRARY"

if sys.platform == "darwin":
    _FILE_NAMES = ("libcovergenre.dylib", "libcovergenre.so")
elif sys.platform == "win32":
    _FILE_NAMES = ("covergenre.dll", "libcovergenre.dll")
else:
    _FILE_NAMES = ("libcovergenre.so",)


# ---- Types ------------------------------------------------------------------------------------

class cg_model(ctypes.Structure):
    """Opaque: only ever handled through a pointer."""


cg_model_p = ctypes.POINTER(cg_model)

# A C enum is passed as int on every ABI CoverGenre targets.
cg_status = ctypes.c_int

CG_OK = 0
CG_ERR_INVALID_ARGUMENT = 1
CG_ERR_IO = 2
CG_ERR_MODEL_FORMAT = 3
CG_ERR_MODEL_UNSUPPORTED = 4
CG_ERR_CHECKSUM = 5
CG_ERR_IMAGE_DECODE = 6
CG_ERR_IMAGE_UNSUPPORTED = 7
CG_ERR_IMAGE_TOO_LARGE = 8
CG_ERR_BUFFER_TOO_SMALL = 9
CG_ERR_OUT_OF_MEMORY = 10
CG_ERR_INTERNAL = 11
CG_ERR_LIMIT_EXCEEDED = 12
CG_ERR_NO_COVER = 13
CG_ERR_AUDIO_DECODE = 14


class cg_load_options(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("n_threads", ctypes.c_int32),
        ("verify_checksum", ctypes.c_int32),
        ("max_model_bytes", ctypes.c_uint64),
        ("max_metadata_bytes", ctypes.c_uint64),
        ("max_tensors", ctypes.c_uint32),
        ("max_image_width", ctypes.c_uint32),
        ("max_image_height", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("max_image_pixels", ctypes.c_uint64),
        ("max_image_bytes", ctypes.c_uint64),
        ("min_confidence", ctypes.c_float),
        ("mirror_view", ctypes.c_int32),
    ]


class cg_prediction(ctypes.Structure):
    _fields_ = [
        ("class_index", ctypes.c_int32),
        ("probability", ctypes.c_float),
        ("label", ctypes.c_char_p),
    ]


ITEM_MESSAGE_SIZE = 252


class cg_item_status(ctypes.Structure):
    _fields_ = [
        ("status", cg_status),
        ("message", ctypes.c_char * ITEM_MESSAGE_SIZE),
    ]


# A C enum, passed as int like cg_status.
cg_cover_source = ctypes.c_int
CG_COVER_NONE = 0
CG_COVER_FILE = 1
CG_COVER_EMBEDDED = 2


class cg_album(ctypes.Structure):
    _fields_ = [
        ("folder", ctypes.c_char_p),
        ("album_artist", ctypes.c_char_p),
        ("album", ctypes.c_char_p),
        ("cover_path", ctypes.c_char_p),
        ("cover_source", cg_cover_source),
        ("genre_count", ctypes.c_size_t),
        ("track_count", ctypes.c_size_t),
    ]


class cg_library(ctypes.Structure):
    """Opaque; only pointers to it are used."""


cg_library_p = ctypes.POINTER(cg_library)

_c_float_p = ctypes.POINTER(ctypes.c_float)
_c_uint8_p = ctypes.POINTER(ctypes.c_uint8)
_c_size_t_p = ctypes.POINTER(ctypes.c_size_t)
_c_int32_p = ctypes.POINTER(ctypes.c_int32)
_prediction_p = ctypes.POINTER(cg_prediction)
_options_p = ctypes.POINTER(cg_load_options)
_item_p = ctypes.POINTER(cg_item_status)
_paths_p = ctypes.POINTER(ctypes.c_char_p)

# (name, restype, argtypes), in the header's order.
FUNCTIONS = [
    # Version
    ("cg_api_version", ctypes.c_uint32, []),
    ("cg_version_string", ctypes.c_char_p, []),
    ("cg_kernel_variant", ctypes.c_char_p, []),
    # Errors
    ("cg_status_string", ctypes.c_char_p, [cg_status]),
    ("cg_last_error", ctypes.c_char_p, []),
    # Loading
    ("cg_default_load_options", cg_load_options, []),
    ("cg_model_load", cg_status, [ctypes.c_char_p, ctypes.POINTER(cg_model_p)]),
    ("cg_model_load_with_options", cg_status, [ctypes.c_char_p, _options_p, ctypes.POINTER(cg_model_p)]),
    ("cg_model_load_memory", cg_status, [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(cg_model_p)]),
    ("cg_model_load_memory_with_options", cg_status,
     [ctypes.c_void_p, ctypes.c_size_t, _options_p, ctypes.POINTER(cg_model_p)]),
    ("cg_model_free", None, [cg_model_p]),
    # Describing a model
    ("cg_model_class_count", ctypes.c_size_t, [cg_model_p]),
    ("cg_model_label", ctypes.c_char_p, [cg_model_p, ctypes.c_size_t]),
    ("cg_model_embedding_size", ctypes.c_size_t, [cg_model_p]),
    ("cg_model_input_size", cg_status, [cg_model_p, _c_int32_p, _c_int32_p]),
    ("cg_model_name", ctypes.c_char_p, [cg_model_p]),
    ("cg_model_architecture", ctypes.c_char_p, [cg_model_p]),
    ("cg_model_metadata_json", ctypes.c_char_p, [cg_model_p]),
    # Classifying one image
    ("cg_classify_file", cg_status, [cg_model_p, ctypes.c_char_p, ctypes.c_size_t, _prediction_p, _c_size_t_p]),
    ("cg_classify_image", cg_status,
     [cg_model_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, _prediction_p, _c_size_t_p]),
    ("cg_classify_rgb", cg_status,
     [cg_model_p, _c_uint8_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_size_t, ctypes.c_size_t, _prediction_p,
      _c_size_t_p]),
    ("cg_probabilities_file", cg_status, [cg_model_p, ctypes.c_char_p, _c_float_p, ctypes.c_size_t]),
    ("cg_probabilities_image", cg_status, [cg_model_p, ctypes.c_void_p, ctypes.c_size_t, _c_float_p, ctypes.c_size_t]),
    ("cg_probabilities_rgb", cg_status,
     [cg_model_p, _c_uint8_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_size_t, _c_float_p, ctypes.c_size_t]),
    ("cg_embed_file", cg_status, [cg_model_p, ctypes.c_char_p, _c_float_p, ctypes.c_size_t]),
    ("cg_embed_image", cg_status, [cg_model_p, ctypes.c_void_p, ctypes.c_size_t, _c_float_p, ctypes.c_size_t]),
    ("cg_embed_rgb", cg_status,
     [cg_model_p, _c_uint8_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_size_t, _c_float_p, ctypes.c_size_t]),
    # Running the network on prepared input
    ("cg_run_tensor", cg_status, [cg_model_p, _c_float_p, ctypes.c_size_t, ctypes.c_size_t, _c_float_p, ctypes.c_size_t]),
    # Classifying many images
    ("cg_classify_files", cg_status,
     [cg_model_p, _paths_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int32, _prediction_p, ctypes.c_size_t, _item_p,
      ctypes.c_size_t]),
    ("cg_probabilities_files", cg_status,
     [cg_model_p, _paths_p, ctypes.c_size_t, ctypes.c_int32, _c_float_p, ctypes.c_size_t, _item_p, ctypes.c_size_t]),
    ("cg_embed_files", cg_status,
     [cg_model_p, _paths_p, ctypes.c_size_t, ctypes.c_int32, _c_float_p, ctypes.c_size_t, _item_p, ctypes.c_size_t]),
    # Music libraries
    ("cg_library_open", cg_status, [ctypes.c_char_p, ctypes.POINTER(cg_library_p)]),
    ("cg_library_album_count", ctypes.c_size_t, [cg_library_p]),
    ("cg_library_album", cg_status, [cg_library_p, ctypes.c_size_t, ctypes.POINTER(cg_album)]),
    ("cg_library_album_genre", ctypes.c_char_p, [cg_library_p, ctypes.c_size_t, ctypes.c_size_t]),
    ("cg_library_album_track", ctypes.c_char_p, [cg_library_p, ctypes.c_size_t, ctypes.c_size_t]),
    ("cg_library_free", None, [cg_library_p]),
]


# ---- Finding and loading the library ----------------------------------------------------------

class LibraryNotFoundError(OSError):
    """libcovergenre could not be loaded; ``tried`` lists (candidate, reason) pairs."""

    def __init__(self, tried):
        self.tried = list(tried)
        lines = ["libcovergenre could not be loaded. Tried:"]
        lines += ["  %s: %s" % (candidate, reason) for candidate, reason in self.tried]
        lines.append("Set %s to the library's full path, or build it (scripts/build.sh)." % ENV_VAR)
        super().__init__("\n".join(lines))


def candidate_paths():
    """Where the library is looked for, in order, as (description, path-or-name) pairs."""
    here = Path(__file__).resolve().parent
    candidates = []
    env = os.environ.get(ENV_VAR)
    if env:
        candidates.append(("$" + ENV_VAR, env))
    for name in _FILE_NAMES:
        candidates.append(("next to the package", str(here / name)))
    # Only from a checkout (<repo>/bindings/python/covergenre): an installed copy must not load
    # whatever happens to sit in a build/lib near site-packages.
    if here.parent.name == "python" and here.parents[1].name == "bindings":
        for name in _FILE_NAMES:
            candidates.append(("repository build", str(here.parents[2] / "build" / "lib" / name)))
    return candidates


def _declare(cdll):
    for name, restype, argtypes in FUNCTIONS:
        function = getattr(cdll, name)
        function.restype = restype
        function.argtypes = argtypes
    return cdll


def _try_load(path):
    cdll = ctypes.CDLL(path)
    try:
        _declare(cdll)
    except AttributeError as e:
        raise OSError("not a CoverGenre library (%s)" % e) from None
    major = cdll.cg_api_version() // 10000
    if major != API_VERSION_MAJOR:
        raise OSError("API version %d.x; this binding needs %d.x" % (major, API_VERSION_MAJOR))
    return cdll


_lock = threading.Lock()
_cdll = None
_loaded_from = None


def load():
    """The loaded library (declared and version-checked); found on first call."""
    global _cdll, _loaded_from
    with _lock:
        if _cdll is not None:
            return _cdll
        tried = []
        for origin, path in candidate_paths():
            if not os.path.isfile(path):
                tried.append((path, "no such file (%s)" % origin))
                continue
            try:
                _cdll = _try_load(path)
            except OSError as e:
                tried.append((path, "%s (%s)" % (e, origin)))
                continue
            _loaded_from = path
            break
        if _cdll is None:
            name = ctypes.util.find_library("covergenre")
            if name is None:
                tried.append(("ctypes.util.find_library('covergenre')", "found nothing"))
            else:
                try:
                    _cdll = _try_load(name)
                    _loaded_from = name
                except OSError as e:
                    tried.append((name, "%s (ctypes.util.find_library)" % e))
        if _cdll is None:
            raise LibraryNotFoundError(tried)
        if os.environ.get(ENV_VAR) and tried and tried[0][0] == os.environ[ENV_VAR]:
            # An explicit setting that did not work should not pass unnoticed.
            warnings.warn("%s=%s could not be used (%s); loaded %s instead"
                          % (ENV_VAR, tried[0][0], tried[0][1], _loaded_from), RuntimeWarning, stacklevel=2)
        return _cdll


def loaded_from():
    """The path or name the library was loaded from, or None before the first load()."""
    return _loaded_from
