// C surface over TagLib 1.13 (cg_taglib.h): cover art, tags, and crash-safe genre writing.
//
// Layout: errors and messages; the file source (one fd, pread); content sniffing; the guards that
// walk a file's tag structures the way TagLib 1.13 will before TagLib is allowed to; opening
// TagLib on the already-checked descriptor; pictures; tags; the copy-write-rename writer; the C
// entry points, each of which catches every exception.
#include "cg_taglib.h"

#include <atomic>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include <fcntl.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <zlib.h>

#include <taglib/aifffile.h>
#include <taglib/attachedpictureframe.h>
#include <taglib/flacfile.h>
#include <taglib/flacpicture.h>
#include <taglib/id3v1genres.h>
#include <taglib/id3v2extendedheader.h>
#include <taglib/id3v2footer.h>
#include <taglib/id3v2frame.h>
#include <taglib/id3v2framefactory.h>
#include <taglib/id3v2header.h>
#include <taglib/id3v2synchdata.h>
#include <taglib/id3v2tag.h>
#include <taglib/mp4coverart.h>
#include <taglib/mp4file.h>
#include <taglib/mp4tag.h>
#include <taglib/mpegfile.h>
#include <taglib/mpegheader.h>
#include <taglib/opusfile.h>
#include <taglib/speexfile.h>
#include <taglib/tdebuglistener.h>
#include <taglib/tfilestream.h>
#include <taglib/tpropertymap.h>
#include <taglib/vorbisfile.h>
#include <taglib/wavfile.h>
#include <taglib/xiphcomment.h>

namespace {

using TagLib::ByteVector;

// ---------------------------------------------------------------------------------------------
// Errors. Internal code throws ShimError; the entry points turn it into a status and a message.
// Exceptions are used inside because the guards fail from deep inside recursive walks, where
// threading a status through every level would obscure the mirroring of TagLib's own loops.

struct ShimError {
    cgt_status status;
    char reason[CGT_MESSAGE_SIZE];
};

[[noreturn]] __attribute__((format(printf, 2, 3))) void fail(cgt_status status, const char *format, ...) {
    ShimError error;
    error.status = status;
    va_list args;
    va_start(args, format);
    vsnprintf(error.reason, sizeof error.reason, format, args);
    va_end(args);
    throw error;
}

__attribute__((format(printf, 3, 4))) void set_message(char *message, size_t capacity, const char *format, ...) {
    if (message == nullptr || capacity == 0) return;
    va_list args;
    va_start(args, format);
    vsnprintf(message, capacity, format, args);
    va_end(args);
}

// Messages name the path, but a path may be longer than the whole message buffer; keeping its
// tail (the file name) leaves room for the reason.
std::string short_path(const char *path) {
    if (path == nullptr) return "(null)";
    const size_t keep = 110;
    size_t length = strlen(path);
    if (length <= keep) return path;
    size_t start = length - keep;
    while (start < length && (static_cast<unsigned char>(path[start]) & 0xC0) == 0x80) start++; // UTF-8 boundary
    return std::string("...") + (path + start);
}

void describe(char *message, size_t capacity, const char *path, const ShimError &error) {
    set_message(message, capacity, "%s: %s", short_path(path).c_str(), error.reason);
}

// TagLib reports parse trouble through TagLib::debug(), which prints to stderr in builds without
// NDEBUG. A library must not write to its host's stderr, so a listener that drops everything is
// installed once per process (TagLib keeps one global listener; call_once makes installing it
// race-free when the first calls come from several threads).
class SilentListener final : public TagLib::DebugListener {
public:
    void printMessage(const TagLib::String &) override {}
};

void silence_taglib() {
    static std::once_flag once;
    // Built in static storage and never destroyed: TagLib may still log from other static
    // destructors at exit, after a function-local static listener would be gone.
    alignas(SilentListener) static unsigned char storage[sizeof(SilentListener)];
    std::call_once(once, [] { TagLib::setDebugListener(new (storage) SilentListener()); });
}

const char *status_name(cgt_status status) {
    switch (status) {
    case CGT_OK: return "ok";
    case CGT_ERR_IO: return "I/O error";
    case CGT_ERR_UNSUPPORTED: return "unsupported file";
    case CGT_ERR_CORRUPT: return "corrupt audio file";
    case CGT_ERR_NO_COVER: return "no cover picture";
    case CGT_ERR_TOO_LARGE: return "too large";
    case CGT_ERR_NO_MEMORY: return "out of memory";
    case CGT_ERR_INVALID_ARGUMENT: return "invalid argument";
    case CGT_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

// ---------------------------------------------------------------------------------------------
// The source file: opened once, checked with fstat, and handed to TagLib as a duplicate of the
// same descriptor, so what TagLib parses is the file that was checked even if the path is
// replaced meanwhile (and a FIFO or device under a file's name never reaches TagLib, which would
// block or read forever).

struct Fd {
    int fd = -1;
    Fd() = default;
    explicit Fd(int value) : fd(value) {}
    Fd(const Fd &) = delete;
    Fd &operator=(const Fd &) = delete;
    ~Fd() { reset(); }
    void reset() {
        if (fd >= 0) close(fd);
        fd = -1;
    }
};

struct Source {
    Fd fd;
    uint64_t size = 0;
    struct stat st{};

    // Reads up to `length` bytes at `offset`; fewer at end of file. Errors other than EINTR fail.
    size_t read_at(uint64_t offset, void *buffer, size_t length) const {
        size_t done = 0;
        while (done < length) {
            if (offset + done >= size) break;
            ssize_t n = pread(fd.fd, static_cast<char *>(buffer) + done, length - done, static_cast<off_t>(offset + done));
            if (n < 0) {
                if (errno == EINTR) continue;
                fail(CGT_ERR_IO, "read failed at offset %llu: %s", static_cast<unsigned long long>(offset + done), strerror(errno));
            }
            if (n == 0) break;
            done += static_cast<size_t>(n);
        }
        return done;
    }
    ByteVector block(uint64_t offset, uint64_t length) const {
        if (offset >= size) return ByteVector();
        if (length > size - offset) length = size - offset;
        ByteVector data(static_cast<unsigned int>(length), '\0');
        data.resize(static_cast<unsigned int>(read_at(offset, data.data(), static_cast<size_t>(length))));
        return data;
    }
};

void open_source(const char *path, Source &source) {
    if (path == nullptr || path[0] == '\0') fail(CGT_ERR_INVALID_ARGUMENT, "empty path");
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR) fail(CGT_ERR_IO, "no such file");
        if (e == EACCES || e == EPERM) fail(CGT_ERR_IO, "permission denied");
        fail(CGT_ERR_IO, "cannot open: %s", strerror(e));
    }
    source.fd.fd = fd;
    if (fstat(fd, &source.st) != 0) fail(CGT_ERR_IO, "cannot stat: %s", strerror(errno));
    if (S_ISDIR(source.st.st_mode)) fail(CGT_ERR_UNSUPPORTED, "is a directory, not an audio file");
    if (!S_ISREG(source.st.st_mode)) fail(CGT_ERR_UNSUPPORTED, "is not a regular file (device, FIFO or socket)");
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    source.size = static_cast<uint64_t>(source.st.st_size);
    if (source.size > CGT_MAX_FILE_BYTES)
        fail(CGT_ERR_TOO_LARGE, "%llu bytes is beyond the %llu-byte limit for audio files",
             static_cast<unsigned long long>(source.size), static_cast<unsigned long long>(CGT_MAX_FILE_BYTES));
}

uint32_t be32(const uint8_t *p) { return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3]; }
uint32_t le32(const uint8_t *p) { return (uint32_t(p[3]) << 24) | (uint32_t(p[2]) << 16) | (uint32_t(p[1]) << 8) | p[0]; }

// ---------------------------------------------------------------------------------------------
// Sniffing.

// ID3v2 header: "ID3", version 2..4, revision != 0xFF, size bytes < 0x80. Returns the size of the
// whole tag (header, body, footer) or 0 when `p` is not a plausible header.
uint64_t id3v2_tag_length(const uint8_t *p, size_t n) {
    if (n < 10 || memcmp(p, "ID3", 3) != 0) return 0;
    if (p[3] < 2 || p[3] > 4 || p[4] == 0xFF) return 0;
    if ((p[6] | p[7] | p[8] | p[9]) & 0x80) return 0;
    uint64_t body = (uint64_t(p[6]) << 21) | (uint64_t(p[7]) << 14) | (uint64_t(p[8]) << 7) | p[9];
    bool footer = p[3] == 4 && (p[5] & 0x10);
    return 10 + body + (footer ? 10 : 0);
}

// Bit rates (kbit/s) by [MPEG-1 ? 0 : 1][layer 1..3 - 1][index]; index 0 (free format) and 15 are
// treated as invalid: a sniffer that accepted them would match far more non-audio data.
const uint16_t kMpegBitrates[2][3][16] = {
    {{0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448, 0},
     {0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 0},
     {0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0}},
    {{0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256, 0},
     {0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 0},
     {0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 0}},
};
const uint32_t kMpegRates[4][3] = {{11025, 12000, 8000}, {0, 0, 0}, {22050, 24000, 16000}, {44100, 48000, 32000}};

// Frame length in bytes of the MPEG audio frame header at p, or 0 when it is not one.
uint32_t mpeg_frame_length(const uint8_t *p, size_t n) {
    if (n < 4 || p[0] != 0xFF || (p[1] & 0xE0) != 0xE0) return 0;
    unsigned version = (p[1] >> 3) & 3; // 0: 2.5, 1: reserved, 2: 2, 3: 1
    unsigned layer = 4 - ((p[1] >> 1) & 3); // 1..3; 4 means the reserved value 0
    unsigned bitrate_index = p[2] >> 4, rate_index = (p[2] >> 2) & 3, padding = (p[2] >> 1) & 1;
    if (version == 1 || layer == 4 || bitrate_index == 0 || bitrate_index == 15 || rate_index == 3 || (p[3] & 3) == 2)
        return 0;
    uint32_t bitrate = kMpegBitrates[version == 3 ? 0 : 1][layer - 1][bitrate_index] * 1000u;
    uint32_t rate = kMpegRates[version][rate_index];
    if (layer == 1) return (12 * bitrate / rate + padding) * 4;
    if (layer == 3 && version != 3) return 72 * bitrate / rate + padding;
    return 144 * bitrate / rate + padding;
}

// Image brands of the ISO base media file format: an AVIF or HEIC photo starts with "ftyp" too.
bool is_image_brand(const uint8_t *brand) {
    static const char *const brands[] = {"heic", "heix", "hevc", "hevx", "heim", "heis", "hevm", "hevs", "mif1",
                                         "msf1", "avif", "avis", "avio", "jxl ", "crx ", "jpx ", "jpm "};
    for (const char *b : brands)
        if (memcmp(brand, b, 4) == 0) return true;
    return false;
}

cgt_audio_format sniff(const uint8_t *p, size_t n, int depth) {
    if (p == nullptr || n < 4) return CGT_AUDIO_NONE;
    if (memcmp(p, "ID3", 3) == 0) {
        uint64_t length = id3v2_tag_length(p, n);
        if (length == 0) return CGT_AUDIO_NONE;
        if (length < n && depth < 8) {
            cgt_audio_format next = sniff(p + length, n - static_cast<size_t>(length), depth + 1);
            if (next == CGT_AUDIO_FLAC || next == CGT_AUDIO_MPEG) return next;
        }
        return CGT_AUDIO_ID3V2;
    }
    if (memcmp(p, "fLaC", 4) == 0) return CGT_AUDIO_FLAC;
    if (memcmp(p, "OggS", 4) == 0) {
        if (n < 28 || p[4] != 0) return CGT_AUDIO_OGG_OTHER;
        size_t packet = 27 + size_t(p[26]);
        auto at = [&](const char *magic, size_t length) { return packet + length <= n && memcmp(p + packet, magic, length) == 0; };
        if (at("\x01vorbis", 7)) return CGT_AUDIO_OGG_VORBIS;
        if (at("OpusHead", 8)) return CGT_AUDIO_OGG_OPUS;
        if (at("\x7f" "FLAC", 5)) return CGT_AUDIO_OGG_FLAC;
        if (at("Speex   ", 8)) return CGT_AUDIO_OGG_SPEEX;
        return CGT_AUDIO_OGG_OTHER;
    }
    if (n >= 12 && memcmp(p + 4, "ftyp", 4) == 0 && be32(p) >= 12) return is_image_brand(p + 8) ? CGT_AUDIO_NONE : CGT_AUDIO_MP4;
    if (n >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WAVE", 4) == 0) return CGT_AUDIO_WAV;
    if (n >= 12 && memcmp(p, "FORM", 4) == 0 && (memcmp(p + 8, "AIFF", 4) == 0 || memcmp(p + 8, "AIFC", 4) == 0))
        return CGT_AUDIO_AIFF;
    uint32_t frame = mpeg_frame_length(p, n);
    if (frame != 0) {
        // With a second frame header in view, require it: two consecutive valid headers at the
        // computed distance are rare in anything but MPEG audio.
        if (frame + 4 <= n && mpeg_frame_length(p + frame, n - frame) == 0) return CGT_AUDIO_NONE;
        return CGT_AUDIO_MPEG;
    }
    return CGT_AUDIO_NONE;
}

const char *format_name(cgt_audio_format format) {
    switch (format) {
    case CGT_AUDIO_MPEG: case CGT_AUDIO_ID3V2: return "MPEG audio";
    case CGT_AUDIO_FLAC: return "FLAC";
    case CGT_AUDIO_OGG_VORBIS: return "Ogg Vorbis";
    case CGT_AUDIO_OGG_OPUS: return "Ogg Opus";
    case CGT_AUDIO_OGG_FLAC: return "Ogg FLAC";
    case CGT_AUDIO_OGG_SPEEX: return "Ogg Speex";
    case CGT_AUDIO_OGG_OTHER: return "Ogg (not Vorbis, Opus or Speex)";
    case CGT_AUDIO_MP4: return "MP4";
    case CGT_AUDIO_WAV: return "WAV";
    case CGT_AUDIO_AIFF: return "AIFF";
    case CGT_AUDIO_NONE: break;
    }
    return "unknown";
}

const char *image_kind(const uint8_t *p, size_t n) {
    if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return "a JPEG image";
    if (n >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0) return "a PNG image";
    if (n >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0) return "a WebP image";
    if (n >= 6 && (memcmp(p, "GIF87a", 6) == 0 || memcmp(p, "GIF89a", 6) == 0)) return "a GIF image";
    if (n >= 12 && memcmp(p + 4, "ftyp", 4) == 0 && is_image_brand(p + 8)) return "a HEIF/AVIF image";
    return nullptr;
}

struct Detected {
    cgt_audio_format format = CGT_AUDIO_NONE; // as opened (MPEG for ID3V2 and the name fallback)
    uint64_t flac_offset = 0;                 // where "fLaC" is
    bool by_name = false;                     // MPEG tried because of a .mp3/.mp2 name
};

bool has_mpeg_name(const char *path) {
    const char *dot = strrchr(path, '.');
    if (dot == nullptr || strchr(dot, '/') != nullptr) return false;
    return strcasecmp(dot, ".mp3") == 0 || strcasecmp(dot, ".mp2") == 0 || strcasecmp(dot, ".mpga") == 0;
}

Detected detect(const Source &source, const char *path) {
    uint8_t head[CGT_SNIFF_BYTES];
    size_t n = source.read_at(0, head, sizeof head);
    Detected detected;
    cgt_audio_format format = sniff(head, n, 0);
    if (format == CGT_AUDIO_ID3V2 || format == CGT_AUDIO_MPEG || format == CGT_AUDIO_FLAC) {
        // Skip the ID3v2 tag(s) in front to see whether FLAC follows (the sniffer only sees the
        // first bytes). Consecutive tags are skipped like TagLib's duplicate-tag handling does.
        uint64_t offset = 0;
        for (int i = 0; i < 16; i++) {
            uint8_t header[10];
            if (source.read_at(offset, header, 10) < 10) break;
            uint64_t length = id3v2_tag_length(header, 10);
            if (length == 0) break;
            offset += length;
        }
        uint8_t after[CGT_SNIFF_BYTES];
        size_t m = source.read_at(offset, after, sizeof after);
        if (m >= 4 && memcmp(after, "fLaC", 4) == 0) {
            detected.format = CGT_AUDIO_FLAC;
            detected.flac_offset = offset;
        } else {
            detected.format = CGT_AUDIO_MPEG;
        }
        return detected;
    }
    if (format != CGT_AUDIO_NONE) {
        detected.format = format;
        return detected;
    }
    if (const char *image = image_kind(head, n)) fail(CGT_ERR_UNSUPPORTED, "is %s, not an audio file", image);
    if (has_mpeg_name(path)) {
        detected.format = CGT_AUDIO_MPEG;
        detected.by_name = true;
        return detected;
    }
    fail(CGT_ERR_UNSUPPORTED, "not an audio format this reads (MP3, FLAC, MP4/M4A, Ogg Vorbis/Opus/Speex, WAV, AIFF)");
}

// ---------------------------------------------------------------------------------------------
// Guards. Each walks a structure exactly as far as TagLib 1.13's parser would (same loop bounds,
// same stopping rules; where this code is unsure it walks further, never less), counting what
// TagLib would build, before TagLib is constructed. The comments name the TagLib 1.13 function
// being mirrored.

struct Budget {
    uint64_t elements = 0;
    uint64_t inflated = 0;
    void add(uint64_t count, const char *what) {
        elements += count;
        if (elements > CGT_MAX_TAG_ELEMENTS)
            fail(CGT_ERR_TOO_LARGE, "more than %u tag elements (%s); refusing a file that would exhaust memory",
                 CGT_MAX_TAG_ELEMENTS, what);
    }
};

const unsigned kMaxId3Nesting = 8;  // CHAP/CTOC frames inside CHAP/CTOC frames; real files use 1
const unsigned kMaxMp4Depth = 32;   // real files nest atoms about 8 deep

// zlib output of a compressed ID3v2 frame, bounded. Mirrors zlib::decompress: inflate until the
// stream ends, fails or stops making progress.
ByteVector bounded_inflate(const ByteVector &input, Budget &budget) {
    z_stream stream{};
    if (inflateInit(&stream) != Z_OK) return ByteVector();
    stream.next_in = reinterpret_cast<Bytef *>(const_cast<char *>(input.data()));
    stream.avail_in = input.size();
    std::vector<char> output;
    char chunk[16384];
    for (;;) {
        stream.next_out = reinterpret_cast<Bytef *>(chunk);
        stream.avail_out = sizeof chunk;
        int result = inflate(&stream, Z_NO_FLUSH);
        size_t produced = sizeof chunk - stream.avail_out;
        budget.inflated += produced;
        if (budget.inflated > CGT_MAX_INFLATED_BYTES) {
            inflateEnd(&stream);
            fail(CGT_ERR_TOO_LARGE, "compressed ID3v2 frames inflate beyond %u bytes", CGT_MAX_INFLATED_BYTES);
        }
        output.insert(output.end(), chunk, chunk + produced);
        if (result != Z_OK || stream.avail_out != 0) break;
    }
    inflateEnd(&stream);
    return ByteVector(output.data(), static_cast<unsigned int>(output.size()));
}

size_t count_zero_bytes(const ByteVector &data) {
    size_t zeros = 0;
    for (unsigned int i = 0; i < data.size(); i++) zeros += data[i] == 0;
    return zeros;
}

// TextIdentificationFrame::parseFields: after the encoding byte, values are separated by a NUL
// (Latin-1, UTF-8) or by a NUL pair on a 2-byte boundary (UTF-16).
size_t count_text_values(const ByteVector &fields) {
    if (fields.size() < 2) return 1;
    if (fields[0] != 1 && fields[0] != 2) return count_zero_bytes(fields.mid(1)) + 1;
    size_t values = 1;
    for (unsigned int i = 1; i + 1 < fields.size(); i += 2) values += fields[i] == 0 && fields[i + 1] == 0;
    return values;
}

// TagLib's ID3v2::Frame::Header is not public in 1.13; this is its setData(), including the
// workaround for iTunes' v2.4 tags with v2.3-style (not synchsafe) frame sizes.
unsigned int id3_frame_header_size(unsigned int version) { return version < 3 ? 6 : 10; }

bool id3_frame_id_valid(const ByteVector &id) {
    if (id.size() != 4) return false;
    for (unsigned int i = 0; i < 4; i++)
        if ((id[i] < 'A' || id[i] > 'Z') && (id[i] < '0' || id[i] > '9')) return false;
    return true;
}

struct Id3FrameHeader {
    ByteVector id;
    unsigned int size = 0;
    bool compression = false, encryption = false, unsynchronisation = false, data_length = false;

    Id3FrameHeader(const ByteVector &data, unsigned int version) {
        if (version < 3) {
            if (data.size() < 3) return;
            id = data.mid(0, 3);
            if (data.size() < 6) return;
            size = data.toUInt(3, 3, true);
            return;
        }
        if (data.size() < 4) return;
        id = data.mid(0, 4);
        if (data.size() < 10) return;
        if (version == 3) {
            size = data.toUInt(4U);
            compression = (data[9] & 0x80) != 0;
            encryption = (data[9] & 0x40) != 0;
            return;
        }
        size = TagLib::ID3v2::SynchData::toUInt(data.mid(4, 4));
        if (size > 127 && !id3_frame_id_valid(data.mid(size + 10, 4))) {
            unsigned int plain = data.toUInt(4U);
            if (id3_frame_id_valid(data.mid(plain + 10, 4))) size = plain;
        }
        compression = (data[9] & 0x08) != 0;
        encryption = (data[9] & 0x04) != 0;
        unsynchronisation = (data[9] & 0x02) != 0;
        data_length = (data[9] & 0x01) != 0;
    }
};

bool guard_id3_frame(const ByteVector &remaining, const TagLib::ID3v2::Header &tag, unsigned depth, Budget &budget,
                     unsigned int *frame_size);

// ChapterFrame::parseFields / TableOfContentsFrame::parseFields: element ID, times or child IDs,
// then embedded frames, each made by the frame factory, recursively.
void guard_id3_embedded(const ByteVector &fields, bool toc, const TagLib::ID3v2::Header &tag, unsigned depth,
                        Budget &budget) {
    unsigned int size = fields.size();
    if (size < (toc ? 6u : 18u)) return;
    if (depth + 1 > kMaxId3Nesting)
        fail(CGT_ERR_TOO_LARGE, "ID3v2 chapter frames nested more than %u deep", kMaxId3Nesting);
    // readStringField: up to the first NUL; no NUL leaves the position where it was.
    auto skip_string = [&](unsigned int pos) {
        int end = fields.find('\0', pos);
        return end < static_cast<int>(pos) ? pos : static_cast<unsigned int>(end) + 1;
    };
    unsigned int pos = skip_string(0);
    if (toc) {
        if (pos + 2 > size) return;
        unsigned int entries = static_cast<unsigned char>(fields[pos + 1]);
        pos += 2;
        for (unsigned int i = 0; i < entries && pos <= size; i++) pos = skip_string(pos);
    } else {
        pos += 16;
    }
    if (pos > size) return;
    unsigned int hs = id3_frame_header_size(tag.majorVersion());
    unsigned int left = size - pos;
    if (left < hs) return;
    unsigned int at = 0;
    while (at < left - hs) {
        unsigned int frame_size;
        if (!guard_id3_frame(fields.mid(pos + at), tag, depth + 1, budget, &frame_size)) return;
        at += frame_size + hs;
    }
}

// FrameFactory::createFrame up to the frame's constructor, then what that constructor builds.
bool guard_id3_frame(const ByteVector &remaining, const TagLib::ID3v2::Header &tag, unsigned depth, Budget &budget,
                     unsigned int *frame_size) {
    unsigned int version = tag.majorVersion();
    Id3FrameHeader header(remaining, version);
    ByteVector id = header.id;
    if (id.size() != (version < 3 ? 3u : 4u) || header.size <= (header.data_length ? 4u : 0u) || header.size > remaining.size())
        return false;
    if (version == 3 && id.size() == 4 && id[3] == '\0') id = id.mid(0, 3); // TagLib's iTunes v2.2-in-v2.3 fix
    for (unsigned int i = 0; i < id.size(); i++)
        if ((id[i] < 'A' || id[i] > 'Z') && (id[i] < '0' || id[i] > '9')) return false;
    budget.add(1, "ID3v2 frames");
    *frame_size = header.size;

    unsigned int hs = id3_frame_header_size(version);
    ByteVector data = remaining;
    if (version > 3 && (tag.unsynchronisation() || header.unsynchronisation))
        data = remaining.mid(0, hs) + TagLib::ID3v2::SynchData::decode(remaining.mid(hs, header.size));
    if (header.encryption) return true; // kept as opaque bytes

    // Frame::fieldData: a compressed frame is inflated from its data to wherever the zlib stream
    // ends, which may lie beyond the frame; this bounds what that can produce.
    ByteVector fields;
    unsigned int offset = hs, length = header.size;
    if (header.compression || header.data_length) {
        length = TagLib::ID3v2::SynchData::toUInt(data.mid(hs, 4));
        offset += 4;
    }
    if (header.compression)
        fields = data.size() <= offset ? ByteVector() : bounded_inflate(data.mid(offset), budget);
    else
        fields = data.mid(offset, length);

    // Frames that split their data into one object per few bytes.
    const bool text = id[0] == 'T' || id == "WFED" || id == "MVNM" || id == "MVIN" || id == "GRP1";
    if (text) budget.add(count_text_values(fields), "ID3v2 text values");
    else if (id == "SYLT" || id == "SLT" || id == "ETCO" || id == "ETC" || id == "RVA2") budget.add(fields.size() / 4, "ID3v2 list entries");
    else if (id == "CHAP") guard_id3_embedded(fields, false, tag, depth, budget);
    else if (id == "CTOC") guard_id3_embedded(fields, true, tag, depth, budget);
    return true;
}

// ID3v2::Tag::read and ::parse, for the tag whose header is at `offset` (TagLib does not insist
// on "ID3" there when a WAV/AIFF chunk points at it, so neither does this).
void guard_id3v2(const Source &source, uint64_t offset, Budget &budget) {
    ByteVector head = source.block(offset, TagLib::ID3v2::Header::size());
    if (head.size() < TagLib::ID3v2::Header::size()) return;
    TagLib::ID3v2::Header tag(head);
    if (tag.tagSize() == 0) return;
    ByteVector data = source.block(offset + head.size(), tag.tagSize());
    if (tag.unsynchronisation() && tag.majorVersion() <= 3) data = TagLib::ID3v2::SynchData::decode(data);
    unsigned int pos = 0, length = data.size();
    if (tag.extendedHeader()) {
        TagLib::ID3v2::ExtendedHeader extended;
        extended.setData(data);
        if (extended.size() <= data.size()) {
            pos += extended.size();
            length -= extended.size();
        }
    }
    if (tag.footerPresent() && TagLib::ID3v2::Footer::size() <= length) length -= TagLib::ID3v2::Footer::size();
    unsigned int hs = id3_frame_header_size(tag.majorVersion());
    // Unsigned like TagLib's loop: a body shorter than a frame header wraps around, and TagLib
    // then stops at the first frame it cannot make; so does this.
    while (pos < length - hs) {
        if (pos >= data.size() || data[pos] == 0) break; // padding
        unsigned int frame_size;
        if (!guard_id3_frame(data.mid(pos), tag, 0, budget, &frame_size)) break;
        pos += frame_size + hs;
    }
}

// TagLib::File on an IOStream, only so that TagLib's own MPEG::Header validity check can be used
// to find where MPEG::File will look for an ID3v2 tag.
class ProbeFile final : public TagLib::File {
public:
    explicit ProbeFile(TagLib::IOStream *stream) : TagLib::File(stream) {}
    static unsigned int chunk() { return bufferSize(); }
    TagLib::Tag *tag() const override { return nullptr; }
    TagLib::AudioProperties *audioProperties() const override { return nullptr; }
    bool save() override { return false; }
};

std::unique_ptr<TagLib::FileStream> stream_on(const Source &source, bool read_only) {
    int copy = fcntl(source.fd.fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) fail(CGT_ERR_IO, "cannot duplicate the file descriptor: %s", strerror(errno));
    std::unique_ptr<TagLib::FileStream> stream;
    try {
        stream.reset(new TagLib::FileStream(copy, read_only));
    } catch (...) {
        close(copy);
        throw;
    }
    if (!stream->isOpen()) { // fdopen failed: the descriptor is still ours
        close(copy);
        fail(CGT_ERR_IO, "cannot open a stream on the file");
    }
    if (!read_only && stream->readOnly()) fail(CGT_ERR_IO, "the file cannot be opened for writing");
    return stream;
}

bool frame_sync(unsigned char a, unsigned char b) { return a == 0xFF && b != 0xFF && (b & 0xE0) == 0xE0; }

// MPEG::File::findID3v2: at 0, or the first "ID3" before the first valid MPEG frame.
long mpeg_id3v2_location(const Source &source) {
    auto stream = stream_on(source, true);
    ProbeFile file(stream.get());
    file.seek(0);
    if (file.readBlock(3) == TagLib::ID3v2::Header::fileIdentifier()) return 0;
    if (TagLib::MPEG::Header(&file, 0, true).isValid()) return -1;
    unsigned char sync[2] = {0, 0}, id[3] = {0, 0, 0};
    long position = 0;
    for (;;) {
        file.seek(position);
        const ByteVector buffer = file.readBlock(ProbeFile::chunk());
        if (buffer.isEmpty()) return -1;
        for (unsigned int i = 0; i < buffer.size(); i++) {
            sync[0] = sync[1];
            sync[1] = static_cast<unsigned char>(buffer[i]);
            if (frame_sync(sync[0], sync[1]) && TagLib::MPEG::Header(&file, position + i - 1, true).isValid()) return -1;
            id[0] = id[1];
            id[1] = id[2];
            id[2] = static_cast<unsigned char>(buffer[i]);
            if (memcmp(id, "ID3", 3) == 0) return position + i - 2;
        }
        position += ProbeFile::chunk();
    }
}

// Utils::findID3v1, Utils::findAPE, APE::Tag::read and ::parse. An APE item is one map entry,
// and a text item one string per NUL-separated value.
void guard_ape(const Source &source, Budget &budget) {
    long long length = static_cast<long long>(source.size);
    long long id3v1 = -1;
    if (length >= 131) {
        uint8_t b[8];
        if (source.read_at(length - 131, b, 8) == 8 && memcmp(b + 3, "TAG", 3) == 0 && memcmp(b, "APETAGEX", 8) != 0)
            id3v1 = length - 128;
    } else if (length >= 128) {
        uint8_t b[3];
        if (source.read_at(length - 128, b, 3) == 3 && memcmp(b, "TAG", 3) == 0) id3v1 = length - 128;
    }
    long long footer_at = id3v1 >= 0 ? id3v1 - 32 : length - 32;
    if (footer_at < 0) return;
    uint8_t footer[32];
    if (source.read_at(footer_at, footer, 32) != 32 || memcmp(footer, "APETAGEX", 8) != 0) return;
    uint32_t tag_size = le32(footer + 12), count = le32(footer + 16);
    if (tag_size <= 32 || tag_size > static_cast<uint64_t>(length)) return;
    long long start = footer_at + 32 - static_cast<long long>(tag_size);
    if (start < 0) start = footer_at + 32; // TagLib's seek fails and it reads on from the footer
    ByteVector data = source.block(static_cast<uint64_t>(start), tag_size - 32);
    if (data.size() < 11) return;
    unsigned int pos = 0;
    for (uint32_t i = 0; i < count && pos <= data.size() - 11; i++) {
        int nul = data.find('\0', pos + 8);
        if (nul < 0) return;
        unsigned int key_length = static_cast<unsigned int>(nul) - pos - 8;
        unsigned int value_length = data.toUInt(pos, false);
        if (value_length >= data.size() || pos > data.size() - value_length) return;
        budget.add(1, "APE items");
        unsigned int flags = data.toUInt(pos + 4, false);
        if (((flags >> 1) & 3) == 0) budget.add(count_zero_bytes(data.mid(nul + 1, value_length)), "APE text values");
        pos += key_length + value_length + 9;
    }
}

// XiphComment::parse builds one string per field; its own check caps the count by the data size.
void guard_xiph_count(uint32_t declared, uint64_t comment_size, Budget &budget) {
    uint64_t effective = declared;
    if (comment_size >= 8 && effective > (comment_size - 8) / 4) effective = 0; // TagLib then parses nothing
    budget.add(effective, "Vorbis comment fields");
}

// FLAC::File::scan.
void guard_flac(const Source &source, uint64_t flac_offset, Budget &budget) {
    uint64_t pos = flac_offset + 4;
    bool first = true, comment_seen = false;
    for (;;) {
        uint8_t header[4];
        if (source.read_at(pos, header, 4) != 4) return;
        unsigned type = header[0] & 0x7F;
        bool last = (header[0] & 0x80) != 0;
        uint32_t length = (uint32_t(header[1]) << 16) | (uint32_t(header[2]) << 8) | header[3];
        if (first && type != 0) return;
        first = false;
        if (length == 0 && type != 1 && type != 3) return;
        if (pos + 4 + length > source.size) return;
        if (type != 1) budget.add(1, "FLAC metadata blocks");
        if (type == 4 && !comment_seen) {
            comment_seen = true;
            uint8_t vendor[4], count[4];
            if (length >= 8 && source.read_at(pos + 4, vendor, 4) == 4) {
                uint64_t at = 4 + uint64_t(le32(vendor));
                if (at + 4 <= length && source.read_at(pos + 4 + at, count, 4) == 4) guard_xiph_count(le32(count), length, budget);
            }
        }
        pos += 4 + uint64_t(length);
        if (last) return;
    }
}

// Ogg::File::readPages up to the end of packet 1 (the comment header), then XiphComment::parse.
// Pages themselves are no threat (a page that keeps packet 1 open carries at least 255 bytes); the
// walk is there to find the comment packet's field count.
void guard_ogg(const Source &source, cgt_audio_format format, Budget &budget) {
    const uint64_t header_length = format == CGT_AUDIO_OGG_VORBIS ? 7 : format == CGT_AUDIO_OGG_OPUS ? 8 : 0;
    uint64_t offset = 0, packet_offset = 0, packet1_size = 0;
    unsigned packet = 0;
    uint8_t vendor[4], count[4];
    uint64_t vendor_have = 0, count_have = 0;
    // Copies the part of a packet-1 segment that falls into [window, window + 4).
    auto grab = [&](uint64_t file_at, uint64_t length, uint64_t window, uint8_t *into, uint64_t &have) {
        uint64_t begin = packet_offset > window ? packet_offset : window;
        uint64_t end = packet_offset + length < window + 4 ? packet_offset + length : window + 4;
        if (begin >= end) return;
        size_t got = source.read_at(file_at + (begin - packet_offset), into + (begin - window), static_cast<size_t>(end - begin));
        have += got;
    };
    for (;;) {
        uint8_t page[27];
        if (source.read_at(offset, page, 27) != 27 || memcmp(page, "OggS", 4) != 0) break;
        unsigned segments = page[26];
        uint8_t lacing[255];
        if (segments < 1 || source.read_at(offset + 27, lacing, segments) != segments) break; // PageHeader::read
        budget.add(1, "Ogg pages");
        uint64_t data = offset + 27 + segments;
        for (unsigned i = 0; i < segments; i++) {
            if (packet == 1) {
                grab(data, lacing[i], header_length, vendor, vendor_have);
                if (vendor_have == 4) grab(data, lacing[i], header_length + 4 + le32(vendor), count, count_have);
            }
            packet_offset += lacing[i];
            data += lacing[i];
            if (lacing[i] < 255) {
                if (packet == 1) packet1_size = packet_offset;
                packet++;
                packet_offset = 0;
            }
        }
        offset = data;
        if (packet > 1 || (page[5] & 4)) break; // packet 1 complete, or last page of the stream
    }
    if (packet > 1 && count_have == 4 && packet1_size >= header_length)
        guard_xiph_count(le32(count), packet1_size - header_length, budget);
}

// MP4::Atoms / MP4::Atom constructors, recursively, recording each atom so that the item list
// (moov.udta.meta.ilst) can be found the way Atom::find does: first child of each name.
struct Mp4Node {
    long long offset, length;
    char name[4];
    int parent;
};

struct Mp4Walk {
    const Source &source;
    Budget &budget;
    std::vector<Mp4Node> nodes;
    long long end;
    long long pos = 0;

    // Returns the atom's length as TagLib computes it; 0 stops every enclosing loop.
    long long atom(int parent, unsigned depth) {
        static const char *const containers[] = {"moov", "udta", "mdia", "meta", "ilst", "stbl",
                                                 "minf", "moof", "traf", "trak", "stsd"};
        long long offset = pos;
        uint8_t header[8];
        size_t got = source.read_at(static_cast<uint64_t>(pos), header, 8);
        pos += static_cast<long long>(got);
        if (got != 8) {
            pos = end;
            return 0;
        }
        long long length = be32(header);
        if (length == 0) {
            length = end - offset;
        } else if (length == 1) {
            uint8_t wide[8];
            size_t n = source.read_at(static_cast<uint64_t>(pos), wide, 8);
            pos += static_cast<long long>(n);
            unsigned long long value = 0;
            for (size_t i = 0; i < n; i++) value = (value << 8) | wide[i];
            if (value > static_cast<unsigned long long>(LONG_MAX)) {
                pos = end;
                return 0;
            }
            length = static_cast<long long>(value);
        }
        if (length < 8) {
            pos = end;
            return 0;
        }
        budget.add(1, "MP4 atoms");
        int index = static_cast<int>(nodes.size());
        nodes.push_back(Mp4Node{offset, length, {0, 0, 0, 0}, parent});
        memcpy(nodes.back().name, header + 4, 4);
        for (const char *container : containers) {
            if (memcmp(header + 4, container, 4) != 0) continue;
            if (depth + 1 > kMaxMp4Depth) fail(CGT_ERR_TOO_LARGE, "MP4 atoms nested more than %u deep", kMaxMp4Depth);
            if (memcmp(container, "meta", 4) == 0) {
                // 'meta' is a full atom (4 bytes of version and flags) unless a known child follows.
                long long after = pos;
                uint8_t next[8];
                bool full = true;
                if (source.read_at(static_cast<uint64_t>(pos), next, 8) == 8) {
                    for (const char *child : {"hdlr", "ilst", "mhdr", "ctry", "lang"})
                        if (memcmp(next + 4, child, 4) == 0) full = false;
                }
                pos = after + (full ? 4 : 0);
            } else if (memcmp(container, "stsd", 4) == 0) {
                pos += 8;
            }
            while (pos < offset + length) {
                if (atom(index, depth + 1) == 0) return length;
            }
            return length;
        }
        pos = offset + length;
        return length;
    }

    int child(int parent, const char *name) const {
        for (size_t i = 0; i < nodes.size(); i++)
            if (nodes[i].parent == parent && memcmp(nodes[i].name, name, 4) == 0) return static_cast<int>(i);
        return -1;
    }
};

void guard_mp4(const Source &source, Budget &budget) {
    Mp4Walk walk{source, budget, {}, static_cast<long long>(source.size)};
    while (walk.pos + 8 <= walk.end) {
        if (walk.atom(-1, 0) == 0) break;
    }
    int ilst = -1, at = walk.child(-1, "moov");
    if (at >= 0) at = walk.child(at, "udta");
    if (at >= 0) at = walk.child(at, "meta");
    if (at >= 0) ilst = walk.child(at, "ilst");
    if (ilst < 0) return;
    // MP4::Tag::parseData2 / parseCovr: each item holds 'data' atoms of at least 12 bytes.
    for (const Mp4Node &item : walk.nodes) {
        if (item.parent != ilst) continue;
        long long begin = item.offset + 8, stop = item.offset + item.length;
        if (stop > walk.end) stop = walk.end;
        for (long long pos = begin; pos < stop;) {
            uint8_t size[4] = {0, 0, 0, 0};
            if (source.read_at(static_cast<uint64_t>(pos), size, 4) == 0) break;
            int length = static_cast<int>(be32(size));
            if (length < 12) break;
            budget.add(1, "MP4 data atoms");
            pos += length;
        }
    }
}

bool valid_chunk_name(const uint8_t *name) {
    for (int i = 0; i < 4; i++)
        if (name[i] < 32 || name[i] > 127) return false;
    return true;
}

// RIFF::File::read (WAV little-endian, AIFF big-endian), then the chunks WAV/AIFF::File::read use.
void guard_riff(const Source &source, bool big_endian, bool wav, Budget &budget) {
    long long length = static_cast<long long>(source.size), offset = 12;
    bool id3_seen = false, info_seen = false;
    while (offset + 8 <= length) {
        uint8_t header[8];
        if (source.read_at(static_cast<uint64_t>(offset), header, 8) != 8) break;
        uint32_t size = big_endian ? be32(header + 4) : le32(header + 4);
        if (!valid_chunk_name(header)) break;
        if (offset + 8 + static_cast<long long>(size) > length) break;
        budget.add(1, "RIFF chunks");
        long long data = offset + 8;
        if ((memcmp(header, "ID3 ", 4) == 0 || memcmp(header, "id3 ", 4) == 0) && !id3_seen) {
            id3_seen = true;
            guard_id3v2(source, static_cast<uint64_t>(data), budget);
        } else if (wav && memcmp(header, "LIST", 4) == 0 && !info_seen) {
            uint8_t kind[4];
            if (source.read_at(static_cast<uint64_t>(data), kind, 4) == 4 && memcmp(kind, "INFO", 4) == 0) {
                info_seen = true;
                budget.add(size / 8, "RIFF INFO fields"); // each field takes at least 8 bytes
            }
        }
        offset = data + size;
        if (offset & 1) {
            uint8_t pad[5];
            size_t n = source.read_at(static_cast<uint64_t>(offset), pad, 5);
            if (n >= 1 && (pad[0] == 0 || (n == 5 && valid_chunk_name(pad + 1)))) offset++;
        }
    }
}

void guard(const Source &source, const Detected &detected, Budget &budget) {
    switch (detected.format) {
    case CGT_AUDIO_MPEG: {
        long id3 = mpeg_id3v2_location(source);
        if (id3 >= 0) guard_id3v2(source, static_cast<uint64_t>(id3), budget);
        guard_ape(source, budget);
        break;
    }
    case CGT_AUDIO_FLAC:
        if (detected.flac_offset > 0) guard_id3v2(source, 0, budget);
        guard_flac(source, detected.flac_offset, budget);
        break;
    case CGT_AUDIO_OGG_VORBIS: case CGT_AUDIO_OGG_OPUS: case CGT_AUDIO_OGG_SPEEX:
        guard_ogg(source, detected.format, budget);
        break;
    case CGT_AUDIO_MP4: guard_mp4(source, budget); break;
    case CGT_AUDIO_WAV: guard_riff(source, false, true, budget); break;
    case CGT_AUDIO_AIFF: guard_riff(source, true, false, budget); break;
    default: break;
    }
}

// ---------------------------------------------------------------------------------------------
// Opening TagLib on a checked source.

struct Opened {
    // Declared before `file`, so destroyed after it: a TagLib::File does not own its stream.
    std::unique_ptr<TagLib::FileStream> stream;
    std::unique_ptr<TagLib::File> file;
    Detected detected;
};

void open_taglib(const Source &source, const char *path, bool read_only, bool read_properties, Opened &opened) {
    opened.detected = detect(source, path);
    const Detected &detected = opened.detected;
    if (detected.format == CGT_AUDIO_OGG_FLAC || detected.format == CGT_AUDIO_OGG_OTHER)
        fail(CGT_ERR_UNSUPPORTED, "%s files are not supported", format_name(detected.format));
    Budget budget;
    guard(source, detected, budget);

    opened.stream = stream_on(source, read_only);
    TagLib::IOStream *stream = opened.stream.get();
    const auto style = TagLib::AudioProperties::Average;
    TagLib::ID3v2::FrameFactory *factory = TagLib::ID3v2::FrameFactory::instance();
    switch (detected.format) {
    case CGT_AUDIO_MPEG: opened.file.reset(new TagLib::MPEG::File(stream, factory, read_properties, style)); break;
    case CGT_AUDIO_FLAC: opened.file.reset(new TagLib::FLAC::File(stream, factory, read_properties, style)); break;
    case CGT_AUDIO_OGG_VORBIS: opened.file.reset(new TagLib::Ogg::Vorbis::File(stream, read_properties, style)); break;
    case CGT_AUDIO_OGG_OPUS: opened.file.reset(new TagLib::Ogg::Opus::File(stream, read_properties, style)); break;
    case CGT_AUDIO_OGG_SPEEX: opened.file.reset(new TagLib::Ogg::Speex::File(stream, read_properties, style)); break;
    case CGT_AUDIO_MP4: opened.file.reset(new TagLib::MP4::File(stream, read_properties, style)); break;
    case CGT_AUDIO_WAV: opened.file.reset(new TagLib::RIFF::WAV::File(stream, read_properties, style)); break;
    case CGT_AUDIO_AIFF: opened.file.reset(new TagLib::RIFF::AIFF::File(stream, read_properties, style)); break;
    default: fail(CGT_ERR_UNSUPPORTED, "not an audio format this reads");
    }
    if (!opened.file->isValid())
        fail(CGT_ERR_CORRUPT, "TagLib cannot parse it as %s (truncated or damaged)", format_name(detected.format));
    if (detected.by_name) {
        // Named .mp3 but without a recognisable start: accept only if TagLib finds MPEG frames.
        auto *mpeg = static_cast<TagLib::MPEG::File *>(opened.file.get());
        if (mpeg->firstFrameOffset() < 0) fail(CGT_ERR_UNSUPPORTED, "named like MP3 but contains no MPEG audio frame");
    }
}

// ---------------------------------------------------------------------------------------------
// Pictures.

struct Picture {
    ByteVector data; // shares TagLib's buffer (ByteVector copies are reference-counted)
    uint32_t type;
    std::string mime;
};

void add_id3v2_pictures(TagLib::ID3v2::Tag *tag, std::vector<Picture> &pictures) {
    if (tag == nullptr) return;
    // v2.2 "PIC" frames are converted to APIC by TagLib's frame factory.
    const TagLib::ID3v2::FrameList &frames = tag->frameList("APIC");
    for (TagLib::ID3v2::Frame *frame : frames) {
        auto *apic = dynamic_cast<TagLib::ID3v2::AttachedPictureFrame *>(frame);
        if (apic == nullptr) continue;
        pictures.push_back(Picture{apic->picture(), static_cast<uint32_t>(apic->type()), apic->mimeType().to8Bit(true)});
    }
}

void add_flac_pictures(const TagLib::List<TagLib::FLAC::Picture *> &list, std::vector<Picture> &pictures) {
    for (TagLib::FLAC::Picture *picture : list)
        pictures.push_back(Picture{picture->data(), static_cast<uint32_t>(picture->type()), picture->mimeType().to8Bit(true)});
}

std::vector<Picture> collect_pictures(const Opened &opened) {
    std::vector<Picture> pictures;
    TagLib::File *file = opened.file.get();
    switch (opened.detected.format) {
    case CGT_AUDIO_MPEG: {
        auto *mpeg = static_cast<TagLib::MPEG::File *>(file);
        if (mpeg->hasID3v2Tag()) add_id3v2_pictures(mpeg->ID3v2Tag(), pictures);
        break;
    }
    case CGT_AUDIO_FLAC: {
        auto *flac = static_cast<TagLib::FLAC::File *>(file);
        add_flac_pictures(flac->pictureList(), pictures);
        if (flac->hasXiphComment()) add_flac_pictures(flac->xiphComment()->pictureList(), pictures);
        if (flac->hasID3v2Tag()) add_id3v2_pictures(flac->ID3v2Tag(), pictures);
        break;
    }
    case CGT_AUDIO_OGG_VORBIS: case CGT_AUDIO_OGG_OPUS: case CGT_AUDIO_OGG_SPEEX: {
        auto *comment = dynamic_cast<TagLib::Ogg::XiphComment *>(file->tag());
        if (comment != nullptr) add_flac_pictures(comment->pictureList(), pictures);
        break;
    }
    case CGT_AUDIO_MP4: {
        auto *tag = static_cast<TagLib::MP4::File *>(file)->tag();
        if (tag != nullptr && tag->contains("covr")) {
            const TagLib::MP4::CoverArtList covers = tag->item("covr").toCoverArtList();
            for (const TagLib::MP4::CoverArt &cover : covers) {
                const char *mime = cover.format() == TagLib::MP4::CoverArt::JPEG  ? "image/jpeg"
                                   : cover.format() == TagLib::MP4::CoverArt::PNG ? "image/png"
                                   : cover.format() == TagLib::MP4::CoverArt::BMP ? "image/bmp"
                                   : cover.format() == TagLib::MP4::CoverArt::GIF ? "image/gif"
                                                                                  : "";
                pictures.push_back(Picture{cover.data(), 3, mime});
            }
        }
        break;
    }
    case CGT_AUDIO_WAV: {
        auto *wav = static_cast<TagLib::RIFF::WAV::File *>(file);
        if (wav->hasID3v2Tag()) add_id3v2_pictures(wav->ID3v2Tag(), pictures);
        break;
    }
    case CGT_AUDIO_AIFF: {
        auto *aiff = static_cast<TagLib::RIFF::AIFF::File *>(file);
        if (aiff->hasID3v2Tag()) add_id3v2_pictures(aiff->tag(), pictures);
        break;
    }
    default: break;
    }
    return pictures;
}

void copy_text(char *into, size_t capacity, const std::string &text) {
    size_t n = text.size() < capacity - 1 ? text.size() : capacity - 1;
    // Never cut a UTF-8 sequence in half.
    while (n > 0 && n < text.size() && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) n--;
    memcpy(into, text.data(), n);
    into[n] = '\0';
}

cgt_status read_cover(const char *path, size_t max_bytes, cgt_picture *out) {
    Source source;
    open_source(path, source);
    Opened opened;
    open_taglib(source, path, true, false, opened);
    std::vector<Picture> pictures = collect_pictures(opened);
    out->picture_count = static_cast<uint32_t>(pictures.size());
    if (pictures.empty()) fail(CGT_ERR_NO_COVER, "no embedded picture (%s)", format_name(opened.detected.format));
    const Picture *chosen = &pictures[0];
    for (const Picture &picture : pictures) {
        if (picture.type == 3) {
            chosen = &picture;
            break;
        }
    }
    size_t size = chosen->data.size();
    if (size > max_bytes)
        fail(CGT_ERR_TOO_LARGE, "the cover is %zu bytes, more than the %zu allowed", size, max_bytes);
    uint8_t *data = static_cast<uint8_t *>(malloc(size > 0 ? size : 1));
    if (data == nullptr) fail(CGT_ERR_NO_MEMORY, "out of memory for a %zu-byte cover", size);
    if (size > 0) memcpy(data, chosen->data.data(), size);
    out->data = data;
    out->size = size;
    out->picture_type = chosen->type;
    copy_text(out->mime, sizeof out->mime, chosen->mime);
    return CGT_OK;
}

// ---------------------------------------------------------------------------------------------
// Tags.

std::string trim(const std::string &text) {
    size_t begin = 0, end = text.size();
    while (begin < end && isspace(static_cast<unsigned char>(text[begin]))) begin++;
    while (end > begin && isspace(static_cast<unsigned char>(text[end - 1]))) end--;
    return text.substr(begin, end - begin);
}

std::string utf8(const TagLib::String &value) {
    std::string text = value.to8Bit(true);
    size_t nul = text.find('\0');
    if (nul != std::string::npos) text.resize(nul);
    return text;
}

char *duplicate(const std::string &text) {
    char *copy = static_cast<char *>(malloc(text.size() + 1));
    if (copy == nullptr) throw std::bad_alloc();
    memcpy(copy, text.c_str(), text.size() + 1);
    return copy;
}

// The values of the first of `keys` present, joined with "; "; NULL when none has a non-empty value.
char *joined(const TagLib::PropertyMap &properties, std::initializer_list<const char *> keys) {
    for (const char *key : keys) {
        if (!properties.contains(key)) continue;
        std::string text;
        for (const TagLib::String &value : properties[key]) {
            std::string part = trim(utf8(value));
            if (part.empty()) continue;
            if (!text.empty()) text += "; ";
            text += part;
        }
        if (!text.empty()) return duplicate(text);
    }
    return nullptr;
}

uint32_t leading_number(const std::string &text, size_t *end) {
    size_t i = 0;
    while (i < text.size() && isspace(static_cast<unsigned char>(text[i]))) i++;
    uint64_t value = 0;
    bool any = false;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
        value = value * 10 + static_cast<unsigned>(text[i] - '0');
        if (value > UINT32_MAX) value = UINT32_MAX;
        any = true;
        i++;
    }
    if (end) *end = i;
    return any ? static_cast<uint32_t>(value) : 0;
}

// "3", "3/12" (ID3v2, MP4), with the total also accepted from TRACKTOTAL/TOTALTRACKS (Vorbis).
void number_pair(const TagLib::PropertyMap &properties, const char *key, std::initializer_list<const char *> totals,
                 uint32_t *number, uint32_t *total) {
    *number = *total = 0;
    if (properties.contains(key) && !properties[key].isEmpty()) {
        std::string text = utf8(properties[key].front());
        size_t end;
        *number = leading_number(text, &end);
        size_t slash = text.find('/', end);
        if (slash != std::string::npos) *total = leading_number(text.substr(slash + 1), nullptr);
    }
    for (const char *name : totals) {
        if (*total == 0 && properties.contains(name) && !properties[name].isEmpty())
            *total = leading_number(utf8(properties[name].front()), nullptr);
    }
}

std::vector<std::string> genres_of(const TagLib::PropertyMap &properties) {
    std::vector<std::string> genres;
    if (!properties.contains("GENRE")) return genres;
    for (const TagLib::String &value : properties["GENRE"]) {
        std::string genre = trim(utf8(value));
        if (!genre.empty()) genres.push_back(genre);
    }
    return genres;
}

cgt_status read_tags(const char *path, cgt_tags *out) {
    Source source;
    open_source(path, source);
    Opened opened;
    open_taglib(source, path, true, true, opened);
    out->format = opened.detected.format;
    const TagLib::PropertyMap properties = opened.file->properties();
    out->album = joined(properties, {"ALBUM"});
    out->album_artist = joined(properties, {"ALBUMARTIST", "ALBUM ARTIST"});
    out->artist = joined(properties, {"ARTIST"});
    out->title = joined(properties, {"TITLE"});
    number_pair(properties, "TRACKNUMBER", {"TRACKTOTAL", "TOTALTRACKS"}, &out->track_number, &out->track_total);
    number_pair(properties, "DISCNUMBER", {"DISCTOTAL", "TOTALDISCS"}, &out->disc_number, &out->disc_total);
    std::vector<std::string> genres = genres_of(properties);
    if (!genres.empty()) {
        out->genres = static_cast<char **>(calloc(genres.size(), sizeof(char *)));
        if (out->genres == nullptr) throw std::bad_alloc();
        for (const std::string &genre : genres) out->genres[out->genre_count++] = duplicate(genre);
    }
    TagLib::AudioProperties *audio = opened.file->audioProperties();
    if (audio != nullptr && audio->lengthInMilliseconds() > 0) out->duration_ms = audio->lengthInMilliseconds();
    return CGT_OK;
}

// ---------------------------------------------------------------------------------------------
// Writing: copy, tag the copy, verify, fsync, rename.

bool valid_utf8(const char *text) {
    const unsigned char *p = reinterpret_cast<const unsigned char *>(text);
    while (*p) {
        unsigned c = *p, extra;
        uint32_t code;
        if (c < 0x80) { p++; continue; }
        if ((c & 0xE0) == 0xC0) { extra = 1; code = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { extra = 2; code = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { extra = 3; code = c & 0x07; }
        else return false;
        for (unsigned i = 1; i <= extra; i++) {
            if ((p[i] & 0xC0) != 0x80) return false;
            code = (code << 6) | (p[i] & 0x3F);
        }
        static const uint32_t minimum[4] = {0, 0x80, 0x800, 0x10000};
        if (code < minimum[extra] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return false;
        p += extra + 1;
    }
    return true;
}

std::atomic<unsigned> temp_counter{0};

// An ID3v2.3 tag stays v2.3 (players that predate v2.4 keep reading it) when v2.3 can hold the
// genres: TagLib 1.13 writes a v2.3 TCON as ID3v1 genre numbers plus at most one free-text genre,
// in Latin-1. Otherwise, and for a tag created now, the tag is written as v2.4, TagLib's default.
TagLib::ID3v2::Version id3v2_version(TagLib::ID3v2::Tag *tag, const std::vector<std::string> &genres) {
    if (tag == nullptr || tag->header()->majorVersion() != 3) return TagLib::ID3v2::v4;
    bool all_numbered = true;
    for (const std::string &genre : genres)
        if (TagLib::ID3v1::genreIndex(TagLib::String(genre, TagLib::String::UTF8)) == 255) all_numbered = false;
    if (all_numbered) return TagLib::ID3v2::v3;
    if (genres.size() == 1 && TagLib::String(genres[0], TagLib::String::UTF8).isLatin1()) return TagLib::ID3v2::v3;
    return TagLib::ID3v2::v4;
}

// Removes the temporary unless it was renamed into place.
struct TempFile {
    std::string path;
    Fd fd;
    bool keep = false;
    ~TempFile() {
        fd.reset();
        if (!path.empty() && !keep) unlink(path.c_str());
    }
};

void write_all(int fd, const char *data, size_t length) {
    while (length > 0) {
        ssize_t n = write(fd, data, length);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail(CGT_ERR_IO, "cannot write the temporary copy: %s", strerror(errno));
        }
        data += n;
        length -= static_cast<size_t>(n);
    }
}

void copy_contents(const Source &source, int to) {
    // copy_file_range lets the kernel (or a reflink-capable file system) copy without passing
    // the data through user space; plain read/write is the fallback.
    uint64_t done = 0;
    bool kernel_copy = true;
    std::vector<char> buffer;
    while (done < source.size) {
        if (kernel_copy) {
            off64_t in = static_cast<off64_t>(done);
            ssize_t n = copy_file_range(source.fd.fd, &in, to, nullptr, static_cast<size_t>(source.size - done), 0);
            if (n > 0) {
                done += static_cast<uint64_t>(n);
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && errno != EXDEV && errno != ENOSYS && errno != EINVAL && errno != EOPNOTSUPP && errno != EBADF)
                fail(CGT_ERR_IO, "cannot copy to the temporary file: %s", strerror(errno));
            kernel_copy = false; // unsupported here, or 0 (file shrank): let read() tell
            if (lseek(to, static_cast<off_t>(done), SEEK_SET) < 0) fail(CGT_ERR_IO, "cannot seek: %s", strerror(errno));
            continue;
        }
        if (buffer.empty()) buffer.resize(1 << 20);
        size_t n = source.read_at(done, buffer.data(), buffer.size());
        if (n == 0) fail(CGT_ERR_IO, "the file shrank while being copied");
        write_all(to, buffer.data(), n);
        done += n;
    }
}

bool same_file_state(const struct stat &a, const struct stat &b) {
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino && a.st_size == b.st_size &&
           a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec;
}

void write_genres(const char *path, const char *const *genres, size_t count) {
    if (path == nullptr || path[0] == '\0') fail(CGT_ERR_INVALID_ARGUMENT, "empty path");
    if (count > 0 && genres == nullptr) fail(CGT_ERR_INVALID_ARGUMENT, "genres is NULL with count %zu", count);
    if (count > 1000) fail(CGT_ERR_INVALID_ARGUMENT, "%zu genres is more than the 1000 accepted", count);
    std::vector<std::string> wanted;
    for (size_t i = 0; i < count; i++) {
        if (genres[i] == nullptr) fail(CGT_ERR_INVALID_ARGUMENT, "genre %zu is NULL", i);
        if (!valid_utf8(genres[i])) fail(CGT_ERR_INVALID_ARGUMENT, "genre %zu is not valid UTF-8", i);
        std::string genre = trim(genres[i]);
        if (genre.empty()) fail(CGT_ERR_INVALID_ARGUMENT, "genre %zu is empty", i);
        wanted.push_back(genre);
    }

    // The link's target is the file to replace; renaming over the link would swap the link
    // itself for a regular file and leave the target unchanged.
    char *resolved_c = realpath(path, nullptr);
    if (resolved_c == nullptr) {
        if (errno == ENOENT || errno == ENOTDIR) fail(CGT_ERR_IO, "no such file");
        if (errno == ENOMEM) throw std::bad_alloc();
        fail(CGT_ERR_IO, "cannot resolve the path: %s", strerror(errno));
    }
    std::string resolved(resolved_c);
    free(resolved_c);

    Source source;
    open_source(resolved.c_str(), source);
    const struct stat before = source.st;
    if (before.st_nlink > 1)
        fail(CGT_ERR_UNSUPPORTED, "has %lu hard links; replacing it would detach this name from the others",
             static_cast<unsigned long>(before.st_nlink));
    // Respect a read-only file: rename() would otherwise replace it as long as the directory is
    // writable.
    if (faccessat(AT_FDCWD, resolved.c_str(), W_OK, AT_EACCESS) != 0) fail(CGT_ERR_IO, "the file is not writable");

    {
        // Fail before copying anything when TagLib cannot read the original.
        Opened probe;
        open_taglib(source, resolved.c_str(), true, false, probe);
    }

    size_t slash = resolved.rfind('/');
    std::string directory = resolved.substr(0, slash == 0 ? 1 : slash);
    std::string name = resolved.substr(slash + 1);
    if (name.size() > 180) name.resize(180); // room for the suffix within NAME_MAX
    TempFile temp;
    for (int attempt = 0; attempt < 100 && temp.fd.fd < 0; attempt++) {
        std::string candidate = directory + (directory == "/" ? "" : "/") + "." + name + ".cgtmp-" +
                                std::to_string(getpid()) + "-" + std::to_string(temp_counter++);
        int fd = open(candidate.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd >= 0) {
            temp.fd.fd = fd;
            temp.path = candidate;
        } else if (errno != EEXIST) {
            fail(CGT_ERR_IO, "cannot create a temporary file in %s: %s", short_path(directory.c_str()).c_str(), strerror(errno));
        }
    }
    if (temp.fd.fd < 0) fail(CGT_ERR_IO, "cannot find an unused temporary file name");

    copy_contents(source, temp.fd.fd);
    struct stat after;
    if (fstat(source.fd.fd, &after) != 0) fail(CGT_ERR_IO, "cannot stat: %s", strerror(errno));
    if (!same_file_state(before, after)) fail(CGT_ERR_IO, "the file changed while it was being copied");
    // Owner first: fchown may clear set-id bits, which fchmod then restores.
    if (fchown(temp.fd.fd, before.st_uid, before.st_gid) != 0 && errno != EPERM)
        fail(CGT_ERR_IO, "cannot set the owner of the temporary file: %s", strerror(errno));
    if (fchmod(temp.fd.fd, before.st_mode & 07777) != 0)
        fail(CGT_ERR_IO, "cannot set the permissions of the temporary file: %s", strerror(errno));

    Source copy;
    copy.fd.fd = fcntl(temp.fd.fd, F_DUPFD_CLOEXEC, 0);
    if (copy.fd.fd < 0) fail(CGT_ERR_IO, "cannot duplicate a descriptor: %s", strerror(errno));
    copy.st = before;
    copy.size = source.size;
    {
        Opened opened;
        open_taglib(copy, resolved.c_str(), false, false, opened);
        TagLib::File *file = opened.file.get();
        TagLib::PropertyMap properties = file->properties();
        properties.erase("GENRE");
        if (!wanted.empty()) {
            TagLib::StringList list;
            for (const std::string &genre : wanted) list.append(TagLib::String(genre, TagLib::String::UTF8));
            properties.insert("GENRE", list);
        }
        TagLib::PropertyMap rejected = file->setProperties(properties);
        if (rejected.contains("GENRE")) fail(CGT_ERR_UNSUPPORTED, "TagLib cannot store a genre in this file");
        bool saved;
        switch (opened.detected.format) {
        case CGT_AUDIO_MPEG: {
            // Save exactly the tags the file has (plus ID3v2): MPEG::File::save() would also
            // strip or duplicate tags (creating an ID3v1 tag that was not there).
            auto *mpeg = static_cast<TagLib::MPEG::File *>(file);
            int tags = TagLib::MPEG::File::ID3v2;
            if (mpeg->hasID3v1Tag()) tags |= TagLib::MPEG::File::ID3v1;
            if (mpeg->hasAPETag()) tags |= TagLib::MPEG::File::APE;
            saved = mpeg->save(tags, TagLib::File::StripNone, id3v2_version(mpeg->ID3v2Tag(), wanted), TagLib::File::DoNotDuplicate);
            break;
        }
        case CGT_AUDIO_WAV:
        {
            auto *wav = static_cast<TagLib::RIFF::WAV::File *>(file);
            saved = wav->save(TagLib::RIFF::WAV::File::AllTags, TagLib::File::StripNone, id3v2_version(wav->ID3v2Tag(), wanted));
            break;
        }
        case CGT_AUDIO_AIFF: {
            auto *aiff = static_cast<TagLib::RIFF::AIFF::File *>(file);
            saved = aiff->save(id3v2_version(aiff->tag(), wanted));
            break;
        }
        default: saved = file->save(); break;
        }
        if (!saved) fail(CGT_ERR_UNSUPPORTED, "TagLib could not save the tags of this %s file", format_name(opened.detected.format));
    } // TagLib's stream is flushed and closed here

    // Read the copy back, through the same guards, and insist on the genres asked for.
    struct stat written;
    if (fstat(temp.fd.fd, &written) != 0) fail(CGT_ERR_IO, "cannot stat the temporary file: %s", strerror(errno));
    copy.st = written;
    copy.size = static_cast<uint64_t>(written.st_size);
    {
        Opened check;
        open_taglib(copy, resolved.c_str(), true, false, check);
        if (genres_of(check.file->properties()) != wanted)
            fail(CGT_ERR_UNSUPPORTED, "TagLib did not store the genres as given in this %s file", format_name(check.detected.format));
    }
    copy.fd.reset();

    if (fsync(temp.fd.fd) != 0) fail(CGT_ERR_IO, "cannot flush the temporary file: %s", strerror(errno));
    int descriptor = temp.fd.fd;
    temp.fd.fd = -1;
    if (close(descriptor) != 0) fail(CGT_ERR_IO, "cannot close the temporary file: %s", strerror(errno));
    struct stat now;
    if (stat(resolved.c_str(), &now) != 0 || !same_file_state(before, now))
        fail(CGT_ERR_IO, "the file changed or moved while its tags were being written");
    if (rename(temp.path.c_str(), resolved.c_str()) != 0) fail(CGT_ERR_IO, "cannot replace the file: %s", strerror(errno));
    temp.keep = true;
    // Make the rename itself durable. Failing here changes nothing: the new file is in place.
    int dir = open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
        fsync(dir);
        close(dir);
    }
}

} // namespace

// ---------------------------------------------------------------------------------------------
// C entry points.

extern "C" {

cgt_audio_format cgt_sniff_audio(const uint8_t *head, size_t n) { return sniff(head, n, 0); }

const char *cgt_status_string(cgt_status status) { return status_name(status); }

void cgt_picture_free(cgt_picture *picture) {
    if (picture == nullptr) return;
    free(picture->data);
    picture->data = nullptr;
    picture->size = 0;
}

void cgt_tags_free(cgt_tags *tags) {
    if (tags == nullptr) return;
    free(tags->album);
    free(tags->album_artist);
    free(tags->artist);
    free(tags->title);
    for (size_t i = 0; i < tags->genre_count; i++) free(tags->genres[i]);
    free(tags->genres);
    tags->album = tags->album_artist = tags->artist = tags->title = nullptr;
    tags->genres = nullptr;
    tags->genre_count = 0;
}

cgt_status cgt_read_cover(const char *path, size_t max_bytes, cgt_picture *out) {
    if (out == nullptr) return CGT_ERR_INVALID_ARGUMENT;
    memset(out, 0, sizeof *out);
    try {
        silence_taglib();
        return read_cover(path, max_bytes, out);
    } catch (const ShimError &error) {
        describe(out->message, sizeof out->message, path, error);
        cgt_picture_free(out);
        return error.status;
    } catch (const std::bad_alloc &) {
        set_message(out->message, sizeof out->message, "%s: out of memory", short_path(path).c_str());
        cgt_picture_free(out);
        return CGT_ERR_NO_MEMORY;
    } catch (...) {
        set_message(out->message, sizeof out->message, "%s: unexpected exception in TagLib", short_path(path).c_str());
        cgt_picture_free(out);
        return CGT_ERR_INTERNAL;
    }
}

cgt_status cgt_read_tags(const char *path, cgt_tags *out) {
    if (out == nullptr) return CGT_ERR_INVALID_ARGUMENT;
    memset(out, 0, sizeof *out);
    out->duration_ms = -1;
    try {
        silence_taglib();
        return read_tags(path, out);
    } catch (const ShimError &error) {
        describe(out->message, sizeof out->message, path, error);
        cgt_tags_free(out);
        return error.status;
    } catch (const std::bad_alloc &) {
        set_message(out->message, sizeof out->message, "%s: out of memory", short_path(path).c_str());
        cgt_tags_free(out);
        return CGT_ERR_NO_MEMORY;
    } catch (...) {
        set_message(out->message, sizeof out->message, "%s: unexpected exception in TagLib", short_path(path).c_str());
        cgt_tags_free(out);
        return CGT_ERR_INTERNAL;
    }
}

cgt_status cgt_write_genres(const char *path, const char *const *genres, size_t count, char *message,
                            size_t message_capacity) {
    if (message != nullptr && message_capacity > 0) message[0] = '\0';
    try {
        silence_taglib();
        write_genres(path, genres, count);
        return CGT_OK;
    } catch (const ShimError &error) {
        describe(message, message_capacity, path, error);
        return error.status;
    } catch (const std::bad_alloc &) {
        set_message(message, message_capacity, "%s: out of memory", short_path(path).c_str());
        return CGT_ERR_NO_MEMORY;
    } catch (...) {
        set_message(message, message_capacity, "%s: unexpected exception in TagLib", short_path(path).c_str());
        return CGT_ERR_INTERNAL;
    }
}

} // extern "C"
