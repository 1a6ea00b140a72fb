"""covergenre: a beets plugin that sets albums' genres from their cover art.

Enable it in beets' config.yaml once the covergenre package is installed::

    plugins: covergenre

``beet covergenre [QUERY]`` goes through the albums the query matches (every album without one).
For each album without a genre (every album with ``--force``) it finds the cover, classifies it
with the CoverGenre model, and sets the most probable genre when the model gives it at least
``min_confidence``; otherwise the album is left alone ("unsure"). ``-p``/``--pretend`` prints what
would be set and changes nothing; ``--min-confidence P`` and ``-f``/``--force`` (``-F``/
``--no-force``) override the configuration for one run. ``beet -v covergenre`` also says why each
album was skipped.

Configuration, in a ``covergenre:`` section (defaults shown)::

    covergenre:
        auto: no              # also set the genre of each album as it is imported
        min_confidence: 0.5   # set a genre only when its probability is at least this
                              # (above 1: never; the default model answers ~1 cover in 3 at 0.5)
        count: 1              # set up to this many genres, each at least min_confidence probable
        force: no             # also replace the genre of albums that have one
        model: ''             # a .cgm model file; empty: the default model shipped with covergenre
        threads: 0            # threads one cover may use; 0: every core
        sources: artpath filesystem embedded   # where to look for the cover, first found wins
        cover_names: cover folder front albumart   # file names the filesystem source looks for
        separator: ', '       # joins several genres on a beets without the multi-valued field

The cover sources, tried in the order ``sources`` lists them:

- ``artpath``: the album's art file in the library (set by fetchart, or by the importer).
- ``filesystem``: a JPEG, PNG or WebP file named ``cover``, ``folder``, ... (``cover_names``, any
  case) in a folder of the album's tracks. This is what ``auto`` finds on import: the import
  stages run before fetchart assigns the album's art.
- ``embedded``: the front cover embedded in a track (MP3, FLAC, M4A, Ogg), tracks in disc and
  track order, first track with a usable cover wins (libcovergenre's file calls read it).

The genre goes where the installed beets keeps it: the multi-valued ``genres`` field (beets 2.7
and later), else the single ``genre`` field (several genres joined by ``separator``), as that
version's lastgenre does. Like lastgenre, ``beet covergenre`` stores the album (its tracks
inherit the genre) and writes the tags to the files when beets writes tags (``import.write``, on
by default); on import the genre is stored and the importer writes it with the other tags.
"""

from __future__ import annotations

import os

from beets import library, ui
from beets.plugins import BeetsPlugin
from beets.util import displayable_path, syspath

import covergenre

SOURCES = ("artpath", "filesystem", "embedded")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")

# Statuses that mean "no usable cover here" (a track without a cover, a format the library does
# not read, a damaged picture, a file gone): the next candidate is tried and -v says why. Any other
# failure is also survived, but reported as a warning.
NOT_A_COVER = {"io", "image_decode", "image_unsupported", "image_too_large", "no_cover", "audio_decode"}


def genre_field():
    """The installed beets' album genre field: "genres" (a list, beets 2.7+) or "genre"."""
    return "genres" if "genres" in library.Album._fields else "genre"


def existing_genres(album, field):
    """The album's genres as a list ([] when it has none)."""
    value = album.get(field)
    if field == "genres":
        return [genre for genre in (value or []) if genre]
    return [value] if value else []


def set_genres(album, field, genres, separator):
    if field == "genres":
        album.genres = list(genres)
    else:
        album.genre = separator.join(genres)


def status_name(error):
    """A CoverGenreError's status as a short name: CG_ERR_IMAGE_DECODE -> "image_decode"."""
    name = (getattr(error, "status_name", None) or "").lower()
    return name[len("cg_err_"):] if name.startswith("cg_err_") else name


def choose_genres(labels, probabilities, count, min_confidence):
    """(genres to set, ranking): up to `count` labels, most probable first, each with at least
    `min_confidence`; the ranking is every (label, probability), most probable first."""
    ranking = sorted(zip(labels, (float(p) for p in probabilities)), key=lambda pair: -pair[1])
    return [label for label, p in ranking[:count] if p >= min_confidence], ranking


def summary(outcomes, pretend):
    """One line about a run: "3 albums: 1 set, 1 unsure, 1 without a cover"."""
    words = [("set", "would be set" if pretend else "set"), ("unsure", "unsure"),
             ("no cover", "without a cover"), ("has genre", "already with a genre"), ("no tracks", "without tracks")]
    total = sum(outcomes.values())
    return "%d album%s: %s" % (total, "" if total == 1 else "s",
                               ", ".join("%d %s" % (outcomes[key], text) for key, text in words if outcomes.get(key)))


def _track_order(item):
    return (item.disc or 0, item.track or 0, item.path)


class CoverGenrePlugin(BeetsPlugin):
    def __init__(self):
        super().__init__()
        self.config.add({
            "auto": False,
            "min_confidence": 0.5,
            "count": 1,
            "force": False,
            "model": "",
            "threads": 0,
            "sources": list(SOURCES),
            "cover_names": ["cover", "folder", "front", "albumart"],
            "separator": ", ",
        })
        self._loaded = None
        self._load_error = None
        self._import_error_logged = False
        if self.config["auto"].get(bool):
            self.import_stages = [self.imported]

    # ---- Configuration ----

    def _sources(self):
        sources = self.config["sources"].as_str_seq()
        unknown = [s for s in sources if s not in SOURCES]
        if unknown:
            raise ui.UserError("covergenre: unknown source %s in sources (choose from %s)"
                               % (", ".join(unknown), ", ".join(SOURCES)))
        return sources

    def _count(self):
        count = self.config["count"].get(int)
        if count < 1:
            raise ui.UserError("covergenre: count must be at least 1, not %d" % count)
        return count

    def _model(self):
        """The model, loaded on first use and kept for the rest of the run."""
        if self._loaded is not None:
            return self._loaded
        if self._load_error is not None:
            raise self._load_error
        path = self.config["model"].as_filename() if self.config["model"].get() else None
        threads = self.config["threads"].get(int)
        try:
            self._loaded = covergenre.Model(path, threads=threads)
        except (covergenre.CoverGenreError, OSError, ValueError, TypeError) as exc:
            self._load_error = ui.UserError("covergenre: cannot load the model %s: %s"
                                            % (path or "(the default model)", exc))
            raise self._load_error
        self._log.debug("model {0} ({1} genres: {2}), libcovergenre {3}", path or covergenre.default_model_path(),
                        len(self._loaded.labels), ", ".join(self._loaded.labels), covergenre.library_path())
        return self._loaded

    # ---- Finding and classifying the cover ----

    def _candidates(self, album, items):
        """(source, path as str) of each possible cover of the album, best first, lazily."""
        for source in self._sources():
            if source == "artpath":
                if album.artpath:
                    path = syspath(album.artpath)
                    if os.path.isfile(path) and os.access(path, os.R_OK):
                        yield source, os.fsdecode(path)
                    else:
                        self._log.debug("{0}: art file {1} is missing or unreadable", album,
                                        displayable_path(album.artpath))
            elif source == "filesystem":
                for path in self._folder_images(items):
                    yield source, path
            else:
                for item in items:
                    yield source, os.fsdecode(syspath(item.path))

    def _folder_images(self, items):
        names = [name.lower() for name in self.config["cover_names"].as_str_seq()]
        folders = []
        for item in items:
            folder = os.path.dirname(syspath(item.path))
            if folder not in folders:
                folders.append(folder)
        for folder in folders:
            try:
                entries = os.listdir(folder)
            except OSError:
                continue
            found = []
            for entry in entries:
                stem, extension = os.path.splitext(os.fsdecode(entry))
                if stem.lower() in names and extension.lower() in IMAGE_EXTENSIONS:
                    found.append((names.index(stem.lower()), os.fsdecode(entry)))
            for _, entry in sorted(found):
                path = os.path.join(os.fsdecode(folder), entry)
                if os.path.isfile(path):
                    yield path

    def _classify(self, album, items):
        """(source, path, probabilities) of the album's first usable cover, or None."""
        model = self._model()
        for source, path in self._candidates(album, items):
            try:
                return source, path, model.probabilities(path)
            except covergenre.CoverGenreError as exc:
                if status_name(exc) in NOT_A_COVER:
                    self._log.debug("{0}: no usable cover in {1}: {2}", album, path, exc)
                else:
                    self._log.warning("{0}: cannot classify {1}: {2}", album, path, exc)
        return None

    # ---- One album ----

    def process(self, album, force, min_confidence, pretend, write):
        """Sets the album's genre from its cover. Returns what happened: "set", "unsure",
        "no cover", "has genre" (and not force) or "no tracks"."""
        field = genre_field()
        existing = existing_genres(album, field)
        if existing and not force:
            self._log.debug("{0}: has {1} {2}, left alone (--force replaces it)", album, field, ", ".join(existing))
            return "has genre"
        items = sorted(album.items(), key=_track_order)
        if not items:
            self._log.debug("{0}: no tracks", album)
            return "no tracks"
        found = self._classify(album, items)
        if found is None:
            message = "{0}: no cover found (tried {1})".format(album, ", ".join(self._sources()))
            if pretend:
                ui.print_(message)
            else:
                self._log.debug("{0}", message)
            return "no cover"
        source, path, probabilities = found
        genres, ranking = choose_genres(self._model().labels, probabilities, self._count(), min_confidence)
        cover = "cover: %s %s" % (source, path)
        if not genres:
            best, p = ranking[0]
            message = "{0}: unsure, {1} {2:.2f} < {3} ({4})".format(album, best, p, min_confidence, cover)
            if pretend:
                ui.print_(message)
            else:
                self._log.debug("{0}", message)
            return "unsure"
        detail = "%s %s, %s" % ("probability" if len(genres) == 1 else "probabilities",
                                ", ".join("%.2f" % p for _, p in ranking[:len(genres)]), cover)
        if pretend:
            ui.print_("{0}: would set {1} to {2} ({3})".format(album, field, ", ".join(genres), detail))
            return "set"
        set_genres(album, field, genres, self.config["separator"].as_str())
        album.try_sync(write=write, move=False)
        self._log.info("{0}: {1} set to {2} ({3})", album, field, ", ".join(genres), detail)
        return "set"

    # ---- The command ----

    def commands(self):
        command = ui.Subcommand("covergenre", help="set album genres from their cover art")
        command.parser.add_option("-p", "--pretend", action="store_true", default=False,
                                  help="show the genres that would be set, change nothing")
        command.parser.add_option("-f", "--force", dest="force", action="store_true", default=None,
                                  help="also replace the genre of albums that have one")
        command.parser.add_option("-F", "--no-force", dest="force", action="store_false",
                                  help="leave albums that have a genre alone")
        command.parser.add_option("--min-confidence", dest="min_confidence", type="float", default=None,
                                  metavar="P", help="set a genre only when its probability is at least P "
                                  "(default: the min_confidence option, %s)" % self.config["min_confidence"].get())
        command.func = self._command
        return [command]

    def _command(self, lib, opts, args):
        self._sources(), self._count()  # a configuration mistake stops the run before any album
        force = self.config["force"].get(bool) if opts.force is None else opts.force
        if opts.min_confidence is not None:
            min_confidence = opts.min_confidence
        else:
            min_confidence = self.config["min_confidence"].as_number()
        write = ui.should_write()
        outcomes = {}
        for album in lib.albums(args):
            outcome = self.process(album, force, min_confidence, opts.pretend, write)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcomes:
            self._log.info("{0}", summary(outcomes, opts.pretend))

    # ---- Import ----

    def imported(self, session, task):
        if not task.is_album:
            self._log.debug("{0}: a singleton, left alone (covergenre classifies albums)", task.item)
            return
        try:
            self.process(task.album, self.config["force"].get(bool), self.config["min_confidence"].as_number(),
                         pretend=False, write=False)
        except ui.UserError as exc:
            # A model that does not load fails every album the same way: say it once.
            if not self._import_error_logged:
                self._log.error("{0}", exc)
                self._import_error_logged = True
