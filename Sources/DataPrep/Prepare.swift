import Architectures
import ModelFormat
import SystemIO
import ToolSupport

/// Builds a download manifest from MuMu's genre labels and Amazon's album metadata: the join on
/// `amazon_id`, one row per album (MuMu lists one row per track; the study deduplicated on
/// amazon_id + album_mbid), the top-N genres by album count, and a stratified, seeded split.
public struct PrepareOptions: Sendable {
    public var top = 12
    public var minPerGenre = 1
    public var seed: UInt64 = 1
    public var validation = 0.15
    public var test = 0.15

    public init() {}
}

public struct PreparedManifest: Sendable {
    public struct Row: Equatable, Sendable {
        public let id: String
        public let genre: String
        public let url: String
        public var split: String
    }

    public var rows: [Row]
    /// Albums per genre on the label side alone (before the metadata join), all genres.
    public var labelCounts: [(genre: String, albums: Int)]
    public var labelAlbums: Int
    /// Label rows dropped as duplicates of an album.
    public var duplicateRows: Int
    /// Albums without a metadata record, or whose record has no imUrl.
    public var missingMetadata: [String]
    public var missingURL: [String]
    public var malformedRecords: [String]
    /// Genres kept, by album count after the join, largest first.
    public var genres: [(genre: String, albums: Int)]

    public var csv: [[String]] { [["id", "genre", "url", "split"]] + rows.map { [$0.id, $0.genre, $0.url, $0.split] } }

    public var majorityShare: Double {
        rows.isEmpty ? 0 : Double(genres.first?.albums ?? 0) / Double(rows.count)
    }
}

public enum Prepare {
    public static func run(labels labelsPath: String, metadata metadataPath: String, options: PrepareOptions) throws -> PreparedManifest {
        // Labels: one row per track; keep the first row of each (amazon_id, album_mbid).
        let table = try CSV.readTable(labelsPath)
        for column in ["amazon_id", "album_mbid", "genres"] where !table.header.contains(column) {
            throw CoverGenreError(.invalidArgument, "\(labelsPath): no \"\(column)\" column (expected MuMu's single-label CSV)")
        }
        var albums: [(id: String, genre: String)] = []
        var seen = Set<String>()
        var duplicates = 0
        for row in table.rows {
            let id = row["amazon_id"]!.trimmingSpaces, genre = row["genres"]!.trimmingSpaces
            guard !id.isEmpty, !genre.isEmpty else { continue }
            if !seen.insert(id + "\u{1F}" + row["album_mbid"]!).inserted {
                duplicates += 1
                continue
            }
            albums.append((id, genre))
        }
        var labelCounts: [String: Int] = [:]
        for a in albums { labelCounts[a.genre, default: 0] += 1 }

        let metadata = try readMetadata(metadataPath)
        var joined: [(id: String, genre: String, url: String)] = []
        var missingMetadata: [String] = [], missingURL: [String] = []
        var taken = Set<String>()
        for a in albums {
            guard let record = metadata.records[a.id] else { missingMetadata.append(a.id); continue }
            guard let url = record, !url.isEmpty else { missingURL.append(a.id); continue }
            // An amazon_id listed with two album_mbids is one cover: keep its first album.
            guard taken.insert(a.id).inserted else { continue }
            joined.append((a.id, a.genre, url))
        }
        var counts: [String: Int] = [:]
        for j in joined { counts[j.genre, default: 0] += 1 }
        let ranked = counts.sorted { $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key) }
        let kept = ranked.prefix(options.top).filter { $0.value >= options.minPerGenre }

        var rows: [PreparedManifest.Row] = []
        var random = SplitMix64(seed: options.seed)
        for genre in kept.map(\.key) {
            var members = joined.filter { $0.genre == genre }.sorted { $0.id < $1.id }
            members.shuffle(using: &random)
            let n = members.count
            let nTest = Int((Double(n) * options.test).rounded()), nVal = Int((Double(n) * options.validation).rounded())
            for (rank, m) in members.enumerated() {
                rows.append(.init(id: m.id, genre: m.genre, url: m.url, split: rank < nTest ? "test" : rank < nTest + nVal ? "val" : "train"))
            }
        }
        rows.sort { ($0.genre, $0.id) < ($1.genre, $1.id) }
        return PreparedManifest(
            rows: rows,
            labelCounts: labelCounts.sorted { $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key) }.map { ($0.key, $0.value) },
            labelAlbums: albums.count, duplicateRows: duplicates, missingMetadata: missingMetadata, missingURL: missingURL,
            malformedRecords: metadata.malformed, genres: kept.map { ($0.key, $0.value) })
    }

    public struct Metadata {
        /// amazon_id -> imUrl (nil when the record has none)
        public var records: [String: String?] = [:]
        public var malformed: [String] = []
    }

    /// Amazon's metadata: one JSON object per line, or one JSON array of objects.
    static func readMetadata(_ path: String) throws -> Metadata {
        do {
            return try parseMetadata(try Files.read(path, maxBytes: 4 << 30))
        } catch let error as CoverGenreError {
            throw CoverGenreError(error.code, "\(path): \(error.message)")
        }
    }

    /// The parsing part of `readMetadata`, on bytes (also a fuzzing target).
    public static func parseMetadata(_ bytes: [UInt8]) throws -> Metadata {
        var metadata = Metadata()
        func add(_ record: JSON, _ where_: String) {
            guard case .object(let o) = record, let id = o["amazon_id"]?.string ?? o["asin"]?.string else {
                metadata.malformed.append(where_)
                return
            }
            metadata.records[id] = .some(o["imUrl"]?.string)
        }
        let first = bytes.firstIndex { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 && $0 != 0xEF && $0 != 0xBB && $0 != 0xBF }
        if let first, bytes[first] == UInt8(ascii: "[") {
            let all = try bytes.withUnsafeBytes { try JSON.parse(UnsafeRawBufferPointer(rebasing: $0[first...])) }
            guard let items = all.array else { throw CoverGenreError(.invalidArgument, "not a JSON array") }
            for (i, item) in items.enumerated() { add(item, "element \(i + 1)") }
            return metadata
        }
        var lineNumber = 0
        var start = bytes.startIndex
        while start < bytes.endIndex {
            let end = bytes[start...].firstIndex(of: 0x0A) ?? bytes.endIndex
            lineNumber += 1
            let line = bytes[start..<end]
            start = end < bytes.endIndex ? end + 1 : end
            guard line.contains(where: { $0 != 0x20 && $0 != 0x0D && $0 != 0x09 }) else { continue }
            if let record = try? line.withUnsafeBytes({ try JSON.parse($0) }) {
                add(record, "line \(lineNumber)")
            } else {
                metadata.malformed.append("line \(lineNumber)")
            }
        }
        return metadata
    }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" || f == "\r" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" { s = s.dropLast() }
        return String(s)
    }
}
