import ArgumentParser
import CoverGenre
import Graph
import ImageIO
import ModelFormat
import SystemIO
import ToolSupport

struct Classify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the most probable genres of each cover: an image (JPEG, PNG or WebP) or an audio file's embedded front cover.",
        discussion: "Folders are searched recursively for .jpg, .jpeg, .png and .webp files (for a music library's albums, use `covergenre scan`). An audio file named on the command line (MP3, FLAC, MP4/M4A, Ogg Vorbis/Opus, WAV, AIFF) stands for its front cover. Exit status: 0 when every cover was classified, 1 when any failed (the others are still printed), 2 on a usage error.")

    @OptionGroup var modelArguments: ModelArguments

    @Option(help: "How many genres to print per image.")
    var top = 3

    @Flag(help: "Print JSON instead of text.")
    var json = false

    @Option(help: "Print only genres at least this probable (0-1); a cover with none is \"unsure\".")
    var minConfidence = 0.0

    @Flag(help: "Print CSV instead of text: image,rank,label,probability,error (a failed image: its error only).")
    var csv = false

    @Argument(help: "Image or audio files, or folders of images.")
    var inputs: [String]

    func validate() throws {
        guard top >= 1 else { throw ValidationError("--top must be at least 1.") }
        guard !inputs.isEmpty else { throw ValidationError("Give at least one image file or folder.") }
        guard !(json && csv) else { throw ValidationError("Choose --json or --csv, not both.") }
        guard (0...1).contains(minConfidence) else { throw ValidationError("--min-confidence is between 0 and 1.") }
    }

    func run() throws {
        let model = try modelArguments.load(minConfidence: minConfidence)
        var images: [String] = []
        for input in inputs {
            images += Files.isDirectory(input) ? try CoverIndex.imagePaths(under: input) : [input]
        }
        let results = model.probabilities(batch: images.map { .path($0) })
        if csv { print("image,rank,label,probability,error") }
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
                } else if csv {
                    for (rank, p) in predictions.enumerated() {
                        print([path, "\(rank + 1)", p.label, format(Double(p.probability), decimals: 4), ""].map(CSV.escape).joined(separator: ","))
                    }
                } else {
                    print(path)
                    let width = predictions.map(\.label.count).max() ?? 0
                    for p in predictions { print("  \(pad(p.label, width))  \(format(Double(p.probability), decimals: 3))") }
                    if predictions.isEmpty { print("  unsure (no genre reaches \(format(minConfidence, decimals: 2)))") }
                }
            case .failure(let error):
                failures += 1
                if json { records.append(["image": .string(path), "error": .string(error.message)]) }
                if csv { print([path, "", "", "", error.message].map(CSV.escape).joined(separator: ",")) }
                printError("covergenre: \(error.message)")
            }
        }
        if json { print(JSON.array(records).pretty) }
        if failures > 0 { throw ExitCode(1) }
    }
}
