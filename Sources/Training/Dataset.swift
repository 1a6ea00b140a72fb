import Architectures
import ModelFormat
import SystemIO
import ToolSupport

public enum Split: String, Sendable, CaseIterable {
    case train, val, test
}

public struct LabeledImage: Equatable, Sendable {
    public var path: String
    public var label: Int
    public var split: Split?
    /// The data source it came from when several are combined (see `Taxonomy`); "" otherwise.
    public var source = ""

    public init(path: String, label: Int, split: Split?, source: String = "") {
        self.path = path
        self.label = label
        self.split = split
        self.source = source
    }
}

/// A labelled set of cover images, from a folder (`ROOT/<genre>/<file>`) or a manifest CSV
/// (`path,genre[,split]`, or the `id,genre,url,split` manifest of `covergenre prepare`, whose
/// images `covergenre download` stored as `<images>/<genre>/<id>.<ext>`).
public struct LabeledDataset: Sendable {
    public var classes: [String]
    public var items: [LabeledImage]
    /// Entries that named no readable file, reported once by the loader.
    public var missing: [String] = []

    public static let imageExtensions: Set<String> = ["jpg", "jpeg", "png", "webp"]

    public init(classes: [String], items: [LabeledImage]) {
        self.classes = classes
        self.items = items
    }

    public static func load(_ source: String, images: String? = nil) throws -> LabeledDataset {
        if Files.isDirectory(source) { return try folder(source) }
        return try manifest(source, images: images)
    }

    /// Genre = subdirectory name; classes sorted by name.
    public static func folder(_ root: String) throws -> LabeledDataset {
        let genres = try Files.list(root).filter { Files.isDirectory(Files.join(root, $0)) && !$0.hasPrefix(".") }
        guard !genres.isEmpty else { throw CoverGenreError(.invalidArgument, "\(root) has no genre subdirectories") }
        var items: [LabeledImage] = []
        for (label, genre) in genres.enumerated() {
            let dir = Files.join(root, genre)
            for name in try Files.list(dir) where imageExtensions.contains(fileExtension(name)) {
                items.append(LabeledImage(path: Files.join(dir, name), label: label, split: nil))
            }
        }
        return LabeledDataset(classes: genres, items: items)
    }

    public static func manifest(_ path: String, images: String? = nil) throws -> LabeledDataset {
        let table = try CSV.readTable(path)
        let base = Files.parentDirectory(path)
        guard table.header.contains("genre") else { throw CoverGenreError(.invalidArgument, "\(path): needs a \"genre\" column") }
        let byPath = table.header.contains("path"), byID = table.header.contains("id")
        guard byPath || byID else { throw CoverGenreError(.invalidArgument, "\(path): needs a \"path\" or an \"id\" column") }
        let classes = Array(Set(table.rows.map { $0["genre"]! })).sorted()
        let index = Dictionary(uniqueKeysWithValues: classes.enumerated().map { ($1, $0) })
        var dataset = LabeledDataset(classes: classes, items: [])
        for (i, row) in table.rows.enumerated() {
            let genre = row["genre"]!
            var split: Split? = nil
            if let s = row["split"], !s.isEmpty {
                guard let parsed = Split(rawValue: s) else { throw CoverGenreError(.invalidArgument, "\(path) record \(i + 2): unknown split \"\(s)\"") }
                split = parsed
            }
            let file: String?
            if byPath {
                file = Files.join(base, row["path"]!)
            } else {
                // Where `covergenre download` stores it: safe path components of genre and id.
                let root = images ?? base, folder = Files.safeComponent(genre), stem = Files.safeComponent(row["id"]!)
                file = ["jpg", "png", "webp"].map { Files.join(root, "\(folder)/\(stem).\($0)") }.first(where: Files.isRegularFile)
            }
            guard let file, Files.isRegularFile(file) else {
                dataset.missing.append(byPath ? Files.join(base, row["path"]!) : "\(genre)/\(row["id"]!)")
                continue
            }
            dataset.items.append(LabeledImage(path: file, label: index[genre]!, split: split))
        }
        return dataset
    }

    static func fileExtension(_ name: String) -> String {
        guard let dot = name.lastIndex(of: ".") else { return "" }
        return name[name.index(after: dot)...].lowercased()
    }

    public func counts(_ items: [LabeledImage]? = nil) -> [Int] {
        var c = [Int](repeating: 0, count: classes.count)
        for item in items ?? self.items { c[item.label] += 1 }
        return c
    }

    public func items(in split: Split) -> [LabeledImage] { items.filter { $0.split == split } }

    public var hasSplit: Bool { !items.isEmpty && items.allSatisfy { $0.split != nil } }

    /// What a model's provenance records of its data: the data folder's name (never a full path:
    /// models travel, the trainer's folders are nobody's business), classes and images per split.
    public var provenance: JSON {
        let root = items.first.map { Files.baseName(Files.parentDirectory(Files.parentDirectory($0.path))) } ?? ""
        var perSplit: [String: JSON] = [:]
        for split in Split.allCases { perSplit[split.rawValue] = JSON(items(in: split).count) }
        var out: [String: JSON] = ["name": .string(root), "classes": JSON(classes), "images": JSON(items.count), "splits": .object(perSplit)]
        let sources = Set(items.map(\.source)).filter { !$0.isEmpty }.sorted()
        if !sources.isEmpty {
            out["name"] = .string(sources.joined(separator: "+"))
            var perSource: [String: JSON] = [:]
            for source in sources {
                var counts: [String: JSON] = [:]
                for split in Split.allCases { counts[split.rawValue] = JSON(items.filter { $0.source == source && $0.split == split }.count) }
                perSource[source] = .object(counts)
            }
            out["sources"] = .object(perSource)
        }
        return .object(out)
    }

    /// Assigns train/val/test per class (stratified), deterministically for a seed: each class's
    /// items are sorted by path, shuffled with the seed, and cut by the fractions.
    public func stratifiedSplit(seed: UInt64, validation: Double = 0.15, test: Double = 0.15) -> LabeledDataset {
        var out = self
        var random = SplitMix64(seed: seed)
        for label in classes.indices {
            var members = items.indices.filter { items[$0].label == label }.sorted { items[$0].path < items[$1].path }
            members.shuffle(using: &random)
            let n = members.count
            let nTest = Int((Double(n) * test).rounded()), nVal = Int((Double(n) * validation).rounded())
            for (rank, i) in members.enumerated() {
                out.items[i].split = rank < nTest ? .test : rank < nTest + nVal ? .val : .train
            }
        }
        return out
    }

    /// The split as `path,genre,split` rows, saved next to a run so it can be reproduced.
    public func splitCSV() -> [[String]] {
        [["path", "genre", "split"]] + items.map { [$0.path, classes[$0.label], $0.split?.rawValue ?? ""] }
    }
}

/// Orders of training samples per epoch.
public enum Sampler {
    /// A shuffled permutation of `count` items, reproducible from (seed, epoch).
    public static func shuffled(count: Int, seed: UInt64, epoch: Int) -> [Int] {
        var random = SplitMix64(seed: seed &+ UInt64(epoch) &* 0x9E37_79B9)
        return Array(0..<count).shuffled(using: &random)
    }

    /// Class-balanced sampling: `count` draws, each picking a class uniformly, then one of its
    /// items uniformly (with replacement). Rare genres are seen as often as common ones.
    public static func balanced(labels: [Int], classes: Int, count: Int, seed: UInt64, epoch: Int) -> [Int] {
        var members = [[Int]](repeating: [], count: classes)
        for (i, label) in labels.enumerated() { members[label].append(i) }
        let present = members.indices.filter { !members[$0].isEmpty }
        guard !present.isEmpty else { return [] }
        var random = SplitMix64(seed: seed &+ UInt64(epoch) &* 0x9E37_79B9 &+ 1)
        return (0..<count).map { _ in
            let c = present[Int(random.next() % UInt64(present.count))]
            return members[c][Int(random.next() % UInt64(members[c].count))]
        }
    }
}
