import Graph
import Inference
import Kernels
import ModelFormat
import SystemIO
import TestSupport
import XCTest

/// Int8 layers in whole graphs: the engine against the reference executor simulating the same
/// quantization, and the refusals of models whose graph and tensors disagree.
final class QuantizedGraphTests: XCTestCase {
    /// 1x1 conv (int8) -> 1x1 conv (int8, ReLU6) -> 3x3/2 conv (int8, im2col) -> depthwise (float)
    /// -> global pool -> linear (int8), on 12x12x6.
    static func graph(quantize: Bool = true) -> GraphSpec {
        let q = quantize ? InputQuantization(scale: 0.02, zeroPoint: 128) : nil
        let relu = quantize ? InputQuantization(scale: 6 / 255, zeroPoint: 0) : nil
        return GraphSpec(inputShape: ActivationShape(height: 12, width: 12, channels: 6), nodes: [
            Node("expand", .conv2d(Conv2DAttributes(kernel: (1, 1), padding: .valid, outChannels: 24, activation: .relu6, weight: "expand.w",
                                                    bias: "expand.b", inputQuantization: q)), inputs: ["image"]),
            Node("project", .conv2d(Conv2DAttributes(kernel: (1, 1), padding: .valid, outChannels: 20, activation: .relu6,
                                                     weight: "project.w", bias: "project.b", inputQuantization: relu)), inputs: ["expand"]),
            Node("down", .conv2d(Conv2DAttributes(kernel: (3, 3), stride: (2, 2), padding: .same, outChannels: 16, activation: .relu6,
                                                  weight: "down.w", bias: nil, inputQuantization: relu)), inputs: ["project"]),
            Node("dw", .conv2d(Conv2DAttributes(kernel: (3, 3), padding: .same, groups: 16, outChannels: 16, activation: .relu6,
                                                weight: "dw.w", bias: "dw.b")), inputs: ["down"]),
            Node("pool", .globalAveragePool, inputs: ["dw"]),
            Node("fc", .linear(LinearAttributes(outFeatures: 5, weight: "fc.w", bias: "fc.b", inputQuantization: relu)), inputs: ["pool"]),
        ], logits: "fc")
    }

    static let shapes: [(String, [Int])] = [
        ("expand.w", [1, 1, 6, 24]), ("expand.b", [24]), ("project.w", [1, 1, 24, 20]), ("project.b", [20]),
        ("down.w", [3, 3, 20, 16]), ("dw.w", [3, 3, 1, 16]), ("dw.b", [16]), ("fc.w", [16, 5]), ("fc.b", [5]),
    ]
    static let int8Tensors: Set<String> = ["expand.w", "project.w", "down.w", "fc.w"]

    static func file(graph: GraphSpec, int8: Set<String> = int8Tensors, seed: UInt64 = 5) throws -> ModelFile {
        var random = TestRandom(seed: seed)
        var writer = ModelWriter(metadata: ["format": "test"])
        for (name, shape) in shapes {
            let values = random.floats(shape.reduce(1, *), scale: 0.4)
            try writer.add(name, shape: shape, values: values, storage: int8.contains(name) ? .int8 : .float32)
        }
        let bytes = writer.serialize()
        return try bytes.withUnsafeBytes { try ModelFile(copying: $0) }
    }

    func testInt8LayersMatchTheReferenceSimulatingTheirQuantization() throws {
        let graph = Self.graph(), file = try Self.file(graph: graph)
        let compiled = try CompiledGraph(graph: graph, weights: file)
        XCTAssertEqual(compiled.stepDescriptions.filter { $0.contains("int8") }.count, 4, "\(compiled.stepDescriptions)")
        print("int8 graph steps (kernel \(QuantizedMatrix.kernel)): \(compiled.stepDescriptions.joined(separator: "; "))")
        let tensors = try TensorStore(file: file)
        var random = TestRandom(seed: 9)
        let batch = 2, size = graph.inputShape.count
        let input = random.floats(batch * size, scale: 3)
        for threads in [1, 2] {
            let context = try ExecutionContext(graph: compiled, batch: batch, threads: threads)
            context.input.update(from: input, count: input.count)
            Scheduler(threads: threads).run { context.run() }
            for n in 0..<batch {
                let expected = try ReferenceGraph.run(graph, tensors: tensors, input: Array(input[(n * size)..<((n + 1) * size)]))["fc"]!
                let logits = Array(context.logits(n))
                XCTAssertLessThan(maxRelativeError(logits, expected), 1e-3, "threads \(threads) image \(n): \(logits) vs \(expected)")
            }
        }
        // And the float model it came from answers close to it (the quantization is not vacuous
        // and not wild): random weights, so only loosely.
        let float = try CompiledGraph(graph: Self.graph(quantize: false), weights: try Self.file(graph: graph, int8: []))
        let context = try ExecutionContext(graph: float, batch: 1, threads: 1)
        context.input.update(from: input, count: size)
        context.run()
        let int8 = try ExecutionContext(graph: compiled, batch: 1, threads: 1)
        int8.input.update(from: input, count: size)
        int8.run()
        XCTAssertNotEqual(Array(context.logits(0)), Array(int8.logits(0)))
        XCTAssertLessThan(maxRelativeError(Array(int8.logits(0)), Array(context.logits(0))), 0.1)
    }

    /// Balanced channels (`InputQuantization.channelScales`) on the 1x1 and the im2col layer: the
    /// engine against the reference dividing each channel by its m before quantizing.
    func testBalancedChannelsMatchTheReference() throws {
        var graph = Self.graph()
        var random = TestRandom(seed: 21)
        var writer = ModelWriter(metadata: ["format": "test"])
        for (name, shape) in Self.shapes {
            try writer.add(name, shape: shape, values: random.floats(shape.reduce(1, *), scale: 0.4),
                           storage: Self.int8Tensors.contains(name) ? .int8 : .float32)
        }
        for (index, channels) in [(1, 24), (2, 20)] {
            switch graph.nodes[index].op {
            case .conv2d(var a):
                a.inputQuantization!.channelScales = a.weight + ".m"
                try writer.add(a.weight + ".m", shape: [channels], values: (0..<channels).map { _ in Float(random.generator.unit() * 4 + 0.1) })
                graph.nodes[index].op = .conv2d(a)
            default: XCTFail()
            }
        }
        let bytes = writer.serialize()
        let file = try bytes.withUnsafeBytes { try ModelFile(copying: $0) }
        let compiled = try CompiledGraph(graph: graph, weights: file)
        let tensors = try TensorStore(file: file)
        let input = random.floats(graph.inputShape.count, scale: 3)
        for threads in [1, 2] {
            let context = try ExecutionContext(graph: compiled, batch: 1, threads: threads)
            context.input.update(from: input, count: input.count)
            Scheduler(threads: threads).run { context.run() }
            let expected = try ReferenceGraph.run(graph, tensors: tensors, input: input)["fc"]!
            XCTAssertLessThan(maxRelativeError(Array(context.logits(0)), expected), 1e-3)
        }
        // A channel scale that is not positive is refused.
        var damaged = ModelWriter(metadata: ["format": "test"])
        for info in file.tensors where info.name != "project.w.m" { try damaged.add(copying: info, of: file) }
        try damaged.add("project.w.m", shape: [24], values: [Float](repeating: 0, count: 24))
        let damagedBytes = damaged.serialize()
        XCTAssertThrowsError(try CompiledGraph(graph: graph, weights: try damagedBytes.withUnsafeBytes { try ModelFile(copying: $0) })) {
            XCTAssertEqual(($0 as? CoverGenreError)?.code, .modelFormat)
        }
        // Channel scales stored in float16 (or int8) no longer cancel the factor the int8 weights
        // were multiplied by in float32: refused, naming the tensor.
        for storage in [DType.float16, .int8] {
            var halved = ModelWriter(metadata: ["format": "test"])
            for info in file.tensors where info.name != "project.w.m" { try halved.add(copying: info, of: file) }
            try halved.add("project.w.m", shape: [24], values: try file.floats("project.w.m").array, storage: storage)
            let halvedBytes = halved.serialize()
            XCTAssertThrowsError(try CompiledGraph(graph: graph, weights: try halvedBytes.withUnsafeBytes { try ModelFile(copying: $0) })) {
                XCTAssertEqual(($0 as? CoverGenreError)?.code, .modelFormat, "\(storage)")
                XCTAssertTrue("\($0)".contains("project.w.m") && "\($0)".contains("float32"), "\($0)")
            }
        }
    }

    /// More than 65,536 inputs per output could overflow the int32 sums: refused at load.
    func testTooDeepInt8LayersAreRefused() throws {
        for inputs in [65536, 65538] {
            // Two pixels flattened: a graph input has at most 65,536 channels.
            let graph = GraphSpec(inputShape: ActivationShape(height: 1, width: 2, channels: inputs / 2), nodes: [
                Node("flat", .flatten, inputs: ["image"]),
                Node("fc", .linear(LinearAttributes(outFeatures: 2, weight: "fc.w", bias: nil,
                                                    inputQuantization: InputQuantization(scale: 1, zeroPoint: 255))), inputs: ["flat"]),
            ], logits: "fc")
            var writer = ModelWriter(metadata: ["format": "test"])
            try writer.addInt8("fc.w", shape: [inputs, 2], scales: [1, 1], values: [Int8](repeating: 127, count: inputs * 2))
            let bytes = writer.serialize()
            let file = try bytes.withUnsafeBytes { try ModelFile(copying: $0) }
            if inputs == 65536 {
                XCTAssertNoThrow(try CompiledGraph(graph: graph, weights: file))
                continue
            }
            XCTAssertThrowsError(try CompiledGraph(graph: graph, weights: file)) { error in
                XCTAssertEqual((error as? CoverGenreError)?.code, .modelUnsupported, "\(error)")
                XCTAssertTrue((error as? CoverGenreError)?.message.contains("65536") ?? false, "\(error)")
            }
        }
    }

    func testGraphAndTensorsMustAgreeOnInt8() throws {
        func refusal(_ graph: GraphSpec, _ file: ModelFile) -> CoverGenreError? {
            do {
                _ = try CompiledGraph(graph: graph, weights: file)
                return nil
            } catch {
                return error as? CoverGenreError
            }
        }
        // int8 weights without input quantization: stored int8, computed in float (widened at load),
        // exactly as the same graph with the dequantized weights stored in float32
        let stored = try Self.file(graph: Self.graph())
        var widened = ModelWriter(metadata: ["format": "test"])
        for info in stored.tensors { try widened.add(info.name, shape: info.shape, values: try stored.floats(info.name).array) }
        let widenedBytes = widened.serialize()
        var random = TestRandom(seed: 4)
        let input = random.floats(Self.graph().inputShape.count)
        var logits: [[Float]] = []
        for file in [stored, try widenedBytes.withUnsafeBytes { try ModelFile(copying: $0) }] {
            let context = try ExecutionContext(graph: try CompiledGraph(graph: Self.graph(quantize: false), weights: file), batch: 1, threads: 1)
            context.input.update(from: input, count: input.count)
            context.run()
            logits.append(Array(context.logits(0)))
        }
        XCTAssertEqual(logits[0], logits[1])
        // input quantization, float weights
        var error = refusal(Self.graph(), try Self.file(graph: Self.graph(), int8: []))
        XCTAssertEqual(error?.code, .modelFormat)
        XCTAssertTrue(error?.message.contains("int8") ?? false, error?.message ?? "accepted")
        // an int8 depthwise convolution whose channel scales are not one per channel, and one
        // with more taps than its int32 sums hold exactly
        var graph = Self.graph()
        guard case .conv2d(var dw) = graph.nodes[3].op else { return XCTFail() }
        dw.inputQuantization = InputQuantization(scale: 0.1, zeroPoint: 0, channelScales: "down.w.m")
        graph.nodes[3].op = .conv2d(dw)
        var scaled = ModelWriter(metadata: ["format": "test"])
        let plain = try Self.file(graph: graph)
        for info in plain.tensors { try scaled.add(copying: info, of: plain) }
        try scaled.add("down.w.m", shape: [15], values: [Float](repeating: 1, count: 15))
        let scaledBytes = scaled.serialize()
        error = refusal(graph, try scaledBytes.withUnsafeBytes { try ModelFile(copying: $0) })
        XCTAssertEqual(error?.code, .modelFormat)
        XCTAssertTrue(error?.message.contains("down.w.m") ?? false, error?.message ?? "accepted")
        let wide = GraphSpec(inputShape: ActivationShape(height: 20, width: 20, channels: 4), nodes: [
            Node("dw", .conv2d(Conv2DAttributes(kernel: (17, 17), padding: .same, groups: 4, outChannels: 4, weight: "w", bias: nil,
                                                inputQuantization: InputQuantization(scale: 0.1, zeroPoint: 0))), inputs: ["image"]),
            Node("pool", .globalAveragePool, inputs: ["dw"]),
        ], logits: "pool")
        var wideWriter = ModelWriter(metadata: ["format": "test"])
        try wideWriter.add("w", shape: [17, 17, 1, 4], values: [Float](repeating: 0.5, count: 17 * 17 * 4))
        let wideBytes = wideWriter.serialize()
        error = refusal(wide, try wideBytes.withUnsafeBytes { try ModelFile(copying: $0) })
        XCTAssertEqual(error?.code, .modelUnsupported)
        XCTAssertTrue(error?.message.contains("257") ?? false, error?.message ?? "accepted")
        // a weight beyond the [-127, 127] the kernels take (a hand-made file)
        var writer = ModelWriter(metadata: ["format": "test"])
        let source = try Self.file(graph: Self.graph())
        for info in source.tensors where info.name != "expand.w" { try writer.add(copying: info, of: source) }
        try writer.addInt8("expand.w", shape: [1, 1, 6, 24], scales: [Float](repeating: 0.01, count: 24),
                           values: [Int8](repeating: -128, count: 144))
        let bytes = writer.serialize()
        error = refusal(Self.graph(), try bytes.withUnsafeBytes { try ModelFile(copying: $0) })
        XCTAssertEqual(error?.code, .modelFormat)
        XCTAssertTrue(error?.message.contains("[-127, 127]") ?? false, error?.message ?? "accepted")
    }

    /// Int8 depthwise convolutions between int8 1x1 convolutions: a 3x3 one with channel scales,
    /// a 5x5 stride 2 one with a zero point (the kernels' other path), a 1x1 convolution reading
    /// the first and written for the next. Compiled normally, each int8 layer writes the bytes its
    /// one int8 reader reads (`byteChains`); compiled without fusion, every layer writes floats
    /// and its reader quantizes them: the same bytes, so the same logits bit for bit. Both against
    /// the reference simulating the quantization (16-bit weights round a little more).
    func testInt8DepthwiseChainsMatchTheReferenceAndThemselvesWithoutBytes() throws {
        let relu = InputQuantization(scale: 6 / 255, zeroPoint: 0)
        var d1q = relu
        d1q.channelScales = "d1.m"
        let graph = GraphSpec(inputShape: ActivationShape(height: 13, width: 11, channels: 8), nodes: [
            Node("e1", .conv2d(Conv2DAttributes(kernel: (1, 1), padding: .valid, outChannels: 32, activation: .relu6, weight: "e1.w",
                                                bias: "e1.b", inputQuantization: InputQuantization(scale: 0.03, zeroPoint: 128))), inputs: ["image"]),
            Node("d1", .conv2d(Conv2DAttributes(kernel: (3, 3), padding: .same, groups: 32, outChannels: 32, activation: .relu6,
                                                weight: "d1.w", bias: "d1.b", inputQuantization: d1q)), inputs: ["e1"]),
            Node("p1", .conv2d(Conv2DAttributes(kernel: (1, 1), padding: .valid, outChannels: 24, weight: "p1.w", bias: "p1.b",
                                                inputQuantization: relu)), inputs: ["d1"]),
            Node("e2", .conv2d(Conv2DAttributes(kernel: (1, 1), padding: .valid, outChannels: 40, activation: .relu6, weight: "e2.w",
                                                bias: nil, inputQuantization: InputQuantization(scale: 0.05, zeroPoint: 100))), inputs: ["p1"]),
            Node("d2", .conv2d(Conv2DAttributes(kernel: (5, 5), stride: (2, 2), padding: .same, groups: 40, outChannels: 40,
                                                activation: .relu, weight: "d2.w", bias: "d2.b",
                                                inputQuantization: InputQuantization(scale: 0.03, zeroPoint: 3))), inputs: ["e2"]),
            // The pool is the output: a float linear layer after it may run through OpenBLAS, whose
            // sums depend on how its buffers are aligned, which the two compilations choose apart.
            Node("pool", .globalAveragePool, inputs: ["d2"]),
        ], logits: "pool")
        let shapes: [(String, [Int])] = [
            ("e1.w", [1, 1, 8, 32]), ("e1.b", [32]), ("d1.w", [3, 3, 1, 32]), ("d1.b", [32]), ("d1.m", [32]), ("p1.w", [1, 1, 32, 24]),
            ("p1.b", [24]), ("e2.w", [1, 1, 24, 40]), ("d2.w", [5, 5, 1, 40]), ("d2.b", [40]),
        ]
        var random = TestRandom(seed: 31)
        var writer = ModelWriter(metadata: ["format": "test"])
        for (name, shape) in shapes {
            let count = shape.reduce(1, *)
            let values = name.hasSuffix(".m") ? (0..<count).map { _ in Float(random.generator.unit() * 0.9 + 0.1) }
                : random.floats(count, scale: 0.5)
            try writer.add(name, shape: shape, values: values, storage: ["e1.w", "p1.w", "e2.w"].contains(name) ? .int8 : .float32)
        }
        let bytes = writer.serialize()
        let file = try bytes.withUnsafeBytes { try ModelFile(copying: $0) }
        try checkChains(graph, file, expectBytes: ["(bytes out)", "(bytes in, out)", "(bytes in, out)", "(bytes in, out)", "(bytes in)"])
    }

    /// An int8 expansion and int8 depthwise convolution large enough to run fused (a ring of
    /// bytes, `ExpandDepthwise`), against themselves unfused and the reference.
    func testFusedInt8ExpansionAndDepthwise() throws {
        let relu = InputQuantization(scale: 6 / 255, zeroPoint: 0)
        let graph = GraphSpec(inputShape: ActivationShape(height: 50, width: 52, channels: 8), nodes: [
            Node("e", .conv2d(Conv2DAttributes(kernel: (1, 1), padding: .valid, outChannels: 216, activation: .relu6, weight: "e.w",
                                               bias: "e.b", inputQuantization: InputQuantization(scale: 0.03, zeroPoint: 128))), inputs: ["image"]),
            Node("d", .conv2d(Conv2DAttributes(kernel: (3, 3), stride: (2, 2), padding: .same, groups: 216, outChannels: 216,
                                               activation: .relu6, weight: "d.w", bias: "d.b", inputQuantization: relu)), inputs: ["e"]),
            Node("p", .conv2d(Conv2DAttributes(kernel: (1, 1), padding: .valid, outChannels: 16, weight: "p.w", bias: nil,
                                               inputQuantization: relu)), inputs: ["d"]),
            Node("pool", .globalAveragePool, inputs: ["p"]),
        ], logits: "pool")
        let shapes: [(String, [Int])] = [("e.w", [1, 1, 8, 216]), ("e.b", [216]), ("d.w", [3, 3, 1, 216]), ("d.b", [216]),
                                         ("p.w", [1, 1, 216, 16])]
        var random = TestRandom(seed: 37)
        var writer = ModelWriter(metadata: ["format": "test"])
        for (name, shape) in shapes {
            try writer.add(name, shape: shape, values: random.floats(shape.reduce(1, *), scale: 0.4),
                           storage: ["e.w", "p.w"].contains(name) ? .int8 : .float32)
        }
        let bytes = writer.serialize()
        let file = try bytes.withUnsafeBytes { try ModelFile(copying: $0) }
        try checkChains(graph, file, expectBytes: ["expand int8+depthwise int8", "(bytes in)"])
    }

    /// `graph` compiled as usual and without fusion (no bytes between layers): the same logits bit
    /// for bit, close to the reference; `expectBytes` must appear in the usual compilation's steps.
    private func checkChains(_ graph: GraphSpec, _ file: ModelFile, expectBytes: [String]) throws {
        let compiled = try CompiledGraph(graph: graph, weights: file)
        let plain = try CompiledGraph(graph: graph, weights: file, fuse: false)
        let steps = compiled.stepDescriptions.joined(separator: "; ")
        print("int8 depthwise chain steps: \(steps)")
        var rest = Substring(steps)
        for expected in expectBytes {
            guard let found = rest.range(of: expected) else { return XCTFail("\(expected) not in order in \(steps)") }
            rest = rest[found.upperBound...]
        }
        XCTAssertFalse(plain.stepDescriptions.joined().contains("bytes"))
        let tensors = try TensorStore(file: file)
        var random = TestRandom(seed: 3)
        let batch = 2, size = graph.inputShape.count
        let input = random.floats(batch * size, scale: 2)
        var answers: [[Float]] = []
        for (graphIndex, g) in [compiled, plain].enumerated() {
            for threads in [1, 2] {
                let context = try ExecutionContext(graph: g, batch: batch, threads: threads)
                context.input.update(from: input, count: input.count)
                Scheduler(threads: threads).run { context.run() }
                let logits = (0..<batch).flatMap { Array(context.logits($0)) }
                answers.append(logits)
                if graphIndex == 0 && threads == 1 {
                    for n in 0..<batch {
                        let expected = try ReferenceGraph.run(graph, tensors: tensors, input: Array(input[(n * size)..<((n + 1) * size)]))
                        let got = Array(context.logits(n))
                        XCTAssertLessThan(maxRelativeError(got, expected[graph.logits]!), 2e-3, "image \(n): \(got) vs \(expected[graph.logits]!)")
                    }
                }
            }
        }
        for a in answers.dropFirst() { XCTAssertEqual(a, answers[0], "bytes between layers changed the answer") }
    }
}
