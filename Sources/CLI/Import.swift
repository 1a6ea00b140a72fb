import ArgumentParser
import CoverGenre
import Graph
import ImageIO
import ModelFormat
import SystemIO
import Importers

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Convert a PyTorch state dict (.pth, zip or legacy format) or .safetensors file to a .cgm model.",
        discussion: """
        Recognises EfficientNet-Lite (lukemelas names: _conv_stem, _blocks.N, _fc; Lite0/1/2 and other widths) \
        and VGG-16 (torchvision names: features.N, classifier.N; with or without batch norm). Batch norms are \
        folded into the convolutions. The file is parsed, never unpickled: only the names a state dict needs \
        are accepted, anything else is refused.
        """)

    @Argument(help: "Checkpoint file.")
    var checkpoint: String

    @Option(help: "Output model file.")
    var out: String

    @Option(help: "Input size in pixels (default: the variant's, e.g. 224 for Lite0, 260 for Lite2).")
    var inputSize: Int?

    @Option(help: "Comma-separated labels for the classifier (default: ImageNet's for 1000 classes).")
    var labels: String?

    @Option(help: "Model name stored in the file.")
    var name: String?

    @Option(help: "Tensor storage.")
    var storage: StorageChoice = .f32

    func run() throws {
        let dtype = storage.dtype
        var options = ImportOptions()
        options.inputSize = inputSize
        options.labels = labels.map { $0.split(separator: ",").map(String.init) }
        options.name = name
        let imported = try Importer.importCheckpoint(path: checkpoint, options: options)
        try imported.description.write(tensors: imported.tensors, to: out, storage: dtype)
        let d = imported.description
        print("wrote \(out): \(d.architecture), \(imported.tensors.parameterCount) parameters, \(d.labels.count) classes, input \(d.graph.inputShape.width)")
    }
}
