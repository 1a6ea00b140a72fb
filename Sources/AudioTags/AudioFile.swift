import CTagLib
import SystemIO

#if canImport(Glibc)
import Glibc
#endif

/// Audio files as CoverGenre sees them: a container recognised by its first bytes, a front cover,
/// and the tags that name and classify an album. Everything goes through TagLib (Sources/CTagLib's
/// C shim, which bounds what a hostile file can make TagLib allocate and lets no C++ exception or
/// debug print escape). Nothing here decodes images: the cover's bytes go to ImageIO like any
/// image file's.
public enum AudioFile {
    /// The audio container `head` (a file's first bytes) starts, or nil for anything else.
    public static func format(head: [UInt8]) -> Format? {
        let f = head.withUnsafeBufferPointer { cgt_sniff_audio($0.baseAddress, $0.count) }
        return Format(rawValue: f.rawValue)
    }

    /// How many leading bytes `format(head:)` wants.
    public static let sniffBytes = Int(CGT_SNIFF_BYTES)

    /// Containers, by `cgt_audio_format`.
    public enum Format: UInt32, Sendable {
        case mpeg = 1, id3v2, flac, oggVorbis, oggOpus, oggFLAC, oggSpeex, oggOther, mp4, wav, aiff
    }

    /// File extensions of the audio files a library scan looks at (content decides the format).
    public static let extensions: Set<String> = ["mp3", "mp2", "flac", "m4a", "m4b", "mp4", "aac", "alac", "ogg", "oga", "opus", "spx",
                                                 "wav", "aif", "aiff", "aifc"]

    /// The file's front cover (picture type 3), else its first picture, as stored (encoded image
    /// bytes); refused before copying when larger than `maxBytes`. No picture is `.noCover`.
    public static func frontCover(path: String, maxBytes: Int) throws -> [UInt8] {
        var picture = cgt_picture()
        defer { cgt_picture_free(&picture) }
        let status = cgt_read_cover(path, max(maxBytes, 0), &picture)
        guard status == CGT_OK else { throw error(status, message(&picture.message), path: path) }
        return picture.size == 0 ? [] : Array(UnsafeBufferPointer(start: picture.data, count: picture.size))
    }

    /// Whether the file holds a picture, without copying it: the shim refuses a picture larger
    /// than 0 bytes as too large, after counting the file's pictures.
    public static func hasPicture(path: String) -> Bool {
        var picture = cgt_picture()
        defer { cgt_picture_free(&picture) }
        let status = cgt_read_cover(path, 0, &picture)
        return status == CGT_OK || (status == CGT_ERR_TOO_LARGE && picture.picture_count > 0)
    }

    /// The front cover of an audio file held in memory (an HTTP body, a caller's buffer).
    public static func frontCover(bytes: UnsafeRawBufferPointer, maxBytes: Int) throws -> [UInt8] {
        try withFile(holding: bytes) { path in try frontCover(path: path, maxBytes: maxBytes) }
    }

    /// Runs `body` on a path that holds `bytes`: TagLib reads files, so the bytes go to a
    /// temporary file, unlinked at once and read through /proc/self/fd, gone when this returns
    /// whatever happens. Errors name "the audio data", not the temporary path.
    public static func withFile<T>(holding bytes: UnsafeRawBufferPointer, _ body: (String) throws -> T) throws -> T {
        let folder = getenv("TMPDIR").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array("\(folder)/covergenre-audio-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw CoverGenreError(.io, "cannot make a temporary file for an audio file's bytes: \(Files.errnoText())") }
        defer { close(fd) }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        var written = 0
        while written < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + written, bytes.count - written, off_t(written))
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { throw CoverGenreError(.io, "cannot write an audio file's bytes to a temporary file: \(Files.errnoText())") }
            written += n
        }
        let path = "/proc/self/fd/\(fd)"
        do {
            return try body(path)
        } catch let error as CoverGenreError {
            throw CoverGenreError(error.code, error.message.replacing(path, with: "the audio data"))
        }
    }

    /// What a track's tags say about its album.
    public struct Tags: Sendable, Equatable {
        public var album: String?
        public var albumArtist: String?
        public var artist: String?
        public var trackNumber: Int
        public var discNumber: Int
        /// Every GENRE value, as stored (multi-valued tags give several).
        public var genres: [String]
    }

    /// The file's tags (read-only). A file without tags has empty ones.
    public static func tags(path: String) throws -> Tags {
        var t = cgt_tags()
        defer { cgt_tags_free(&t) }
        let status = cgt_read_tags(path, &t)
        guard status == CGT_OK else { throw error(status, message(&t.message), path: path) }
        func text(_ p: UnsafeMutablePointer<CChar>?) -> String? { p.map { String(cString: $0) } }
        let genres = (0..<t.genre_count).compactMap { t.genres?[$0].map { String(cString: $0) } }
        return Tags(album: text(t.album), albumArtist: text(t.album_artist), artist: text(t.artist),
                    trackNumber: Int(t.track_number), discNumber: Int(t.disc_number), genres: genres)
    }

    /// Replaces the file's genres. The original is never changed in place: TagLib writes a copy
    /// in the same folder, the copy is read back and checked, then renamed over the original, so
    /// a crash or a full disk leaves the original as it was. Only the tag changes; the audio
    /// bytes are copied untouched.
    public static func writeGenres(path: String, _ genres: [String]) throws {
        var message = [CChar](repeating: 0, count: Int(CGT_MESSAGE_SIZE))
        let copies = genres.map { strdup($0) }
        defer { copies.forEach { free($0) } }
        let status = copies.map { UnsafePointer($0) }.withUnsafeBufferPointer { list in
            cgt_write_genres(path, list.baseAddress, list.count, &message, message.count)
        }
        guard status == CGT_OK else { throw error(status, String(cString: message), path: path) }
    }

    static func message<T>(_ tuple: inout T) -> String {
        withUnsafeBytes(of: &tuple) { raw in
            let chars = raw.bindMemory(to: CChar.self)
            let end = chars.firstIndex(of: 0) ?? chars.count
            return String(decoding: chars[..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }

    static func error(_ status: cgt_status, _ message: String, path: String) -> CoverGenreError {
        let text = message.isEmpty ? "\(path): \(String(cString: cgt_status_string(status)))" : message.contains(path) ? message : "\(path): \(message)"
        switch status {
        case CGT_ERR_NO_COVER: return CoverGenreError(.noCover, text)
        case CGT_ERR_TOO_LARGE: return CoverGenreError(.imageTooLarge, text)
        case CGT_ERR_NO_MEMORY: return CoverGenreError(.outOfMemory, text)
        case CGT_ERR_INVALID_ARGUMENT: return CoverGenreError(.invalidArgument, text)
        case CGT_ERR_UNSUPPORTED: return CoverGenreError(.imageUnsupported, text)
        case CGT_ERR_CORRUPT: return CoverGenreError(.audioDecode, text)
        case CGT_ERR_INTERNAL: return CoverGenreError(.internal, text)
        default: return CoverGenreError(.io, text)
        }
    }
}
