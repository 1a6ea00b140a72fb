"""CoverGenreError: a failed C call's status plus the library's sentence about it."""

from __future__ import annotations

from . import _lib

# The header's one-line meaning of each status, for failures that come back without a sentence
# (the batch calls report a status per image but keep no per-image message).
_DESCRIPTIONS = {
    _lib.CG_ERR_INVALID_ARGUMENT: "invalid argument",
    _lib.CG_ERR_IO: "the file could not be opened or read",
    _lib.CG_ERR_MODEL_FORMAT: "not a valid .cgm model file",
    _lib.CG_ERR_MODEL_UNSUPPORTED: "a model format version or operator this library does not know",
    _lib.CG_ERR_CHECKSUM: "the model file's checksum does not match",
    _lib.CG_ERR_IMAGE_DECODE: "corrupt or truncated image data",
    _lib.CG_ERR_IMAGE_UNSUPPORTED: "not a JPEG, PNG or still WebP image",
    _lib.CG_ERR_IMAGE_TOO_LARGE: "the image is beyond the configured limits",
    _lib.CG_ERR_BUFFER_TOO_SMALL: "the result buffer is too small",
    _lib.CG_ERR_OUT_OF_MEMORY: "out of memory",
    _lib.CG_ERR_INTERNAL: "internal error in CoverGenre",
    _lib.CG_ERR_LIMIT_EXCEEDED: "the model file is beyond the configured limits",
}


def _decode(raw):
    return raw.decode("utf-8", "replace") if raw else ""


def status_string(status):
    """The library's constant name for a status, e.g. "CG_ERR_IMAGE_DECODE"."""
    return _decode(_lib.load().cg_status_string(int(status)))


class CoverGenreError(Exception):
    """A CoverGenre call failed.

    ``status`` is the cg_status number, ``status_name`` its constant name (``"CG_ERR_IO"``) and
    ``message`` the library's explanation.
    """

    def __init__(self, status, message, status_name=None):
        self.status = int(status)
        self.status_name = status_name if status_name is not None else status_string(status)
        self.message = message
        super().__init__(status, message)

    def __str__(self):
        return "%s: %s" % (self.status_name, self.message) if self.message else self.status_name

    def __repr__(self):
        return "CoverGenreError(%s, %r)" % (self.status_name, self.message)

    def __reduce__(self):
        return (type(self), (self.status, self.message, self.status_name))


def last_error(status):
    """The error for a status just returned on this thread (cg_last_error is per thread)."""
    return CoverGenreError(status, _decode(_lib.load().cg_last_error()))


def batch_error(status, path):
    """The error for one image of a batch call, which reports only a status."""
    what = _DESCRIPTIONS.get(int(status), "failed")
    return CoverGenreError(status, "%s: %s" % (path, what))


def check(status):
    """Raises the calling thread's last error unless status is CG_OK."""
    if status != _lib.CG_OK:
        raise last_error(status)
