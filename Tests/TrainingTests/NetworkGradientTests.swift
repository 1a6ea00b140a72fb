import Architectures
import Graph
import Kernels
import TestSupport
import Training
import XCTest

/// The training network end to end: parameter gradients of the cross-entropy loss through every
/// node type, against central finite differences of the same network's forward pass.
final class NetworkGradientTests: XCTestCase {
    /// conv -> batchnorm -> depthwise conv -> add (residual) -> adaptive average pool -> [global
    /// average pool, channel stats] -> concat -> linear -> linear. Smooth everywhere (max pooling and
    /// ReLU kinks would make central differences jump; their backward passes are checked on their own).
    func compositeGraph() -> (GraphSpec, TensorStore) {
        var b = GraphBuilder(shape: ActivationShape(height: 9, width: 8, channels: 3))
        let c1 = b.conv("c1", b.input, out: 6, kernel: 3, stride: 1, padding: .same, activation: .none, batchNorm: true)
        let d = b.conv("dw", c1, out: 6, kernel: 3, stride: 1, padding: .same, groups: 6, activation: .none, batchNorm: false)
        let sum = b.node("add", .add(.none), [d, c1])
        let pooled = b.node("pool", .adaptiveAveragePool(height: 4, width: 3), [sum])
        let gap = b.node("gap", .globalAveragePool, [pooled])
        let stats = b.node("stats", .channelStats, [c1])
        let features = b.node("features", .concat, [gap, stats])
        let hidden = b.linear("fc1", features, out: 7)
        let logits = b.linear("fc2", hidden, out: 4)
        let arch = Architecture(name: "composite", graph: b.graph(logits: logits, embedding: hidden), parameters: b.parameters,
                                preprocessing: .imagenet)
        var tensors = arch.initialTensors(seed: 3)
        var random = TestRandom(seed: 4)
        for name in tensors.names where name.hasSuffix(".bias") || name.hasSuffix(".beta") {
            tensors[name]!.values = random.floats(tensors[name]!.count, scale: 0.3)
        }
        return (arch.graph, tensors)
    }

    func testParameterGradientsMatchFiniteDifferences() throws {
        let (graph, tensors) = compositeGraph()
        let batch = 4
        let network = try TrainingNetwork(graph: graph, tensors: tensors, trainable: { _ in true }, batch: batch, threads: 2)
        var random = TestRandom(seed: 5)
        let input = random.floats(batch * graph.inputShape.count)
        let labels = [0, 3, 1, 3]
        let loss = CrossEntropy(classWeights: [1, 2, 0.5, 1.5], labelSmoothing: 0.1)
        func evaluate(_ withGradient: Bool) -> Double {
            network.inputPointer.update(from: input, count: input.count)
            network.forward(training: true)
            var g = [Float](repeating: 0, count: batch * 4)
            let value = g.withUnsafeMutableBufferPointer { loss.loss(logits: network.logits, labels: labels, classes: 4, gradient: $0.baseAddress!) }
            if withGradient {
                network.zeroGradients()
                g.withUnsafeBufferPointer { network.backward(dLogits: $0.baseAddress!) }
            }
            return Double(value)
        }
        _ = evaluate(true)
        let h: Float = 1e-2
        for p in network.orderedParameters where p.isTrainable {
            let analytic = Array(p.gradient!.buffer)
            for _ in 0..<6 {
                let i = random.int(0...(p.count - 1))
                let saved = p.value.pointer[i]
                p.value.pointer[i] = saved + h
                let up = evaluate(false)
                p.value.pointer[i] = saved - h
                let down = evaluate(false)
                p.value.pointer[i] = saved
                let numeric = Float((up - down) / Double(2 * h))
                let scale = max(abs(numeric), abs(analytic[i]), 1e-3)
                XCTAssertLessThan(abs(numeric - analytic[i]) / scale, 2e-2, "\(p.name)[\(i)]: numeric \(numeric) analytic \(analytic[i])")
            }
        }
    }

    func testFrozenParametersGetNoGradientAndKeepTheirValues() throws {
        let (graph, tensors) = compositeGraph()
        let network = try TrainingNetwork(graph: graph, tensors: tensors, trainable: { $0.hasPrefix("fc") }, batch: 2, threads: 1)
        XCTAssertTrue(network.orderedParameters.filter { !$0.name.hasPrefix("fc") }.allSatisfy { !$0.isTrainable })
        var random = TestRandom(seed: 6)
        let input = random.floats(2 * graph.inputShape.count)
        network.inputPointer.update(from: input, count: input.count)
        network.forward(training: true)
        let before = network.tensors()
        var g = [Float](repeating: 0, count: 8)
        _ = g.withUnsafeMutableBufferPointer { CrossEntropy().loss(logits: network.logits, labels: [1, 2], classes: 4, gradient: $0.baseAddress!) }
        network.zeroGradients()
        g.withUnsafeBufferPointer { network.backward(dLogits: $0.baseAddress!) }
        let optimizer = Optimizer(kind: .sgd, learningRate: 0.1)
        try optimizer.update(network.orderedParameters)
        let after = network.tensors()
        for name in before.names where !name.hasPrefix("fc") { XCTAssertEqual(before[name], after[name], name) }
        XCTAssertNotEqual(before["fc2.weight"], after["fc2.weight"])
        // Frozen batch norm runs in evaluation mode: its running statistics do not move either.
        XCTAssertEqual(before["c1.bn.mean"], tensors["c1.bn.mean"])
    }
}
