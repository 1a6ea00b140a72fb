import AudioTags
import SystemIO

/// Where a cover file's pixels come from: an image file is its own cover; an audio file's is its
/// embedded front cover. The content decides, never the file name.
package enum CoverFile {
    /// The front cover embedded in `path` when it is an audio file; nil when it is not one (the
    /// caller reads it as an image). An audio file without pictures is `.noCover`.
    package static func embeddedCover(_ path: String, maxBytes: Int) throws -> AudioFile.Picture? {
        let head = try Files.head(path, count: AudioFile.sniffBytes)
        // Content first; a file named like audio that starts with neither an image nor an audio
        // signature (an MP3 with junk before its first frame) is TagLib's to judge too.
        guard AudioFile.format(head: head) != nil || (isAudioName(path) && !looksLikeImage(head)) else { return nil }
        return try AudioFile.frontCover(path: path, maxBytes: maxBytes)
    }

    /// The encoded image a cover file holds: an image file's bytes, or an audio file's embedded
    /// front cover; at most `maxBytes` either way.
    package static func encodedCover(_ path: String, maxBytes: Int) throws -> [UInt8] {
        if let picture = try embeddedCover(path, maxBytes: maxBytes) { return picture.bytes }
        do {
            return try Files.read(path, maxBytes: maxBytes)
        } catch let error as CoverGenreError where error.code == .limitExceeded {
            throw CoverGenreError(.imageTooLarge, error.message)
        }
    }

    package static func isAudioName(_ path: String) -> Bool {
        guard let dot = path.lastIndex(of: "."), !path[dot...].contains("/") else { return false }
        return AudioFile.extensions.contains(path[path.index(after: dot)...].lowercased())
    }

    static func looksLikeImage(_ head: [UInt8]) -> Bool {
        head.starts(with: [0xFF, 0xD8, 0xFF]) || head.starts(with: [0x89, 0x50, 0x4E, 0x47]) || head.starts(with: Array("RIFF".utf8)) && head.count >= 12 && Array(head[8..<12]) == Array("WEBP".utf8)
    }
}
