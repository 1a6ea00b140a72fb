import ImageIO
import SystemIO

#if canImport(Glibc)
import Glibc
#endif

/// The covers of a folder, embedded once, searchable by cosine similarity: `covergenre similar`
/// and the server's `/v1/similar` share it.
///
/// Only regular image files whose real path lies inside the folder are indexed (symbolic links
/// leading out of it are skipped), so whoever can query the index can never reach other files.
package final class CoverIndex: Sendable {
    package struct Entry: Sendable {
        /// Relative to the folder, with "/" separators.
        package let path: String
        package let embedding: [Float]
        /// 1 / |embedding| (0 for an all-zero vector, which is similar to nothing).
        let inverseNorm: Double
    }

    package let root: String
    package let entries: [Entry]
    /// Files that could not be embedded: relative path and the library's message.
    package let failures: [(path: String, message: String)]

    /// Embeds every cover under `folder` with `model`; `progress(done, total)` is called as they finish.
    package init(folder: String, model: Model, progress: (Int, Int) -> Void = { _, _ in }) throws {
        guard let real = CoverIndex.realPath(folder), Files.isDirectory(real) else {
            throw CoverGenreError(.io, "\(folder) is not a folder")
        }
        guard model.embeddingSize > 0 else { throw CoverGenreError(.invalidArgument, "the model has no embedding output to index covers with") }
        root = real
        let relative = try CoverIndex.images(under: real, prefix: "", root: real)
        var entries: [Entry] = [], failures: [(String, String)] = []
        var done = 0
        for chunk in stride(from: 0, to: relative.count, by: 64) {
            let part = Array(relative[chunk..<min(chunk + 64, relative.count)])
            for (path, result) in zip(part, model.embeddings(batch: part.map { .path(Files.join(real, $0)) })) {
                switch result {
                case .success(let vector):
                    let norm = vector.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
                    entries.append(Entry(path: path, embedding: vector, inverseNorm: norm > 0 ? 1 / norm : 0))
                case .failure(let error): failures.append((path, error.message))
                }
            }
            done += part.count
            progress(done, relative.count)
        }
        self.entries = entries
        self.failures = failures
    }

    /// The `k` entries most similar to `query`, most similar first (ties: by path).
    package func nearest(_ query: [Float], k: Int, excluding: String? = nil) -> [(id: Int, entry: Entry, similarity: Double)] {
        let qNorm = query.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        var ranked: [(id: Int, entry: Entry, similarity: Double)] = []
        ranked.reserveCapacity(entries.count)
        for (id, entry) in entries.enumerated() where entry.path != excluding && entry.embedding.count == query.count {
            var dot = 0.0
            for (x, y) in zip(query, entry.embedding) { dot += Double(x) * Double(y) }
            ranked.append((id, entry, qNorm > 0 ? CoverIndex.cosine(dot / qNorm * entry.inverseNorm) : 0))
        }
        ranked.sort { $0.similarity > $1.similarity || ($0.similarity == $1.similarity && $0.entry.path < $1.entry.path) }
        return Array(ranked.prefix(max(k, 0)))
    }

    /// A cosine computed in floating point, put back in its mathematical range [-1, 1]: a cover
    /// against itself came out as 1.0000000000000002 on an AMD Zen 1, which the HTTP API's schema
    /// (maximum 1) refused. Clamped here, where the library reports it, so every caller agrees.
    package static func cosine(_ computed: Double) -> Double {
        computed.isNaN ? 0 : min(max(computed, -1), 1)
    }

    /// The real path of an indexed entry, checked again now: a file replaced by a link leading out
    /// of the folder since it was indexed gives nil.
    package func currentPath(_ entry: Entry) -> String? {
        guard let real = CoverIndex.realPath(Files.join(root, entry.path)), real.hasPrefix(root + "/") else { return nil }
        return real
    }

    /// Image files under `directory`, relative to `root`, sorted; hidden files, and anything whose
    /// real path is outside `root`, left out.
    static func images(under directory: String, prefix: String, root: String) throws -> [String] {
        var found: [String] = []
        for name in try Files.list(directory).sorted() where !name.hasPrefix(".") {
            let path = Files.join(directory, name), relative = prefix.isEmpty ? name : prefix + "/" + name
            guard let real = realPath(path), real == root || real.hasPrefix(root + "/") else { continue }
            if Files.isDirectory(real) {
                // A link back up the tree would recurse for ever: only real subfolders are followed.
                if real == path || real == Files.join(root, relative) { found += try images(under: path, prefix: relative, root: root) }
            } else if Files.isRegularFile(real), imageExtensions.contains(name.split(separator: ".").last.map { $0.lowercased() } ?? "") {
                found.append(relative)
            }
        }
        return found
    }

    /// The image files under `folder` (recursively, sorted), as paths starting with `folder`.
    package static func imagePaths(under folder: String) throws -> [String] {
        guard let real = realPath(folder) else { throw CoverGenreError(.io, "\(folder) is not a folder") }
        return try images(under: real, prefix: "", root: real).map { Files.join(folder, $0) }
    }

    package static let imageExtensions: Set<String> = ["jpg", "jpeg", "png", "webp"]

    package static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}
