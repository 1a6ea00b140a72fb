import AudioTags
import SystemIO

/// Where a cover file's pixels come from: an image file is its own cover; an audio file's is its
/// embedded front cover. The content decides, never the file name.
package enum CoverFile {
    /// What a cover file holds, encoded: an image file's bytes, or an audio file's front cover.
    package enum Contents {
        case image([UInt8])
        case audio([UInt8])

        package var encoded: [UInt8] {
            switch self {
            case .image(let bytes), .audio(let bytes): return bytes
            }
        }
    }

    /// Reads `path` once: its first bytes decide. An image file is read whole (at most `maxBytes`,
    /// else `.imageTooLarge`); an audio file goes to TagLib for its front cover (at most
    /// `maxBytes`), never read whole. An audio file without pictures is `.noCover`.
    package static func read(_ path: String, maxBytes: Int) throws -> Contents {
        let image: [UInt8]?
        do {
            // Content first; a file named like audio that starts with neither an image nor an
            // audio signature (an MP3 with junk before its first frame) is TagLib's to judge too.
            image = try Files.read(path, maxBytes: maxBytes, unlessHead: AudioFile.sniffBytes) { head in
                AudioFile.format(head: head) != nil || (isAudioName(path) && !looksLikeImage(head))
            }
        } catch let error as CoverGenreError where error.code == .limitExceeded {
            throw CoverGenreError(.imageTooLarge, error.message)
        }
        if let image { return .image(image) }
        return .audio(try AudioFile.frontCover(path: path, maxBytes: maxBytes))
    }

    /// The front cover embedded in `bytes` when they are an audio file's; nil when they are not.
    package static func embeddedCover(bytes: UnsafeRawBufferPointer, maxBytes: Int) throws -> [UInt8]? {
        guard AudioFile.format(head: Array(bytes.prefix(AudioFile.sniffBytes))) != nil else { return nil }
        return try AudioFile.frontCover(bytes: bytes, maxBytes: maxBytes)
    }

    /// The encoded image a cover file holds: an image file's bytes, or an audio file's embedded
    /// front cover; at most `maxBytes` either way.
    package static func encodedCover(_ path: String, maxBytes: Int) throws -> [UInt8] {
        try read(path, maxBytes: maxBytes).encoded
    }

    package static func isAudioName(_ path: String) -> Bool {
        guard let dot = path.lastIndex(of: "."), !path[dot...].contains("/") else { return false }
        return AudioFile.extensions.contains(path[path.index(after: dot)...].lowercased())
    }

    static func looksLikeImage(_ head: [UInt8]) -> Bool {
        head.starts(with: [0xFF, 0xD8, 0xFF]) || head.starts(with: [0x89, 0x50, 0x4E, 0x47]) || head.starts(with: Array("RIFF".utf8)) && head.count >= 12 && Array(head[8..<12]) == Array("WEBP".utf8)
    }
}
