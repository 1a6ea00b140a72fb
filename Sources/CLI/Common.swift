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
    @Argument(help: ArgumentHelp("Image folders or manifest CSVs (path,genre[,split]); several need --taxonomy.",
                                 discussion: "Each is PATH or NAME=PATH; a source is named after its folder unless NAME is given."))
    var data: [String]

    @Option(help: "Use only this split of a manifest (train, val, test, or all); the default depends on the command.")
    var split: String?

    @Option(help: "Folder holding a prepare-manifest's downloaded images.")
    var images: String?

    @Option(help: "Genre taxonomy (source,source_genre,<label set>... CSV, e.g. models/taxonomy.csv) mapping each source's genres to the model's.")
    var taxonomy: String?

    @Option(help: "The taxonomy's label set (column) to use.")
    var genres = "default"

    /// What the data arguments name, for reports.
    var description: String { data.joined(separator: " ") }

    /// The data set restricted to `split`, or to `defaultSplit` when the data has splits; and
    /// the split used.
    func load(defaultSplit: String) throws -> (dataset: LabeledDataset, split: String?) {
        var dataset = try TrainingData.load(data, taxonomy: taxonomy, genres: genres, images: images)
        let chosen = split ?? (dataset.items.contains { $0.split != nil } ? defaultSplit : nil)
        if let chosen, chosen != "all" {
            guard let s = Split(rawValue: chosen) else { throw ValidationError("--split is train, val, test or all.") }
            dataset.items = dataset.items(in: s)
            guard !dataset.items.isEmpty else { throw CLIError("no images in split \"\(chosen)\" of \(description)") }
        }
        return (dataset, chosen)
    }
}

/// Loads one data source as it is, or several through a taxonomy.
enum TrainingData {
    static func load(_ arguments: [String], taxonomy: String?, genres: String, images: String?) throws -> LabeledDataset {
        guard !arguments.isEmpty else { throw ValidationError("name at least one data source.") }
        guard let taxonomy else {
            guard arguments.count == 1 else { throw ValidationError("several data sources need --taxonomy to map their genres to one set.") }
            return try LabeledDataset.load(arguments[0], images: images)
        }
        let sources = arguments.map(DataSource.init)
        let (dataset, dropped) = try LabeledDataset.combine(sources, taxonomy: try Taxonomy.load(taxonomy), labelSet: genres, images: images)
        if !dropped.isEmpty {
            printError("covergenre: not in label set \"\(genres)\", left out: " + dropped.keys.sorted().map { "\($0) \(dropped[$0]!)" }.joined(separator: ", "))
        }
        guard !dataset.items.isEmpty else { throw CLIError("no covers of \(arguments.joined(separator: " ")) are in label set \"\(genres)\"") }
        return dataset
    }
}

struct ModelArguments: ParsableArguments {
    @Option(name: .shortAndLong, help: "Model file (.cgm). Default: $COVERGENRE_MODEL, else models/covergenre-default-int8.cgm (models/covergenre-default.cgm: the same model in floating point).")
    var model: String?

    @Option(help: "Threads per image (0 = every core).")
    var threads = 0

    @Option(help: "Average each cover with its mirror image: model (as the model file says), on, or off (half the work per cover).")
    var mirror: ModelOptions.MirrorChoice = .model

    func validate() throws {
        guard (0...Model.maxThreads).contains(threads) else { throw ValidationError("--threads is 0 (every core) to \(Model.maxThreads).") }
    }

    var path: String { model ?? ModelArguments.defaultModelPath }

    /// $COVERGENRE_MODEL, else the shipped default model (relative to the project folder): its int8
    /// version, which answers as the float one on 98% of the test covers, in about half the time
    /// on CPUs with AVX-512 VNNI and in the same time on AVX2 ones (models/README.md).
    static var defaultModelPath: String {
        if let env = getenv("COVERGENRE_MODEL") { return String(cString: env) }
        return "models/covergenre-default-int8.cgm"
    }

    /// The backbone `train` starts from when none is given: the default model in floating point
    /// (training reads its float features; an int8 model is made from a trained one afterwards).
    static let defaultBackbonePath = "models/covergenre-default.cgm"

    func load(minConfidence: Double = 0) throws -> Model {
        var options = ModelOptions()
        options.threads = threads
        options.minConfidence = Float(minConfidence)
        options.mirrorView = mirror.mirrorView
        do {
            return try Model(path: path, options: options)
        } catch let error as CoverGenreError where error.code == .io && model == nil {
            throw CLIError("no model at \(path): \(error.message). Pass --model, or run this from the project folder, where models/covergenre-default-int8.cgm ships.")
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
