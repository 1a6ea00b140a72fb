import ArgumentParser
import CoverGenre
import Graph
import ModelFormat
import SystemIO
import ToolSupport
import Training

/// Fits the temperature that calibrates a model's probabilities on held-out labelled covers and
/// writes the model with it: every API's probabilities then use it (the logits are unchanged).
struct Calibrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fit a temperature on labelled covers (the val split) so that the model's probabilities are calibrated; write the model with it.")

    @OptionGroup var modelArguments: ModelArguments

    /// Fits on the val split by default: never on the test split you report.
    @OptionGroup var dataArguments: LabeledDataArguments

    @Option(help: "Output model file (written atomically; may not be the input).")
    var out: String

    func validate() throws {
        guard out != modelArguments.path else { throw ValidationError("--out must differ from the input model.") }
    }

    func run() throws {
        let model = try modelArguments.load()
        let (dataset, chosen) = try dataArguments.load(defaultSplit: "val")
        guard !dataset.items.isEmpty else { throw CLIError("no images to fit on in \(dataArguments.description)") }
        // The data set's name, never a path: a manifest's folder ("discogs5"), or the image folder.
        let name = dataArguments.data.map { DataSource($0).name }.joined(separator: "+")
        try Calibrate.calibrate(model: model, path: modelArguments.path, items: dataset.items, classes: dataset.classes,
                                source: name + (chosen.map { " (\($0) split)" } ?? ""), out: out)
    }

    /// Fewer covers than this do not pin a temperature down.
    static let minimumImages = 20

    /// Fits `model`'s temperature on `items` (labels index `classes`), prints the figures and
    /// writes the model file at `path` with it to `out`. `covergenre train --library` calibrates
    /// through this too.
    static func calibrate(model: Model, path: String, items: [LabeledImage], classes: [String], source: String, out: String) throws {
        let truth = try classes.map { name -> Int in
            guard let i = model.labels.firstIndex(of: name) else { throw CLIError("the model has no genre \"\(name)\"") }
            return i
        }
        let bar = ProgressBar(total: items.count, label: "calibrate")
        let done = Locked(0)
        var samples = [Calibration.Sample?](repeating: nil, count: items.count)
        samples.withUnsafeMutableBufferPointer { slots in
            model.forEachInParallel(items.count, threads: model.threads) { i in
                if let logits = try? model.viewLogits(.path(items[i].path)) {
                    slots[i] = Calibration.Sample(viewLogits: logits, truth: truth[items[i].label])
                }
                bar.update(done.withLock { $0 += 1; return $0 })
            }
        }
        bar.finish()
        let fitted = samples.compactMap { $0 }
        guard fitted.count >= minimumImages else { throw CLIError("only \(fitted.count) images decoded: too few to fit a temperature") }
        let before = model.temperature, after = Calibration.fitTemperature(fitted)
        let nll = (Calibration.nll(fitted, temperature: before), Calibration.nll(fitted, temperature: after))
        let ece = (Calibration.ece(fitted, temperature: before), Calibration.ece(fitted, temperature: after))
        print("fitted on \(fitted.count) covers of \(source)")
        print("temperature \(Format.fixed(before, 3)) -> \(Format.fixed(after, 3))")
        print("NLL         \(Format.fixed(nll.0, 4)) -> \(Format.fixed(nll.1, 4))")
        print("ECE (15 bins) \(Format.fixed(ece.0, 4)) -> \(Format.fixed(ece.1, 4))")
        let file = try ModelFile(path: path)
        var description = try ModelDescription(json: file.metadata)
        description.temperature = after
        description.calibration = [
            "temperature": .number(after), "fitted_on": .string(source), "images": JSON(fitted.count),
            "nll_before": .number(nll.0), "nll_after": .number(nll.1),
            "ece15_before": .number(ece.0), "ece15_after": .number(ece.1),
        ]
        var writer = ModelWriter(metadata: description.json)
        // The tensors exactly as stored (an int8 model's are not requantized).
        for info in file.tensors { try writer.add(copying: info, of: file) }
        try writer.write(to: out)
        _ = try Model(path: out) // the result must load
        print("wrote \(out)")
    }
}
