import AudioTags
import SystemIO

/// A music library as collectors keep it: album folders holding audio files, tagged, with the
/// cover as a file beside the tracks (fetchart, Picard, foobar2000: `cover`, `folder`, `front`,
/// `albumart*`) or embedded in them. An album is the tracks of one folder that share their album
/// and album-artist tags (a folder of singles gives one album per tag pair).
public struct Album: Sendable, Equatable {
    /// The folder the tracks are in.
    public let folder: String
    public let albumArtist: String?
    public let title: String?
    /// Its audio files, in disc, track and name order.
    public let tracks: [String]
    /// The genres its tracks are tagged with, each once, in order of appearance.
    public let genres: [String]
    /// Where its cover is; nil when neither a cover file nor an embedded picture was found.
    public let cover: CoverSource?
    /// Tracks whose tags could not be read, with the reason (they are still part of the album).
    public let problems: [String]

    /// "Album Artist - Album" as far as the tags tell, else the folder's name.
    public var displayName: String {
        switch (albumArtist, title) {
        case (let a?, let t?): return "\(a) - \(t)"
        case (nil, let t?): return t
        case (let a?, nil): return a
        case (nil, nil): return Files.baseName(folder)
        }
    }
}

/// Where an album's cover comes from.
public enum CoverSource: Sendable, Equatable {
    /// An image file in the album's folder.
    case file(String)
    /// The front cover embedded in this track.
    case embedded(String)

    /// The file to classify: the image, or the audio file whose embedded cover stands for it.
    public var path: String {
        switch self {
        case .file(let p), .embedded(let p): return p
        }
    }

    public var kind: String {
        switch self {
        case .file: return "file"
        case .embedded: return "embedded"
        }
    }
}

public enum MusicLibrary {
    /// Image extensions of cover files.
    public static let imageExtensions: Set<String> = ["jpg", "jpeg", "png", "webp"]
    /// Cover-file base names in order of preference (any case); `albumart` also as a prefix
    /// (Windows Media Player's AlbumArt_{GUID}_Large.jpg, AlbumArtSmall.jpg).
    public static let coverNames = ["cover", "folder", "front", "albumart"]

    /// Every album under `root` (recursively; hidden entries skipped, symbolic links to folders
    /// not followed, so a link loop cannot recurse), sorted by folder then album. Reads tags
    /// only: nothing is decoded or written. `progress(foldersDone)` is called as folders finish.
    /// A folder that cannot be read (a root-owned lost+found) is reported through `unreadable`
    /// and skipped; only an unreadable `root` fails.
    public static func albums(under root: String, progress: (Int) -> Void = { _ in },
                              unreadable: (String, CoverGenreError) -> Void = { _, _ in }) throws -> [Album] {
        guard Files.isDirectory(root) else { throw CoverGenreError(.io, "\(root) is not a folder") }
        _ = try Files.list(root)
        var albums: [Album] = []
        var folders = 0
        func visit(_ folder: String, depth: Int) {
            // Deeper than any real library; a bound all the same.
            guard depth < 64 else { return }
            let names: [String]
            do {
                names = try Files.list(folder).filter { !$0.hasPrefix(".") }.sorted()
            } catch {
                unreadable(folder, error as? CoverGenreError ?? CoverGenreError(.io, "\(folder): \(error)"))
                return
            }
            var audio: [String] = [], images: [String] = [], subfolders: [String] = []
            func classify(_ name: String, _ path: String) {
                let ext = name.split(separator: ".").count > 1 ? name.split(separator: ".").last!.lowercased() : ""
                if AudioFile.extensions.contains(ext) { audio.append(path) } else if imageExtensions.contains(ext) { images.append(path) }
            }
            for name in names {
                let path = Files.join(folder, name)
                if isLink(path) {
                    if Files.isRegularFile(path) { classify(name, path) }
                    continue
                }
                if Files.isDirectory(path) { subfolders.append(path) } else if Files.isRegularFile(path) { classify(name, path) }
            }
            if !audio.isEmpty { albums += albumsOf(folder: folder, audio: audio, images: images) }
            folders += 1
            progress(folders)
            for sub in subfolders { visit(sub, depth: depth + 1) }
        }
        visit(root, depth: 0)
        return albums
    }

    /// The folder's cover file by the names people use, or nil.
    public static func coverFile(among images: [String]) -> String? {
        for name in coverNames {
            let matches = images.filter { path in
                let base = Files.baseName(path).lowercased()
                let stem = base.split(separator: ".").dropLast().joined(separator: ".")
                return name == "albumart" ? stem.hasPrefix(name) : stem == name
            }
            // Several (AlbumArtSmall.jpg and AlbumArt_{...}_Large.jpg, cover.jpg and cover.png):
            // the largest file, the most detailed picture; ties by name.
            if let best = matches.sorted().max(by: { fileSize($0) < fileSize($1) }) { return best }
        }
        return nil
    }

    struct Track {
        let path: String
        let tags: AudioFile.Tags?
        let problem: String?
    }

    static func albumsOf(folder: String, audio: [String], images: [String]) -> [Album] {
        let tracks: [Track] = audio.map { path in
            do { return Track(path: path, tags: try AudioFile.tags(path: path), problem: nil) } catch {
                return Track(path: path, tags: nil, problem: "\(error)")
            }
        }
        // Group by (album artist, album). Without an album-artist tag, by album alone: the
        // tracks of a compilation have as many artists as tracks. Tracks whose tags name neither
        // an album nor an artist (or cannot be read) join the folder's largest group: they are
        // most likely its untagged tracks; alone, they form their own.
        struct Key: Hashable { let artist: String?; let album: String? }
        func key(_ t: AudioFile.Tags) -> Key {
            let album = nonEmpty(t.album)
            return Key(artist: nonEmpty(t.albumArtist) ?? (album == nil ? nonEmpty(t.artist) : nil), album: album)
        }
        var order: [Key] = []
        var groups: [Key: [Track]] = [:]
        var untagged: [Track] = []
        for t in tracks {
            guard let tags = t.tags, nonEmpty(tags.album) != nil || nonEmpty(tags.albumArtist) != nil || nonEmpty(tags.artist) != nil else {
                untagged.append(t)
                continue
            }
            let k = key(tags)
            if groups[k] == nil { order.append(k) }
            groups[k, default: []].append(t)
        }
        if !untagged.isEmpty {
            if let largest = order.max(by: { groups[$0]!.count < groups[$1]!.count }) {
                groups[largest]! += untagged
            } else {
                let k = Key(artist: nil, album: nil)
                order.append(k)
                groups[k] = untagged
            }
        }
        // One cover file in a folder of several albums is ambiguous, but it is what the folder
        // shows (and what players show for each of them): every album of the folder uses it.
        let folderCover = coverFile(among: images)
        return order.map { k in
            let members = groups[k]!.sorted { a, b in
                let (da, ta) = (a.tags?.discNumber ?? 0, a.tags?.trackNumber ?? 0), (db, tb) = (b.tags?.discNumber ?? 0, b.tags?.trackNumber ?? 0)
                return (da, ta, a.path) < (db, tb, b.path)
            }
            var genres: [String] = []
            for t in members { for g in t.tags?.genres ?? [] where !genres.contains(g) { genres.append(g) } }
            var cover = folderCover.map(CoverSource.file)
            if cover == nil {
                // The first track, in order, whose file holds a picture.
                for t in members where t.tags != nil {
                    if AudioFile.hasPicture(path: t.path) {
                        cover = .embedded(t.path)
                        break
                    }
                }
            }
            // No album-artist tag: the artist its tracks share, if they share one.
            let artists = Set(members.compactMap { nonEmpty($0.tags?.artist) })
            let artist = k.artist ?? (artists.count == 1 ? artists.first : nil)
            return Album(folder: folder, albumArtist: artist, title: k.album, tracks: members.map(\.path), genres: genres, cover: cover,
                         problems: members.compactMap { t in t.problem.map { "\(Files.baseName(t.path)): \($0)" } })
        }
    }

    static func fileSize(_ path: String) -> Int {
        var info = stat()
        return stat(path, &info) == 0 ? Int(info.st_size) : 0
    }

    static func nonEmpty(_ s: String?) -> String? {
        guard let s, !s.allSatisfy({ $0 == " " }) else { return nil }
        return s
    }

    static func isLink(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFLNK
    }
}

#if canImport(Glibc)
import Glibc
#endif
