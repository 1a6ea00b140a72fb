import Architectures
import ArgumentParser
import CoverGenre
import Graph
import ImageIO
import ModelFormat
import SystemIO
import MusicLibrary
import ToolSupport
import Training

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a genre classifier on labelled covers and export it as a .cgm model.",
        discussion: """
        DATA is a folder of genre subfolders (ROOT/<genre>/<image>) or a manifest CSV (path,genre[,split], or the \
        id,genre,url,split manifest of `covergenre prepare` with --images pointing at `covergenre download`'s folder). \
        Without a split column, a stratified train/val/test split is drawn with --split-seed and saved in the run folder. \
        Each epoch ends with validation metrics and a checkpoint; the epoch with the best balanced accuracy is exported to \
        --out. After a crash or kill, the same command with --resume continues from the last checkpoint.
        """)

    @Option(help: "Architecture trained from scratch.")
    var arch: ArchitectureName = .baselineCNN

    @Option(help: "Image folder or manifest CSV; repeat it, with --taxonomy, to train on several sources (PATH or NAME=PATH).")
    var data: [String] = []

    @OptionGroup(title: "Your own music library (instead of --data)") var library: LibraryOptions

    @Option(help: "Genre taxonomy mapping each source's genres to the model's (e.g. models/taxonomy.csv); a source without a split column is training data only.")
    var taxonomy: String?

    @Option(help: "The taxonomy's label set (column): the model's genres.")
    var genres = "default"

    @Option(help: "Folder holding a prepare-manifest's downloaded images (default: the manifest's folder).")
    var images: String?

    @Option(help: "Exported model (.cgm).")
    var out: String

    @Option(name: .customLong("run"), help: "Run folder for checkpoints, split, history and plots (default: <out>.run).")
    var runFolder: String?

    @Flag(help: "Continue from the run folder's last checkpoint.")
    var resume = false

    @Option(help: "Stop this invocation after this epoch (time-sliced training); --resume continues.")
    var stopAfter: Int?

    @OptionGroup(title: "Training") var training: TrainingOptions
    @OptionGroup(title: "Transfer learning (with --backbone)") var transfer: TransferOptions

    func validate() throws {
        guard data.isEmpty != (library.library == nil) else { throw ValidationError("Give --data or --library (one of them).") }
        if library.library != nil {
            guard taxonomy == nil, genres == "default", images == nil, stopAfter == nil, arch == .baselineCNN else {
                throw ValidationError("--library trains a head on a backbone from your tags: --taxonomy, --genres, --images, --stop-after and --arch are for --data (see --library-genres and --genre-map).")
            }
        }
    }

    func run() throws {
        var c = training.configuration
        c.architecture = arch.rawValue
        if let folder = library.library {
            try library.train(folder: folder, configuration: c, transfer: transfer, out: out, runFolder: runFolder, resume: resume)
            return
        }
        let dataset = try TrainingData.load(data, taxonomy: taxonomy, genres: genres, images: images)
        if taxonomy != nil { printError(dataset.summary()) }
        if !dataset.missing.isEmpty {
            printError("covergenre: \(dataset.missing.count) manifest entries have no image file (first: \(dataset.missing[0])); skipped")
        }
        let runDirectory = runFolder ?? (out.hasSuffix(".cgm") ? String(out.dropLast(4)) : out) + ".run"
        if let t = transfer.configuration(balance: c.balance, labelSmoothing: c.labelSmoothing) {
            let matrix = try TransferTrainer(configuration: c, transfer: t, dataset: dataset, runDirectory: runDirectory, output: out,
                                             log: printError).run(resume: resume, stopAfter: stopAfter)
            print("validation: accuracy \(Format.percent(matrix.accuracy)), balanced accuracy \(Format.percent(matrix.balancedAccuracy)), macro-F1 \(Format.percent(matrix.macroF1))")
            print("model: \(out); run folder: \(runDirectory)")
            return
        }
        let trainer = Trainer(configuration: c, dataset: dataset, runDirectory: runDirectory, output: out, log: printError)
        guard let best = try trainer.run(resume: resume, stopAfter: stopAfter) else {
            print("training finished; no epoch improved on the resumed best, model unchanged: \(out)")
            return
        }
        print("best validation epoch: accuracy \(Format.percent(best.accuracy)), balanced accuracy \(Format.percent(best.balancedAccuracy)), macro-F1 \(Format.percent(best.macroF1))")
        print("model: \(out); run folder: \(runDirectory)")
    }
}

/// How a network is trained: `covergenre train`'s optimization options, one field of
/// `TrainingConfiguration` each.
struct TrainingOptions: ParsableArguments {
    @Option(help: "Epochs.") var epochs = 5
    @Option(help: "Batch size.") var batchSize = 8
    @Option(help: "Optimizer.") var optimizer: Optimizer.Kind = .adam
    @Option(help: "Learning rate.") var learningRate = 0.001
    @Option(help: "SGD momentum.") var momentum = 0.9
    @Option(help: "Weight decay (L2 for sgd/adam, decoupled for adamw).") var weightDecay = 0.0
    @Option(help: "Learning-rate schedule.") var schedule: TrainingConfiguration.Schedule = .constant
    @Option(help: "Step schedule: epochs between decays.") var stepEpochs = 10
    @Option(help: "Step schedule: decay factor.") var stepFactor = 0.1
    @Option(help: "Linear warm-up, in epochs.") var warmupEpochs = 0.0
    @Option(help: "Clip the gradient norm (0 = off).") var clipNorm = 0.0
    @Option(help: "Class balancing: none, weights (weighted loss) or sampler (balanced sampling).")
    var balance: TrainingConfiguration.Balance = .none
    @Option(help: "Label smoothing (0-0.5).") var labelSmoothing: Float = 0
    @Flag(help: "Augment: random resized crop, horizontal flip, colour jitter.") var augment = false
    @Flag(help: "Batch normalization after every convolution (baseline-cnn, vgg16).") var batchNorm = false
    @Option(help: "Dropout before the classifier.") var dropout = 0.0
    @Option(help: "Input size in pixels (default: the architecture's).") var inputSize: Int?
    @Option(help: "Divide layer widths (smaller, faster models).") var widthDivisor = 1
    @Option(help: "Random seed (initialization, order, augmentation).") var seed: UInt64 = 1
    @Option(help: "Seed of the train/val/test split when the data has none.") var splitSeed: UInt64 = 1
    @Option(help: "Threads (0 = every core).") var threads = 0

    func validate() throws {
        guard epochs >= 1, batchSize >= 1 else { throw ValidationError("--epochs and --batch-size must be at least 1.") }
        guard learningRate > 0, learningRate.isFinite else { throw ValidationError("--learning-rate must be positive.") }
        guard (0...0.5).contains(labelSmoothing), (0..<1).contains(dropout) else { throw ValidationError("--label-smoothing is 0-0.5, --dropout 0-1.") }
        guard widthDivisor >= 1 else { throw ValidationError("--width-divisor must be at least 1.") }
        guard (0...Model.maxThreads).contains(threads) else { throw ValidationError("--threads is 0 (every core) to \(Model.maxThreads).") }
    }

    var configuration: TrainingConfiguration {
        var c = TrainingConfiguration()
        c.epochs = epochs
        c.batchSize = batchSize
        c.optimizer = optimizer
        c.learningRate = learningRate
        c.momentum = momentum
        c.weightDecay = weightDecay
        c.schedule = schedule
        c.stepEpochs = stepEpochs
        c.stepFactor = stepFactor
        c.warmupEpochs = warmupEpochs
        c.clipNorm = clipNorm
        c.balance = balance
        c.labelSmoothing = labelSmoothing
        c.augment = augment
        c.batchNorm = batchNorm
        c.dropout = dropout
        c.inputSize = inputSize
        c.widthDivisor = widthDivisor
        c.seed = seed
        c.splitSeed = splitSeed
        c.threads = threads
        return c
    }
}

/// A genre head on a pretrained backbone: `covergenre train --backbone`'s options, the fields of
/// `TransferConfiguration`.
struct TransferOptions: ParsableArguments {
    @Option(help: "Transfer learning: a pretrained model to use as a frozen backbone (e.g. from `covergenre import`).")
    var backbone: String?
    @Option(help: "Backbone features: pooled, or stats (pooled + every stage's per-channel mean and std).")
    var features: FeatureKind = .stats
    @Option(help: "Cached views per training image for the head (plain, mirror, then random augmentations).")
    var views = 4
    // The head's defaults are the shipped default model's recipe (scripts/default-recipe.sh).
    @Option(help: "Head: hidden layer width (0 = linear).") var headHidden = 512
    @Option(help: "Head: epochs on cached features.") var headEpochs = 40
    @Option(help: "Head: dropout.") var headDropout = 0.6
    @Option(help: "Head: learning rate.") var headLearningRate = 1e-3
    @Option(help: "Head: weight decay.") var headWeightDecay = 0.01
    @Option(help: "Fine-tune this many of the backbone's last convolutions after the head (0 = head only).")
    var trainLast = 0
    @Option(help: "Fine-tuning: backbone learning rate relative to --learning-rate.") var backboneLrScale = 0.1
    @Flag(inversion: .prefixedNo, help: "Average each cover's probabilities with its mirror image's (backbone models).")
    var flipAverage = true
    @Option(help: "Backbone input size in pixels (default: the backbone's).") var backboneInputSize: Int?
    @Option(help: "Backbone resize policy (default: the backbone's).") var resize: ResizeChoice?

    func validate() throws {
        guard views >= 1, headEpochs >= 1, headHidden >= 0, trainLast >= 0 else {
            throw ValidationError("--views and --head-epochs must be at least 1, --head-hidden and --train-last at least 0.")
        }
        guard (0..<1).contains(headDropout) else { throw ValidationError("--head-dropout is 0-1.") }
    }

    /// The transfer configuration on `backbone` (default: --backbone), nil without one. The head's
    /// balancing is the run's (none becomes class weights: a head on few covers needs them).
    func configuration(backbone: String? = nil, balance: TrainingConfiguration.Balance, labelSmoothing: Float) -> TransferConfiguration? {
        guard let backbone = backbone ?? self.backbone else { return nil }
        var t = TransferConfiguration(backbone: backbone)
        t.features = features
        t.views = views
        t.head.hidden = headHidden
        t.head.epochs = headEpochs
        t.head.dropout = headDropout
        t.head.learningRate = headLearningRate
        t.head.weightDecay = headWeightDecay
        t.head.labelSmoothing = labelSmoothing
        t.head.balance = balance == .none ? .weights : balance
        t.trainLast = trainLast
        t.backboneLearningRateScale = backboneLrScale
        t.flipAverage = flipAverage
        t.inputSize = backboneInputSize
        switch resize {
        case nil: break
        case .stretch: t.resize = .stretch
        case .centerCrop: t.resize = .centerCrop(shorterSide: Int((Double(backboneInputSize ?? 224) / 0.875).rounded()))
        }
        return t
    }
}

/// `covergenre train --library`: a genre head trained on the covers of your own tagged albums.
struct LibraryOptions: ParsableArguments {
    @Option(help: "A music library's folder: train on its tagged albums' covers (one per album) instead of --data; the backbone defaults to models/covergenre-default.cgm.")
    var library: String?
    @Option(help: "With --library: the model's genres, comma-separated (default: every genre with at least --min-albums albums).")
    var libraryGenres: String?
    @Option(help: "With --library: fewest albums a genre needs to be one of the model's.")
    var minAlbums = 10
    @Option(help: "With --library: CSV of tag,genre lines mapping your tags before the built-in table.")
    var genreMap: String?

    func validate() throws {
        guard minAlbums >= 1 else { throw ValidationError("--min-albums must be at least 1.") }
        if let libraryGenres {
            guard libraryGenres.split(separator: ",").count >= 2 else { throw ValidationError("--library-genres needs two or more genres.") }
        }
    }

    /// Builds the data set (split by album artist), trains the head on the backbone (default: the
    /// shipped default model in floating point, models/covergenre-default.cgm, whatever
    /// $COVERGENRE_MODEL says: classifying may use an int8 model, training reads float features),
    /// calibrates on val and reports test per genre.
    func train(folder: String, configuration c: TrainingConfiguration, transfer: TransferOptions, out: String, runFolder: String?,
               resume: Bool) throws {
        let albums = try MusicLibrary.albums(under: folder, unreadable: { _, error in
            printError("library: skipped a folder that cannot be read: \(error.message)")
        })
        let names = GenreNames(overrides: try genreMap.map(GenreMapFile.read) ?? [:])
        let chosen = libraryGenres.map { $0.split(separator: ",").map { $0.split(separator: " ").joined(separator: " ") } }
        let data = try LibraryData.build(albums: albums, names: names, genres: chosen, minAlbums: minAlbums, seed: c.splitSeed)
        printError("library: \(albums.count) albums; \(data.dataset.items.count) covers of " + data.dataset.classes.enumerated().map { i, g in
            "\(g) \(data.dataset.items.filter { $0.label == i }.count)" }.joined(separator: ", ")
            + "; split by album artist: " + Split.allCases.map { "\($0.rawValue) \(data.dataset.items(in: $0).count)" }.joined(separator: ", "))
        for line in data.report { printError("library: \(line)") }
        guard !data.dataset.items(in: .test).isEmpty else { throw CLIError("too few album artists to hold any out for testing") }
        let backbone = transfer.backbone ?? ModelArguments.defaultBackbonePath
        let t = transfer.configuration(backbone: backbone, balance: c.balance, labelSmoothing: c.labelSmoothing)!
        let runDirectory = runFolder ?? (out.hasSuffix(".cgm") ? String(out.dropLast(4)) : out) + ".run"
        let uncalibrated = Files.join(runDirectory, "uncalibrated.cgm")
        try Files.makeDirectories(runDirectory)
        try TransferTrainer(configuration: c, transfer: t, dataset: data.dataset, runDirectory: runDirectory, output: uncalibrated,
                            log: printError).run(resume: resume)
        // Calibrated on val, then scored once on test: the figures a user can trust.
        var trainedOptions = ModelOptions()
        trainedOptions.threads = c.threads
        let trained = try Model(path: uncalibrated, options: trainedOptions)
        let validation = data.dataset.items(in: .val)
        if validation.count >= Calibrate.minimumImages {
            try Calibrate.calibrate(model: trained, path: uncalibrated, items: validation, classes: data.dataset.classes,
                                    source: "\(Files.baseName(folder)) (val split, by album artist)", out: out)
        } else {
            try Files.writeAtomically(out, try Files.read(uncalibrated))
            printError("library: \(validation.count) validation albums are too few to calibrate on (\(Calibrate.minimumImages) needed): "
                + "the model's probabilities are uncalibrated")
        }
        var options = ModelOptions()
        options.threads = c.threads
        let model = try Model(path: out, options: options)
        let test = try Evaluation.evaluate(model, items: data.dataset.items(in: .test), classes: data.dataset.classes,
                                           threads: model.threads, label: "test")
        print("test (\(test.total) albums of artists held out): accuracy \(Format.percent(test.accuracy)), balanced accuracy \(Format.percent(test.balancedAccuracy)), macro-F1 \(Format.percent(test.macroF1))")
        for (i, genre) in test.classes.enumerated() where test.support(i) > 0 {
            print("  \(pad(genre, 12)) \(Format.percent(Double(test.counts[i][i]) / Double(test.support(i)))) of \(test.support(i))")
        }
        if let ece = test.ece15 { print("  ECE (15 bins) on test: \(Format.fixed(ece, 4))") }
        print("model: \(out); run folder: \(runDirectory)")
        print("next: covergenre scan --model \(out) --missing \(folder)")
    }
}
