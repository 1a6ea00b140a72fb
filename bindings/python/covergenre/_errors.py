"""CoverGenreError: a failed C call's status plus the library's sentence about it."""

from __future__ import annotations

from . import _lib

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


def item_error(item):
    """The error of one image of a batch call: its status and the library's message about it."""
    return CoverGenreError(item.status, _decode(item.message))


def check(status):
    """Raises the calling thread's last error unless status is CG_OK."""
    if status != _lib.CG_OK:
        raise last_error(status)
