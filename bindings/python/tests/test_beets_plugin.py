"""The beets plugin (bindings/python/beetsplug/covergenre.py) against a real beets library.

Each test makes a beets configuration directory (BEETSDIR) and library in a tmp dir, writes albums
of one-second silent tracks (MP3 and FLAC written here in pure Python, M4A and Ogg Vorbis by
ffmpeg) tagged with mutagen, imports them with `beet import -A` and runs `beet covergenre` in a
subprocess (`python -m beets`, the plugin on PYTHONPATH), then reads the genres back from the
library (beets' API) and from the files (mutagen). Covers are the project's example covers
(`covergenre make-examples`) and variants of them; what each should get is asked of the model here.

Covers come from the album's artpath, a cover.png beside the tracks, or the front cover embedded
in a track (test_embedded_*: the library's file calls read it from MP3, FLAC, M4A and Ogg files).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BINDINGS
import covergenre

# ---- Audio files --------------------------------------------------------------------------------

RATE = 44100


def silent_mp3(path, seconds=1):
    """MPEG-1 Layer III, 128 kbit/s, 44.1 kHz mono: frames whose side info says no data (silence)."""
    frame = bytes([0xFF, 0xFB, 0x90, 0xC0]) + bytes(417 - 4)  # 144 * 128000 / 44100 = 417 bytes
    Path(path).write_bytes(frame * -(-seconds * RATE // 1152))


def _crc8(data):
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16(data):
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def silent_flac(path, seconds=1):
    """16-bit 44.1 kHz mono FLAC: STREAMINFO, then frames of one CONSTANT (zero) subframe each."""
    total, block = seconds * RATE, 4096
    fields = (RATE << 44) | (0 << 41) | (15 << 36) | total  # rate, channels - 1, bits - 1, samples
    info = (struct.pack(">HH", block, block) + bytes(6) + fields.to_bytes(8, "big")
            + hashlib.md5(bytes(2 * total)).digest())
    out = bytearray(b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info)
    for number, start in enumerate(range(0, total, block)):
        size = min(block, total - start)
        # Sync + fixed blocking; block size in 16 bits at the end; 44.1 kHz; mono; 16 bits/sample.
        header = bytes([0xFF, 0xF8, 0x79, 0x08, number]) + (size - 1).to_bytes(2, "big")
        frame = header + bytes([_crc8(header)]) + b"\x00" + b"\x00\x00"  # CONSTANT subframe, value 0
        out += frame + _crc16(frame).to_bytes(2, "big")
    Path(path).write_bytes(bytes(out))


def ffmpeg_silence(path, codec):
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is needed to write %s files (apt-get install ffmpeg)" % Path(path).suffix)
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono", "-t", "1",
                    "-c:a", codec, "-y", str(path)], check=True)


FORMATS = {"mp3": silent_mp3, "flac": silent_flac,
           "m4a": lambda path: ffmpeg_silence(path, "aac"),
           "ogg": lambda path: ffmpeg_silence(path, "libvorbis")}


def png_bytes(cover):
    """The cover as PNG bytes (PNG embeds in every format, unlike WebP)."""
    from PIL import Image
    data = Path(cover).read_bytes()
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def embed_cover(path, data):
    """Embeds PNG `data` as the front cover, the way each format keeps pictures."""
    from mutagen.flac import FLAC, Picture
    from mutagen.id3 import APIC, ID3
    from mutagen.mp4 import MP4, MP4Cover
    from mutagen.oggvorbis import OggVorbis

    path = str(path)
    picture = Picture()
    picture.type, picture.mime, picture.desc, picture.data = 3, "image/png", "", data
    if path.endswith(".mp3"):
        tags = ID3(path)
        tags.add(APIC(encoding=3, mime="image/png", type=3, desc="", data=data))
        tags.save(path)
    elif path.endswith(".flac"):
        audio = FLAC(path)
        audio.add_picture(picture)
        audio.save()
    elif path.endswith(".m4a"):
        audio = MP4(path)
        audio["covr"] = [MP4Cover(data, imageformat=MP4Cover.FORMAT_PNG)]
        audio.save()
    else:
        audio = OggVorbis(path)
        audio["metadata_block_picture"] = [base64.b64encode(picture.write()).decode("ascii")]
        audio.save()


def write_track(path, fmt, tags, cover=None):
    import mutagen
    FORMATS[fmt](path)
    audio = mutagen.File(str(path), easy=True)
    if audio.tags is None:
        audio.add_tags()
    for key, value in tags.items():
        audio[key] = value
    audio.save()
    if cover is not None:
        embed_cover(path, png_bytes(cover))


def file_genres(path):
    import mutagen
    return list(mutagen.File(str(path), easy=True).get("genre") or [])


def make_album(directory, artist, album, fmt="mp3", tracks=2, genre=None, embedded=None, folder_cover=None):
    """Writes an album's tracks into `directory`; returns their paths.

    `embedded`: {track index: cover file} to embed; `folder_cover`: a cover copied beside the
    tracks as cover.<ext>."""
    directory = Path(directory)
    directory.mkdir(parents=True)
    paths = []
    for i in range(tracks):
        path = directory / ("%02d Track %d.%s" % (i + 1, i + 1, fmt))
        tags = {"artist": artist, "albumartist": artist, "album": album, "title": "Track %d" % (i + 1),
                "tracknumber": str(i + 1)}
        if genre:
            tags["genre"] = genre
        write_track(path, fmt, tags, (embedded or {}).get(i))
        paths.append(path)
    if folder_cover is not None:
        shutil.copyfile(folder_cover, directory / ("cover" + Path(folder_cover).suffix))
    return paths


# ---- Covers and the model -----------------------------------------------------------------------

@pytest.fixture(scope="session")
def model(lib):
    with covergenre.Model() as loaded:
        yield loaded


def ranking(model, cover):
    """[(label, probability)] of a cover (a path or image bytes), most probable first."""
    return sorted(zip(model.labels, map(float, model.probabilities(cover))), key=lambda pair: -pair[1])


@pytest.fixture(scope="session")
def covers(cli, model, tmp_path_factory):
    """{name: path}: the CLI's example covers, and grayscale and cropped PNG variants of each."""
    from PIL import Image
    directory = tmp_path_factory.mktemp("covers")
    subprocess.run([cli, "make-examples", str(directory)], check=True, stdout=subprocess.PIPE)
    found = {}
    for path in sorted(directory.iterdir()):
        found[path.name] = path
        picture = Image.open(path).convert("RGB")
        for variant, image in [("gray", picture.convert("L").convert("RGB")),
                               ("crop", picture.crop((0, 0, picture.width // 2, picture.height // 2)))]:
            found["%s-%s.png" % (path.stem, variant)] = directory / ("%s-%s.png" % (path.stem, variant))
            image.save(found["%s-%s.png" % (path.stem, variant)], format="PNG")
    assert len(found) >= 6, "make-examples wrote %s" % sorted(found)
    return found


@pytest.fixture(scope="session")
def two_genres(covers, model):
    """Two PNG covers whose most probable genres differ: (cover, its genre, cover, its genre).

    PNG, so that the pixels embedded in a track (always PNG) are the very pixels classified."""
    pngs = sorted(name for name in covers if name.endswith(".png"))
    tops = {name: ranking(model, covers[name])[0][0] for name in pngs}
    first = pngs[0]
    for name in pngs:
        if tops[name] != tops[first]:
            return covers[first], tops[first], covers[name], tops[name]
    pytest.fail("every cover variant gets %s from the model: none to tell two covers apart" % tops[first])


# ---- beets ---------------------------------------------------------------------------------------

class Beets:
    """A beets configuration directory and library in a tmp dir, and `beet` run in a subprocess."""

    def __init__(self, root, library_path):
        self.root = Path(root)
        self.home = self.root / "beetsdir"
        self.home.mkdir()
        self.db = self.root / "library.db"
        self.env = dict(os.environ, BEETSDIR=str(self.home), COVERGENRE_LIBRARY=library_path,
                        PYTHONIOENCODING="utf-8",
                        PYTHONPATH=os.pathsep.join(filter(None, [str(BINDINGS), os.environ.get("PYTHONPATH")])))
        self.configure()

    def configure(self, write=True, **covergenre_options):
        """Writes config.yaml: the plugin on, as-is imports in place, and these plugin options."""
        options = {"threads": 1, "min_confidence": 0.0}
        options.update(covergenre_options)
        config = {
            "directory": str(self.root / "music"),
            "library": str(self.db),
            "plugins": ["covergenre"],
            "import": {"copy": False, "move": False, "write": write, "resume": False, "incremental": False,
                       "log": None},
            "covergenre": options,
        }
        (self.home / "config.yaml").write_text(json.dumps(config, indent=2))  # JSON is YAML

    def run(self, *args):
        done = subprocess.run([sys.executable, "-m", "beets", *map(str, args)], env=self.env, cwd=str(self.root),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
        assert done.returncode == 0, "beet %s exited with %d:\n%s" % (" ".join(map(str, args)), done.returncode,
                                                                      done.stdout)
        assert "error loading plugin" not in done.stdout, done.stdout
        return done.stdout

    def import_(self, *directories):
        return self.run("import", "-A", "-q", *directories)

    def _open(self):
        from beets.library import Library
        return Library(str(self.db), str(self.root / "music"))

    def albums(self):
        """{album title: {"genres": [...], "tracks": {path: [item genres]}}} from the library."""
        from beets import dbcore
        from beets.library import Album, Item
        lib = self._open()
        try:
            result = {}
            for album in lib.albums(None, dbcore.sort_from_strings(Album, [])):
                items = lib.items(dbcore.MatchQuery("album_id", album.id), dbcore.sort_from_strings(Item, []))
                result[album.album] = {"genres": stored_genres(album),
                                       "tracks": {os.fsdecode(item.path): stored_genres(item) for item in items}}
            return result
        finally:
            lib._close()

    def set_artpath(self, title, path):
        from beets import dbcore
        lib = self._open()
        try:
            (album,) = lib.albums(dbcore.MatchQuery("album", title))
            album.artpath = os.fsencode(str(path))
            album.store()
        finally:
            lib._close()


def genre_field():
    from beets.library import Album
    return "genres" if "genres" in Album._fields else "genre"


def stored_genres(obj):
    """A library album's or item's genres as a list, whichever field the installed beets has (a
    beets before 2.7 has one string: [that string])."""
    if genre_field() == "genres":
        return list(obj.get("genres") or [])
    return [obj.get("genre")] if obj.get("genre") else []


@pytest.fixture
def beets(lib, tmp_path):
    pytest.importorskip("beets", reason="the beets plugin tests need beets (pip install beets)")
    pytest.importorskip("mutagen", reason="the beets plugin tests need mutagen")
    pytest.importorskip("PIL", reason="the beets plugin tests need Pillow")
    return Beets(tmp_path, covergenre.library_path())


def assert_album(beets_, title, genres, paths):
    """The album, each of its tracks in the library, and each track's file all have `genres`."""
    album = beets_.albums()[title]
    assert album["genres"] == genres, title
    assert sorted(album["tracks"].values()) == [genres] * len(paths), title
    for path in paths:
        assert file_genres(path) == genres, path


# ---- Cover files: the album's art (artpath) and cover images beside the tracks -------------------

def test_pretend_prints_genres_and_changes_nothing(beets, covers, model):
    cover_a, cover_b = covers["neon-grid.jpg"], covers["sunset-fields.png"]
    a = make_album(beets.root / "in" / "a", "Artist A", "Alpha")
    b = make_album(beets.root / "in" / "b", "Artist B", "Beta", fmt="flac")
    beets.import_(beets.root / "in" / "a", beets.root / "in" / "b")
    beets.set_artpath("Alpha", cover_a)
    beets.set_artpath("Beta", cover_b)

    out = beets.run("covergenre", "--pretend")

    for artist, title, cover in [("Artist A", "Alpha", cover_a), ("Artist B", "Beta", cover_b)]:
        label, p = ranking(model, cover)[0]
        assert "%s - %s: would set %s to %s (probability %.2f, cover: artpath %s)" % (
            artist, title, genre_field(), label, p, cover) in out, out
    assert "2 albums: 2 would be set" in out, out
    assert_album(beets, "Alpha", [], a)
    assert_album(beets, "Beta", [], b)


def test_sets_the_genre_of_albums_without_one_and_writes_the_tags(beets, covers, model):
    cover_a, cover_b = covers["neon-grid.jpg"], covers["bold-type.webp"]
    a = make_album(beets.root / "in" / "a", "Artist A", "Alpha")
    b = make_album(beets.root / "in" / "b", "Artist B", "Beta", genre="Jazz")
    c = make_album(beets.root / "in" / "c", "Artist C", "Gamma", fmt="flac", tracks=3)
    beets.import_(*(beets.root / "in" / name for name in "abc"))
    for title, cover in [("Alpha", cover_a), ("Beta", cover_b), ("Gamma", cover_b)]:
        beets.set_artpath(title, cover)

    beets.run("covergenre")

    assert_album(beets, "Alpha", [ranking(model, cover_a)[0][0]], a)
    assert_album(beets, "Beta", ["Jazz"], b)
    assert_album(beets, "Gamma", [ranking(model, cover_b)[0][0]], c)


def test_force_replaces_existing_genres(beets, covers, model):
    cover = covers["sunset-fields.png"]
    b = make_album(beets.root / "in" / "b", "Artist B", "Beta", genre="Jazz")
    beets.import_(beets.root / "in" / "b")
    beets.set_artpath("Beta", cover)

    beets.run("covergenre", "--force")

    assert_album(beets, "Beta", [ranking(model, cover)[0][0]], b)


def test_force_from_the_configuration_and_no_force_on_the_command_line(beets, covers, model):
    cover = covers["sunset-fields.png"]
    b = make_album(beets.root / "in" / "b", "Artist B", "Beta", genre="Jazz")
    beets.import_(beets.root / "in" / "b")
    beets.set_artpath("Beta", cover)
    beets.configure(force=True)

    beets.run("covergenre", "--no-force")
    assert_album(beets, "Beta", ["Jazz"], b)

    beets.run("covergenre")
    assert_album(beets, "Beta", [ranking(model, cover)[0][0]], b)


def test_min_confidence_above_one_sets_nothing(beets, covers, model):
    a = make_album(beets.root / "in" / "a", "Artist A", "Alpha")
    beets.import_(beets.root / "in" / "a")
    beets.set_artpath("Alpha", covers["neon-grid.jpg"])

    out = beets.run("covergenre", "--pretend", "--min-confidence", "1.01")
    label, p = ranking(model, covers["neon-grid.jpg"])[0]
    assert "Artist A - Alpha: unsure, %s %.2f < 1.01" % (label, p) in out, out

    beets.run("covergenre", "--min-confidence", "1.01")
    assert_album(beets, "Alpha", [], a)


def test_min_confidence_from_the_configuration(beets, covers, model):
    # The threshold between the two albums' top probabilities: only the surer one gets its genre.
    tops = sorted(((ranking(model, path)[0][1], name) for name, path in covers.items()))
    (p_low, low), (p_high, high) = tops[0], tops[-1]
    assert p_high - p_low > 0.02, tops
    a = make_album(beets.root / "in" / "a", "Artist A", "Sure")
    b = make_album(beets.root / "in" / "b", "Artist B", "Unsure")
    beets.import_(beets.root / "in" / "a", beets.root / "in" / "b")
    beets.set_artpath("Sure", covers[high])
    beets.set_artpath("Unsure", covers[low])
    beets.configure(min_confidence=round((p_low + p_high) / 2, 4))

    beets.run("covergenre")

    assert_album(beets, "Sure", [ranking(model, covers[high])[0][0]], a)
    assert_album(beets, "Unsure", [], b)


def test_count_sets_the_most_probable_genres_in_order(beets, covers, model):
    cover = covers["neon-grid.jpg"]
    a = make_album(beets.root / "in" / "a", "Artist A", "Alpha", fmt="flac")
    beets.import_(beets.root / "in" / "a")
    beets.set_artpath("Alpha", cover)
    beets.configure(count=2)

    beets.run("covergenre")

    expected = [label for label, _ in ranking(model, cover)[:2]]
    if genre_field() == "genre":  # one field: the genres joined by the separator
        expected = [", ".join(expected)]
    assert_album(beets, "Alpha", expected, a)


def test_write_off_stores_the_genre_and_leaves_the_files(beets, covers, model):
    cover = covers["neon-grid.jpg"]
    a = make_album(beets.root / "in" / "a", "Artist A", "Alpha")
    beets.import_(beets.root / "in" / "a")
    beets.set_artpath("Alpha", cover)
    beets.configure(write=False)

    beets.run("covergenre")

    label = ranking(model, cover)[0][0]
    album = beets.albums()["Alpha"]
    assert album["genres"] == [label]
    assert list(album["tracks"].values()) == [[label]] * len(a)
    assert [file_genres(path) for path in a] == [[]] * len(a)


def test_query_selects_the_albums(beets, covers, model):
    a = make_album(beets.root / "in" / "a", "Artist A", "Alpha")
    b = make_album(beets.root / "in" / "b", "Artist B", "Beta")
    beets.import_(beets.root / "in" / "a", beets.root / "in" / "b")
    beets.set_artpath("Alpha", covers["neon-grid.jpg"])
    beets.set_artpath("Beta", covers["neon-grid.jpg"])

    beets.run("covergenre", "album:Beta")

    assert_album(beets, "Alpha", [], a)
    assert_album(beets, "Beta", [ranking(model, covers["neon-grid.jpg"])[0][0]], b)


def test_model_option_uses_that_model(beets, covers, model, small_model_path):
    with covergenre.Model(small_model_path) as small:
        # A cover the two models disagree on, so that the genre says which model classified it.
        differ = [path for _, path in sorted(covers.items())
                  if ranking(small, path)[0][0] != ranking(model, path)[0][0]]
        assert differ, "the small model agrees with the default on every cover"
        expected = ranking(small, differ[0])[0][0]
    a = make_album(beets.root / "in" / "a", "Artist A", "Alpha")
    beets.import_(beets.root / "in" / "a")
    beets.set_artpath("Alpha", differ[0])
    beets.configure(model=str(small_model_path))

    beets.run("covergenre")

    assert_album(beets, "Alpha", [expected], a)


@pytest.mark.parametrize("other", ["beside the tracks", "in the tracks"])
def test_artpath_comes_before_any_other_cover(beets, two_genres, other):
    art, art_genre, cover, _ = two_genres
    where = {"folder_cover": cover} if other == "beside the tracks" else {"embedded": {0: cover, 1: cover}}
    a = make_album(beets.root / "in" / "a", "Artist A", "Alpha", **where)
    beets.import_(beets.root / "in" / "a")
    beets.set_artpath("Alpha", art)

    beets.run("covergenre")

    assert_album(beets, "Alpha", [art_genre], a)


def test_cover_beside_the_tracks_when_the_art_file_is_gone(beets, two_genres):
    _, _, folder, folder_genre = two_genres
    a = make_album(beets.root / "in" / "a", "Artist A", "Alpha", folder_cover=folder)
    b = make_album(beets.root / "in" / "b", "Artist B", "Beta", fmt="flac", folder_cover=folder)
    beets.import_(beets.root / "in" / "a", beets.root / "in" / "b")
    beets.set_artpath("Alpha", beets.root / "deleted-cover.jpg")  # gone: the folder's cover serves

    out = beets.run("-v", "covergenre")

    assert "deleted-cover.jpg is missing or unreadable" in out, out
    assert_album(beets, "Alpha", [folder_genre], a)
    assert_album(beets, "Beta", [folder_genre], b)


def test_damaged_art_file_falls_back_to_the_next_cover(beets, two_genres):
    _, _, folder, folder_genre = two_genres
    damaged = beets.root / "damaged.jpg"
    damaged.write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    a = make_album(beets.root / "in" / "a", "Artist A", "Alpha", folder_cover=folder)
    beets.import_(beets.root / "in" / "a")
    beets.set_artpath("Alpha", damaged)

    beets.run("covergenre")

    assert_album(beets, "Alpha", [folder_genre], a)


def test_album_without_a_cover_is_left_alone(beets):
    a = make_album(beets.root / "in" / "a", "Artist A", "Alpha")
    beets.import_(beets.root / "in" / "a")

    out = beets.run("-v", "covergenre")
    assert "Artist A - Alpha: no cover found" in out, out
    assert "Artist A - Alpha: no cover found" in beets.run("covergenre", "--pretend")
    assert_album(beets, "Alpha", [], a)


def test_auto_sets_the_genre_on_import(beets, covers, model):
    cover = covers["neon-grid.jpg"]
    a = make_album(beets.root / "in" / "a", "Artist A", "Alpha", folder_cover=cover)
    b = make_album(beets.root / "in" / "b", "Artist B", "Beta", fmt="flac", genre="Jazz", folder_cover=cover)
    beets.configure(auto=True)

    beets.import_(beets.root / "in" / "a", beets.root / "in" / "b")

    label = ranking(model, cover)[0][0]
    albums = beets.albums()
    assert albums["Alpha"]["genres"] == [label]
    assert list(albums["Alpha"]["tracks"].values()) == [[label]] * len(a)
    assert albums["Beta"]["genres"] == ["Jazz"]
    # An as-is import (-A) writes no tags; `beet write` writes the tracks' stored genre.
    beets.run("write")
    assert_album(beets, "Alpha", [label], a)
    assert_album(beets, "Beta", ["Jazz"], b)


def test_auto_off_leaves_imported_albums_alone(beets, covers):
    a = make_album(beets.root / "in" / "a", "Artist A", "Alpha", folder_cover=covers["neon-grid.jpg"])

    beets.import_(beets.root / "in" / "a")

    assert_album(beets, "Alpha", [], a)


def test_unknown_source_is_a_usage_error(beets):
    make_album(beets.root / "in" / "a", "Artist A", "Alpha")
    beets.import_(beets.root / "in" / "a")
    beets.configure(sources=["artpath", "lastfm"])
    done = subprocess.run([sys.executable, "-m", "beets", "covergenre"], env=beets.env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True)
    assert done.returncode != 0
    assert "unknown source lastfm" in done.stdout, done.stdout


# ---- Embedded covers ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_embedded_library_reads_the_cover_of(fmt, lib, model, covers, tmp_path):
    cover = covers["neon-grid.jpg"]
    path = tmp_path / ("track." + fmt)
    write_track(path, fmt, {"title": "Track"}, cover)

    # The embedded picture reaches the network bit for bit as the same bytes do.
    embedded = [float(p) for p in model.probabilities(str(path))]
    assert embedded == [float(p) for p in model.probabilities(png_bytes(cover))]


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_embedded_cover_of_the_first_track_that_has_one(fmt, beets, model, two_genres):
    # Track 1 has no cover; track 2's cover sets the genre (track 3's, another genre, is not read).
    first, first_genre, other, _ = two_genres
    a = make_album(beets.root / "in" / "a", "Artist A", "Alpha", fmt=fmt, tracks=3, embedded={1: first, 2: other})
    beets.import_(beets.root / "in" / "a")

    beets.run("covergenre")

    assert_album(beets, "Alpha", [first_genre], a)


def test_embedded_cover_when_the_art_file_is_gone(beets, model, two_genres):
    _, _, embedded, embedded_genre = two_genres
    a = make_album(beets.root / "in" / "a", "Artist A", "Alpha", embedded={0: embedded})
    beets.import_(beets.root / "in" / "a")
    beets.set_artpath("Alpha", beets.root / "deleted-cover.jpg")

    beets.run("covergenre")

    assert_album(beets, "Alpha", [embedded_genre], a)


def test_embedded_cover_sets_the_genre_on_import(beets, model, covers):
    cover = covers["sunset-fields.png"]
    a = make_album(beets.root / "in" / "a", "Artist A", "Alpha", fmt="flac", embedded={0: cover})
    beets.configure(auto=True)

    beets.import_(beets.root / "in" / "a")

    label = ranking(model, png_bytes(cover))[0][0]
    assert beets.albums()["Alpha"]["genres"] == [label]
