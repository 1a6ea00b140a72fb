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
        let index = try CoverIndex(folder: folder, model: model)
        for failure in index.failures { printError("covergenre: skipping \(Files.join(folder, failure.path)): \(failure.message)") }
        // The query itself, when it lies in the folder, is not its own neighbour.
        let queryPath = CoverIndex.realPath(query).flatMap { real in
            real.hasPrefix(index.root + "/") ? String(real.dropFirst(index.root.count + 1)) : nil
        }
        let best = index.nearest(target, k: top, excluding: queryPath).map { (Files.join(folder, $0.entry.path), $0.similarity) }
        if json {
            print(JSON.array(best.map { ["image": .string($0.0), "similarity": .number($0.1)] }).pretty)
        } else {
            for entry in best { print("\(format(entry.1, decimals: 4))  \(entry.0)") }
        }
    }
}
