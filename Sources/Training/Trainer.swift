import Architectures
import CoverGenre
import Graph
import ImageIO
import Inference
import Kernels
import ModelFormat
import SystemIO
import ToolSupport

/// Everything that defines a training run. Stored in checkpoints and in the exported model's
/// provenance, so a run can be resumed and reproduced.
public struct TrainingConfiguration: Sendable {
    public enum Balance: String, Sendable, CaseIterable {
        case none
        /// Class-weighted cross-entropy (weights inversely proportional to class frequency).
        case weights
        /// Class-balanced sampling: every genre drawn equally often.
        case sampler
    }

    /// How the learning rate changes over the run.
    public enum Schedule: String, Sendable, CaseIterable {
        case constant
        case cosine
        /// Times `stepFactor` every `stepEpochs`.
        case step
    }

    public var architecture = ArchitectureName.baselineCNN.rawValue
    public var inputSize: Int?
    public var widthDivisor = 1
    public var batchNorm = false
    public var dropout = 0.0
    public var epochs = 5
    public var batchSize = 8
    public var optimizer: Optimizer.Kind = .adam
    public var learningRate = 0.001
    public var momentum = 0.9
    public var weightDecay = 0.0
    public var schedule: Schedule = .constant
    public var stepEpochs = 10
    public var stepFactor = 0.1
    public var warmupEpochs = 0.0
    public var clipNorm = 0.0
    public var balance: Balance = .none
    public var labelSmoothing: Float = 0
    public var augment = false
    public var seed: UInt64 = 1
    public var splitSeed: UInt64 = 1
    public var threads = 0
    /// Validation fraction when the data has no split (test takes the same).
    public var validationFraction = 0.15

    public init() {}

    public var json: JSON {
        [
            "architecture": .string(architecture), "input_size": inputSize.map { JSON($0) } ?? .null,
            "width_divisor": JSON(widthDivisor), "batch_norm": .bool(batchNorm), "dropout": .number(dropout),
            "epochs": JSON(epochs), "batch_size": JSON(batchSize), "optimizer": .string(optimizer.rawValue),
            "learning_rate": .number(learningRate), "momentum": .number(momentum), "weight_decay": .number(weightDecay),
            "schedule": .string(schedule.rawValue), "step_epochs": JSON(stepEpochs), "step_factor": .number(stepFactor),
            "warmup_epochs": .number(warmupEpochs), "clip_norm": .number(clipNorm), "balance": .string(balance.rawValue),
            "label_smoothing": JSON(labelSmoothing), "augment": .bool(augment), "seed": JSON(Int(seed)),
            "split_seed": JSON(Int(splitSeed)), "threads": JSON(threads),
        ]
    }

    public func architecture(classes: Int) throws -> Architecture {
        try ArchitectureName(parsing: architecture).build(classes: classes, inputSize: inputSize, widthDivisor: widthDivisor,
                                                          batchNorm: batchNorm, dropout: dropout)
    }
}

/// A network to train that is not built from `TrainingConfiguration.architecture`: a pretrained
/// backbone with a head, for fine-tuning.
public struct TrainingSetup {
    public var architecture: Architecture
    public var tensors: TensorStore
    /// Which parameters the optimizer moves.
    public var trainable: (String) -> Bool
    /// Per-parameter multiplier of the learning rate (e.g. 0.1 for backbone layers).
    public var learningRateScale: (String) -> Double
    /// Export only epochs that beat this validation balanced accuracy (the model already at --out).
    public var scoreToBeat: Double
    public var provenance: [String: JSON]

    public init(architecture: Architecture, tensors: TensorStore, trainable: @escaping (String) -> Bool,
                learningRateScale: @escaping (String) -> Double, scoreToBeat: Double, provenance: [String: JSON]) {
        self.architecture = architecture
        self.tensors = tensors
        self.trainable = trainable
        self.learningRateScale = learningRateScale
        self.scoreToBeat = scoreToBeat
        self.provenance = provenance
    }
}

/// One epoch's numbers, as written to history.csv.
public struct EpochRecord: Sendable {
    public var epoch: Int
    public var trainLoss: Double
    public var trainAccuracy: Double
    public var validationAccuracy: Double
    public var validationBalancedAccuracy: Double
    public var validationMacroF1: Double
    public var learningRate: Double
    public var seconds: Double
    public var imagesPerSecond: Double

    static let header = ["epoch", "train_loss", "train_accuracy", "val_accuracy", "val_balanced_accuracy", "val_macro_f1",
                         "learning_rate", "seconds", "images_per_second"]

    var row: [String] {
        [String(epoch)] + [trainLoss, trainAccuracy, validationAccuracy, validationBalancedAccuracy, validationMacroF1,
                           learningRate, seconds, imagesPerSecond].map { "\($0)" }
    }

    init?(row: [String]) {
        guard row.count == Self.header.count, let e = Int(row[0]) else { return nil }
        let v = row.dropFirst().compactMap(Double.init)
        guard v.count == 8 else { return nil }
        (epoch, trainLoss, trainAccuracy, validationAccuracy, validationBalancedAccuracy, validationMacroF1, learningRate,
         seconds, imagesPerSecond) = (e, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7])
    }

    init(epoch: Int, trainLoss: Double, trainAccuracy: Double, validation: ConfusionMatrix, learningRate: Double,
         seconds: Double, imagesPerSecond: Double) {
        self.epoch = epoch
        self.trainLoss = trainLoss
        self.trainAccuracy = trainAccuracy
        validationAccuracy = validation.accuracy
        validationBalancedAccuracy = validation.balancedAccuracy
        validationMacroF1 = validation.macroF1
        self.learningRate = learningRate
        self.seconds = seconds
        self.imagesPerSecond = imagesPerSecond
    }
}

/// Trains a network from scratch on labelled covers: epochs with a progress bar, validation
/// after each, a checkpoint after each (atomic), resumable after a crash, and the best epoch by
/// balanced accuracy exported as a `.cgm` model with its provenance.
public final class Trainer {
    public let configuration: TrainingConfiguration
    public let dataset: LabeledDataset
    public let runDirectory: String
    public let output: String
    let log: (String) -> Void
    let setup: TrainingSetup?
    public private(set) var history: [EpochRecord] = []

    public init(configuration: TrainingConfiguration, dataset: LabeledDataset, runDirectory: String, output: String,
                setup: TrainingSetup? = nil, log: @escaping (String) -> Void) {
        self.configuration = configuration
        self.dataset = dataset
        self.runDirectory = runDirectory
        self.output = output
        self.setup = setup
        self.log = log
    }

    var checkpointPath: String { Files.join(runDirectory, "checkpoint.cgm") }

    /// Runs (or, with `resume`, continues) the training. `stopAfter` ends this invocation after
    /// that epoch (time-sliced training on machines that are taken away; `resume` continues).
    /// Returns the best validation matrix of this invocation.
    @discardableResult
    public func run(resume: Bool, stopAfter: Int? = nil) throws -> ConfusionMatrix? {
        let c = configuration
        try Files.makeDirectories(runDirectory)
        let data = dataset.hasSplit ? dataset : dataset.stratifiedSplit(seed: c.splitSeed, validation: c.validationFraction,
                                                                           test: c.validationFraction)
        try CSV.write(Files.join(runDirectory, "split.csv"), data.splitCSV())
        let train = data.items(in: .train), validation = data.items(in: .val)
        guard train.count >= c.batchSize else { throw CoverGenreError(.invalidArgument, "\(train.count) training images; need at least one batch of \(c.batchSize)") }
        guard !validation.isEmpty else { throw CoverGenreError(.invalidArgument, "no validation images (split \"val\")") }
        let classes = data.classes
        let counts = data.counts(train)
        log("data: \(train.count) train / \(validation.count) val images, \(classes.count) genres: "
            + zip(classes, counts).map { "\($0) \($1)" }.joined(separator: ", "))

        let architecture = try setup?.architecture ?? c.architecture(classes: classes.count)
        let threads = c.threads > 0 ? c.threads : Parallel.availableCores
        let network = try TrainingNetwork(graph: architecture.graph, tensors: setup?.tensors ?? architecture.initialTensors(seed: c.seed),
                                          trainable: setup?.trainable ?? { _ in true }, batch: c.batchSize, threads: threads)
        let optimizer = Optimizer(kind: c.optimizer, learningRate: c.learningRate)
        if let scale = setup?.learningRateScale { optimizer.learningRateScale = scale }
        optimizer.momentum = c.momentum
        optimizer.weightDecay = c.weightDecay
        optimizer.clipNorm = c.clipNorm
        let stepsPerEpoch = train.count / c.batchSize
        optimizer.warmupSteps = Int(c.warmupEpochs * Double(stepsPerEpoch))
        switch c.schedule {
        case .cosine: optimizer.schedule = .cosine(totalSteps: c.epochs * stepsPerEpoch)
        case .step: optimizer.schedule = .step(every: c.stepEpochs * stepsPerEpoch, factor: c.stepFactor)
        case .constant: optimizer.schedule = .constant
        }
        let loss = CrossEntropy(classWeights: c.balance == .weights ? CrossEntropy.balancedWeights(counts: counts) : nil,
                                labelSmoothing: c.labelSmoothing)

        var firstEpoch = 0
        var best: (score: Double, epoch: Int, matrix: ConfusionMatrix?) = (setup?.scoreToBeat ?? -1, -1, nil)
        if resume, Files.exists(checkpointPath) {
            let state = try Checkpoint.load(checkpointPath, into: network, optimizer: optimizer, configuration: c, classes: classes)
            firstEpoch = state.epochsDone
            history = state.history
            best = (state.bestScore, state.bestEpoch, nil)
            log("resumed from \(checkpointPath) after epoch \(firstEpoch)")
        } else if resume {
            log("no checkpoint at \(checkpointPath); starting from scratch")
        }

        let pipeline = ImagePipeline(width: architecture.graph.inputShape.width, height: architecture.graph.inputShape.height,
                                     preprocessing: architecture.preprocessing, augmentation: c.augment ? Augmentation() : nil)
        let failures = FailureLog(report: log)
        var gradient = [Float](repeating: 0, count: c.batchSize * classes.count)
        for epoch in firstEpoch..<min(c.epochs, stopAfter ?? c.epochs) {
            let start = Clock.seconds
            let order = c.balance == .sampler
                ? Sampler.balanced(labels: train.map(\.label), classes: classes.count, count: train.count, seed: c.seed, epoch: epoch)
                : Sampler.shuffled(count: train.count, seed: c.seed, epoch: epoch)
            let loader = try BatchLoader(items: train, order: order, pipeline: pipeline, batchSize: c.batchSize, seed: c.seed,
                                         epoch: epoch, failures: failures, dropLast: true)
            let bar = ProgressBar(total: loader.batchCount * c.batchSize, label: "epoch \(epoch + 1)/\(c.epochs)")
            var seen = 0, correct = 0, lossSum = 0.0
            while let batch = loader.next() {
                network.inputPointer.update(from: batch.input, count: c.batchSize * pipeline.width * pipeline.height * 3)
                network.forward(training: true, seed: c.seed &+ UInt64(optimizer.step) &* 0x2545_F491)
                let value = gradient.withUnsafeMutableBufferPointer {
                    loss.loss(logits: network.logits, labels: batch.labels, classes: classes.count, gradient: $0.baseAddress!)
                }
                guard value.isFinite else {
                    throw CoverGenreError(.internal, "training diverged (loss \(value)) at epoch \(epoch + 1); lower --learning-rate")
                }
                network.zeroGradients()
                gradient.withUnsafeBufferPointer { network.backward(dLogits: $0.baseAddress!) }
                try optimizer.update(network.orderedParameters)
                for (n, label) in batch.labels.enumerated() {
                    let row = network.logits + n * classes.count
                    if (0..<classes.count).max(by: { row[$0] < row[$1] }) == label { correct += 1 }
                }
                seen += batch.labels.count
                lossSum += Double(value) * Double(batch.labels.count)
                bar.update(seen, detail: "loss \(Format.fixed(lossSum / Double(seen), 4)) lr \(Format.fixed(optimizer.currentLearningRate, 6))")
            }
            let trainSeconds = Clock.seconds - start
            bar.finish("loss \(Format.fixed(lossSum / Double(max(seen, 1)), 4))")

            let model = try exportModel(network.tensors(), architecture: architecture, classes: classes, epoch: epoch + 1, metrics: nil)
            let matrix = try Evaluation.evaluate(model: model, items: validation, classes: classes, threads: threads, label: "validate")
            let record = EpochRecord(epoch: epoch + 1, trainLoss: lossSum / Double(max(seen, 1)),
                                     trainAccuracy: Double(correct) / Double(max(seen, 1)), validation: matrix,
                                     learningRate: optimizer.currentLearningRate, seconds: Clock.seconds - start,
                                     imagesPerSecond: Double(seen) / max(trainSeconds, 1e-9))
            history.append(record)
            log("epoch \(epoch + 1): train loss \(Format.fixed(record.trainLoss, 4)), val accuracy \(Format.percent(matrix.accuracy)), "
                + "balanced \(Format.percent(matrix.balancedAccuracy)), macro-F1 \(Format.percent(matrix.macroF1)) "
                + "(majority \(Format.percent(matrix.majorityBaseline))), \(Format.fixed(record.imagesPerSecond, 1)) img/s")
            if matrix.balancedAccuracy > best.score {
                best = (matrix.balancedAccuracy, epoch + 1, matrix)
                let final = try exportModel(network.tensors(), architecture: architecture, classes: classes, epoch: epoch + 1, metrics: matrix)
                try final.write(to: output)
                try Reports.writeConfusion(matrix, to: Files.join(runDirectory, "confusion-val"))
                log("best so far: saved \(output)")
            }
            try Reports.writeHistory(history, to: runDirectory)
            try Checkpoint.save(checkpointPath, network: network, optimizer: optimizer, configuration: c, classes: classes,
                                epochsDone: epoch + 1, history: history, bestScore: best.score, bestEpoch: best.epoch)
        }
        if failures.count > 0 { log("\(failures.count) images could not be decoded and were skipped") }
        return best.matrix
    }

    /// A folded, inference-ready model of the current weights.
    func exportModel(_ tensors: TensorStore, architecture: Architecture, classes: [String], epoch: Int,
                     metrics: ConfusionMatrix?) throws -> ModelWriter {
        let (graph, folded) = try architecture.graph.foldingBatchNorms(tensors)
        var provenance: [String: JSON] = (setup?.provenance ?? [:]).merging([
            "trained_by": "covergenre train", "data": dataset.provenance,
            "epoch": JSON(epoch), "epochs": JSON(configuration.epochs), "split_seed": JSON(Int(configuration.splitSeed)),
            "configuration": configuration.json,
        ]) { _, new in new }
        if let metrics { provenance["validation"] = metrics.json }
        let description = ModelDescription(name: "covergenre-\(architecture.name)", architecture: architecture.name, labels: classes,
                                           graph: graph, preprocessing: architecture.preprocessing, provenance: .object(provenance))
        return try description.serialized(tensors: folded)
    }
}

/// Evaluation of a model on labelled images, through the same code path as inference.
public enum Evaluation {
    /// Validation during training: the model as it would be exported, run by the inference engine.
    public static func evaluate(model writer: ModelWriter, items: [LabeledImage], classes: [String], threads: Int,
                                label: String) throws -> ConfusionMatrix {
        var options = ModelOptions()
        options.threads = threads
        let model = try writer.serialize().withUnsafeBytes { try Model(bytes: $0, options: options) }
        return try evaluate(model, items: items, classes: classes, threads: threads, label: label)
    }

    /// Confusion matrix of `model` on `items` over all the model's genres (what a user sees: a
    /// cover of a data set with fewer genres can still get any of the model's answers); the data's
    /// genres are matched to the model's labels by name, and balanced accuracy and macro-F1 average
    /// over the genres present in the data. Images that fail to decode are counted in `failures`,
    /// not in the metrics.
    public static func evaluate(_ model: Model, items: [LabeledImage], classes: [String], threads: Int, label: String,
                                failures: FailureLog? = nil) throws -> ConfusionMatrix {
        var matrix = ConfusionMatrix(classes: model.labels)
        let mapping = try classes.map { name -> Int in
            guard let i = model.labels.firstIndex(of: name) else {
                throw CoverGenreError(.invalidArgument, "the model has no genre \"\(name)\" (it knows \(model.labels.joined(separator: ", ")))")
            }
            return i
        }
        let bar = ProgressBar(total: items.count, label: label)
        var done = 0
        for chunk in stride(from: 0, to: items.count, by: 64) {
            let part = Array(items[chunk..<min(chunk + 64, items.count)])
            let results = model.probabilities(batch: part.map { .path($0.path) }, threads: threads)
            for (item, result) in zip(part, results) {
                switch result {
                case .success(let p):
                    matrix.add(truth: mapping[item.label], probabilities: p)
                    // Calibration is the model's own answer over all its classes.
                    let top = p.indices.max { p[$0] < p[$1] || (p[$0] == p[$1] && $0 > $1) }!
                    matrix.addAnswer(confidence: p[top], correct: top == mapping[item.label], truthProbability: p[mapping[item.label]])
                case .failure(let error): failures?.record(item.path, error)
                }
            }
            done += part.count
            bar.update(done)
        }
        bar.finish()
        return matrix
    }
}
