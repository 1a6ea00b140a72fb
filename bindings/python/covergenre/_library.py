"""Music libraries: the albums of a folder and where their covers are (cg_library_*)."""

from __future__ import annotations

import ctypes
import os
from typing import NamedTuple, Optional, Tuple

from . import _lib
from ._errors import check


class Album(NamedTuple):
    """One album: the audio files of a folder that share album and album-artist tags.

    ``cover`` is the file to classify (pass it to ``Model.classify``): the folder's cover image, or
    the track whose embedded front cover stands for the album (``cover_source`` "file" or
    "embedded"); None when the album has neither."""

    folder: str
    album_artist: Optional[str]
    album: Optional[str]
    cover: Optional[str]
    cover_source: Optional[str]
    genres: Tuple[str, ...]
    tracks: Tuple[str, ...]


_SOURCES = {_lib.CG_COVER_NONE: None, _lib.CG_COVER_FILE: "file", _lib.CG_COVER_EMBEDDED: "embedded"}


def _text(raw):
    return None if raw is None else os.fsdecode(raw)


def albums(folder):
    """Every album under ``folder`` (recursively), sorted by folder; reads tags only."""
    lib = _lib.load()
    handle = _lib.cg_library_p()
    check(lib.cg_library_open(os.fsencode(os.fspath(folder)), ctypes.byref(handle)))
    try:
        found = []
        for i in range(lib.cg_library_album_count(handle)):
            a = _lib.cg_album()
            check(lib.cg_library_album(handle, i, ctypes.byref(a)))
            genres = tuple(lib.cg_library_album_genre(handle, i, g).decode("utf-8", "replace") for g in range(a.genre_count))
            tracks = tuple(_text(lib.cg_library_album_track(handle, i, t)) for t in range(a.track_count))
            found.append(Album(_text(a.folder), a.album_artist and a.album_artist.decode("utf-8", "replace"),
                               a.album and a.album.decode("utf-8", "replace"), _text(a.cover_path),
                               _SOURCES.get(a.cover_source), genres, tracks))
        return found
    finally:
        lib.cg_library_free(handle)
