import Graph
import Inference
import Kernels
import ModelFormat
import SystemIO

/// Which features a frozen backbone provides to a genre head.
public enum FeatureKind: String, Sendable, CaseIterable {
    /// The backbone's pooled embedding (1280 values for EfficientNet-Lite).
    case pooled
    /// The pooled embedding plus each stage's per-channel mean and standard deviation: colour,
    /// texture and typography, which carry genre more than the objects ImageNet features name.
    case stats
}

/// A pretrained model (e.g. imported EfficientNet-Lite0) cut below its classifier, with the
/// feature taps a genre head reads. Works on the folded inference graph; fine-tuning trains its
/// convolutions with batch norm folded in (frozen statistics, the usual choice for small batches).
public struct Backbone: Sendable {
    public let description: ModelDescription
    public let tensors: TensorStore
    /// Backbone nodes + "features" (the concatenated feature vector); logits and embedding both
    /// name "features".
    public let featureGraph: GraphSpec
    public let featureSize: Int
    public let kind: FeatureKind
    /// The model file's checksum: feature caches are only valid for the same backbone.
    public let checksum: UInt64
    public let path: String

    public static let featureNode = "features"

    /// `inputSize` and `resize` override the backbone's own (its convolutions run at any size; covers
    /// may carry genre in their borders, which a centre crop cuts off).
    public init(path: String, kind: FeatureKind, inputSize: Int? = nil, resize: Preprocessing.Resize? = nil) throws {
        let file = try ModelFile(path: path)
        var description = try ModelDescription(json: file.metadata)
        if let inputSize {
            description.graph.inputShape = ActivationShape(height: inputSize, width: inputSize, channels: description.graph.inputShape.channels)
        }
        if let resize { description.preprocessing.resize = resize }
        guard let embedding = description.graph.embedding else {
            throw CoverGenreError(.invalidArgument, "\(path) names no embedding node to use as a backbone")
        }
        let tensors = try TensorStore(file: file)
        var graph: GraphSpec
        if embedding == Backbone.featureNode, description.graph.node(embedding) != nil {
            // A genre model made by transfer training (the default model, say): its embedding is
            // its backbone's feature vector. Its head is cut off and a new one trained on the same
            // features, so a user's model needs no other backbone file than the shipped model.
            let trained = description.provenance["transfer"]?["features"]?.string.flatMap(FeatureKind.init(rawValue:))
            if let trained, trained != kind {
                throw CoverGenreError(.invalidArgument, "\(path) computes \(trained.rawValue) features; train on it with --features \(trained.rawValue)")
            }
            graph = description.graph.pruned(keeping: [embedding])
        } else {
            let resolved = try description.graph.resolve(tensorShape: { tensors[$0]?.shape })
            let taps = kind == .stats ? Backbone.stageOutputs(resolved) : []
            graph = description.graph.pruned(keeping: [embedding] + taps)
            var parts = [embedding]
            for (i, tap) in taps.enumerated() {
                graph.nodes.append(Node("stats.\(i)", .channelStats, inputs: [tap]))
                parts.append("stats.\(i)")
            }
            graph.nodes.append(Node(Backbone.featureNode, parts.count == 1 ? .flatten : .concat, inputs: parts))
        }
        graph.logits = Backbone.featureNode
        graph.embedding = Backbone.featureNode
        let shapes = try graph.resolve(tensorShape: { tensors[$0]?.shape })
        self.description = description
        self.tensors = tensors
        self.featureGraph = graph
        self.featureSize = shapes.last!.outputShape.channels
        self.kind = kind
        self.checksum = file.checksum
        self.path = path
    }

    /// The last node of each stage: for EfficientNet-Lite, the block outputs where the next
    /// block's width changes (its 7 stages); otherwise the nodes after which the resolution drops
    /// (the ends of VGG's blocks), and the last spatial node.
    static func stageOutputs(_ resolved: [ResolvedNode]) -> [String] {
        let names = Set(resolved.map(\.node.name))
        var blockOutputs: [(String, Int)] = []
        var i = 0
        while names.contains("blocks.\(i).project") {
            let name = names.contains("blocks.\(i).add") ? "blocks.\(i).add" : "blocks.\(i).project"
            blockOutputs.append((name, resolved.first { $0.node.name == name }!.outputShape.channels))
            i += 1
        }
        if !blockOutputs.isEmpty {
            return blockOutputs.indices.filter { $0 == blockOutputs.count - 1 || blockOutputs[$0 + 1].1 != blockOutputs[$0].1 }
                .map { blockOutputs[$0].0 }
        }
        var taps: [String] = []
        let spatial = resolved.filter { $0.outputShape.pixels > 1 }
        for (a, b) in zip(spatial, spatial.dropFirst()) where b.outputShape.pixels < a.outputShape.pixels && b.inputIndices.count == 1 {
            taps.append(a.node.name)
        }
        if let last = spatial.last?.node.name, !taps.contains(last) { taps.append(last) }
        return taps
    }

    /// The convolution nodes of the backbone in graph order (the units `--train-last` counts).
    public var convolutionNodes: [String] {
        featureGraph.nodes.compactMap { if case .conv2d = $0.op { return $0.name } else { return nil } }
    }
}

/// Runs a backbone's feature graph over images, one image per thread.
public final class FeatureExtractor: @unchecked Sendable {
    public let backbone: Backbone
    let pool: ContextPool
    let threads: Int

    public init(backbone: Backbone, threads: Int) throws {
        self.backbone = backbone
        self.threads = threads
        pool = ContextPool(graph: try CompiledGraph(graph: backbone.featureGraph, weights: InMemoryWeights(backbone.tensors)))
    }

    public var inputWidth: Int { backbone.featureGraph.inputShape.width }
    public var inputHeight: Int { backbone.featureGraph.inputShape.height }

    /// The feature vector of one prepared input (inputHeight x inputWidth x 3, normalized).
    public func features(input: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) throws {
        try pool.withContext(batch: 1, threads: 1) { context in
            context.input.update(from: input, count: inputWidth * inputHeight * 3)
            context.run()
            out.update(from: context.embedding(0)!.baseAddress!, count: backbone.featureSize)
        }
    }
}
