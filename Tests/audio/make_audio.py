#!/usr/bin/env python3
"""Audio fixtures for CoverGenre's TagLib shim (Sources/CTagLib) and for building test libraries.

    python3 Tests/audio/make_audio.py OUT_DIR [--cover IMAGE]
    python3 Tests/audio/make_audio.py --library SPEC.csv OUT_DIR

Dependencies: mutagen (PyPI) for tags, and ffmpeg on PATH (Debian's `ffmpeg`) for one second of
silence per format and for the small JPEG covers made when none is given. ffmpeg is the only
Debian encoder set that covers AAC/M4A: flac + vorbis-tools + opus-tools + lame are smaller
(about 0.8 MB to download) but Debian main has no AAC encoder outside ffmpeg.

Fixture mode writes, into OUT_DIR:
  front.jpg, back.jpg         the JPEGs embedded below (front.jpg is --cover when given)
  cover.{mp3,flac,m4a,ogg,opus,wav,aiff}
                              silence, front cover embedded, and tags: album "Test Album",
                              album artist "Test Album Artist", artist "Test Artist", title
                              "Test Title", track 3/12, disc 1/2, genres ["Rock", "Shoegaze"]
  write.{mp3,flac,m4a,ogg,opus}
                              copies of cover.* for write tests
  two_pictures.{mp3,flac,ogg} back cover first, front cover second
  no_picture.{mp3,flac,m4a}   tags but no picture
  corrupt_picture.mp3, corrupt_picture.bin
                              an APIC frame whose "JPEG" is random bytes (and those bytes)
  bomb_picture.flac, bomb.png a PNG that claims 20000 x 20000 pixels (400 MB decoded, ~400 kB
                              stored) as the front cover
  truncated.flac              cover.flac cut in the middle of its PICTURE block
  apic_100mb.mp3              an ID3v2.4 tag whose APIC frame header claims 100 MB (the tag
                              itself is honest), after a readable TIT2 frame
  id3_100mb_truncated.mp3     an ID3v2.4 header claiming a 100 MB tag; the file ends after 2 kB
  id3v1_genre.mp3             ID3v1 only, genre number 17 (Rock)
  id3v23_numeric_genre.mp3    ID3v2.3 TCON "(17)"
  zlib_bomb.mp3               an ID3v2.3 APIC frame, zlib-compressed, inflating to 256 MB
  nested_chapters.mp3         CHAP frames nested 100,000 deep (TagLib 1.13 recurses)
  frame_flood.mp3             300,000 tiny ID3v2 frames
  nested_atoms.m4a            'moov' atoms nested 200,000 deep (TagLib 1.13 recurses)
  chunk_flood.wav, block_flood.flac, comment_flood.flac
                              300,000 empty RIFF chunks / FLAC SEEKTABLE blocks / Vorbis comment fields
  not_audio.mp3               a JPEG named .mp3
  notes.txt                   text

Library mode reads SPEC.csv with the header
    cover_path,album_artist,album,genre,format,placement
(genre may hold several values separated by ';'; format is mp3, flac, m4a, ogg, opus, wav or aiff;
placement is `embedded` (the cover in both tracks) or `folder` (the cover written beside untagged-
cover tracks as cover.jpg for JPEG, folder.png for PNG, cover.<ext> otherwise)) and writes
OUT_DIR/<album artist>/<album>/01.<ext> and 02.<ext>, tagged with album, albumartist, artist,
title, tracknumber and genre. Each format is encoded once and then copied, so hundreds of albums
take seconds. Relative cover paths are relative to the CSV file.
"""

import argparse
import base64
import csv
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

try:
    import mutagen
    from mutagen.aiff import AIFF
    from mutagen.flac import FLAC, Picture
    from mutagen.id3 import APIC, ID3, TALB, TCON, TIT2, TPE1, TPE2, TPOS, TRCK
    from mutagen.mp4 import MP4, MP4Cover
    from mutagen.oggopus import OggOpus
    from mutagen.oggvorbis import OggVorbis
    from mutagen.wave import WAVE
except ImportError:  # pragma: no cover - message for people running it without mutagen
    sys.exit("make_audio.py needs mutagen: pip install mutagen")

FORMATS = ("mp3", "flac", "m4a", "ogg", "opus", "wav", "aiff")

# ffmpeg arguments for one second of stereo silence. -map_metadata -1 and bitexact keep ffmpeg's
# own "encoder" tags out, so every tag in a fixture is one this script put there; the MP3 gets no
# ID3v2 tag from ffmpeg (mutagen adds it).
ENCODERS = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", "128k", "-id3v2_version", "0", "-f", "mp3"],
    "flac": ["-c:a", "flac", "-f", "flac"],
    "m4a": ["-c:a", "aac", "-b:a", "96k", "-f", "ipod"],
    "ogg": ["-c:a", "libvorbis", "-q:a", "2", "-f", "ogg"],
    "opus": ["-c:a", "libopus", "-b:a", "64k", "-f", "opus"],
    "wav": ["-c:a", "pcm_s16le", "-f", "wav"],
    "aiff": ["-c:a", "pcm_s16be", "-f", "aiff"],
}

TAGS = {
    "album": "Test Album",
    "albumartist": "Test Album Artist",
    "artist": "Test Artist",
    "title": "Test Title",
    "track": (3, 12),
    "disc": (1, 2),
    "genres": ["Rock", "Shoegaze"],
}


def run(command):
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if result.returncode != 0:
        sys.exit("command failed: %s\n%s" % (" ".join(command), result.stderr.decode(errors="replace")))
    return result.stdout


def encode_silence(fmt, path):
    rate = "48000" if fmt == "opus" else "44100"
    run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=%s:cl=stereo" % rate, "-t", "1",
         "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact"] + ENCODERS[fmt] + [path])


def make_jpeg(path, source, size):
    separator = ":" if "=" in source else "="
    run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "%s%ss=%dx%d" % (source, separator, size, size),
         "-frames:v", "1", "-fflags", "+bitexact", "-f", "mjpeg", path])


def image_mime(data):
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return "image/jpeg"


def flac_picture(data, kind, mime=None):
    picture = Picture()
    picture.type = kind
    picture.mime = mime or image_mime(data)
    picture.desc = "front" if kind == 3 else "back" if kind == 4 else ""
    picture.data = data
    return picture


class Tagger:
    """Writes tags and pictures with mutagen, one method per container family."""

    @staticmethod
    def id3_frames(tags):
        frames = []
        if "album" in tags:
            frames.append(TALB(encoding=3, text=tags["album"]))
        if "albumartist" in tags:
            frames.append(TPE2(encoding=3, text=tags["albumartist"]))
        if "artist" in tags:
            frames.append(TPE1(encoding=3, text=tags["artist"]))
        if "title" in tags:
            frames.append(TIT2(encoding=3, text=tags["title"]))
        if "track" in tags:
            frames.append(TRCK(encoding=3, text="%d/%d" % tags["track"]))
        if "disc" in tags:
            frames.append(TPOS(encoding=3, text="%d/%d" % tags["disc"]))
        if tags.get("genres"):
            frames.append(TCON(encoding=3, text=list(tags["genres"])))
        return frames

    @staticmethod
    def id3_picture(data, kind, mime=None):
        # The description is part of an APIC frame's identity: two pictures need two descriptions.
        return APIC(encoding=3, mime=mime or image_mime(data), type=kind,
                    desc="front" if kind == 3 else "back" if kind == 4 else "picture %d" % kind, data=data)

    @classmethod
    def tag(cls, fmt, path, tags, pictures):
        """pictures: list of (bytes, picture type[, mime]) in file order."""
        if fmt in ("mp3", "wav", "aiff"):
            if fmt == "mp3":
                id3 = ID3()
            else:
                audio = WAVE(path) if fmt == "wav" else AIFF(path)
                audio.add_tags()
                id3 = audio.tags
            for frame in cls.id3_frames(tags):
                id3.add(frame)
            for picture in pictures:
                id3.add(cls.id3_picture(*picture))
            if fmt == "mp3":
                id3.save(path, v2_version=4)
            else:
                audio.save(v2_version=4)
        elif fmt == "flac":
            audio = FLAC(path)
            cls.vorbis_fields(audio, tags)
            for picture in pictures:
                audio.add_picture(flac_picture(*picture))
            audio.save()
        elif fmt in ("ogg", "opus"):
            audio = OggVorbis(path) if fmt == "ogg" else OggOpus(path)
            cls.vorbis_fields(audio, tags)
            if pictures:
                audio["metadata_block_picture"] = [base64.b64encode(flac_picture(*p).write()).decode("ascii")
                                                   for p in pictures]
            audio.save()
        elif fmt == "m4a":
            audio = MP4(path)
            if audio.tags is None:
                audio.add_tags()
            names = {"album": "\xa9alb", "albumartist": "aART", "artist": "\xa9ART", "title": "\xa9nam"}
            for key, atom in names.items():
                if key in tags:
                    audio.tags[atom] = [tags[key]]
            if "track" in tags:
                audio.tags["trkn"] = [tags["track"]]
            if "disc" in tags:
                audio.tags["disk"] = [tags["disc"]]
            if tags.get("genres"):
                audio.tags["\xa9gen"] = list(tags["genres"])
            if pictures:
                audio.tags["covr"] = [MP4Cover(p[0], MP4Cover.FORMAT_PNG if image_mime(p[0]) == "image/png"
                                               else MP4Cover.FORMAT_JPEG) for p in pictures]
            audio.save()
        else:
            raise ValueError("unknown format %r" % fmt)

    @staticmethod
    def vorbis_fields(audio, tags):
        for key in ("album", "albumartist", "artist", "title"):
            if key in tags:
                audio[key] = [tags[key]]
        if "track" in tags:
            audio["tracknumber"] = [str(tags["track"][0])]
            audio["tracktotal"] = [str(tags["track"][1])]
        if "disc" in tags:
            audio["discnumber"] = [str(tags["disc"][0])]
            audio["disctotal"] = [str(tags["disc"][1])]
        if tags.get("genres"):
            audio["genre"] = list(tags["genres"])


class SilenceCache:
    """One encode per format; every later file is a copy."""

    def __init__(self, directory):
        self.directory = directory
        self.files = {}

    def copy(self, fmt, path):
        if fmt not in self.files:
            source = os.path.join(self.directory, "silence." + fmt)
            encode_silence(fmt, source)
            self.files[fmt] = source
        shutil.copyfile(self.files[fmt], path)


# --- hostile files ------------------------------------------------------------------------------

def synchsafe(n):
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


def id3v24_frame(frame_id, body, declared=None):
    size = len(body) if declared is None else declared
    return frame_id + synchsafe(size) + b"\x00\x00" + body


def id3v24_tag(frames, declared=None):
    body = b"".join(frames)
    return b"ID3\x04\x00\x00" + synchsafe(len(body) if declared is None else declared) + body


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width=20000, height=20000):
    """A valid 8-bit grayscale PNG of zeros: tiny on disk, width*height bytes once decoded."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"".join(parts)) +
            png_chunk(b"IEND", b""))


def strip_id3v2(data):
    if data[:3] == b"ID3":
        size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
        return data[10 + size:]
    return data


def zlib_bomb_mp3(audio, inflated=256 << 20):
    # ID3v2.3 compressed frame: 10-byte header (flags 0x0080 = compression), 4-byte inflated size,
    # then a zlib stream. TagLib 1.13 inflates it completely when the tag is read.
    compressor = zlib.compressobj(9)
    chunk = b"\x00" * (1 << 20)
    stream = b"".join(compressor.compress(chunk) for _ in range(inflated >> 20)) + compressor.flush()
    body = struct.pack(">I", inflated) + stream
    frame = b"APIC" + struct.pack(">I", len(body)) + b"\x00\x80" + body
    title = b"TIT2" + struct.pack(">I", 6) + b"\x00\x00" + b"\x00bomb\x00"
    tag_body = title + frame
    return b"ID3\x03\x00\x00" + synchsafe(len(tag_body)) + tag_body + audio


def nested_chapters_mp3(audio, depth=100000):
    # CHAP: element ID, NUL, 16 bytes of times and offsets, then embedded frames: here another
    # CHAP, recursively. The innermost holds a TIT2. Built as prefixes (outermost first) so the
    # cost is linear in the depth.
    inner = id3v24_frame(b"TIT2", b"\x03deep\x00")
    prefixes = []
    for level in range(depth, 0, -1):
        body_size = 18 + len(inner) + 28 * (level - 1)
        prefixes.append(b"CHAP" + synchsafe(body_size) + b"\x00\x00" + b"c\x00" + b"\x00" * 16)
    return id3v24_tag([id3v24_frame(b"TIT2", b"\x03chapters\x00"), b"".join(prefixes) + inner]) + audio


def frame_flood_mp3(audio, count=300000):
    frame = id3v24_frame(b"TXXX", b"\x03a\x00b")
    return id3v24_tag([frame] * count) + audio


def nested_atoms_m4a(depth=200000):
    # 'ftyp' then 'moov' containing 'moov' containing ... each 8 bytes more than its child.
    ftyp = struct.pack(">I", 20) + b"ftypM4A \x00\x00\x00\x00M4A "
    data = bytearray()
    total = 8 * depth
    for level in range(depth):
        data += struct.pack(">I", total - 8 * level) + b"moov"
    return ftyp + bytes(data)


def riff_flood_wav(wav, count=300000):
    # The real 'fmt ' and 'data' chunks, then empty 'junk' chunks: 8 bytes of file per chunk object.
    body = wav[12:] + b"junk\x00\x00\x00\x00" * count
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def flac_flood(flac, count=300000):
    # STREAMINFO, then empty SEEKTABLE blocks (TagLib 1.13 keeps each as an object), then the last.
    streaminfo = flac[4:4 + 4 + 34]
    streaminfo = bytes([streaminfo[0] & 0x7F]) + streaminfo[1:]
    return b"fLaC" + streaminfo + b"\x03\x00\x00\x00" * count + b"\x81\x00\x00\x00"


def comment_flood_flac(flac, count=300000):
    # STREAMINFO, then one VORBIS_COMMENT block of `count` three-byte fields "A=x": 7 bytes of file
    # per string TagLib 1.13 builds.
    streaminfo = flac[4:4 + 4 + 34]
    streaminfo = bytes([streaminfo[0] & 0x7F]) + streaminfo[1:]
    comment = struct.pack("<I", 0) + struct.pack("<I", count) + (struct.pack("<I", 3) + b"A=x") * count
    return b"fLaC" + streaminfo + bytes([0x84]) + struct.pack(">I", len(comment))[1:] + comment


def make_fixtures(out, cover):
    os.makedirs(out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="make_audio-")
    try:
        cache = SilenceCache(work)
        front_path = os.path.join(out, "front.jpg")
        if cover:
            shutil.copyfile(cover, front_path)
        else:
            make_jpeg(front_path, "testsrc", 96)
        make_jpeg(os.path.join(out, "back.jpg"), "color=c=blue", 32)
        front = open(front_path, "rb").read()
        back = open(os.path.join(out, "back.jpg"), "rb").read()

        def made(name, fmt, tags, pictures):
            path = os.path.join(out, name)
            cache.copy(fmt, path)
            Tagger.tag(fmt, path, tags, pictures)
            return path

        for fmt in FORMATS:
            path = made("cover." + fmt, fmt, TAGS, [(front, 3)])
            if fmt not in ("wav", "aiff"):
                shutil.copyfile(path, os.path.join(out, "write." + fmt))
        for fmt in ("mp3", "flac", "ogg"):
            made("two_pictures." + fmt, fmt, TAGS, [(back, 4), (front, 3)])
        for fmt in ("mp3", "flac", "m4a"):
            made("no_picture." + fmt, fmt, TAGS, [])

        rng = random.Random(1234)
        corrupt = bytes(rng.randrange(256) for _ in range(3000))
        open(os.path.join(out, "corrupt_picture.bin"), "wb").write(corrupt)
        made("corrupt_picture.mp3", "mp3", TAGS, [(corrupt, 3, "image/jpeg")])

        bomb = png_bomb()
        open(os.path.join(out, "bomb.png"), "wb").write(bomb)
        made("bomb_picture.flac", "flac", TAGS, [(bomb, 3)])

        flac = open(os.path.join(out, "cover.flac"), "rb").read()
        picture_at = flac.find(front[:64])
        open(os.path.join(out, "truncated.flac"), "wb").write(flac[:picture_at + len(front) // 2])

        silence_mp3 = os.path.join(work, "plain.mp3")
        cache.copy("mp3", silence_mp3)
        audio = strip_id3v2(open(silence_mp3, "rb").read())
        title = id3v24_frame(b"TIT2", b"\x03Big Picture\x00")
        apic = id3v24_frame(b"APIC", b"\x00image/jpeg\x00\x03\x00" + front, declared=100 << 20)
        open(os.path.join(out, "apic_100mb.mp3"), "wb").write(id3v24_tag([title, apic]) + audio)
        claimed = id3v24_tag([title, id3v24_frame(b"APIC", b"\x00image/jpeg\x00\x03\x00" + front)], declared=100 << 20)
        open(os.path.join(out, "id3_100mb_truncated.mp3"), "wb").write(claimed[:2048])

        # ID3v1: "TAG", title 30, artist 30, album 30, year 4, comment 30, genre 1.
        id3v1 = (b"TAG" + b"V1 Title".ljust(30, b"\0") + b"V1 Artist".ljust(30, b"\0") +
                 b"V1 Album".ljust(30, b"\0") + b"1999" + b"".ljust(30, b"\0") + bytes([17]))
        open(os.path.join(out, "id3v1_genre.mp3"), "wb").write(audio + id3v1)
        v23 = os.path.join(out, "id3v23_numeric_genre.mp3")
        open(v23, "wb").write(audio)
        id3 = ID3()
        id3.add(TIT2(encoding=0, text="V23"))
        id3.add(TCON(encoding=0, text="(17)"))
        id3.save(v23, v2_version=3)

        open(os.path.join(out, "zlib_bomb.mp3"), "wb").write(zlib_bomb_mp3(audio))
        open(os.path.join(out, "nested_chapters.mp3"), "wb").write(nested_chapters_mp3(audio))
        open(os.path.join(out, "frame_flood.mp3"), "wb").write(frame_flood_mp3(audio))
        open(os.path.join(out, "nested_atoms.m4a"), "wb").write(nested_atoms_m4a())
        plain = {}
        for fmt in ("wav", "flac"):
            plain[fmt] = os.path.join(work, "plain." + fmt)
            cache.copy(fmt, plain[fmt])
        open(os.path.join(out, "chunk_flood.wav"), "wb").write(riff_flood_wav(open(plain["wav"], "rb").read()))
        open(os.path.join(out, "block_flood.flac"), "wb").write(flac_flood(open(plain["flac"], "rb").read()))
        open(os.path.join(out, "comment_flood.flac"), "wb").write(comment_flood_flac(open(plain["flac"], "rb").read()))
        shutil.copyfile(front_path, os.path.join(out, "not_audio.mp3"))
        open(os.path.join(out, "notes.txt"), "w").write("not audio\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- library mode -------------------------------------------------------------------------------

def safe_component(name):
    cleaned = "".join("_" if c in "/\\\0" or ord(c) < 32 else c for c in name).strip()
    if cleaned in ("", ".", ".."):
        cleaned = "_"
    if cleaned.startswith("."):
        cleaned = "_" + cleaned[1:]
    return cleaned.encode("utf-8")[:200].decode("utf-8", "ignore")


def folder_cover_name(data, source_path):
    mime = image_mime(data)
    if mime == "image/jpeg":
        return "cover.jpg"
    if mime == "image/png":
        return "folder.png"
    extension = os.path.splitext(source_path)[1].lower() or ".img"
    return "cover" + extension


def build_library(spec, out):
    required = ["cover_path", "album_artist", "album", "genre", "format", "placement"]
    base = os.path.dirname(os.path.abspath(spec))
    os.makedirs(out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="make_audio-")
    albums = 0
    try:
        cache = SilenceCache(work)
        with open(spec, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                sys.exit("%s: missing columns %s" % (spec, ", ".join(missing)))
            for line, row in enumerate(reader, start=2):
                fmt = row["format"].strip().lower()
                placement = row["placement"].strip().lower()
                if fmt not in FORMATS:
                    sys.exit("%s:%d: format %r is not one of %s" % (spec, line, fmt, ", ".join(FORMATS)))
                if placement not in ("embedded", "folder"):
                    sys.exit("%s:%d: placement %r is not embedded or folder" % (spec, line, placement))
                cover_path = row["cover_path"]
                if not os.path.isabs(cover_path):
                    cover_path = os.path.join(base, cover_path)
                data = open(cover_path, "rb").read()
                genres = [g.strip() for g in row["genre"].split(";") if g.strip()]
                directory = os.path.join(out, safe_component(row["album_artist"]), safe_component(row["album"]))
                os.makedirs(directory, exist_ok=True)
                for track in (1, 2):
                    path = os.path.join(directory, "%02d.%s" % (track, fmt))
                    cache.copy(fmt, path)
                    tags = {"album": row["album"], "albumartist": row["album_artist"], "artist": row["album_artist"],
                            "title": "Track %d" % track, "track": (track, 2), "genres": genres}
                    Tagger.tag(fmt, path, tags, [(data, 3)] if placement == "embedded" else [])
                if placement == "folder":
                    with open(os.path.join(directory, folder_cover_name(data, cover_path)), "wb") as target:
                        target.write(data)
                albums += 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return albums


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--library", metavar="SPEC.csv", help="build a tagged library from SPEC.csv into OUT_DIR")
    parser.add_argument("--cover", metavar="IMAGE", help="JPEG to embed as the front cover in fixture mode")
    parser.add_argument("out_dir", metavar="OUT_DIR")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        sys.exit("make_audio.py needs ffmpeg on PATH (Debian: apt-get install ffmpeg)")
    if args.library:
        count = build_library(args.library, args.out_dir)
        print("%d albums written to %s" % (count, args.out_dir))
    else:
        make_fixtures(args.out_dir, args.cover)
        print("fixtures written to %s (mutagen %s)" % (args.out_dir, mutagen.version_string))


if __name__ == "__main__":
    main()
