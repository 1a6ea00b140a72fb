import Architectures
import CoverGenre
import Graph
import ImageIO
import Kernels
import ModelFormat
import SystemIO
import ToolSupport

/// Transfer learning from a pretrained backbone (e.g. `covergenre import` of EfficientNet-Lite0):
///
/// 1. features of every training image (and `views` augmented views) and validation image (plain
///    and mirrored) are computed once with the frozen backbone and cached in the run folder;
/// 2. a head is trained on the cached features in seconds;
/// 3. optionally, the last `trainLast` convolutions are fine-tuned together with the head on
///    augmented images at a lower learning rate.
///
/// The best model by validation balanced accuracy, across both stages, is exported.
public struct TransferConfiguration: Sendable {
    public var backbone: String
    public var features: FeatureKind = .stats
    /// Overrides of the backbone's input size and resize policy.
    public var inputSize: Int?
    public var resize: Preprocessing.Resize?
    /// Augmented views per training image for the head stage (views 0 and 1 are the plain image and
    /// its mirror; more views add random crops and colour jitter).
    public var views = 4
    public var head = HeadConfiguration()
    public var flipAverage = true
    /// Convolutions of the backbone, counted from its end, to fine-tune (0 = head only).
    public var trainLast = 0
    /// Learning rate of fine-tuned backbone layers relative to the head's.
    public var backboneLearningRateScale = 0.1

    public init(backbone: String) { self.backbone = backbone }

    public var json: JSON {
        ["backbone": .string(Files.baseName(backbone)), "features": .string(features.rawValue), "views": JSON(views),
         "input_size": inputSize.map { JSON($0) } ?? .null, "resize": resize.map { Preprocessing(resize: $0, mean: [0, 0, 0], std: [1, 1, 1]).json["resize"]! } ?? .null,
         "head": head.json, "flip_average": .bool(flipAverage), "train_last": JSON(trainLast),
         "backbone_learning_rate_scale": .number(backboneLearningRateScale)]
    }
}

public final class TransferTrainer {
    let configuration: TrainingConfiguration
    let transfer: TransferConfiguration
    let dataset: LabeledDataset
    let runDirectory: String
    let output: String
    let log: (String) -> Void

    public init(configuration: TrainingConfiguration, transfer: TransferConfiguration, dataset: LabeledDataset, runDirectory: String,
                output: String, log: @escaping (String) -> Void) {
        self.configuration = configuration
        self.transfer = transfer
        self.dataset = dataset
        self.runDirectory = runDirectory
        self.output = output
        self.log = log
    }

    /// Returns the validation metrics of the exported model.
    @discardableResult
    public func run(resume: Bool, stopAfter: Int? = nil) throws -> ConfusionMatrix {
        let c = configuration, t = transfer
        try Files.makeDirectories(runDirectory)
        let data = dataset.hasSplit ? dataset : dataset.stratifiedSplit(seed: c.splitSeed, validation: c.validationFraction,
                                                                           test: c.validationFraction)
        try CSV.write(Files.join(runDirectory, "split.csv"), data.splitCSV())
        let train = data.items(in: .train), validation = data.items(in: .val)
        guard !train.isEmpty, !validation.isEmpty else { throw CoverGenreError(.invalidArgument, "need training and validation images") }
        let threads = c.threads > 0 ? c.threads : Parallel.availableCores

        let backbone = try Backbone(path: t.backbone, kind: t.features, inputSize: t.inputSize, resize: t.resize)
        log("backbone \(backbone.description.architecture) (\(t.backbone)): \(backbone.featureSize) features (\(t.features.rawValue))")
        let extractor = try FeatureExtractor(backbone: backbone, threads: threads)
        let preprocessing = backbone.description.preprocessing
        var start = Clock.seconds
        let trainFeatures = try FeatureTable.compute(
            items: train, views: max(t.views, 1), extractor: extractor, preprocessing: preprocessing, augmentation: Augmentation(),
            seed: c.seed, cachePath: Files.join(runDirectory, "features-train.cgm"), threads: threads, label: "features (train)", log: log)
        let validationFeatures = try FeatureTable.compute(
            items: validation, views: 2, extractor: extractor, preprocessing: preprocessing, augmentation: Augmentation(),
            seed: c.seed, cachePath: Files.join(runDirectory, "features-val.cgm"), threads: threads, label: "features (val)", log: log)
        log("features: \(Format.fixed(Clock.seconds - start, 1)) s")

        start = Clock.seconds
        var headConfiguration = t.head
        headConfiguration.seed = c.seed
        let head = try HeadTrainer.train(train: trainFeatures, trainItems: train, validation: validationFeatures,
                                         validationItems: validation, classes: data.classes, flipAverage: t.flipAverage,
                                         configuration: headConfiguration, threads: threads, log: log)
        log("head: \(Format.fixed(Clock.seconds - start, 1)) s, best epoch \(head.epoch): val balanced accuracy \(Format.percent(head.validation.balancedAccuracy))")
        var provenance: [String: JSON] = [
            "trained_by": "covergenre train (transfer)", "data": data.provenance, "transfer": t.json, "split_seed": JSON(Int(c.splitSeed)),
            "head_epoch": JSON(head.epoch), "backbone_provenance": backbone.description.provenance,
        ]
        provenance["validation"] = head.validation.json
        let (description, tensors) = try TransferModel.combine(backbone: backbone, head: head.architecture, headTensors: head.tensors,
                                                               classes: data.classes, flipAverage: t.flipAverage, provenance: .object(provenance))
        let writer = try description.serialized(tensors: tensors)
        // The exported model itself, through the inference engine: the number that counts.
        let exported = try Evaluation.evaluate(model: writer, items: validation, classes: data.classes, threads: threads, label: "validate")
        log("head-only model: val accuracy \(Format.percent(exported.accuracy)), balanced \(Format.percent(exported.balancedAccuracy)), macro-F1 \(Format.percent(exported.macroF1))")
        if !resume || !Files.exists(output) {
            try writer.write(to: output)
            try Reports.writeConfusion(exported, to: Files.join(runDirectory, "confusion-val-head"))
        }
        guard t.trainLast > 0 else { return exported }

        // Fine-tuning: the last `trainLast` convolutions and the head, on augmented images.
        let convolutions = backbone.convolutionNodes
        let tuned = Set(convolutions.suffix(t.trainLast))
        var trainableTensors = Set<String>()
        for node in description.graph.nodes where tuned.contains(node.name) || (node.name.hasPrefix("head.") && !node.name.hasPrefix("head.norm")) {
            trainableTensors.formUnion(node.op.tensorNames)
        }
        log("fine-tuning \(tuned.count) convolutions (from \(convolutions.suffix(t.trainLast).first ?? "-")) and the head")
        let setup = TrainingSetup(
            architecture: Architecture(name: backbone.description.architecture, graph: description.graph, parameters: [],
                                       preprocessing: description.preprocessing),
            tensors: tensors, trainable: { trainableTensors.contains($0) },
            learningRateScale: { $0.hasPrefix("head.") ? 1 : t.backboneLearningRateScale },
            scoreToBeat: exported.balancedAccuracy, provenance: provenance.merging(["fine_tuned": .bool(true)]) { _, new in new })
        var fineTuning = c
        fineTuning.architecture = backbone.description.architecture
        let trainer = Trainer(configuration: fineTuning, dataset: data, runDirectory: runDirectory, output: output, setup: setup, log: log)
        return try trainer.run(resume: resume, stopAfter: stopAfter) ?? exported
    }
}
