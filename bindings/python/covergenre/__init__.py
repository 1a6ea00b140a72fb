"""CoverGenre: predict an album's genre from its cover art.

    import covergenre

    with covergenre.Model() as model:                     # the default model; or Model("my.cgm")
        for p in model.classify("cover.jpg", top_k=3):
            print(p.label, round(p.probability, 3))

The shared library libcovergenre is found through $COVERGENRE_LIBRARY, next to this package, in
the repository's build/lib, or by ctypes.util.find_library, in that order. ``covergenre.cgm``
reads and writes model files in pure Python (with numpy) and needs no library.
"""

from . import _lib
from ._errors import CoverGenreError, status_string
from ._lib import LibraryNotFoundError
from ._library import Album, albums
from ._model import Model, Prediction, default_model_path

from ._version import __version__  # noqa: E402  (CoverGenre's one version: include/covergenre.h)

__all__ = [
    "Album",
    "CoverGenreError",
    "LibraryNotFoundError",
    "Model",
    "Prediction",
    "albums",
    "api_version",
    "default_model_path",
    "kernel_variant",
    "library_path",
    "library_version",
    "status_string",
]


def library_version():
    """The loaded library's version, e.g. "2.2.0" (cg_version_string); equal to __version__."""
    return _lib.load().cg_version_string().decode("utf-8")


def kernel_variant():
    """The instruction-set variant the library's kernels run: "avx512", "avx2" or "generic"
    (cg_kernel_variant; the environment variable COVERGENRE_ISA can force a lower one)."""
    return _lib.load().cg_kernel_variant().decode("utf-8")


def api_version():
    """The loaded library's C API version as (major, minor, patch)."""
    v = _lib.load().cg_api_version()
    return (v // 10000, v // 100 % 100, v % 100)


def library_path():
    """Where libcovergenre was loaded from (loading it if needed)."""
    _lib.load()
    return _lib.loaded_from()
