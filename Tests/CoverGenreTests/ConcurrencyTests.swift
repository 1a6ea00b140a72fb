import Architectures
import CoverGenre
import Graph
import ImageIO
import ModelFormat
import SystemIO
import Foundation
import Synchronization
import TestSupport
import XCTest

/// The model's runtime under concurrency: results that do not depend on how many threads run a
/// call or how many calls overlap. Tests/c/run.sh runs these under ThreadSanitizer too; the C
/// stress test adds the process's thread count, and Tests/c/pool_stress.c the region protocol.
final class ConcurrencyTests: XCTestCase {
    /// Small models of the three architectures' shapes (random weights).
    static func models() throws -> [(name: String, path: String)] {
        var models = [("lite", try ModelTests.makeModel(flipAverage: true).path)]
        for (name, arch) in [
            ("baseline-cnn", Networks.baselineCNN(classes: 5, inputSize: 48, channels: [8, 12, 16, 16, 20], hidden: 24,
                                                  batchNorm: true)),
            ("vgg16", Networks.vgg16(classes: 5, inputSize: 48, widthDivisor: 16, hidden: 16)),
        ] {
            let (graph, tensors) = try arch.graph.foldingBatchNorms(arch.initialTensors(seed: 11))
            let description = ModelDescription(name: name, architecture: arch.name, labels: ModelTests.labels, graph: graph,
                                               preprocessing: arch.preprocessing)
            let path = temporaryPath("\(name).cgm")
            try Files.writeAtomically(path, try description.serialized(tensors: tensors, storage: .float32).serialize())
            models.append((name, path))
        }
        return models
    }

    static func images(_ count: Int) -> [RGBImage] {
        var random = TestRandom(seed: 21)
        return (0..<count).map { i in
            let width = 40 + 13 * i, height = 70 - 5 * i
            return RGBImage(width: width, height: height, rgb: random.bytes(width * height * 3))
        }
    }

    static func load(_ path: String, threads: Int) throws -> Model {
        var options = ModelOptions()
        options.threads = threads
        return try Model(path: path, options: options)
    }

    func testLogitsAreBitIdenticalWhateverTheThreadCount() throws {
        for (name, path) in try Self.models() {
            let reference = try Self.load(path, threads: 1)
            let count = reference.inputWidth * reference.inputHeight * 3
            var random = TestRandom(seed: 4)
            let batch = 5
            let input = random.floats(batch * count)
            func logits(_ model: Model, batch: Int) throws -> [Float] {
                var out = [Float](repeating: .nan, count: batch * model.classCount)
                try out.withUnsafeMutableBufferPointer { try model.logits(preprocessed: input, batch: batch, into: $0.baseAddress!) }
                return out
            }
            let expected = try logits(reference, batch: 1)
            let expectedBatch = try logits(reference, batch: batch)
            XCTAssertEqual(Array(expectedBatch.prefix(reference.classCount)), expected, "\(name): batch vs single")
            for threads in [2, 3, 5, 8] {
                let model = try Self.load(path, threads: threads)
                XCTAssertEqual(try logits(model, batch: 1), expected, "\(name), \(threads) threads")
                XCTAssertEqual(try logits(model, batch: batch), expectedBatch, "\(name), \(threads) threads, batch \(batch)")
            }
        }
    }

    /// `callers` threads share one model, each classifying every image `rounds` times; every
    /// answer must equal the single-threaded model's, bit for bit.
    func checkSharedModel(path: String, threads: Int, callers: Int, rounds: Int) throws {
        let images = Self.images(4)
        let reference = try Self.load(path, threads: 1)
        let expected = try images.map { try reference.probabilities(.rgb($0)) }
        let expectedEmbeddings = try images.map { try reference.embedding(.rgb($0)) }
        let model = try Self.load(path, threads: threads)
        let mismatches = Atomic<Int>(0), failures = Atomic<Int>(0), finished = DispatchSemaphore(value: 0)
        for caller in 0..<callers {
            let thread = Thread {
                for round in 0..<rounds {
                    let i = (caller + round) % images.count
                    do {
                        if try model.probabilities(.rgb(images[i])) != expected[i] { mismatches.add(1, ordering: .relaxed) }
                        if round % 3 == 0, try model.embedding(.rgb(images[i])) != expectedEmbeddings[i] {
                            mismatches.add(1, ordering: .relaxed)
                        }
                    } catch {
                        failures.add(1, ordering: .relaxed)
                    }
                }
                finished.signal()
            }
            thread.start()
        }
        for _ in 0..<callers { finished.wait() }
        XCTAssertEqual(failures.load(ordering: .relaxed), 0, "\(callers) callers, \(threads) threads: failed calls")
        XCTAssertEqual(mismatches.load(ordering: .relaxed), 0, "\(callers) callers, \(threads) threads: results differ")
        // A batch call overlapping the callers' answers the same.
        let batch = model.probabilities(batch: images.map { .rgb($0) })
        XCTAssertEqual(try batch.map { try $0.get() }, expected)
    }

    func testEightAndThirtyTwoCallersShareOneModel() throws {
        let path = try ModelTests.makeModel(flipAverage: true).path
        for threads in [0, 2] {
            try checkSharedModel(path: path, threads: threads, callers: 8, rounds: 12)
            try checkSharedModel(path: path, threads: threads, callers: 32, rounds: 4)
        }
    }

    func testBatchCallsOverlappingSingleCallsAgree() throws {
        let path = try ModelTests.makeModel().path
        let model = try Self.load(path, threads: 2), reference = try Self.load(path, threads: 1)
        let images = Self.images(6)
        let expected = try images.map { try reference.probabilities(.rgb($0)) }
        let mismatches = Atomic<Int>(0), finished = DispatchSemaphore(value: 0)
        for caller in 0..<4 {
            Thread {
                for _ in 0..<3 {
                    if caller % 2 == 0 {
                        let results = model.probabilities(batch: images.map { .rgb($0) })
                        if results.map({ try? $0.get() }) != expected.map({ Optional($0) }) { mismatches.add(1, ordering: .relaxed) }
                    } else {
                        for (i, image) in images.enumerated() where (try? model.probabilities(.rgb(image))) != expected[i] {
                            mismatches.add(1, ordering: .relaxed)
                        }
                    }
                }
                finished.signal()
            }.start()
        }
        for _ in 0..<4 { finished.wait() }
        XCTAssertEqual(mismatches.load(ordering: .relaxed), 0)
    }

    /// Admission admits at most `limit` holders at once, in order, and an unbounded one (Int.max,
    /// training's pools) any number, call after call (its ticket arithmetic once overflowed on
    /// the second call).
    func testAdmissionBoundsHoldersAndUnboundedNeverTraps() {
        let unbounded = Admission(limit: .max)
        for i in 0..<100 { XCTAssertEqual(unbounded.run { i }, i) }
        for limit in [1, 2, 3] {
            let admission = Admission(limit: limit)
            let inside = Atomic<Int>(0), peak = Atomic<Int>(0), done = Atomic<Int>(0)
            DispatchQueue.concurrentPerform(iterations: 8) { _ in
                for _ in 0..<200 {
                    admission.run {
                        let now = inside.add(1, ordering: .sequentiallyConsistent).newValue
                        _ = peak.max(now, ordering: .sequentiallyConsistent)
                        usleep(20)
                        inside.subtract(1, ordering: .sequentiallyConsistent)
                    }
                    done.add(1, ordering: .relaxed)
                }
            }
            XCTAssertEqual(done.load(ordering: .relaxed), 1600)
            XCTAssertLessThanOrEqual(peak.load(ordering: .relaxed), limit, "limit \(limit)")
            // And it admits `limit` at once, not fewer: `limit` callers each wait inside until all
            // are in. Admitting fewer would leave them waiting (the wait's bound only turns that
            // deadlock into a failure; nothing here is timed).
            let arrived = Atomic<Int>(0), together = DispatchSemaphore(value: 0), finished = DispatchGroup()
            for _ in 0..<limit {
                finished.enter()
                Thread {
                    admission.run {
                        if arrived.add(1, ordering: .sequentiallyConsistent).newValue == limit {
                            for _ in 0..<limit { together.signal() }
                        }
                        together.wait()
                    }
                    finished.leave()
                }.start()
            }
            XCTAssertEqual(finished.wait(timeout: .now() + 120), .success, "admission with limit \(limit) did not let \(limit) callers in at once")
        }
    }
}
