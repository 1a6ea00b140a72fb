import Architectures
import Graph
import ImageIO
import Kernels
import SystemIO
import TestSupport
import Training
import XCTest

final class TrainingBehaviourTests: XCTestCase {
    /// 24 tiny "covers" in 3 classes that differ only in a texture pattern.
    func syntheticBatch() -> (input: [Float], labels: [Int], shape: ActivationShape) {
        let shape = ActivationShape(height: 12, width: 12, channels: 3)
        var random = TestRandom(seed: 9)
        var input: [Float] = [], labels: [Int] = []
        for n in 0..<24 {
            let label = n % 3
            for y in 0..<12 {
                for x in 0..<12 {
                    let pattern: Float = label == 0 ? Float((x / 2) % 2) : label == 1 ? Float((y / 2) % 2) : Float(((x + y) / 2) % 2)
                    for c in 0..<3 { input.append(pattern - 0.5 + random.floats(1, scale: 0.2)[0] + Float(c) * 0.05) }
                }
            }
            labels.append(label)
        }
        return (input, labels, shape)
    }

    func smallCNN(classes: Int) -> Architecture {
        Networks.baselineCNN(classes: classes, inputSize: 12, channels: [8, 8, 8], hidden: 16, batchNorm: true)
    }

    func testSmallModelOverfitsATinySetAndLossFallsMonotonicallyAtFirst() throws {
        let (input, labels, _) = syntheticBatch()
        var arch = smallCNN(classes: 3)
        arch.graph.inputShape = ActivationShape(height: 12, width: 12, channels: 3)
        let network = try TrainingNetwork(graph: arch.graph, tensors: arch.initialTensors(seed: 1), trainable: { _ in true },
                                          batch: 24, threads: 2)
        let optimizer = Optimizer(kind: .adam, learningRate: 0.01)
        var losses: [Float] = []
        var gradient = [Float](repeating: 0, count: 24 * 3)
        for _ in 0..<150 {
            network.inputPointer.update(from: input, count: input.count)
            network.forward(training: true)
            losses.append(gradient.withUnsafeMutableBufferPointer {
                CrossEntropy().loss(logits: network.logits, labels: labels, classes: 3, gradient: $0.baseAddress!)
            })
            network.zeroGradients()
            gradient.withUnsafeBufferPointer { network.backward(dLogits: $0.baseAddress!) }
            try optimizer.update(network.orderedParameters)
        }
        for i in 1..<8 { XCTAssertLessThan(losses[i], losses[i - 1], "loss rose at step \(i): \(losses.prefix(8))") }
        network.inputPointer.update(from: input, count: input.count)
        network.forward(training: false)
        var correct = 0
        for n in 0..<24 {
            let row = network.logits + n * 3
            if (0..<3).max(by: { row[$0] < row[$1] }) == labels[n] { correct += 1 }
        }
        XCTAssertEqual(correct, 24, "training accuracy \(correct)/24, final loss \(losses.last!)")
    }

    func testWeightedSmoothedLossMatchesHandComputation() {
        // Two samples, three classes.
        let logits: [Float] = [1, 2, 0, 0, 0, 3]
        let loss = CrossEntropy(classWeights: [2, 1, 0.5], labelSmoothing: 0.3)
        var gradient = [Float](repeating: 0, count: 6)
        let value = loss.loss(logits: logits, labels: [0, 2], classes: 3, gradient: &gradient)
        func logSoftmax(_ z: [Double]) -> [Double] {
            let m = z.max()!, s = z.map { exp($0 - m) }.reduce(0, +)
            return z.map { $0 - m - log(s) }
        }
        let l0 = logSoftmax([1, 2, 0]), l1 = logSoftmax([0, 0, 3])
        let q0 = [0.7 + 0.1, 0.1, 0.1], q1 = [0.1, 0.1, 0.7 + 0.1]
        let ce0 = -zip(q0, l0).map(*).reduce(0, +), ce1 = -zip(q1, l1).map(*).reduce(0, +)
        let expected = (2 * ce0 + 0.5 * ce1) / 2.5
        XCTAssertEqual(Double(value), expected, accuracy: 1e-5)
        for k in 0..<3 {
            XCTAssertEqual(Double(gradient[k]), 2 * (exp(l0[k]) - q0[k]) / 2.5, accuracy: 1e-6)
            XCTAssertEqual(Double(gradient[3 + k]), 0.5 * (exp(l1[k]) - q1[k]) / 2.5, accuracy: 1e-6)
        }
        XCTAssertEqual(CrossEntropy.balancedWeights(counts: [10, 30, 0, 20]), [2, Float(2) / 3, 0, 1])
    }

    func testBalancedSamplerDrawsClassesUniformly() {
        // 900 / 90 / 10 items: plain shuffling sees class 2 in 1% of draws, the sampler in a third.
        let labels = [Int](repeating: 0, count: 900) + [Int](repeating: 1, count: 90) + [Int](repeating: 2, count: 10)
        let draws = Sampler.balanced(labels: labels, classes: 3, count: 30_000, seed: 1, epoch: 0)
        var perClass = [0, 0, 0]
        for i in draws { perClass[labels[i]] += 1 }
        for c in 0..<3 { XCTAssertEqual(Double(perClass[c]) / 30_000, 1.0 / 3, accuracy: 0.015, "class \(c): \(perClass)") }
        XCTAssertEqual(draws, Sampler.balanced(labels: labels, classes: 3, count: 30_000, seed: 1, epoch: 0))
        XCTAssertNotEqual(draws, Sampler.balanced(labels: labels, classes: 3, count: 30_000, seed: 1, epoch: 1))
        XCTAssertEqual(Sampler.shuffled(count: 50, seed: 3, epoch: 2).sorted(), Array(0..<50))
    }

    func testMetricsMatchHandComputedConfusionMatrix() {
        var m = ConfusionMatrix(classes: ["a", "b", "c"], k: 2)
        // truth a: 4 (3 right, 1 as b); truth b: 2 (1 right, 1 as c); truth c: 4 (all as a).
        for (t, p) in [(0, 0), (0, 0), (0, 0), (0, 1), (1, 1), (1, 2), (2, 0), (2, 0), (2, 0), (2, 0)] { m.add(truth: t, predicted: p) }
        XCTAssertEqual(m.accuracy, 0.4, accuracy: 1e-12)
        XCTAssertEqual(m.balancedAccuracy, (0.75 + 0.5 + 0) / 3, accuracy: 1e-12)
        XCTAssertEqual(m.precision(0), 3.0 / 7, accuracy: 1e-12)
        XCTAssertEqual(m.precision(1), 0.5, accuracy: 1e-12)
        XCTAssertEqual(m.precision(2), 0, accuracy: 1e-12)
        let f1a = 2 * (3.0 / 7) * 0.75 / (3.0 / 7 + 0.75), f1b = 0.5
        XCTAssertEqual(m.macroF1, (f1a + f1b + 0) / 3, accuracy: 1e-12)
        XCTAssertEqual(m.majorityBaseline, 0.4, accuracy: 1e-12)
        // A majority-class predictor: accuracy equals the baseline, balanced accuracy is chance.
        var majority = ConfusionMatrix(classes: ["a", "b", "c"])
        for t in [0, 0, 0, 0, 1, 1, 2, 2, 2, 2] { majority.add(truth: t, predicted: 0) }
        XCTAssertEqual(majority.balancedAccuracy, 1.0 / 3, accuracy: 1e-12)
        // Top-k from probabilities.
        var top = ConfusionMatrix(classes: ["a", "b", "c"], k: 2)
        top.add(truth: 2, probabilities: [0.5, 0.1, 0.4])
        top.add(truth: 1, probabilities: [0.5, 0.1, 0.4])
        XCTAssertEqual(top.topKAccuracy, 0.5)
        XCTAssertTrue(m.report().contains("balanced accuracy"))
    }

    func testOptimizerStepsMatchHandComputation() throws {
        let tensors: TensorStore = {
            var s = TensorStore()
            s["w"] = HostTensor(shape: [1, 2], values: [1, -1])
            s["b"] = HostTensor(shape: [2], values: [0, 0])
            return s
        }()
        var b = GraphBuilder(shape: .vector(1))
        let out = b.linear("l", b.input, out: 2)
        let graph = b.graph(logits: out, embedding: nil)
        var store = TensorStore()
        store["l.weight"] = tensors["w"]
        store["l.bias"] = tensors["b"]
        for kind in Optimizer.Kind.allCases {
            let net = try TrainingNetwork(graph: graph, tensors: store, trainable: { _ in true }, batch: 1, threads: 1)
            net.orderedParameters[0].gradient!.pointer.update(from: [0.5, 0.25], count: 2)
            net.orderedParameters[1].gradient!.pointer.update(from: [0.1, -0.1], count: 2)
            let o = Optimizer(kind: kind, learningRate: 0.1)
            o.weightDecay = 0.01
            try o.update(net.orderedParameters)
            let w = Array(net.orderedParameters[0].value.buffer), bias = Array(net.orderedParameters[1].value.buffer)
            switch kind {
            case .sgd: // v = g + wd*w; w -= lr*v (no decay on the 1-D bias)
                XCTAssertEqual(w[0], 1 - 0.1 * (0.5 + 0.01), accuracy: 1e-6)
                XCTAssertEqual(bias[0], -0.01, accuracy: 1e-7)
            case .adam: // first step: m/(1-b1) = g', v/(1-b2) = g'^2 -> update = sign(g') (g' includes L2)
                XCTAssertEqual(w[1], -1 - 0.1 * ((0.25 - 0.01) / (0.24 + 1e-8)), accuracy: 1e-5)
                XCTAssertEqual(bias[1], 0.1, accuracy: 1e-5)
            case .adamw: // decoupled: w -= lr * (1 + wd * w)
                XCTAssertEqual(w[0], 1 - 0.1 * (1 + 0.01), accuracy: 1e-5)
            }
        }
        XCTAssertEqual(LearningRateSchedule.cosine(totalSteps: 100).factor(step: 50, warmupSteps: 0), 0.5, accuracy: 1e-12)
        XCTAssertEqual(LearningRateSchedule.cosine(totalSteps: 100).factor(step: 4, warmupSteps: 10), 0.5, accuracy: 1e-12)
        XCTAssertEqual(LearningRateSchedule.step(every: 10, factor: 0.1).factor(step: 25, warmupSteps: 0), 0.01, accuracy: 1e-12)
    }

    func testClippingBoundsTheGlobalNorm() throws {
        var b = GraphBuilder(shape: .vector(1))
        let out = b.linear("l", b.input, out: 2)
        let graph = b.graph(logits: out, embedding: nil)
        var store = TensorStore()
        store["l.weight"] = HostTensor(shape: [1, 2], values: [0, 0])
        store["l.bias"] = HostTensor(shape: [2], values: [0, 0])
        let net = try TrainingNetwork(graph: graph, tensors: store, trainable: { _ in true }, batch: 1, threads: 1)
        net.orderedParameters[0].gradient!.pointer.update(from: [3, 4], count: 2) // norm 5
        let o = Optimizer(kind: .sgd, learningRate: 1)
        o.momentum = 0
        o.clipNorm = 1
        XCTAssertEqual(try o.update(net.orderedParameters), 5, accuracy: 1e-9)
        XCTAssertEqual(Array(net.orderedParameters[0].value.buffer), [-0.6, -0.8])
    }
}
