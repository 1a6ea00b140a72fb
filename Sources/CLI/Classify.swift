import ArgumentParser
import CoverGenre

struct Classify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the most probable genres of each cover image (JPEG, PNG or WebP).")

    @OptionGroup var modelArguments: ModelArguments

    @Option(help: "How many genres to print per image.")
    var top = 3

    @Flag(help: "Print JSON instead of text.")
    var json = false

    @Argument(help: "Image files.")
    var images: [String]

    func validate() throws {
        guard top >= 1 else { throw ValidationError("--top must be at least 1.") }
        guard !images.isEmpty else { throw ValidationError("Give at least one image file.") }
    }

    func run() throws {
        let model = try modelArguments.load()
        let results = model.probabilities(batch: images.map { .path($0) })
        var failures = 0
        var records: [JSON] = []
        for (path, result) in zip(images, results) {
            switch result {
            case .success(let probabilities):
                let predictions = model.predictions(probabilities, top: top)
                if json {
                    records.append(["image": .string(path), "predictions": .array(predictions.map {
                        ["label": .string($0.label), "probability": JSON(Double(format(Double($0.probability), decimals: 4))!)]
                    })])
                } else {
                    print(path)
                    let width = predictions.map(\.label.count).max() ?? 0
                    for p in predictions { print("  \(pad(p.label, width))  \(format(Double(p.probability), decimals: 3))") }
                }
            case .failure(let error):
                failures += 1
                if json { records.append(["image": .string(path), "error": .string(error.message)]) }
                printError("covergenre: \(error.message)")
            }
        }
        if json { print(JSON.array(records).pretty) }
        if failures > 0 { throw ExitCode(1) }
    }
}
