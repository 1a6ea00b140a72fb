// Cover art and tags of audio files through TagLib (Debian 12: libtag1-dev, TagLib 1.13).
//
// Why a C surface over TagLib's C++ API: Swift imports C directly, and TagLib reports trouble by
// returning invalid objects, printing debug text or (on allocation failure) throwing. Every
// function here returns a status, writes a reason into a message buffer, never prints, exits or
// aborts, and lets no C++ exception escape.
//
// Hostile files: TagLib 1.13 parses a whole tag when it opens a file and has no limits of its own
// (later TagLib releases added some). Before TagLib sees a file, taglib_shim.cpp walks the same
// structures TagLib is about to walk and refuses (CGT_ERR_TOO_LARGE) files that would make it
// recurse without bound (nested MP4 atoms, nested ID3v2 chapter frames), inflate an ID3v2
// zlib-compressed frame beyond CGT_MAX_INFLATED_BYTES, or build more than CGT_MAX_TAG_ELEMENTS
// objects (frames, atoms, chunks, pages, metadata blocks, text values), each of which costs
// TagLib far more memory than the bytes that describe it. What remains is memory of the order of
// the tag bytes in the file. Files larger than CGT_MAX_FILE_BYTES are refused outright.
//
// Formats are chosen by content (cgt_sniff_audio), never by file name, with one exception: a file
// named .mp3/.mp2 whose first bytes are neither an ID3v2 tag nor an MPEG frame is still tried as
// MPEG audio (rippers sometimes leave junk before the first frame), and accepted only if TagLib
// finds an MPEG frame in it.
//
// TagLib's debug output: the first call installs, process-wide, a TagLib::DebugListener that
// discards every message (TagLib keeps a single global listener).
//
// Thread safety: calls on different files may run concurrently (the shim keeps no shared mutable
// state beyond that once-installed listener and an atomic counter). Writing a file that
// another thread or process reads or writes at the same time is the caller's problem, as with any
// file.
#ifndef CG_TAGLIB_H
#define CG_TAGLIB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// 2 GiB - 1. TagLib 1.13 mixes long, unsigned int and int for file offsets and buffer positions
// (RIFF chunk offsets are unsigned int, ByteVector::find returns int); below 2^31 all are exact.
#define CGT_MAX_FILE_BYTES 2147483647ull
// Objects TagLib would build for one file's tags (see above). Legitimate files use a few hundred;
// a fragmented 10-hour MP4 about 110,000.
#define CGT_MAX_TAG_ELEMENTS 250000u
// Total output of zlib-compressed ID3v2 frames in one file.
#define CGT_MAX_INFLATED_BYTES (64u * 1024u * 1024u)
// How many leading bytes cgt_sniff_audio wants to tell every format apart; more lets it look
// past an ID3v2 tag and check a second MPEG frame header.
#define CGT_SNIFF_BYTES 64u

typedef enum {
    CGT_OK = 0,
    CGT_ERR_IO = 1,               // missing, unreadable or unwritable path; read/write/rename failed
    CGT_ERR_UNSUPPORTED = 2,      // not a regular file, not audio, or an audio format this does not read/write
    CGT_ERR_CORRUPT = 3,          // recognised as audio, but TagLib cannot parse it (truncated, damaged)
    CGT_ERR_NO_COVER = 4,         // the file has no picture
    CGT_ERR_TOO_LARGE = 5,        // picture > max_bytes, file > CGT_MAX_FILE_BYTES, or a structure beyond the limits above
    CGT_ERR_NO_MEMORY = 6,
    CGT_ERR_INVALID_ARGUMENT = 7, // NULL/empty path, NULL output, genre not UTF-8 or empty
    CGT_ERR_INTERNAL = 8,         // an unexpected C++ exception: a bug in the shim or TagLib
} cgt_status;

// What cgt_sniff_audio recognises. Non-zero means "an audio container", whether or not this
// shim reads that variant (Ogg FLAC, Speex and other Ogg streams are recognised but
// cgt_read_* return CGT_ERR_UNSUPPORTED for Ogg FLAC and CGT_AUDIO_OGG_OTHER).
typedef enum {
    CGT_AUDIO_NONE = 0,
    CGT_AUDIO_MPEG = 1,       // MPEG-1/2/2.5 layer I-III frame (MP3, MP2), possibly after an ID3v2 tag
    CGT_AUDIO_ID3V2 = 2,      // an ID3v2 tag whose audio lies beyond the bytes given (nearly always MP3)
    CGT_AUDIO_FLAC = 3,       // "fLaC", possibly after an ID3v2 tag
    CGT_AUDIO_OGG_VORBIS = 4,
    CGT_AUDIO_OGG_OPUS = 5,
    CGT_AUDIO_OGG_FLAC = 6,
    CGT_AUDIO_OGG_SPEEX = 7,
    CGT_AUDIO_OGG_OTHER = 8,  // "OggS" whose first packet is none of the above, or too few bytes to tell
    CGT_AUDIO_MP4 = 9,        // ISO BMFF "ftyp" box whose brand is not an image brand (HEIC, AVIF, ...)
    CGT_AUDIO_WAV = 10,       // "RIFF....WAVE"
    CGT_AUDIO_AIFF = 11,      // "FORM....AIFF" / "AIFC"
} cgt_audio_format;

#define CGT_MESSAGE_SIZE 256

typedef struct {
    uint8_t *data;            // malloc'd picture bytes, exactly as stored (not decoded or checked)
    size_t size;
    // ID3v2/FLAC picture type: 3 = front cover, 4 = back cover, 0 = other, ... MP4 'covr' images
    // carry no type; they are reported as 3, which is how every player treats them.
    uint32_t picture_type;
    char mime[64];            // as stored ("image/jpeg"); MP4: derived from the covr data type; may be ""
    uint32_t picture_count;   // pictures in the file, all tags together (also set on CGT_ERR_TOO_LARGE)
    char message[CGT_MESSAGE_SIZE];
} cgt_picture;

typedef struct {
    // UTF-8, malloc'd, NULL when the file has no such tag. Several values of one field (two
    // ARTIST entries) are joined with "; ". Text after an embedded NUL is dropped.
    char *album;
    char *album_artist;       // ID3v2 TPE2, Vorbis ALBUMARTIST (or "ALBUM ARTIST"), MP4 aART
    char *artist;
    char *title;
    uint32_t track_number, track_total; // 0 when absent ("3/12" gives 3 and 12)
    uint32_t disc_number, disc_total;
    // One entry per stored genre value, as TagLib's "GENRE" property gives them: ID3v2.4
    // NUL-separated values and ID3v1/ID3v2 numeric genres resolved to names; multiple Vorbis
    // GENRE fields or MP4 data atoms. Values are trimmed and empty ones dropped; no further
    // splitting ("Rock; Pop" stays one value: conventions for that are the caller's policy).
    char **genres;
    size_t genre_count;
    int64_t duration_ms;      // -1 when unknown
    cgt_audio_format format;  // the container that was read
    char message[CGT_MESSAGE_SIZE];
} cgt_tags;

// Sniffs the first `n` bytes of a file (pass at least CGT_SNIFF_BYTES when the file has them).
// Never reads past head[n-1]; head may be NULL when n is 0.
cgt_audio_format cgt_sniff_audio(const uint8_t *head, size_t n);

// The file's front cover (picture type 3), else its first picture. Looks at: MP3 ID3v2 APIC
// (and v2.2 PIC); FLAC PICTURE blocks, then pictures in its Vorbis comment, then an ID3v2 tag in
// front of it; MP4 'covr'; Ogg Vorbis/Opus/Speex METADATA_BLOCK_PICTURE (and the old COVERART
// field, reported as type 0); WAV and AIFF ID3v2 chunks. The file is opened read-only.
// A chosen picture larger than max_bytes is CGT_ERR_TOO_LARGE (no fallback to a smaller one).
// On success *out owns data; release with cgt_picture_free (also safe after any failure).
cgt_status cgt_read_cover(const char *path, size_t max_bytes, cgt_picture *out);
void cgt_picture_free(cgt_picture *picture);

// Album, artists, title, numbers, genres and duration, from TagLib's unified property map (for
// MP3, FLAC and WAV that is the first non-empty tag in TagLib's order: ID3v2, APE, ID3v1 for MP3;
// Vorbis comment, ID3v2, ID3v1 for FLAC). Opened read-only. A file without tags is CGT_OK with
// every field empty. Release with cgt_tags_free (also safe after any failure).
cgt_status cgt_read_tags(const char *path, cgt_tags *out);
void cgt_tags_free(cgt_tags *tags);

// Replaces the file's GENRE property with `genres` (count 0 removes it). The original is never
// modified in place: the file is copied to ".<name>.cgtmp-<pid>-<n>" in its directory (O_EXCL,
// same permission bits, owner kept when allowed), TagLib writes the copy, the copy is read back
// and must hold exactly `genres`, it is fsync'd and rename()d over the original, and the
// directory is fsync'd. On any failure the copy is removed and the original is untouched.
// A symbolic link is resolved and its target replaced. Refused: files that are not writable by
// the caller, files with more than one hard link (the replacement would detach this name from the
// others), files TagLib cannot parse or save, and files that change while being copied.
// Other tag fields are re-written through TagLib's property map with their values unchanged. An
// ID3v2.3 tag stays v2.3 when v2.3 can hold the genres (TagLib 1.13 writes a v2.3 TCON as ID3v1
// genre numbers plus at most one free-text genre, in Latin-1); otherwise, and for new tags, ID3v2.4
// is written. Extended attributes and ACLs of the original are not carried over.
// message (may be NULL) receives the reason on failure.
cgt_status cgt_write_genres(const char *path, const char *const *genres, size_t count, char *message,
                            size_t message_capacity);

const char *cgt_status_string(cgt_status status);

#ifdef __cplusplus
}
#endif

#endif
