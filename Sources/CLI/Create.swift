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

    @Option(help: "Architecture.")
    var arch: ArchitectureName

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

    @Option(help: "Tensor storage.")
    var storage: StorageChoice = .f32

    @Option(help: "Output model file.")
    var out: String

    func run() throws {
        let classes = labels.split(separator: ",").map(String.init)
        guard !classes.isEmpty else { throw ValidationError("--labels needs at least one label.") }
        let dtype = storage.dtype
        let architecture = try arch.build(classes: classes.count, inputSize: inputSize,
                                                                     widthDivisor: widthDivisor)
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
}
