import ArgumentParser
import CoverGenre
import Graph
import ImageIO
import ModelFormat
import SystemIO
import Training

struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Accuracy, balanced accuracy, macro-F1, per-class precision/recall, top-3 and the confusion matrix of a model on labelled covers.")

    @OptionGroup var modelArguments: ModelArguments

    @OptionGroup var dataArguments: LabeledDataArguments

    @Flag(help: "Print JSON.")
    var json = false

    @Option(help: "Also write <base>.txt, <base>.json and <base>.png (heat map).")
    var report: String?

    func run() throws {
        let model = try modelArguments.load()
        let (dataset, chosen) = try dataArguments.load(defaultSplit: "test")
        let items = dataset.items, data = dataArguments.description
        let failures = FailureLog(report: printError)
        let matrix = try Evaluation.evaluate(model, items: items, classes: dataset.classes, threads: model.threads,
                                             label: "evaluate", failures: failures)
        if let report { try Reports.writeConfusion(matrix, to: report) }
        if json {
            var out = matrix.json.object!
            out["model"] = .string(modelArguments.path)
            out["data"] = .string(data)
            out["split"] = chosen.map { .string($0) } ?? .null
            out["failed_images"] = JSON(failures.count)
            print(JSON.object(out).pretty)
        } else {
            print("model \(modelArguments.path) on \(data)\(chosen.map { " (split \($0))" } ?? "")")
            print(matrix.report())
            if failures.count > 0 { print("\(failures.count) images could not be decoded and are not counted") }
        }
    }
}
