import Architectures
import ArgumentParser
import CoverGenre
import Graph
import ImageIO
import ModelFormat
import SystemIO
import Inference
import Kernels
import ToolSupport
import Training

/// Training-speed measurements for bench/run.sh (inference latency is measured through the C
/// API by bench/bench_infer.c). Synthetic data: no decoding, only the training step.
struct Benchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure training speed (images/s of a training step; head training on cached features).")

    /// What to measure.
    enum What: String, ExpressibleByArgument, CaseIterable {
        /// One optimizer step per batch.
        case training
        /// Head-only transfer on cached features.
        case head
        /// A model's graph, step by step (--model).
        case layers
    }

    @Option(help: "training (one optimizer step per batch), head (head-only transfer on cached features) or layers (a model's steps, --model).")
    var what: What = .training
    @Option(help: "Architecture (training).") var arch: ArchitectureName = .baselineCNN
    @Option(help: "Batch size.") var batchSize = 8
    @Option(help: "Measured steps (after 2 warm-up steps).") var steps = 20
    @Option(help: "Threads (0 = every core).") var threads = 0
    @Option(help: "Head: number of cached feature vectors.") var features = 2000
    @Option(help: "Head: feature size (Lite0 stats features: 2848).") var featureSize = 2848
    @Option(help: "Head: epochs.") var epochs = 60
    @Option(help: "Layers: the model to profile.") var model: String?

    /// Time per step of a model's graph (median of `steps` runs), grouped by kind.
    func profileLayers(threads: Int) throws {
        guard let path = model else { throw ValidationError("--what layers needs --model.") }
        let file = try ModelFile(path: path)
        let description = try ModelDescription(json: file.metadata)
        let graph = try CompiledGraph(graph: description.graph, weights: file)
        let context = try ExecutionContext(graph: graph, batch: batchSize, threads: threads)
        let scheduler = Scheduler(threads: threads)
        for i in 0..<(batchSize * graph.inputShape.count) { context.input[i] = Float(i % 7) / 7 - 0.5 }
        var times = [[Double]](repeating: [], count: graph.stepDescriptions.count)
        for run in 0..<(steps + 3) { scheduler.run { context.run { index, seconds in if run >= 3 { times[index].append(seconds) } } } }
        let medians = times.map { $0.sorted()[$0.count / 2] * 1000 }
        var byKind: [String: Double] = [:]
        for (d, t) in zip(graph.stepDescriptions, medians) { byKind[d, default: 0] += t }
        let total = medians.reduce(0, +)
        print("total \(Format.fixed(total, 3)) ms (sum of step medians), batch \(batchSize), threads \(threads)")
        for (d, t) in byKind.sorted(by: { $0.value > $1.value }) {
            print("\(Format.fixed(t, 3)) ms  \(Format.fixed(100 * t / total, 1))%  \(d)")
        }
    }

    func run() throws {
        let threads = self.threads > 0 ? self.threads : Parallel.availableCores
        var random = SplitMix64(seed: 1)
        if what == .layers {
            try profileLayers(threads: threads)
            return
        }
        if what == .head {
            let classes = ["a", "b", "c", "d", "e"]
            let items = (0..<features).map { LabeledImage(path: "\($0)", label: $0 % 5, split: .train) }
            let table = FeatureTable(featureSize: featureSize, views: 1,
                                     values: (0..<(features * featureSize)).map { _ in Float(random.unit()) }, failed: [])
            let validation = FeatureTable(featureSize: featureSize, views: 2,
                                          values: (0..<(200 * 2 * featureSize)).map { _ in Float(random.unit()) }, failed: [])
            var c = HeadConfiguration()
            c.epochs = epochs
            let start = Clock.seconds
            _ = try HeadTrainer.train(train: table, trainItems: items, validation: validation,
                                      validationItems: (0..<200).map { LabeledImage(path: "v\($0)", label: $0 % 5, split: .val) },
                                      classes: classes, flipAverage: true, configuration: c, threads: threads, log: { _ in })
            print("head features=\(features) feature_size=\(featureSize) epochs=\(epochs) seconds=\(Format.fixed(Clock.seconds - start, 3))")
            return
        }
        var configuration = TrainingConfiguration()
        configuration.architecture = arch.rawValue
        let architecture = try configuration.architecture(classes: 12)
        let network = try TrainingNetwork(graph: architecture.graph, tensors: architecture.initialTensors(seed: 1),
                                          trainable: { _ in true }, batch: batchSize, threads: threads)
        let optimizer = Optimizer(kind: .adam, learningRate: 1e-4)
        let inputCount = batchSize * architecture.graph.inputShape.count
        for i in 0..<inputCount { network.inputPointer[i] = Float(random.unit() * 2 - 1) }
        let labels = (0..<batchSize).map { $0 % 12 }
        var gradient = [Float](repeating: 0, count: batchSize * 12)
        func step() throws {
            network.forward(training: true)
            _ = gradient.withUnsafeMutableBufferPointer {
                CrossEntropy().loss(logits: network.logits, labels: labels, classes: 12, gradient: $0.baseAddress!)
            }
            network.zeroGradients()
            gradient.withUnsafeBufferPointer { network.backward(dLogits: $0.baseAddress!) }
            try optimizer.update(network.orderedParameters)
        }
        for _ in 0..<2 { try step() }
        var times: [Double] = []
        for _ in 0..<steps {
            let start = Clock.seconds
            try step()
            times.append(Clock.seconds - start)
        }
        times.sort()
        let median = times[times.count / 2]
        print("training arch=\(arch.rawValue) batch=\(batchSize) threads=\(threads) median_step_ms=\(Format.fixed(median * 1000, 2)) images_per_second=\(Format.fixed(Double(batchSize) / median, 2))")
    }
}
