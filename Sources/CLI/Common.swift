import ArgumentParser
import CoverGenre
import Graph
import ImageIO
import ModelFormat
import SystemIO
import Training

#if canImport(Glibc)
import Glibc
#endif

/// Options every command that loads a model shares.
/// The labelled covers `evaluate` and `calibrate` read: a folder or manifest, one of its splits.
struct LabeledDataArguments: ParsableArguments {
    @Argument(help: "Image folder or manifest CSV (path,genre[,split]).")
    var data: String

    @Option(help: "Use only this split of a manifest (train, val, test); the default depends on the command.")
    var split: String?

    @Option(help: "Folder holding a prepare-manifest's downloaded images.")
    var images: String?

    /// The data set restricted to `split`, or to `defaultSplit` when the data has splits; and
    /// the split used.
    func load(defaultSplit: String) throws -> (dataset: LabeledDataset, split: String?) {
        var dataset = try LabeledDataset.load(data, images: images)
        let chosen = split ?? (dataset.hasSplit ? defaultSplit : nil)
        if let chosen {
            guard let s = Split(rawValue: chosen) else { throw ValidationError("--split is train, val or test.") }
            dataset.items = dataset.items(in: s)
            guard !dataset.items.isEmpty else { throw CLIError("no images in split \"\(chosen)\" of \(data)") }
        }
        return (dataset, chosen)
    }
}

struct ModelArguments: ParsableArguments {
    @Option(name: .shortAndLong, help: "Model file (.cgm). Default: $COVERGENRE_MODEL, else models/covergenre-default.cgm.")
    var model: String?

    @Option(help: "Threads per image (0 = every core).")
    var threads = 0

    var path: String {
        if let model { return model }
        if let env = getenv("COVERGENRE_MODEL") { return String(cString: env) }
        return "models/covergenre-default.cgm"
    }

    func load(minConfidence: Double = 0) throws -> Model {
        var options = ModelOptions()
        options.threads = threads
        options.minConfidence = Float(minConfidence)
        do {
            return try Model(path: path, options: options)
        } catch let error as CoverGenreError where error.code == .io && model == nil {
            throw CLIError("no model at \(path): \(error.message). Pass --model, or run this from the project folder, where models/covergenre-default.cgm ships.")
        }
    }
}

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Writes to standard error (status, progress and warnings; results go to standard output).
func printError(_ text: String) {
    fputs(text + "\n", stderr)
}

func format(_ value: Double, decimals: Int) -> String {
    var buffer = [CChar](repeating: 0, count: 64)
    _ = withVaList([value]) { vsnprintf(&buffer, 64, "%.\(decimals)f", $0) }
    return String(cString: buffer)
}

func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s : s + String(repeating: " ", count: width - s.count) }
func padLeft(_ s: String, _ width: Int) -> String { s.count >= width ? s : String(repeating: " ", count: width - s.count) + s }
