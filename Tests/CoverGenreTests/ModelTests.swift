import Architectures
import CoverGenre
import Graph
import ImageIO
import ModelFormat
import SystemIO
import Training
import Dispatch
import Synchronization
import TestSupport
import XCTest

/// The public Swift API on small models the tests make themselves.
final class ModelTests: XCTestCase {
    static let labels = SmallModels.labels

    /// A small EfficientNet-Lite-shaped model (random weights) written to a temporary file.
    static func makeModel(flipAverage: Bool = false, storage: DType = .float32) throws -> (path: String, bytes: [UInt8]) {
        let bytes = try SmallModels.lite(flipAverage: flipAverage, storage: storage)
        let path = temporaryPath("model.cgm")
        try Files.writeAtomically(path, bytes)
        return (path, bytes)
    }

    func testThreadsBeyondTheCapAreRefusedAtLoad() throws {
        let path = try Self.makeModel().path
        for threads in [-1, Model.maxThreads + 1, 100_000] {
            var options = ModelOptions()
            options.threads = threads
            XCTAssertThrowsError(try Model(path: path, options: options), "\(threads)") { error in
                XCTAssertEqual((error as? CoverGenreError)?.code, .invalidArgument)
                XCTAssertTrue("\(error)".contains("0...\(Model.maxThreads)"), "\(error)")
            }
        }
        var options = ModelOptions()
        options.threads = Model.maxThreads
        XCTAssertEqual(try Model(path: path, options: options).threads, Model.maxThreads)
    }

    func testProbabilitiesAreClampedToZeroOne() throws {
        var values: [Float] = [1.0000001, -1e-9, 0.5, 1]
        try values.withUnsafeMutableBufferPointer { try Model.clampProbabilities($0) }
        XCTAssertEqual(values, [1, 0, 0.5, 1])
        var broken: [Float] = [0.5, .nan]
        XCTAssertThrowsError(try broken.withUnsafeMutableBufferPointer { try Model.clampProbabilities($0) }) { error in
            XCTAssertEqual((error as? CoverGenreError)?.code, .internal)
        }
    }

    /// A batch of one is the single-image call (the model's threads on one image), bit for bit.
    func testABatchOfOneEqualsTheSingleImageCall() throws {
        var options = ModelOptions()
        options.threads = 2
        let model = try Model(path: try Self.makeModel(flipAverage: true).path, options: options)
        let jpeg = try Fixtures.jpeg(Fixtures.quadrants(width: 90, height: 70), width: 90, height: 70)
        XCTAssertEqual(try model.probabilities(batch: [.bytes(jpeg)])[0].get(), try model.probabilities(.bytes(jpeg)))
        XCTAssertEqual(try model.embeddings(batch: [.bytes(jpeg)])[0].get(), try model.embedding(.bytes(jpeg)))
        XCTAssertEqual(try model.probabilities(batch: [.bytes(jpeg), .bytes(jpeg)])[1].get(), try model.probabilities(.bytes(jpeg)))
    }

    func testClassifiesJPEGPNGAndWebPFromFilesAndBytes() throws {
        let model = try Model(path: try Self.makeModel().path)
        XCTAssertEqual(model.labels, Self.labels)
        XCTAssertEqual(model.embeddingSize, 32)
        let rgb = Fixtures.quadrants(width: 90, height: 70)
        let files: [(String, [UInt8])] = [
            ("cover.jpg", try Fixtures.jpeg(rgb, width: 90, height: 70)),
            ("cover.png", try ImageEncoder.png(rgb, width: 90, height: 70)),
            ("cover.webp", try rgb.withUnsafeBufferPointer { try ImageEncoder.webp($0.baseAddress!, width: 90, height: 70) }),
        ]
        for (name, bytes) in files {
            let path = temporaryPath(name)
            try Files.writeAtomically(path, bytes)
            let fromFile = try model.probabilities(.path(path))
            XCTAssertEqual(fromFile.reduce(0, +), 1, accuracy: 1e-5, name)
            XCTAssertEqual(try model.probabilities(.bytes(bytes)), fromFile, name)
            let top = try model.classify(.path(path), top: 2)
            XCTAssertEqual(top.count, 2)
            XCTAssertGreaterThanOrEqual(top[0].probability, top[1].probability)
            XCTAssertEqual(top[0].label, Self.labels[top[0].index])
        }
        // Lossless formats give identical pixels, hence identical probabilities.
        XCTAssertEqual(try model.probabilities(.bytes(files[1].1)), try model.probabilities(.bytes(files[2].1)))
        XCTAssertEqual(try model.probabilities(.rgb(RGBImage(width: 90, height: 70, rgb: rgb))),
                       try model.probabilities(.bytes(files[1].1)))
    }

    func testFloat16StorageStaysCloseToFloat32() throws {
        let f32 = try Model(path: try Self.makeModel().path), f16 = try Model(path: try Self.makeModel(storage: .float16).path)
        let image = RGBImage(width: 64, height: 64, rgb: Fixtures.quadrants(width: 64, height: 64))
        let a = try f32.probabilities(.rgb(image)), b = try f16.probabilities(.rgb(image))
        XCTAssertLessThan(maxRelativeError(a, b), 1e-2)
        XCTAssertLessThan(f16.file.fileSize, f32.file.fileSize)
    }

    /// A temperature in the file divides the logits before the softmax, for every view; the
    /// ranking (hence accuracy) is unchanged. min_confidence leaves only sure answers.
    func testTemperatureAndMinConfidence() throws {
        let (path, bytes) = try Self.makeModel(flipAverage: true)
        let file = try ModelFile(copying: bytes.withUnsafeBytes { $0 }, limits: ModelFileLimits())
        var description = try ModelDescription(json: file.metadata)
        description.temperature = 2.5
        var writer = ModelWriter(metadata: description.json)
        for info in file.tensors { try writer.add(info.name, shape: info.shape, values: try file.floats(info.name).array, storage: info.dtype) }
        let calibratedPath = temporaryPath("calibrated.cgm")
        try writer.write(to: calibratedPath)
        let plain = try Model(path: path), calibrated = try Model(path: calibratedPath)
        XCTAssertEqual(plain.temperature, 1)
        XCTAssertEqual(calibrated.temperature, 2.5)
        let image = RGBImage(width: 40, height: 30, rgb: Fixtures.quadrants(width: 40, height: 30))
        let views = try plain.viewLogits(.rgb(image))
        XCTAssertEqual(views.count, 2)
        let expected = Calibration.probabilities(Calibration.Sample(viewLogits: views, truth: 0), temperature: 2.5)
        let got = try calibrated.probabilities(.rgb(image))
        for c in got.indices { XCTAssertEqual(Double(got[c]), expected[c], accuracy: 1e-5) }
        XCTAssertEqual(try plain.classify(.rgb(image), top: 5).map(\.index), try calibrated.classify(.rgb(image), top: 5).map(\.index))
        // Uncalibrated models keep their exact softmax (temperature 1 multiplies by exactly 1).
        let raw = Calibration.probabilities(Calibration.Sample(viewLogits: views, truth: 0), temperature: 1)
        for (c, p) in try plain.probabilities(.rgb(image)).enumerated() { XCTAssertEqual(Double(p), raw[c], accuracy: 1e-6) }

        var options = ModelOptions()
        options.minConfidence = 0.99
        XCTAssertEqual(try Model(path: calibratedPath, options: options).classify(.rgb(image), top: 3), [])
        options.minConfidence = 0
        XCTAssertEqual(try Model(path: calibratedPath, options: options).classify(.rgb(image), top: 3).count, 3)
        options.minConfidence = 1.5
        XCTAssertThrowsError(try Model(path: calibratedPath, options: options))
        // A temperature outside 0.01...100 is a model format error, not a division by zero.
        description.temperature = 0
        var bad = ModelWriter(metadata: description.json)
        for info in file.tensors { try bad.add(info.name, shape: info.shape, values: try file.floats(info.name).array, storage: info.dtype) }
        XCTAssertThrowsError(try bad.serialize().withUnsafeBytes { try Model(bytes: $0) }) {
            XCTAssertEqual(($0 as? CoverGenreError)?.code, .modelFormat)
        }
    }

    func testFlipAverageIsTheMeanOfBothViews() throws {
        let (path, _) = try Self.makeModel()
        let plain = try Model(path: path)
        let flipped = try Model(path: try Self.makeModel(flipAverage: true).path)
        var random = TestRandom(seed: 5)
        let width = 60, height = 50
        let rgb = random.bytes(width * height * 3)
        var mirrored = rgb
        for y in 0..<height { for x in 0..<width { for c in 0..<3 { mirrored[(y * width + x) * 3 + c] = rgb[(y * width + width - 1 - x) * 3 + c] } } }
        let a = try plain.probabilities(.rgb(RGBImage(width: width, height: height, rgb: rgb)))
        let b = try plain.probabilities(.rgb(RGBImage(width: width, height: height, rgb: mirrored)))
        let both = try flipped.probabilities(.rgb(RGBImage(width: width, height: height, rgb: rgb)))
        for c in 0..<a.count { XCTAssertEqual(both[c], (a[c] + b[c]) / 2, accuracy: 1e-5) }
    }

    func testEmbeddingIsThePooledFeatureVector() throws {
        let model = try Model(path: try Self.makeModel().path)
        let image = RGBImage(width: 64, height: 64, rgb: Fixtures.quadrants(width: 64, height: 64))
        let embedding = try model.embedding(.rgb(image))
        XCTAssertEqual(embedding.count, 32)
        XCTAssertTrue(embedding.allSatisfy { $0 >= 0 && $0 <= 6 }) // means of ReLU6 outputs
        XCTAssertEqual(try model.embedding(.rgb(image)), embedding)
    }

    func testBatchReportsEachFailureInItsOwnSlot() throws {
        let model = try Model(path: try Self.makeModel().path)
        let good = temporaryPath("good.png")
        try Files.writeAtomically(good, try ImageEncoder.png(Fixtures.quadrants(width: 30, height: 30), width: 30, height: 30))
        let text = temporaryPath("notes.txt")
        try Files.writeAtomically(text, Array("not an image".utf8))
        let results = model.probabilities(batch: [.path(good), .path(text), .path("/nonexistent/cover.jpg"), .path(good)])
        // Batch calls run each image on one thread; a single call splits layers across threads, and
        // OpenBLAS may block differently, so the two agree to rounding, not to the bit.
        XCTAssertLessThan(maxRelativeError(try results[0].get(), try model.probabilities(.path(good))), 1e-5)
        XCTAssertEqual(try results[3].get(), try results[0].get())
        XCTAssertThrowsError(try results[1].get()) { XCTAssertEqual(($0 as? CoverGenreError)?.code, .imageUnsupported) }
        XCTAssertThrowsError(try results[2].get()) { XCTAssertEqual(($0 as? CoverGenreError)?.code, .io) }
    }

    func testBatchEmbeddingsEqualSingleThreadedOnesAndReportFailures() throws {
        let model = try Model(path: try Self.makeModel().path)
        var random = TestRandom(seed: 3)
        let images = (0..<5).map { _ in RGBImage(width: 33, height: 47, rgb: random.bytes(33 * 47 * 3)) }
        let inputs = images.map { ImageInput.rgb($0) } + [.path("/nonexistent/cover.png")]
        let results = model.embeddings(batch: inputs, threads: 2)
        for (i, image) in images.enumerated() {
            XCTAssertEqual(try results[i].get(), try model.embedding(.rgb(image)), "image \(i)")
        }
        XCTAssertNotEqual(try results[0].get(), try results[1].get())
        XCTAssertThrowsError(try results[5].get()) { XCTAssertEqual(($0 as? CoverGenreError)?.code, .io) }
    }

    /// Eight threads share one model; every result must equal the sequential one bit for bit.
    func testConcurrentCallsGiveIdenticalResults() throws {
        let model = try Model(path: try Self.makeModel(flipAverage: true).path)
        var random = TestRandom(seed: 8)
        let images = (0..<16).map { _ in RGBImage(width: 40, height: 40, rgb: random.bytes(40 * 40 * 3)) }
        let expected = try images.map { try model.probabilities(.rgb($0)) }
        let mismatches = Atomic<Int>(0), errors = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            for round in 0..<10 {
                let i = (worker * 7 + round) % images.count
                do {
                    if try model.probabilities(.rgb(images[i])) != expected[i] { mismatches.add(1, ordering: .relaxed) }
                } catch {
                    errors.add(1, ordering: .relaxed)
                }
            }
        }
        XCTAssertEqual(mismatches.load(ordering: .relaxed), 0)
        XCTAssertEqual(errors.load(ordering: .relaxed), 0)
    }

    func testCallerBuffersAreCheckedNotOverrun() throws {
        let model = try Model(path: try Self.makeModel().path)
        let image = RGBImage(width: 20, height: 20, rgb: Fixtures.quadrants(width: 20, height: 20))
        var small = [Float](repeating: -1, count: 6)
        XCTAssertThrowsError(try small.withUnsafeMutableBufferPointer { try model.probabilities(.rgb(image), into: UnsafeMutableBufferPointer(rebasing: $0[0..<4])) }) {
            XCTAssertEqual(($0 as? CoverGenreError)?.code, .bufferTooSmall)
        }
        XCTAssertEqual(small, [-1, -1, -1, -1, -1, -1])
    }

    func testDamagedModelFilesAreRefusedWithReasons() throws {
        let (_, bytes) = try Self.makeModel()
        // Every truncation point of a small model: an error, never a crash.
        for length in stride(from: 0, to: bytes.count, by: max(1, bytes.count / 2000)) {
            XCTAssertThrowsError(try bytes.prefix(length).withUnsafeBytes { try Model(bytes: $0) })
        }
        // Metadata that parses but describes an impossible graph.
        var description = try ModelDescription(json: try bytes.withUnsafeBytes { try ModelFile(copying: $0) }.metadata)
        description.graph.nodes[0].inputs = ["nowhere"]
        let file = try bytes.withUnsafeBytes { try ModelFile(copying: $0) }
        let broken = try description.serialized(tensors: try TensorStore(file: file)).serialize()
        XCTAssertThrowsError(try broken.withUnsafeBytes { try Model(bytes: $0) }) { error in
            XCTAssertEqual((error as? CoverGenreError)?.code, .modelFormat)
            XCTAssertTrue("\(error)".contains("nowhere"), "\(error)")
        }
    }
}
