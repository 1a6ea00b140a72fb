import CoverGenre
import Architectures
import Dispatch
import ImageIO
import Kernels
import SystemIO

/// Decodes the next batch on a background thread while the current one trains, so the CPU never
/// waits on image decoding. Images that fail to decode are reported once and skipped; the batch
/// is filled from the following samples instead.
public final class BatchLoader {
    public struct Batch {
        public let input: UnsafeMutablePointer<Float>
        public let labels: [Int]
        public let samples: [Int]
    }

    let items: [LabeledImage]
    let pipeline: ImagePipeline
    let batchSize: Int
    let seed: UInt64
    let epoch: Int
    private var order: [Int]
    private var cursor = 0
    private let buffers: [FloatBuffer]
    private var slot = 0
    private let queue = DispatchQueue(label: "covergenre.loader")
    private let failures: FailureLog
    private let dropLast: Bool

    /// `order` lists item indices for this epoch; a partial last batch is kept unless `dropLast`.
    public init(items: [LabeledImage], order: [Int], pipeline: ImagePipeline, batchSize: Int, seed: UInt64, epoch: Int,
                failures: FailureLog, dropLast: Bool) throws {
        self.items = items
        // Known failures stay in the order (and are skipped while filling): each sample's position,
        // which seeds its augmentation, must not depend on what earlier epochs discovered.
        self.order = order
        self.pipeline = pipeline
        self.batchSize = batchSize
        self.seed = seed
        self.epoch = epoch
        self.failures = failures
        self.dropLast = dropLast
        let size = batchSize * pipeline.width * pipeline.height * 3
        buffers = try (0..<2).map { _ in
            guard let b = FloatBuffer(count: size) else { throw CoverGenreError(.outOfMemory, "batch buffers") }
            return b
        }
        schedule()
    }

    /// Batches in this epoch (an upper bound if images fail later).
    public var batchCount: Int {
        let usable = order.filter { !failures.contains(items[$0].path) }.count
        return dropLast ? usable / batchSize : (usable + batchSize - 1) / batchSize
    }

    private final class Slot { var batch: Batch? }
    private var inFlight: (done: DispatchSemaphore, slot: Slot)?

    private func schedule() {
        let target = buffers[slot]
        slot = 1 - slot
        let box = Slot(), done = DispatchSemaphore(value: 0)
        queue.async { [self] in
            box.batch = fill(target.pointer)
            done.signal()
        }
        inFlight = (done, box)
    }

    /// The next batch, or nil at the end of the epoch. Its memory stays valid until the next
    /// call, while the batch after it is being decoded into the other buffer.
    public func next() -> Batch? {
        guard let (done, box) = inFlight else { return nil }
        done.wait()
        inFlight = nil
        guard let batch = box.batch else { return nil }
        schedule()
        return batch
    }

    private func fill(_ target: UnsafeMutablePointer<Float>) -> Batch? {
        var labels: [Int] = [], samples: [Int] = []
        let imageSize = pipeline.width * pipeline.height * 3
        while labels.count < batchSize && cursor < order.count {
            let sample = order[cursor]
            let position = cursor
            cursor += 1
            let item = items[sample]
            if failures.contains(item.path) { continue }
            do {
                let image = try ImageDecoder.decode(try CoverFile.encodedCover(item.path, maxBytes: ImageLimits().maxFileBytes))
                var random = ImagePipeline.random(seed: seed, epoch: epoch, sample: position)
                try pipeline.fill(image, into: target + labels.count * imageSize, random: &random)
                labels.append(item.label)
                samples.append(sample)
            } catch {
                failures.record(item.path, error)
            }
        }
        if labels.isEmpty || (dropLast && labels.count < batchSize) { return nil }
        return Batch(input: target, labels: labels, samples: samples)
    }
}

/// Images that failed to decode: each is reported once, then skipped in every later epoch.
public final class FailureLog: @unchecked Sendable {
    private var failed: [String: String] = [:]
    private let lock = DispatchSemaphore(value: 1)
    private let report: (String) -> Void

    public init(report: @escaping (String) -> Void) { self.report = report }

    public func record(_ path: String, _ error: Error) {
        lock.wait()
        let isNew = failed[path] == nil
        failed[path] = "\(error)"
        lock.signal()
        if isNew { report("skipping \(path): \(error)") }
    }

    public func contains(_ path: String) -> Bool {
        lock.wait()
        defer { lock.signal() }
        return failed[path] != nil
    }

    public var count: Int {
        lock.wait()
        defer { lock.signal() }
        return failed.count
    }
}
