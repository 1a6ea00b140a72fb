import CoverGenre
import Architectures
import CKernels
import Graph
import ImageIO
import Kernels
import ModelFormat
import Synchronization
import SystemIO

/// Backbone features of labelled images, computed once and kept on disk.
///
/// Rows are (image, view): view 0 is the model's plain preprocessing, view 1 its mirror image, and
/// views 2... are random augmentations seeded by (seed, view, image). A cache file is reused only
/// for the same backbone (checksum), feature kind, preprocessing and augmentation; within it a row
/// is reused only if the image file's content hash still matches.
public struct FeatureTable: Sendable {
    public let featureSize: Int
    public let views: Int
    /// values[(item * views + view) * featureSize ..< +featureSize]
    public var values: [Float]
    /// Items whose image could not be decoded (no valid rows).
    public var failed: Set<Int>

    public init(featureSize: Int, views: Int, values: [Float], failed: Set<Int>) {
        self.featureSize = featureSize
        self.views = views
        self.values = values
        self.failed = failed
    }

    public func row(item: Int, view: Int) -> ArraySlice<Float> {
        let start = (item * views + view) * featureSize
        return values[start..<(start + featureSize)]
    }

    public static func compute(items: [LabeledImage], views: Int, extractor: FeatureExtractor, preprocessing: Preprocessing,
                               augmentation: Augmentation, seed: UInt64, cachePath: String?, threads: Int, label: String,
                               log: (String) -> Void) throws -> FeatureTable {
        let d = extractor.backbone.featureSize
        let key: JSON = [
            "format": "covergenre-features", "backbone": .string(String(extractor.backbone.checksum, radix: 16)),
            "kind": .string(extractor.backbone.kind.rawValue), "feature_size": JSON(d), "preprocess": preprocessing.json,
            "augmentation": .string("\(augmentation)"), "seed": JSON(Int(seed)),
        ]
        // Previously computed rows, keyed by (path, content hash, view).
        var cached: [String: ArraySlice<Float>] = [:]
        if let cachePath, Files.exists(cachePath), let file = try? ModelFile(path: cachePath), file.metadata["key"] == key,
           let rows = file.metadata["rows"]?.array, let matrix = try? file.floats("features").array, matrix.count == rows.count * d {
            for (i, row) in rows.enumerated() {
                if let id = row.string { cached[id] = matrix[(i * d)..<((i + 1) * d)] }
            }
        }
        var table = FeatureTable(featureSize: d, views: views, values: [Float](repeating: 0, count: items.count * views * d), failed: [])
        var ids = [String](repeating: "", count: items.count * views)
        let failures = Locked<[Int: String]>([:])
        let reused = Atomic<Int>(0), progress = Atomic<Int>(0)
        let bar = Locked(ProgressBar(total: items.count, label: label))
        let pipeline = ImagePipeline(width: extractor.inputWidth, height: extractor.inputHeight, preprocessing: preprocessing,
                                     augmentation: augmentation)
        let plain = ImagePipeline(width: extractor.inputWidth, height: extractor.inputHeight, preprocessing: preprocessing,
                                  augmentation: nil)
        let inputCount = extractor.inputWidth * extractor.inputHeight * 3
        try table.values.withUnsafeMutableBufferPointer { values in
            try ids.withUnsafeMutableBufferPointer { ids in
                let buffers = try (0..<threads).map { _ -> FloatBuffer in
                    guard let b = FloatBuffer(count: inputCount) else { throw CoverGenreError(.outOfMemory, "feature input buffer") }
                    return b
                }
                Parallel.forRanges(items.count, threads: threads) { worker, range in
                    let input = buffers[worker].pointer
                    for i in range {
                        do {
                            // An audio file (a library's embedded cover) stands for its picture.
                            let bytes = try CoverFile.encodedCover(items[i].path, maxBytes: 64 << 20)
                            let hash = bytes.withUnsafeBytes { cgk_xxh64($0.baseAddress, $0.count, 0) }
                            var image: RGBImage?
                            for view in 0..<views {
                                let id = "\(items[i].path)\u{1F}\(String(hash, radix: 16))\u{1F}\(view)"
                                let out = values.baseAddress! + (i * views + view) * d
                                ids[i * views + view] = id
                                if let row = cached[id] {
                                    row.withUnsafeBufferPointer { out.update(from: $0.baseAddress!, count: d) }
                                    reused.add(1, ordering: .relaxed)
                                    continue
                                }
                                if image == nil { image = try ImageDecoder.decode(bytes) }
                                var random = ImagePipeline.random(seed: seed, epoch: view, sample: i)
                                if view < 2 {
                                    try plain.fill(image!, into: input, random: &random, mirror: view == 1)
                                } else {
                                    try pipeline.fill(image!, into: input, random: &random)
                                }
                                try extractor.features(input: input, into: out)
                            }
                        } catch {
                            failures.withLock { $0[i] = "\(error)" }
                        }
                        let done = progress.add(1, ordering: .relaxed).newValue
                        bar.withLock { $0.update(done) }
                    }
                }
            }
        }
        bar.withLock { $0.finish() }
        let failed = failures.withLock { $0 }
        for (i, reason) in failed.sorted(by: { $0.key < $1.key }) { log("skipping \(items[i].path): \(reason)") }
        table.failed = Set(failed.keys)
        let reusedRows = reused.load(ordering: .relaxed)
        if reusedRows > 0 { log("\(label): reused \(reusedRows) of \(items.count * views) cached feature rows") }
        if let cachePath {
            var writer = ModelWriter(metadata: ["key": key, "rows": JSON(ids)])
            try writer.add("features", shape: [ids.count, d], values: table.values)
            try writer.write(to: cachePath)
        }
        return table
    }
}

/// A small classifier on backbone features: frozen standardization (a batch norm holding the
/// training features' mean and variance), dropout, an optional hidden layer, and the genre layer.
public struct HeadConfiguration: Sendable {
    public var hidden = 0
    public var dropout = 0.3
    public var epochs = 60
    public var batchSize = 64
    public var learningRate = 1e-3
    public var weightDecay = 1e-3
    public var labelSmoothing: Float = 0.1
    public var balance: TrainingConfiguration.Balance = .weights
    public var seed: UInt64 = 1

    public init() {}

    public var json: JSON {
        ["hidden": JSON(hidden), "dropout": .number(dropout), "epochs": JSON(epochs), "batch_size": JSON(batchSize),
         "learning_rate": .number(learningRate), "weight_decay": .number(weightDecay), "label_smoothing": JSON(labelSmoothing),
         "balance": .string(balance.rawValue), "seed": JSON(Int(seed))]
    }
}

public enum HeadTrainer {
    public static func architecture(features: Int, classes: Int, configuration c: HeadConfiguration) -> Architecture {
        var b = GraphBuilder(shape: .vector(features))
        var x = b.batchNorm("norm", b.input, activation: .none, epsilon: 1e-5)
        if c.dropout > 0 { x = b.node("dropout", .dropout(rate: c.dropout), [x]) }
        if c.hidden > 0 {
            x = b.linear("hidden", x, out: c.hidden, activation: .relu)
            if c.dropout > 0 { x = b.node("dropout2", .dropout(rate: c.dropout), [x]) }
        }
        let logits = b.linear("fc", x, out: classes)
        return Architecture(name: "head", graph: b.graph(logits: logits, embedding: nil), parameters: b.parameters, preprocessing: .imagenet)
    }

    public struct Result {
        public let architecture: Architecture
        public let tensors: TensorStore
        public let validation: ConfusionMatrix
        public let epoch: Int
    }

    /// Trains on every view of every training item; validates on views 0 and 1 (plain and mirror,
    /// probabilities averaged when `flipAverage`), keeping the epoch with the best balanced accuracy.
    public static func train(train: FeatureTable, trainItems: [LabeledImage], validation: FeatureTable, validationItems: [LabeledImage],
                             classes: [String], flipAverage: Bool, configuration c: HeadConfiguration, threads: Int,
                             log: (String) -> Void) throws -> Result {
        let d = train.featureSize, k = classes.count
        let rows = trainItems.indices.filter { !train.failed.contains($0) }.flatMap { i in (0..<train.views).map { (i, $0) } }
        guard rows.count >= c.batchSize else { throw CoverGenreError(.invalidArgument, "\(rows.count) feature rows; need at least \(c.batchSize)") }
        let architecture = Self.architecture(features: d, classes: k, configuration: c)
        var tensors = architecture.initialTensors(seed: c.seed)
        // Standardize every feature with the training rows' statistics (frozen, folded at export).
        var mean = [Double](repeating: 0, count: d), square = mean
        for (i, v) in rows {
            for (j, x) in train.row(item: i, view: v).enumerated() {
                mean[j] += Double(x)
                square[j] += Double(x) * Double(x)
            }
        }
        let n = Double(rows.count)
        tensors["norm.mean"]!.values = mean.map { Float($0 / n) }
        tensors["norm.variance"]!.values = zip(mean, square).map { Float(max($1 / n - ($0 / n) * ($0 / n), 0) + 1e-6) }
        let network = try TrainingNetwork(graph: architecture.graph, tensors: tensors, trainable: { !$0.hasPrefix("norm.") },
                                          batch: c.batchSize, threads: threads)
        let valItems = validationItems.indices.filter { !validation.failed.contains($0) }
        let evaluator = try TrainingNetwork(graph: architecture.graph, tensors: tensors, trainable: { _ in false },
                                            batch: max(valItems.count, 1), threads: threads)
        let optimizer = Optimizer(kind: .adamw, learningRate: c.learningRate)
        optimizer.weightDecay = c.weightDecay
        let steps = rows.count / c.batchSize
        optimizer.schedule = .cosine(totalSteps: c.epochs * steps)
        optimizer.warmupSteps = steps
        let counts = LabeledDataset(classes: classes, items: trainItems).counts()
        let loss = CrossEntropy(classWeights: c.balance == .weights ? CrossEntropy.balancedWeights(counts: counts) : nil,
                                labelSmoothing: c.labelSmoothing)
        var best: Result?
        var gradient = [Float](repeating: 0, count: c.batchSize * k)
        for epoch in 0..<c.epochs {
            let order = c.balance == .sampler
                ? Sampler.balanced(labels: rows.map { trainItems[$0.0].label }, classes: k, count: rows.count, seed: c.seed, epoch: epoch)
                : Sampler.shuffled(count: rows.count, seed: c.seed, epoch: epoch)
            for step in 0..<steps {
                var labels: [Int] = []
                for b in 0..<c.batchSize {
                    let (i, v) = rows[order[step * c.batchSize + b]]
                    train.row(item: i, view: v).withUnsafeBufferPointer { network.inputPointer.advanced(by: b * d).update(from: $0.baseAddress!, count: d) }
                    labels.append(trainItems[i].label)
                }
                network.forward(training: true, seed: c.seed &+ UInt64(optimizer.step))
                _ = gradient.withUnsafeMutableBufferPointer { loss.loss(logits: network.logits, labels: labels, classes: k, gradient: $0.baseAddress!) }
                network.zeroGradients()
                gradient.withUnsafeBufferPointer { network.backward(dLogits: $0.baseAddress!) }
                try optimizer.update(network.orderedParameters)
            }
            let current = network.tensors()
            try evaluator.load(current)
            let matrix = evaluate(evaluator, table: validation, items: validationItems, rows: valItems, classes: classes, flipAverage: flipAverage)
            if best == nil || matrix.balancedAccuracy > best!.validation.balancedAccuracy {
                best = Result(architecture: architecture, tensors: current, validation: matrix, epoch: epoch + 1)
            }
            if (epoch + 1) % 10 == 0 || epoch + 1 == c.epochs {
                log("head epoch \(epoch + 1)/\(c.epochs): val accuracy \(Format.percent(matrix.accuracy)), balanced \(Format.percent(matrix.balancedAccuracy)), macro-F1 \(Format.percent(matrix.macroF1))")
            }
        }
        return best!
    }

    static func evaluate(_ network: TrainingNetwork, table: FeatureTable, items: [LabeledImage], rows: [Int], classes: [String],
                         flipAverage: Bool) -> ConfusionMatrix {
        let d = table.featureSize, k = classes.count
        var probabilities = [[Float]](repeating: [Float](repeating: 0, count: k), count: rows.count)
        for view in 0..<(flipAverage ? 2 : 1) {
            for (r, i) in rows.enumerated() {
                table.row(item: i, view: view).withUnsafeBufferPointer { network.inputPointer.advanced(by: r * d).update(from: $0.baseAddress!, count: d) }
            }
            network.forward(training: false)
            for r in rows.indices {
                let z = network.logits + r * k
                let peak = (0..<k).map { z[$0] }.max()!
                let e = (0..<k).map { expDouble(Double(z[$0] - peak)) }
                let total = e.reduce(0, +)
                for c in 0..<k { probabilities[r][c] += Float(e[c] / total) }
            }
        }
        var matrix = ConfusionMatrix(classes: classes)
        for (r, i) in rows.enumerated() { matrix.add(truth: items[i].label, probabilities: probabilities[r]) }
        return matrix
    }
}

/// Joins a backbone's feature graph and a head into one model graph: the head reads "features".
public enum TransferModel {
    public static func combine(backbone: Backbone, head: Architecture, headTensors: TensorStore, classes: [String],
                               flipAverage: Bool, provenance: JSON) throws -> (ModelDescription, TensorStore) {
        let (joined, names) = try backbone.featureGraph.appending(head.graph, at: Backbone.featureNode, prefix: "head.")
        var graph = joined
        graph.logits = names[head.graph.logits]!
        graph.embedding = Backbone.featureNode
        var tensors = backbone.tensors
        for name in head.graph.tensorNames { tensors["head." + name] = try headTensors.tensor(name) }
        var preprocessing = backbone.description.preprocessing
        preprocessing.flipAverage = flipAverage
        let description = ModelDescription(name: "covergenre-\(backbone.description.architecture)", architecture: backbone.description.architecture,
                                           labels: classes, graph: graph, preprocessing: preprocessing, provenance: provenance)
        return (description, tensors)
    }
}

func expDouble(_ x: Double) -> Double {
    #if canImport(Glibc)
    return Glibc.exp(x)
    #endif
}

#if canImport(Glibc)
import Glibc
import ToolSupport
#endif
