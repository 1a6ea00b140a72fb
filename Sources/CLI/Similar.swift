import ArgumentParser
import CoverGenre
import Graph
import ImageIO
import ModelFormat
import SystemIO
import Training

/// Nearest covers by the model's embedding (cosine similarity): a search tool, and a cheap check
/// that the backbone's features group covers the way a person would.
struct Similar: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the covers in a folder most similar to a query cover (cosine of embeddings).")

    @OptionGroup var modelArguments: ModelArguments

    @Option(help: "How many covers to list.") var top = 10
    @Flag(help: "Print JSON instead of text.") var json = false
    @Argument(help: "Folder of covers (searched recursively for .jpg, .jpeg, .png, .webp).") var folder: String
    @Argument(help: "The query cover.") var query: String

    func validate() throws {
        guard top >= 1 else { throw ValidationError("--top must be at least 1.") }
        guard Files.isDirectory(folder) else { throw ValidationError("\(folder) is not a folder.") }
    }

    func run() throws {
        let model = try modelArguments.load()
        let target = try model.embedding(.path(query))
        let paths = try Self.images(under: folder).filter { $0 != query }
        var ranked: [(path: String, similarity: Double)] = []
        for (path, result) in zip(paths, model.embeddings(batch: paths.map { .path($0) })) {
            switch result {
            case .success(let vector): ranked.append((path, Self.cosine(target, vector)))
            case .failure(let error): printError("covergenre: skipping \(path): \(error.message)")
            }
        }
        ranked.sort { $0.similarity > $1.similarity || ($0.similarity == $1.similarity && $0.path < $1.path) }
        let best = ranked.prefix(top)
        if json {
            print(JSON.array(best.map { ["image": .string($0.path), "similarity": .number($0.similarity)] }).pretty)
        } else {
            for entry in best { print("\(format(entry.similarity, decimals: 4))  \(entry.path)") }
        }
    }

    static func images(under root: String) throws -> [String] {
        var found: [String] = []
        for name in try Files.list(root).sorted() where !name.hasPrefix(".") {
            let path = Files.join(root, name)
            if Files.isDirectory(path) {
                found += try images(under: path)
            } else if LabeledDataset.imageExtensions.contains(name.split(separator: ".").last.map { $0.lowercased() } ?? "") {
                found.append(path)
            }
        }
        return found
    }

    /// 0 when either vector is all zeros (no direction to compare).
    static func cosine(_ a: [Float], _ b: [Float]) -> Double {
        var dot = 0.0, aa = 0.0, bb = 0.0
        for (x, y) in zip(a, b) {
            dot += Double(x) * Double(y)
            aa += Double(x) * Double(x)
            bb += Double(y) * Double(y)
        }
        return aa > 0 && bb > 0 ? dot / (aa * bb).squareRoot() : 0
    }
}
