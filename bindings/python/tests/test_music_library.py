"""Covers where music libraries keep them: embedded in audio files (MP3, FLAC, M4A, Ogg Vorbis,
Opus, WAV, AIFF) and beside the tracks in album folders. Real files, made here: one second of
silence per format (ffmpeg), covers embedded with mutagen (Tests/audio/make_audio.py)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import covergenre
from covergenre import CoverGenreError

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "Tests" / "audio"))
DISCOGS5 = REPO.parent / "shared" / "data" / "covers" / "discogs5"
FORMATS = ("mp3", "flac", "m4a", "ogg", "opus", "wav", "aiff")


def make_audio():
    pytest.importorskip("mutagen")
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (scripts/setup.sh --tests installs it)")
    import make_audio as module
    return module


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory, cli):
    """make_audio.py's fixtures, with one of the project's example covers as the front cover."""
    module = make_audio()
    examples = tmp_path_factory.mktemp("examples")
    subprocess.run([cli, "make-examples", str(examples)], check=True, stdout=subprocess.PIPE)
    out = tmp_path_factory.mktemp("audio")
    module.make_fixtures(str(out), str(examples / "neon-grid.jpg"))
    return out


@pytest.fixture(scope="module")
def model(lib):
    with covergenre.Model(threads=2) as m:
        yield m


def values(array):
    """A probability or embedding vector (numpy array or list) as plain floats, for exact comparison."""
    return [float(v) for v in array]


def audio_stream_md5(path):
    """The MD5 of the audio stream's packets as stored (no decoding): what a tag write must keep."""
    done = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a", "-c", "copy", "-f", "md5", "-"],
                          check=True, stdout=subprocess.PIPE, text=True)
    return done.stdout.strip()


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_audio_file_is_classified_by_its_embedded_front_cover_bit_for_bit(fixtures, model, fmt):
    expected = values(model.probabilities(str(fixtures / "front.jpg")))
    assert values(model.probabilities(str(fixtures / ("cover." + fmt)))) == expected
    assert values(model.embed(str(fixtures / ("cover." + fmt)))) == values(model.embed(str(fixtures / "front.jpg")))
    top = model.classify(str(fixtures / ("cover." + fmt)), top_k=2)
    assert [p.label for p in top] == [p.label for p in model.classify(str(fixtures / "front.jpg"), top_k=2)]


@pytest.mark.parametrize("fmt", ["mp3", "flac", "ogg"])
def test_of_two_pictures_the_front_cover_is_used(fixtures, model, fmt):
    front, back = values(model.probabilities(str(fixtures / "front.jpg"))), values(model.probabilities(str(fixtures / "back.jpg")))
    assert front != back, "the fixture's two covers must differ for this test to tell them apart"
    assert values(model.probabilities(str(fixtures / ("two_pictures." + fmt)))) == front


def test_the_batch_calls_take_audio_files_and_report_each_failure(fixtures, model):
    paths = [str(fixtures / "cover.flac"), str(fixtures / "no_picture.mp3"), str(fixtures / "front.jpg")]
    results = model.probabilities_files(paths, threads=2)
    assert values(results[0]) == values(results[2]) == values(model.probabilities(str(fixtures / "front.jpg")))
    assert isinstance(results[1], CoverGenreError) and results[1].status_name == "CG_ERR_NO_COVER", results[1]


@pytest.mark.parametrize("name,statuses", [
    ("no_picture.mp3", {"CG_ERR_NO_COVER"}),
    ("no_picture.flac", {"CG_ERR_NO_COVER"}),
    ("no_picture.m4a", {"CG_ERR_NO_COVER"}),
    ("corrupt_picture.mp3", {"CG_ERR_IMAGE_UNSUPPORTED", "CG_ERR_IMAGE_DECODE"}),
    ("bomb_picture.flac", {"CG_ERR_IMAGE_TOO_LARGE"}),
    ("truncated.flac", {"CG_ERR_AUDIO_DECODE", "CG_ERR_NO_COVER"}),
    ("apic_100mb.mp3", {"CG_ERR_NO_COVER", "CG_ERR_AUDIO_DECODE", "CG_ERR_IMAGE_TOO_LARGE"}),
    ("id3_100mb_truncated.mp3", {"CG_ERR_NO_COVER", "CG_ERR_AUDIO_DECODE"}),
    ("zlib_bomb.mp3", {"CG_ERR_IMAGE_TOO_LARGE"}),
    ("nested_chapters.mp3", {"CG_ERR_IMAGE_TOO_LARGE"}),
    ("nested_atoms.m4a", {"CG_ERR_IMAGE_TOO_LARGE"}),
    ("frame_flood.mp3", {"CG_ERR_IMAGE_TOO_LARGE"}),
    ("not_audio.mp3", None),
])
def test_hostile_and_broken_audio_files_are_clear_errors(fixtures, model, name, statuses):
    if statuses is None:
        # A JPEG named .mp3 is a JPEG: content decides, and it is classified as the image it is.
        assert values(model.probabilities(str(fixtures / name))) == values(model.probabilities(str(fixtures / "front.jpg")))
        return
    with pytest.raises(CoverGenreError) as caught:
        model.probabilities(str(fixtures / name))
    assert caught.value.status_name in statuses, caught.value
    assert name in caught.value.message, caught.value.message


def test_a_picture_over_the_image_byte_limit_is_refused_before_decoding(fixtures, lib):
    size = os.path.getsize(fixtures / "front.jpg")
    with covergenre.Model(max_image_bytes=size - 1) as small:
        with pytest.raises(CoverGenreError, match="CG_ERR_IMAGE_TOO_LARGE"):
            small.probabilities(str(fixtures / "cover.flac"))
    with covergenre.Model(max_image_bytes=size) as exact:
        exact.probabilities(str(fixtures / "cover.flac"))


# ---- Albums ----------------------------------------------------------------------------------

def write_spec(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["cover_path", "album_artist", "album", "genre", "format", "placement"])
        w.writerows(rows)


@pytest.fixture(scope="module")
def small_library(tmp_path_factory, fixtures):
    """Six albums: folder covers and embedded ones, every tag state, one album without any picture."""
    module = make_audio()
    root = tmp_path_factory.mktemp("library")
    spec = root.parent / (root.name + "-spec.csv")
    cover, back = str(fixtures / "front.jpg"), str(fixtures / "back.jpg")
    write_spec(spec, [
        (cover, "Artist A", "Embedded MP3", "Hip-Hop", "mp3", "embedded"),
        (back, "Artist A", "Folder FLAC", "Electronic", "flac", "folder"),
        (cover, "Artist B", "Untagged Opus", "", "opus", "embedded"),
        (back, "Artist C", "Metal M4A", "Heavy Metal", "m4a", "embedded"),
        (cover, "Artist D", "Unknown Genre", "Polka", "ogg", "folder"),
    ])
    module.build_library(str(spec), str(root / "music"))
    # An album whose tracks have no picture and whose folder has no cover file.
    bare = root / "music" / "Artist E" / "No Cover"
    bare.mkdir(parents=True)
    shutil.copyfile(fixtures / "no_picture.mp3", bare / "01.mp3")
    # A track whose tags cannot be read: it still belongs to its folder's album, reported.
    (bare / "02.mp3").write_bytes(b"this is not an MPEG stream" * 40)
    return root / "music"


def test_albums_are_found_with_their_cover_sources_and_tags(small_library, fixtures):
    found = {a.album: a for a in covergenre.albums(small_library)}
    assert set(found) == {"Embedded MP3", "Folder FLAC", "Untagged Opus", "Metal M4A", "Unknown Genre", "Test Album"}
    assert found["Embedded MP3"].cover_source == "embedded" and found["Embedded MP3"].cover.endswith("01.mp3")
    assert found["Folder FLAC"].cover_source == "file" and Path(found["Folder FLAC"].cover).name == "cover.jpg"
    assert found["Embedded MP3"].genres == ("Hip-Hop",) and found["Untagged Opus"].genres == ()
    assert found["Embedded MP3"].album_artist == "Artist A" and len(found["Embedded MP3"].tracks) == 2
    assert found["Test Album"].cover is None and found["Test Album"].cover_source is None


def scan(cli, *arguments, check=True):
    done = subprocess.run([cli, "scan", *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_scan_gives_a_row_per_album_and_errors_never_stop_it(cli, small_library, fixtures, model):
    rows = {r["album"]: r for r in json.loads(scan(cli, "--json", "--top", "2", str(small_library)).stdout)}
    assert len(rows) == 6
    mp3 = rows["Embedded MP3"]
    assert mp3["cover"]["kind"] == "embedded" and mp3["genres"] == ["Hip-Hop"] and mp3["tag_label"] == "HipHop"
    expected = model.classify(str(fixtures / "front.jpg"), top_k=2)
    assert [p["label"] for p in mp3["predictions"]] == [p.label for p in expected]
    assert [p["probability"] for p in mp3["predictions"]] == [round(p.probability, 4) for p in expected]
    assert mp3["agrees"] == (expected[0].label == "HipHop")
    assert rows["Metal M4A"]["tag_label"] == "Rock", "Heavy Metal is filed under Rock by a model without Metal"
    assert rows["Unknown Genre"]["tag_label"] is None and rows["Unknown Genre"]["agrees"] is None
    assert rows["Test Album"]["error"].startswith("no_cover") and rows["Test Album"]["predictions"] == []
    assert rows["Test Album"]["tracks"] == 2 and [p.split(":")[0] for p in rows["Test Album"]["unreadable_tracks"]] == ["02.mp3"]
    missing = json.loads(scan(cli, "--json", "--missing", str(small_library)).stdout)
    assert [r["album"] for r in missing] == ["Untagged Opus"], "no_picture.mp3 (Test Album) is tagged Rock; Shoegaze"
    table = list(csv.DictReader(scan(cli, "--csv", str(small_library)).stdout.splitlines()))
    assert len(table) == 6 and {"album_artist", "album", "cover", "cover_path", "genres", "predictions", "agrees", "error"} <= set(table[0])


def test_scan_is_read_only_unless_asked(cli, small_library):
    before = {p: p.read_bytes() for p in small_library.rglob("*") if p.is_file()}
    scan(cli, str(small_library))
    assert {p: p.read_bytes() for p in small_library.rglob("*") if p.is_file()} == before


def test_write_genre_tags_only_albums_without_a_genre_and_keeps_the_audio(cli, small_library, tmp_path):
    mutagen = pytest.importorskip("mutagen")
    library = tmp_path / "music"
    shutil.copytree(small_library, library)
    opus = library / "Artist B" / "Untagged Opus"
    audio_before = {p: audio_stream_md5(p) for p in opus.glob("*.opus")}
    hiphop = library / "Artist A" / "Embedded MP3" / "01.mp3"
    hiphop_before = hiphop.read_bytes()
    rows = {r["album"]: r for r in json.loads(scan(cli, "--json", "--write-genre", "--min-confidence", "0", str(library)).stdout)}
    assert rows["Untagged Opus"]["written"] == rows["Untagged Opus"]["predictions"][0]["label"]
    for track, md5 in audio_before.items():
        assert mutagen.File(track)["genre"] == [rows["Untagged Opus"]["written"]]
        assert audio_stream_md5(track) == md5, "the audio bytes changed"
    assert hiphop.read_bytes() == hiphop_before, "an album with a genre was rewritten without --force"
    assert not [p for p in library.rglob(".*cgtmp*")], "a temporary copy was left behind"
    # --force: albums with a genre too.
    rows = {r["album"]: r for r in json.loads(scan(cli, "--json", "--write-genre", "--force", "--min-confidence", "0", str(library)).stdout)}
    assert mutagen.File(hiphop)["TCON"].text == [rows["Embedded MP3"]["written"]]


def test_scan_of_a_200_album_library_equals_classifying_the_covers(cli, tmp_path, model):
    """Every album's probabilities, read from its embedded or folder cover, bit-identical to the
    cover image's own; and the CLI's rows agree with them."""
    if not DISCOGS5.is_dir():
        pytest.skip("../shared/data is not here")
    module = make_audio()
    covers = sorted((DISCOGS5 / "Rock").glob("*.jpg"))[:100] + sorted((DISCOGS5 / "HipHop").glob("*.jpg"))[:100]
    spec = tmp_path / "spec.csv"
    write_spec(spec, [(str(c), "Artist %d" % (i % 40), "Album %d" % i, "Rock" if "Rock" in str(c) else "Rap",
                       FORMATS[i % len(FORMATS)], "folder" if i % 5 == 0 else "embedded") for i, c in enumerate(covers)])
    module.build_library(str(spec), str(tmp_path / "music"))
    albums = covergenre.albums(tmp_path / "music")
    assert len(albums) == 200
    by_album = {a.album: a for a in albums}
    direct = model.probabilities_files([str(c) for c in covers], threads=2)
    through = model.probabilities_files([by_album["Album %d" % i].cover for i in range(200)], threads=2)
    assert [values(t) for t in through] == [values(d) for d in direct]
    rows = {r["album"]: r for r in json.loads(scan(cli, "--json", "--top", "1", str(tmp_path / "music")).stdout)}
    for i in range(200):
        best = max(range(len(direct[i])), key=lambda c: direct[i][c])
        assert rows["Album %d" % i]["predictions"][0]["label"] == model.labels[best]


def test_train_on_the_library_tags_splits_by_artist_and_reports_test(cli, tmp_path, fixtures):
    """A small library of three genres: the model learns its genres from the tags, holds out
    whole artists, calibrates on val and scores test."""
    if not DISCOGS5.is_dir():
        pytest.skip("../shared/data is not here")
    module = make_audio()
    rows = []
    for genre, tag in (("Country", "country"), ("Electronic", "Electronica"), ("HipHop", "Hip Hop")):
        for i, cover in enumerate(sorted((DISCOGS5 / genre).glob("*.jpg"))[:50]):
            rows.append((str(cover), "%s artist %d" % (genre, i % 12), "%s album %d" % (genre, i), tag,
                         "mp3" if i % 2 else "flac", "embedded" if i % 3 else "folder"))
    rows.append((str(fixtures / "front.jpg"), "Polka band", "Polka", "Polka", "mp3", "embedded"))
    spec = tmp_path / "spec.csv"
    write_spec(spec, rows)
    module.build_library(str(spec), str(tmp_path / "music"))
    out = tmp_path / "mine.cgm"
    done = subprocess.run([cli, "train", "--library", str(tmp_path / "music"), "--out", str(out), "--min-albums", "10",
                           "--backbone", str(REPO / "models" / "covergenre-default.cgm"), "--head-epochs", "5", "--views", "2",
                           "--threads", "2", "--run", str(tmp_path / "run")],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "\"Polka\" 1" in done.stderr, "an unmapped tag must be listed"
    assert "split by album artist" in done.stderr
    assert "test (" in done.stdout and "temperature" in done.stdout
    with covergenre.Model(str(out)) as mine:
        assert mine.labels == ("Country", "Electronic", "HipHop")
        assert mine.metadata["calibration"]["fitted_on"].endswith("(val split, by album artist)")
    split = list(csv.DictReader(open(tmp_path / "run" / "split.csv")))
    artist_splits = {}
    for row in split:
        artist = Path(row["path"]).parent.parent.name
        artist_splits.setdefault(artist, set()).add(row["split"])
    assert all(len(s) == 1 for s in artist_splits.values()), "an artist is on both sides of the split"


# ---- Audio bytes: buffers and HTTP bodies --------------------------------------------------

def test_audio_bytes_in_memory_are_classified_by_their_cover(fixtures, model):
    expected = values(model.probabilities(str(fixtures / "front.jpg")))
    for fmt in ("mp3", "flac", "m4a"):
        assert values(model.probabilities((fixtures / ("cover." + fmt)).read_bytes())) == expected, fmt
    with pytest.raises(CoverGenreError) as caught:
        model.probabilities((fixtures / "no_picture.flac").read_bytes())
    assert caught.value.status_name == "CG_ERR_NO_COVER" and "/proc/" not in caught.value.message, caught.value


def test_the_server_classifies_an_audio_body_by_its_cover(cli, fixtures, model):
    from test_server import Server
    server = Server(cli, "-m", covergenre.default_model_path())  # the model the `model` fixture loads
    try:
        status, _, answer = server.request("POST", "/v1/classify?top_k=1", (fixtures / "cover.mp3").read_bytes(),
                                           "application/octet-stream")
        assert status == 200, answer
        expected = model.classify(str(fixtures / "front.jpg"), top_k=1)[0]
        genre = answer["results"][0]["genres"][0]
        assert genre["label"] == expected.label and abs(genre["probability"] - expected.probability) < 1e-6
        status, _, answer = server.request("POST", "/v1/classify", (fixtures / "no_picture.mp3").read_bytes(),
                                           "application/octet-stream")
        assert status == 422 and answer["error"]["code"] == "no_cover", answer
    finally:
        server.stop()


def test_a_cover_from_a_pipe_is_read_once(fixtures, model, tmp_path):
    """Telling audio from images reads a file's first bytes: a FIFO must still give the whole image."""
    import threading
    fifo = tmp_path / "cover.pipe"
    os.mkfifo(fifo)
    data = (fixtures / "front.jpg").read_bytes()
    writer = threading.Thread(target=lambda: fifo.write_bytes(data))
    writer.start()
    try:
        assert values(model.probabilities(str(fifo))) == values(model.probabilities(str(fixtures / "front.jpg")))
    finally:
        writer.join(30)
