import Architectures
import ArgumentParser
import CoverGenre
import Graph
import ImageIO
import ModelFormat
import SystemIO

/// Writes an untrained (randomly initialized) model: the starting point of training, and the
/// models the engine's parity tests run through other runtimes.
struct Create: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a randomly initialized model of a built-in architecture.")

    @Option(help: "baseline-cnn, vgg16 or efficientnet-lite0.")
    var arch: String

    @Option(help: "Comma-separated class labels.")
    var labels: String

    @Option(help: "Input size in pixels (default: the architecture's).")
    var inputSize: Int?

    @Option(help: "Divide every layer's width by this (smaller models for tests).")
    var widthDivisor = 1

    @Option(help: "Random seed.")
    var seed: UInt64 = 1

    @Flag(help: "Give batch norms random statistics before folding (engine tests: exercises the folding).")
    var randomStatistics = false

    @Option(help: "Tensor storage: f32 or f16.")
    var storage = "f32"

    @Option(help: "Output model file.")
    var out: String

    func run() throws {
        let classes = labels.split(separator: ",").map(String.init)
        guard !classes.isEmpty else { throw ValidationError("--labels needs at least one label.") }
        guard let dtype = DType.allCases.first(where: { $0.name == storage }) else { throw ValidationError("--storage is f32 or f16.") }
        let architecture = try Self.architecture(arch, classes: classes.count, inputSize: inputSize, widthDivisor: widthDivisor)
        var tensors = architecture.initialTensors(seed: seed)
        if randomStatistics {
            var random = SplitMix64(seed: seed &+ 1)
            for p in architecture.parameters where p.name.hasSuffix(".bn.mean") || p.name.hasSuffix(".bn.variance")
                || p.name.hasSuffix(".bn.gamma") || p.name.hasSuffix(".bn.beta") {
                let isScale = p.name.hasSuffix("variance") || p.name.hasSuffix("gamma")
                tensors[p.name]!.values = tensors[p.name]!.values.map { _ in
                    Float(isScale ? 0.5 + random.unit() : (random.unit() - 0.5) * 0.4)
                }
            }
        }
        let (graph, folded) = try architecture.graph.foldingBatchNorms(tensors)
        let description = ModelDescription(
            name: "\(architecture.name)-untrained", architecture: architecture.name, labels: classes, graph: graph,
            preprocessing: architecture.preprocessing,
            provenance: ["created_by": "covergenre create", "seed": JSON(Int(seed)), "trained": false])
        try description.write(tensors: folded, to: out, storage: dtype)
        print("wrote \(out): \(architecture.name), \(folded.parameterCount) parameters, \(classes.count) classes")
    }

    static func architecture(_ name: String, classes: Int, inputSize: Int?, widthDivisor: Int) throws -> Architecture {
        guard widthDivisor >= 1 else { throw ValidationError("--width-divisor must be at least 1.") }
        switch name {
        case "baseline-cnn":
            return Networks.baselineCNN(classes: classes, inputSize: inputSize ?? 256,
                                        channels: [32, 48, 96, 192, 256].map { max(1, $0 / widthDivisor) },
                                        hidden: max(1, 256 / widthDivisor))
        case "vgg16":
            return Networks.vgg16(classes: classes, inputSize: inputSize ?? 224, widthDivisor: widthDivisor,
                                  hidden: max(1, 4096 / widthDivisor))
        case "efficientnet-lite0":
            guard widthDivisor == 1 else { throw ValidationError("--width-divisor applies to baseline-cnn and vgg16, not efficientnet-lite0.") }
            return Networks.efficientNetLite0(classes: classes, inputSize: inputSize ?? 224)
        default:
            throw ValidationError("unknown architecture \"\(name)\"; use baseline-cnn, vgg16 or efficientnet-lite0.")
        }
    }
}
