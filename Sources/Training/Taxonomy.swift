import SystemIO
import ToolSupport

/// One genre taxonomy for covers from several sources: every source's own genre names mapped to
/// the genres a model is trained on. Sources disagree (Discogs files Metal under Rock, Spotify's
/// artist-level labels have "metal"), so the mapping is written down once, as a CSV:
///
///     source,source_genre,broad,default
///     spotify6,metal,Metal,Rock
///     spotify6,classical,Classical,
///
/// Each column after `source_genre` is one label set (a model's genres); an empty cell drops
/// that source genre from it. A genre a source has but the file does not list is an error, so
/// a new source cannot silently lose or mislabel covers.
public struct Taxonomy: Sendable {
    /// The label sets the file defines, in column order.
    public let labelSets: [String]
    /// (source, source genre) -> genre per label set ("" = not used).
    let mapping: [String: [String: String]]

    public static func load(_ path: String) throws -> Taxonomy {
        let table = try CSV.readTable(path, maxBytes: 1 << 20)
        guard table.header.count >= 3, table.header[0] == "source", table.header[1] == "source_genre" else {
            throw CoverGenreError(.invalidArgument, "\(path): the header must be source,source_genre,<label set>...")
        }
        var mapping: [String: [String: String]] = [:]
        for (i, row) in table.rows.enumerated() {
            let key = Taxonomy.key(row["source"]!, row["source_genre"]!)
            guard mapping[key] == nil else { throw CoverGenreError(.invalidArgument, "\(path) record \(i + 2): \(key) is listed twice") }
            mapping[key] = Dictionary(uniqueKeysWithValues: table.header.dropFirst(2).map { ($0, row[$0] ?? "") })
        }
        return Taxonomy(labelSets: Array(table.header.dropFirst(2)), mapping: mapping)
    }

    static func key(_ source: String, _ genre: String) -> String { "\(source)/\(genre)" }

    /// The genre `sourceGenre` of `source` has in `labelSet`: nil when the set does not use it.
    public func genre(source: String, sourceGenre: String, labelSet: String) throws -> String? {
        guard labelSets.contains(labelSet) else {
            throw CoverGenreError(.invalidArgument, "the taxonomy has no label set \"\(labelSet)\" (it has \(labelSets.joined(separator: ", ")))")
        }
        guard let row = mapping[Taxonomy.key(source, sourceGenre)] else {
            throw CoverGenreError(.invalidArgument, "the taxonomy does not say what genre \"\(sourceGenre)\" of source \"\(source)\" is")
        }
        let genre = row[labelSet] ?? ""
        return genre.isEmpty ? nil : genre
    }
}

/// A named data source: `NAME=PATH`, or `PATH` named after its folder (the folder itself, or the
/// folder holding a manifest CSV), e.g. `discogs5` for `.../covers/discogs5/split.csv`.
public struct DataSource: Sendable, Equatable {
    public var name: String
    public var path: String

    public init(_ argument: String) {
        if let eq = argument.firstIndex(of: "="), !argument[..<eq].contains("/") {
            name = String(argument[..<eq])
            path = String(argument[argument.index(after: eq)...])
        } else {
            path = argument
            name = Files.baseName(Files.isDirectory(argument) ? argument : Files.parentDirectory(argument))
        }
    }
}

extension LabeledDataset {
    /// Several sources as one data set under one label set of `taxonomy`. Covers whose genre the
    /// label set does not use are left out (counted in `dropped`). A source without a split column
    /// is training data only (its covers go to `train`); sources with one keep theirs.
    public static func combine(_ sources: [DataSource], taxonomy: Taxonomy, labelSet: String, images: String? = nil)
        throws -> (dataset: LabeledDataset, dropped: [String: Int]) {
        var parts: [(source: DataSource, data: LabeledDataset)] = []
        for source in sources { parts.append((source, try LabeledDataset.load(source.path, images: images))) }
        var genres = Set<String>()
        var mapped: [[String?]] = []
        for part in parts {
            let row = try part.data.classes.map { try taxonomy.genre(source: part.source.name, sourceGenre: $0, labelSet: labelSet) }
            genres.formUnion(row.compactMap { $0 })
            mapped.append(row)
        }
        let classes = genres.sorted()
        let index = Dictionary(uniqueKeysWithValues: classes.enumerated().map { ($1, $0) })
        var out = LabeledDataset(classes: classes, items: [])
        var dropped: [String: Int] = [:]
        for (part, row) in zip(parts, mapped) {
            let split = part.data.items.contains { $0.split != nil }
            out.missing += part.data.missing
            for var item in part.data.items {
                guard let genre = row[item.label] else {
                    dropped["\(part.source.name)/\(part.data.classes[item.label])", default: 0] += 1
                    continue
                }
                item.label = index[genre]!
                item.source = part.source.name
                if !split { item.split = .train }
                out.items.append(item)
            }
        }
        return (out, dropped)
    }

    /// Images per source and genre, for logs and reports.
    public func summary() -> String {
        var counts: [String: [Int]] = [:]
        for item in items { counts[item.source, default: [Int](repeating: 0, count: classes.count)][item.label] += 1 }
        return counts.keys.sorted().map { source in
            "\(source): " + classes.indices.filter { counts[source]![$0] > 0 }.map { "\(classes[$0]) \(counts[source]![$0])" }.joined(separator: ", ")
        }.joined(separator: "\n")
    }
}
