import Architectures
import CoverGenre
import Graph
import Inference
import Kernels
import TestSupport
import XCTest

/// Whole graphs through the engine against the naive reference executor.
final class GraphExecutionTests: XCTestCase {
    func randomized(_ architecture: Architecture, seed: UInt64) -> TensorStore {
        var tensors = architecture.initialTensors(seed: seed)
        var random = TestRandom(seed: seed + 1)
        // Non-trivial batch-norm statistics and biases, so folding and biases are exercised.
        for p in architecture.parameters {
            var t = tensors[p.name]!
            if p.name.hasSuffix(".variance") { t.values = t.values.map { _ in Float(random.generator.unit() + 0.5) } }
            else if p.name.hasSuffix(".mean") || p.name.hasSuffix(".beta") || p.name.hasSuffix(".bias") {
                t.values = random.floats(t.count, scale: 0.2)
            } else if p.name.hasSuffix(".gamma") { t.values = t.values.map { _ in Float(random.generator.unit() + 0.5) } }
            tensors[p.name] = t
        }
        return tensors
    }

    func compare(_ architecture: Architecture, seed: UInt64, fold: Bool, tolerance: Float = 1e-4,
                 file: StaticString = #filePath, line: UInt = #line) throws {
        let tensors = randomized(architecture, seed: seed)
        var graph = architecture.graph, weights = tensors
        if fold { (graph, weights) = try graph.foldingBatchNorms(tensors) }
        let compiled = try CompiledGraph(graph: graph, weights: InMemoryWeights(weights))
        var random = TestRandom(seed: seed + 2)
        let batch = 2
        let input = random.floats(batch * graph.inputShape.count)
        for threads in [1, 2] {
            let context = try ExecutionContext(graph: compiled, batch: batch, threads: threads)
            context.input.update(from: input, count: input.count)
            context.run()
            for n in 0..<batch {
                let image = Array(input[(n * graph.inputShape.count)..<((n + 1) * graph.inputShape.count)])
                // The reference always runs the unfolded graph: folding must not change the result.
                let expected = try ReferenceGraph.run(architecture.graph, tensors: tensors, input: image)
                let logits = Array(context.logits(n))
                XCTAssertLessThan(maxRelativeError(logits, expected[architecture.graph.logits]!), tolerance,
                                  "\(architecture.name) fold \(fold) threads \(threads) image \(n)", file: file, line: line)
                if let e = architecture.graph.embedding {
                    XCTAssertLessThan(maxRelativeError(Array(context.embedding(n)!), expected[e]!), tolerance, file: file, line: line)
                }
            }
        }
    }

    /// A small EfficientNet-Lite: 8 stem channels, 16 head channels, 3 classes; blocks given as
    /// (in, out, expansion, kernel, stride).
    func smallLite(_ name: String, inputSize: Int, blocks: [(Int, Int, Int, Int, Int)]) -> Architecture {
        let specs = blocks.map {
            Networks.MBConvBlock(inChannels: $0.0, outChannels: $0.1, expandRatio: $0.2, kernel: $0.3, stride: $0.4)
        }
        return Networks.efficientNetLite(name: name, blocks: specs, classes: 3, inputSize: inputSize, stemChannels: 8,
                                         headChannels: 16)
    }

    func testBaselineCNN() throws {
        try compare(Networks.baselineCNN(classes: 5, inputSize: 32, channels: [4, 6, 8, 8, 10], hidden: 12), seed: 1, fold: false)
        try compare(Networks.baselineCNN(classes: 5, inputSize: 32, channels: [4, 6, 8, 8, 10], hidden: 12, batchNorm: true),
                    seed: 2, fold: true)
    }

    func testReducedVGG16() throws {
        try compare(Networks.vgg16(classes: 4, inputSize: 32, widthDivisor: 16, hidden: 16), seed: 3, fold: false)
    }

    func testEfficientNetLiteWithResidualsFoldedAndUnfolded() throws {
        // (in, out, expansion, kernel, stride) per block.
        let lite = smallLite("lite-test", inputSize: 33, blocks: [(8, 8, 1, 3, 1), (8, 12, 3, 5, 2), (12, 12, 3, 3, 1)])
        try compare(lite, seed: 4, fold: false)
        try compare(lite, seed: 5, fold: true)
    }

    /// Expansions too large for L2 run fused with their depthwise convolution: the same floats,
    /// bit for bit, as the two layers apart, at every batch and thread count, and near the reference.
    func testFusedExpansionsEqualTheLayersApart() throws {
        // Blocks 2 and 3 expand to 50x50x216 (2.16 MB; 216 channels end in a partial group of 16),
        // then a 3x3 stride-1 and a 5x5 stride-2 depthwise convolution.
        let lite = smallLite("lite-fused", inputSize: 99, blocks: [(8, 18, 1, 3, 1), (18, 24, 12, 3, 1), (24, 24, 9, 5, 2)])
        try compare(lite, seed: 6, fold: true)
        try XCTSkipUnless(PackedMatrix.isAvailable, "the \(InstructionSet.current) kernel variant has no packed GEMM: nothing is fused")
        let (graph, tensors) = try lite.graph.foldingBatchNorms(randomized(lite, seed: 6))
        let fused = try CompiledGraph(graph: graph, weights: InMemoryWeights(tensors))
        let apart = try CompiledGraph(graph: graph, weights: InMemoryWeights(tensors), fuse: false)
        XCTAssertEqual(fused.stepDescriptions.filter { $0.hasPrefix("expand+depthwise") }.count, 2, "\(fused.stepDescriptions)")
        XCTAssertFalse(apart.stepDescriptions.contains { $0.hasPrefix("expand+depthwise") })
        try assertSameOutputs(fused, apart, inputCount: graph.inputShape.count, seed: 7)
    }

    /// Both compiled graphs give the same logits and embeddings, bit for bit, at batches 1 and 3
    /// on 1, 2 and 3 threads.
    func assertSameOutputs(_ a: CompiledGraph, _ b: CompiledGraph, inputCount: Int, seed: UInt64,
                           file: StaticString = #filePath, line: UInt = #line) throws {
        var random = TestRandom(seed: seed)
        let input = random.floats(3 * inputCount)
        for batch in [1, 3] {
            for threads in [1, 2, 3] {
                let scheduler = Scheduler(threads: threads)
                var results: [[Float]] = []
                for compiled in [a, b] {
                    let context = try ExecutionContext(graph: compiled, batch: batch, threads: threads)
                    context.input.update(from: input, count: batch * inputCount)
                    scheduler.run { context.run() }
                    results.append((0..<batch).flatMap { Array(context.logits($0)) + Array(context.embedding($0)!) })
                }
                XCTAssertEqual(results[0], results[1], "batch \(batch) threads \(threads)", file: file, line: line)
            }
        }
    }

    /// The baseline CNN's stem and its max pool run as one step: the same floats, bit for bit,
    /// as the two apart, at every batch and thread count (an odd size: the pool drops a row).
    func testFusedStemPoolEqualsTheLayersApart() throws {
        let cnn = Networks.baselineCNN(classes: 5, inputSize: 35, channels: [24, 6, 8, 8, 10], hidden: 12)
        try compare(cnn, seed: 8, fold: false)
        try XCTSkipUnless(PackedMatrix.isAvailable, "the \(InstructionSet.current) kernel variant has no packed GEMM: nothing is fused")
        let tensors = randomized(cnn, seed: 8)
        let fused = try CompiledGraph(graph: cnn.graph, weights: InMemoryWeights(tensors))
        let apart = try CompiledGraph(graph: cnn.graph, weights: InMemoryWeights(tensors), fuse: false)
        XCTAssertEqual(fused.stepDescriptions.filter { $0.hasSuffix("+ maxpool 2x2/2") }.count, 1, "\(fused.stepDescriptions)")
        XCTAssertFalse(apart.stepDescriptions.contains { $0.hasSuffix("+ maxpool 2x2/2") })
        try assertSameOutputs(fused, apart, inputCount: cnn.graph.inputShape.count, seed: 9)
    }

    func testFoldingRemovesEveryBatchNormAfterAConvolution() throws {
        let lite = Networks.efficientNetLite0(classes: 10)
        let (folded, tensors) = try lite.graph.foldingBatchNorms(lite.initialTensors(seed: 1))
        XCTAssertFalse(folded.nodes.contains { if case .batchNorm = $0.op { return true } else { return false } })
        XCTAssertEqual(Set(folded.tensorNames), Set(tensors.names))
        // The ImageNet state dict folds to 4,631,000 values, 1,281,000 of them its 1000-class head.
        XCTAssertEqual(tensors.parameterCount, 3_350_000 + 1280 * 10 + 10)
    }

    func testBufferPlanReusesMemory() throws {
        let lite = Networks.efficientNetLite0(classes: 10)
        let (graph, tensors) = try lite.graph.foldingBatchNorms(lite.initialTensors(seed: 1))
        let compiled = try CompiledGraph(graph: graph, weights: InMemoryWeights(tensors))
        let context = try ExecutionContext(graph: compiled, batch: 1, threads: 1)
        // All activations would take ~40 MB; reuse keeps a handful of buffers.
        XCTAssertLessThan(context.byteCount, 12 << 20)
    }
}
