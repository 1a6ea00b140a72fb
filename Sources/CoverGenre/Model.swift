import Graph
import ImageIO
import Inference
import Kernels
import ModelFormat
import Synchronization
import SystemIO
#if canImport(Glibc)
import Glibc
#endif

// `import CoverGenre` gives exactly what this file declares public: Model, ModelOptions,
// Prediction, ImageInput, and the two types they use from the modules below it. Everything else
// (graphs, model files, kernels) is `package`: shared with the CLI, the C API and training, never
// part of what a Swift client depends on.

/// What every throwing call throws: `code` (a `CoverGenreError.Code`, the C API's status) and a
/// `message` for a human.
public typealias CoverGenreError = SystemIO.CoverGenreError
/// Raw RGB pixels, 3 bytes per pixel: `RGBImage(width:height:rgb:)`, for `ImageInput.rgb`.
public typealias RGBImage = ImageIO.RGBImage

/// Options fixed when a model is loaded.
public struct ModelOptions: Sendable {
    /// Threads one call may use: the caller's and `threads - 1` workers the model owns; 0 means
    /// every core. A batch call gives each thread whole images.
    public var threads = 0
    package var fileLimits = ModelFileLimits()
    package var graphLimits = GraphLimits()
    package var imageLimits = ImageLimits()
    /// Winograd F(4x4, 3x3) for 3x3 convolutions: faster, equal to direct convolution up to float
    /// rounding. Turn off for results bit-comparable with im2col.
    public var winograd = true
    /// `classify` returns only the genres at least this probable: none means "unsure". 0 (the
    /// default) returns the `top` genres whatever their probability.
    public var minConfidence: Float = 0
    /// Average each cover's probabilities with its mirror image's: nil (the default) does what the
    /// model file says; false halves the network's work per cover at a small cost in accuracy
    /// (docs/results.md: 1.8 points on discogs5 test for the default model), true adds the mirror
    /// view to a model trained without it.
    public var mirrorView: Bool? = nil

    public init() {}

    /// How the tools spell `mirrorView`: `model` (nil), `on`, `off`.
    public enum MirrorChoice: String, CaseIterable, Sendable {
        case model, on, off
        public var mirrorView: Bool? { self == .model ? nil : self == .on }
    }

    /// Check the model file's XXH64 checksum on load (default true).
    public var verifyChecksum: Bool {
        get { fileLimits.verifyChecksum }
        set { fileLimits.verifyChecksum = newValue }
    }
    /// Refuse larger model files (default 2 GiB).
    public var maxModelBytes: Int {
        get { fileLimits.maxFileBytes }
        set { fileLimits.maxFileBytes = newValue }
    }
    /// Refuse images wider, taller, with more pixels or more encoded bytes than these, before
    /// decoding (defaults 16384, 16384, 64 Mi, 64 MiB).
    public var maxImageWidth: Int {
        get { imageLimits.maxWidth }
        set { imageLimits.maxWidth = newValue }
    }
    public var maxImageHeight: Int {
        get { imageLimits.maxHeight }
        set { imageLimits.maxHeight = newValue }
    }
    public var maxImagePixels: Int {
        get { imageLimits.maxPixels }
        set { imageLimits.maxPixels = newValue }
    }
    public var maxImageBytes: Int {
        get { imageLimits.maxFileBytes }
        set { imageLimits.maxFileBytes = newValue }
    }
}

/// One class and its probability.
public struct Prediction: Equatable, Sendable {
    public let index: Int
    public let label: String
    public let probability: Float
}

/// An image to classify.
public enum ImageInput {
    case path(String)
    /// Encoded JPEG/PNG/WebP bytes, read during the call only.
    case encoded(UnsafeRawBufferPointer)
    case bytes([UInt8])
    case rgb(RGBImage)
}

/// A loaded model: immutable and safe to use from any number of threads at once.
public final class Model: @unchecked Sendable {
    /// The most threads a model may be given (`ModelOptions.threads`); more is refused at load.
    public static let maxThreads = 1024
    package let description: ModelDescription
    package let file: ModelFile
    package let graph: CompiledGraph
    /// Threads one call uses.
    public let threads: Int
    /// The calibration temperature the probabilities use (1: none; see `covergenre calibrate`).
    public let temperature: Double
    /// `classify`'s confidence threshold (ModelOptions.minConfidence).
    public let minConfidence: Float
    private let inverseTemperature: Float
    package let imageLimits: ImageLimits
    /// Buffers: one context per call in progress, reused.
    private let pool: ContextPool
    /// Threads: `threads - 1` workers shared by every call, whoever calls.
    private let scheduler: Scheduler

    public convenience init(path: String, options: ModelOptions = ModelOptions()) throws {
        try self.init(file: try ModelFile(path: path, limits: options.fileLimits), options: options)
    }

    /// Loads a model from bytes in memory (copied; the caller may free them afterwards).
    public convenience init(bytes: UnsafeRawBufferPointer, options: ModelOptions = ModelOptions()) throws {
        try self.init(file: try ModelFile(copying: bytes, limits: options.fileLimits), options: options)
    }

    /// Loads a model from the bytes of a .cgm file (copied).
    public convenience init(bytes: [UInt8], options: ModelOptions = ModelOptions()) throws {
        let file = try bytes.withUnsafeBytes { try ModelFile(copying: $0, limits: options.fileLimits) }
        try self.init(file: file, options: options)
    }

    package init(file: ModelFile, options: ModelOptions = ModelOptions()) throws {
        let description = try ModelDescription(json: file.metadata, limits: options.graphLimits)
        let graph = try CompiledGraph(graph: description.graph, weights: file, limits: options.graphLimits, winograd: options.winograd)
        guard graph.classCount == description.labels.count else {
            throw CoverGenreError(.modelFormat, "the graph outputs \(graph.classCount) scores for \(description.labels.count) labels")
        }
        guard graph.inputShape.channels == 3 else {
            throw CoverGenreError(.modelUnsupported, "the graph takes \(graph.inputShape.channels) channels; covers are RGB")
        }
        self.description = description
        self.file = file
        self.graph = graph
        // The cap is the model's policy, not its callers': every front end (C API, CLI, server,
        // Python) gets the same refusal instead of a pool of 99,999 workers.
        guard (0...Model.maxThreads).contains(options.threads) else {
            throw CoverGenreError(.invalidArgument, "threads \(options.threads) is outside 0...\(Model.maxThreads) (0 = every core)")
        }
        self.threads = options.threads > 0 ? options.threads : Parallel.availableCores
        guard options.minConfidence.isFinite, (0...1).contains(options.minConfidence) else {
            throw CoverGenreError(.invalidArgument, "min_confidence \(options.minConfidence) is outside 0...1")
        }
        self.minConfidence = options.minConfidence
        self.views = options.mirrorView ?? description.preprocessing.flipAverage ? 2 : 1
        self.temperature = description.temperature
        // Exactly 1 when uncalibrated, so probabilities stay bit-identical to an uncalibrated softmax.
        self.inverseTemperature = Float(1 / description.temperature)
        self.imageLimits = options.imageLimits
        // Calls beyond what the cores can run at once wait for a context (asleep, in order)
        // rather than each holding activation buffers that evict the others' from the caches.
        self.pool = ContextPool(graph: graph, maxInFlight: max(threads, Parallel.availableCores) + 1)
        self.scheduler = Scheduler(threads: threads)
    }

    public var labels: [String] { description.labels }
    /// The model's name and architecture ("efficientnet-lite0", ...), from its metadata.
    public var name: String { description.name }
    public var architecture: String { description.architecture }
    public var classCount: Int { description.labels.count }
    public var inputWidth: Int { graph.inputShape.width }
    public var inputHeight: Int { graph.inputShape.height }
    /// Length of `embedding(_:)`'s vector (0 when the model names no embedding).
    public var embeddingSize: Int { graph.embeddingSize }
    private var inputCount: Int { graph.inputShape.count }
    /// Images run per cover: 2 when the cover's probabilities are averaged with its mirror image's.
    public let views: Int

    // MARK: Single images

    /// Class probabilities (softmax of the logits; averaged over the mirror image when the model
    /// asks for it).
    public func probabilities(_ input: ImageInput) throws -> [Float] {
        var out = [Float](repeating: 0, count: classCount)
        try out.withUnsafeMutableBufferPointer { try probabilities(input, into: $0) }
        return out
    }

    /// The same, written into caller-provided storage of at least `classCount` floats.
    public func probabilities(_ input: ImageInput, into out: UnsafeMutableBufferPointer<Float>) throws {
        try checkCapacity(out.count, classCount, "probabilities")
        let image = try decode(input)
        out.update(repeating: 0)
        try runViews(image, threads: threads) { addProbabilities($0, into: out.baseAddress!) }
        try Model.clampProbabilities(UnsafeMutableBufferPointer(rebasing: out[0..<classCount]))
    }

    /// The `top` most probable classes, most probable first; with `minConfidence` set, only those
    /// at least that probable (an empty answer: the model is unsure).
    public func classify(_ input: ImageInput, top: Int = 3) throws -> [Prediction] {
        predictions(try probabilities(input), top: top)
    }

    /// The penultimate feature vector (the model's "embedding" node), for similarity search.
    public func embedding(_ input: ImageInput) throws -> [Float] {
        var out = [Float](repeating: 0, count: embeddingSize)
        try out.withUnsafeMutableBufferPointer { try embedding(input, into: $0) }
        return out
    }

    public func embedding(_ input: ImageInput, into out: UnsafeMutableBufferPointer<Float>) throws {
        guard embeddingSize > 0 else { throw CoverGenreError(.invalidArgument, "this model has no embedding output") }
        try checkCapacity(out.count, embeddingSize, "embedding")
        let image = try decode(input)
        out.update(repeating: 0)
        try runViews(image, threads: threads) { addEmbedding($0, into: out.baseAddress!) }
    }

    /// The `top` most probable of `probabilities`, most probable first, leaving out those below
    /// `minConfidence`.
    public func predictions(_ probabilities: [Float], top: Int) -> [Prediction] {
        let order = probabilities.indices.sorted { probabilities[$0] > probabilities[$1] || (probabilities[$0] == probabilities[$1] && $0 < $1) }
        return order.prefix(max(0, top)).filter { probabilities[$0] >= minConfidence }
            .map { Prediction(index: $0, label: labels[$0], probability: probabilities[$0]) }
    }

    // MARK: Many images

    /// What a batch call computes for each image.
    package enum BatchOutput: Sendable {
        case probabilities
        case embedding
    }

    /// Probabilities for many images, decoded and run in parallel: each of up to `threads` threads
    /// (default and at most: the model's) takes whole images, so both decoding and inference use
    /// every core. A failing image gives its error in its slot; it never fails the others.
    public func probabilities(batch inputs: [ImageInput], threads: Int? = nil) -> [Result<[Float], CoverGenreError>] {
        collect(inputs, .probabilities, threads: threads)
    }

    /// Embeddings for many images, the same way as `probabilities(batch:threads:)`.
    public func embeddings(batch inputs: [ImageInput], threads: Int? = nil) -> [Result<[Float], CoverGenreError>] {
        collect(inputs, .embedding, threads: threads)
    }

    private func collect(_ inputs: [ImageInput], _ output: BatchOutput, threads: Int?) -> [Result<[Float], CoverGenreError>] {
        var results = [Result<[Float], CoverGenreError>](repeating: .failure(CoverGenreError(.internal, "not run")), count: inputs.count)
        results.withUnsafeMutableBufferPointer { slots in
            forEachResult(count: inputs.count, output, threads: threads, input: { inputs[$0] }) { i, result in
                slots[i] = result.map { Array($0) }
            }
        }
        return results
    }

    /// The one batch implementation (Swift's batch calls and the C API's `*_files` calls): for
    /// each i in 0..<count, takes `input(i)` (which may throw, failing only image i), computes
    /// `output` with one thread per image, and hands the result to `deliver(i, result)` on the
    /// thread that computed it, with a buffer valid only during that call. Up to `threads` threads
    /// (default and at most: the model's) run at once, each taking the next image when free.
    package func forEachResult(count: Int, _ output: BatchOutput, threads: Int? = nil, input: (Int) throws -> ImageInput,
                              _ deliver: (Int, Result<UnsafeBufferPointer<Float>, CoverGenreError>) -> Void) {
        let size = output == .probabilities ? classCount : embeddingSize
        if output == .embedding, size == 0 {
            let error = CoverGenreError(.invalidArgument, "this model has no embedding output")
            for i in 0..<count { deliver(i, .failure(error)) }
            return
        }
        let threads = min(max(threads ?? self.threads, 1), self.threads)
        // One image gets every thread on its layers; several get one thread each (whole images in
        // parallel also spread decoding). Results are bit-identical either way.
        func one(_ i: Int, threads perImage: Int) {
            var values = [Float](repeating: 0, count: size)
            do {
                let image = try decode(try input(i))
                try values.withUnsafeMutableBufferPointer { out in
                    try runViews(image, threads: perImage) { context in
                        switch output {
                        case .probabilities: addProbabilities(context, into: out.baseAddress!)
                        case .embedding: addEmbedding(context, into: out.baseAddress!)
                        }
                    }
                }
                if output == .probabilities { try values.withUnsafeMutableBufferPointer { try Model.clampProbabilities($0) } }
                values.withUnsafeBufferPointer { deliver(i, .success($0)) }
            } catch {
                deliver(i, .failure(Model.wrap(error)))
            }
        }
        if count == 1 {
            one(0, threads: threads)
        } else {
            forEachInParallel(count, threads: threads) { i in one(i, threads: 1) }
        }
    }

    /// Probabilities are reported inside [0, 1] whatever the CPU's rounding did to the softmax and
    /// the view average (a caller's schema may say `maximum: 1`). NaN has no place in the range:
    /// it comes only from damaged or hostile weights, and is an error rather than a number.
    package static func clampProbabilities(_ values: UnsafeMutableBufferPointer<Float>) throws {
        for i in values.indices {
            guard !values[i].isNaN else {
                throw CoverGenreError(.internal, "the model computed a NaN probability: its weights are damaged (or hostile)")
            }
            values[i] = min(max(values[i], 0), 1)
        }
    }

    /// Runs `body(i)` for i in 0..<count on the calling thread and up to `threads - 1` of the
    /// model's workers, each taking the next index when free (images differ in decoding cost, so
    /// fixed blocks would leave a thread idle). Workers busy with other calls are not waited for.
    package func forEachInParallel(_ count: Int, threads: Int, _ body: (Int) -> Void) {
        guard count > 0 else { return }
        let next = Atomic<Int>(0)
        let lanes = min(max(threads, 1), count)
        scheduler.run {
            scheduler.fork(lanes, maxThreads: lanes) { _ in
                while true {
                    let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
                    if i >= count { break }
                    body(i)
                }
            }
        }
    }

    // MARK: Tensors

    /// Runs already preprocessed NHWC input (`batch` images of inputHeight x inputWidth x 3) and
    /// writes `batch x classCount` logits. Batches are split into per-thread groups of whole
    /// images. This is the engine without image handling: parity tests and benchmarks use it.
    public func logits(preprocessed input: UnsafePointer<Float>, batch: Int, into out: UnsafeMutablePointer<Float>,
                       threads: Int? = nil) throws {
        try runTensor(input, batch: batch, threads: threads ?? self.threads) { context, image in
            (out + image * classCount).update(from: context.logits(0).baseAddress!, count: classCount)
        }
    }

    /// Like `logits`, for the embedding vectors (batch x embeddingSize).
    public func embeddings(preprocessed input: UnsafePointer<Float>, batch: Int, into out: UnsafeMutablePointer<Float>,
                           threads: Int? = nil) throws {
        guard embeddingSize > 0 else { throw CoverGenreError(.invalidArgument, "this model has no embedding output") }
        try runTensor(input, batch: batch, threads: threads ?? self.threads) { context, image in
            (out + image * embeddingSize).update(from: context.embedding(0)!.baseAddress!, count: embeddingSize)
        }
    }

    /// Runs each image of the batch through a batch-1 context and calls `collect(context, image)`.
    private func runTensor(_ input: UnsafePointer<Float>, batch: Int, threads: Int,
                           _ collect: (ExecutionContext, Int) -> Void) throws {
        guard batch > 0 else { return }
        if batch == 1 {
            // The call counts as in progress while it waits for its context too (see runViews).
            try scheduler.run {
                try pool.withContext(batch: 1, threads: threads) { context in
                    context.input.update(from: input, count: inputCount)
                    context.run()
                    collect(context, 0)
                }
            }
            return
        }
        // One owner of parallelism: threads take whole images and run them one at a time,
        // single-threaded. Layer by layer over a large batch every activation tensor leaves the
        // caches (Lite0's largest is 4.8 MB per image). Lite0, batch 16, 1 thread: 314 ms as one
        // batch, 228 ms one image at a time (2, 4 and 8 images at a time were no better).
        var failure: CoverGenreError?
        let lock = Locked<Void>(())
        forEachInParallel(batch, threads: threads) { image in
            do {
                try pool.withContext(batch: 1, threads: 1) { context in
                    context.input.update(from: input + image * inputCount, count: inputCount)
                    context.run()
                    collect(context, image)
                }
            } catch {
                lock.withLock { _ in failure = Model.wrap(error) }
            }
        }
        if let failure { throw failure }
    }

    // MARK: Preprocessing

    /// Decodes an input, using JPEG DCT scaling when the image is far larger than needed.
    package func decode(_ input: ImageInput) throws -> RGBImage {
        let minimumSize: Int
        switch description.preprocessing.resize {
        case .centerCrop(let side): minimumSize = side
        case .stretch: minimumSize = max(inputWidth, inputHeight)
        }
        switch input {
        case .path(let path):
            // An audio file stands for its front cover (AudioFile: TagLib), which is then decoded
            // under the same limits as an image file of its own.
            switch try CoverFile.read(path, maxBytes: imageLimits.maxFileBytes) {
            case .image(let bytes): return try decode(bytes, minimumSize: minimumSize, naming: "\(path): ")
            case .audio(let cover): return try decode(cover, minimumSize: minimumSize, naming: "\(path): the embedded cover: ")
            }
        case .encoded(let bytes): return try decode(encoded: bytes, minimumSize: minimumSize)
        case .bytes(let bytes): return try bytes.withUnsafeBytes { try decode(encoded: $0, minimumSize: minimumSize) }
        case .rgb(let image):
            guard image.width > 0, image.height > 0 else { throw CoverGenreError(.invalidArgument, "image has no pixels") }
            guard image.width <= imageLimits.maxWidth, image.height <= imageLimits.maxHeight,
                  image.width * image.height <= imageLimits.maxPixels else {
                throw CoverGenreError(.imageTooLarge, "image is \(image.width)x\(image.height); beyond the configured limits")
            }
            return image
        }
    }

    /// Encoded bytes: an image, or an audio file whose embedded front cover stands for it (an
    /// HTTP body, a caller's buffer), decoded under the same limits.
    private func decode(encoded bytes: UnsafeRawBufferPointer, minimumSize: Int) throws -> RGBImage {
        guard let cover = try CoverFile.embeddedCover(bytes: bytes, maxBytes: imageLimits.maxFileBytes) else {
            return try ImageDecoder.decode(bytes, limits: imageLimits, minimumSize: minimumSize)
        }
        return try decode(cover, minimumSize: minimumSize, naming: "the embedded cover: ")
    }

    /// Decodes encoded image bytes, the error's message starting with where they came from.
    private func decode(_ encoded: [UInt8], minimumSize: Int, naming origin: String) throws -> RGBImage {
        do {
            return try ImageDecoder.decode(encoded, limits: imageLimits, minimumSize: minimumSize)
        } catch let error as CoverGenreError {
            throw CoverGenreError(error.code, origin + error.message)
        }
    }

    /// Writes the model's input for `image` (resized, cropped, normalized) at `output`.
    package func preprocess(_ image: RGBImage, mirror: Bool = false, into output: UnsafeMutablePointer<Float>) throws {
        let p = description.preprocessing
        let r = p.sourceRegion(imageWidth: image.width, imageHeight: image.height, outWidth: inputWidth, outHeight: inputHeight)
        try ImageResampler.resample(image, region: (r.0, r.1, r.2, r.3), width: inputWidth, height: inputHeight,
                                    mirror: mirror, into: output)
        ImageResampler.normalize(output, count: inputWidth * inputHeight, mean: p.mean, std: p.std)
    }

    /// Runs the image (and its mirror, for flip-averaging models), calling `add` once per view.
    /// With two threads the two views run at once, one per thread, each through a
    /// single-threaded context, as a batch of two does: splitting one view's layers across two
    /// threads waits at every layer for the slower thread, and on a shared machine a descheduled
    /// thread stalls both (a 500-pixel JPEG, 2 threads, AVX2 machine: 28.5 ms per cover that way,
    /// 21.7 ms a view per thread; medians of 8 interleaved rounds, docs/performance.md). With more
    /// threads each view uses them all, one view at a time (not measured on this 2-core machine,
    /// so left as it was). `add` may see the views in either order: it sums them into zeroed
    /// outputs, and a sum of two floats does not depend on their order.
    private func runViews(_ image: RGBImage, threads: Int, _ add: (ExecutionContext) -> Void) throws {
        if views == 2 && threads == 2 {
            try runViewsAtOnce(image, add)
            return
        }
        func run() throws {
            try pool.withContext(batch: 1, threads: threads) { context in
                guard views == 2 else {
                    try preprocess(image, into: context.input)
                    context.run()
                    add(context)
                    return
                }
                // The mirror view is the plain view with its columns reversed, bit for bit (the
                // resampler mirrors by where it stores columns, and normalization is per pixel), so
                // the image is resampled once and the mirror made by a copy. The network may use its
                // input buffer as scratch, so the plain view is kept aside in the context.
                let plain = try context.spareInput()
                try preprocess(image, into: plain)
                context.input.update(from: plain, count: inputCount)
                context.run()
                add(context)
                ImageResampler.mirrorColumns(plain, width: inputWidth, height: inputHeight, into: context.input)
                context.run()
                add(context)
            }
        }
        // A call is in progress for the scheduler from before it waits for a context: calls queued
        // for admission mean every core is taken, so no region recruits workers that would only
        // compete with them. A single-threaded run (a batch call's image) is already inside one.
        if threads > 1 { try scheduler.run { try run() } } else { try run() }
    }

    /// The two views at once, one per thread; `add` runs under a lock.
    private func runViewsAtOnce(_ image: RGBImage, _ add: (ExecutionContext) -> Void) throws {
        let failure = Locked<CoverGenreError?>(nil)
        scheduler.run {
            scheduler.fork(2, maxThreads: 2) { view in
                do {
                    try pool.withContext(batch: 1, threads: 1) { context in
                        try preprocess(image, mirror: view == 1, into: context.input)
                        context.run()
                        failure.withLock { _ in add(context) }
                    }
                } catch {
                    failure.withLock { $0 = $0 ?? Model.wrap(error) }
                }
            }
        }
        if let failure = failure.withLock({ $0 }) { throw failure }
    }

    /// Adds the softmax of the context's logits divided by the temperature, divided by the number
    /// of views, to `out` (zeroed by the caller before the first view).
    private func addProbabilities(_ context: ExecutionContext, into out: UnsafeMutablePointer<Float>) {
        let logits = context.logits(0)
        let peak = logits.max() ?? 0
        var total: Float = 0
        for c in 0..<classCount { total += expf((logits[c] - peak) * inverseTemperature) }
        for c in 0..<classCount { out[c] = out[c] + expf((logits[c] - peak) * inverseTemperature) / total / Float(views) }
    }

    /// The raw logits of every view of one image (the image, then its mirror for flip-averaging
    /// models), on the calling thread: what calibration is fitted on.
    package func viewLogits(_ input: ImageInput) throws -> [[Float]] {
        let image = try decode(input)
        var result: [[Float]] = []
        try runViews(image, threads: 1) { result.append(Array($0.logits(0))) }
        return result
    }

    private func addEmbedding(_ context: ExecutionContext, into out: UnsafeMutablePointer<Float>) {
        let e = context.embedding(0)!
        for c in 0..<embeddingSize { out[c] = out[c] + e[c] / Float(views) }
    }

    private func checkCapacity(_ have: Int, _ need: Int, _ what: String) throws {
        guard have >= need else { throw CoverGenreError(.bufferTooSmall, "\(what) needs \(need) floats; the buffer holds \(have)") }
    }

    static func wrap(_ error: Error) -> CoverGenreError {
        error as? CoverGenreError ?? CoverGenreError(.internal, "\(error)")
    }
}
