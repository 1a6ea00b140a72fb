import Graph
import Kernels
import SystemIO

/// Assignment of values (node outputs) to reusable buffers, computed once per graph: a value's
/// buffer is returned to the pool after its last reader runs, so a 60-node network needs a
/// handful of buffers rather than 60.
struct BufferPlan {
    /// Per-image element count of each buffer.
    let slotSizes: [Int]
    /// The buffer of each value.
    let valueSlot: [Int]

    init(_ graph: CompiledGraph) {
        let values = graph.valueSizes.count
        var root = Array(0..<values) // aliases (flatten, dropout, fused steps) share their input's buffer
        var lastUse = [Int](repeating: -1, count: values)
        for (s, step) in graph.steps.enumerated() {
            if case .alias = step.kernel { root[step.output] = root[step.inputs[0]] }
            for v in step.inputs { lastUse[root[v]] = max(lastUse[root[v]], s) }
        }
        for v in [graph.logitsValue] + (graph.embeddingValue.map { [$0] } ?? []) { lastUse[root[v]] = Int.max }
        for v in 0..<values where root[v] != v { lastUse[root[v]] = max(lastUse[root[v]], lastUse[v]) }

        var sizes: [Int] = [graph.valueSizes[0]]
        var slot = [Int](repeating: -1, count: values)
        slot[0] = 0
        var free: [Int] = []
        var owners: [Int: Int] = [0: 0] // slot -> root value using it
        func release(after s: Int) {
            for (slotIndex, value) in owners where lastUse[value] <= s {
                owners[slotIndex] = nil
                free.append(slotIndex)
            }
        }
        release(after: -1)
        for (s, step) in graph.steps.enumerated() {
            if case .alias = step.kernel {
                slot[step.output] = slot[root[step.output]]
            } else {
                let need = graph.valueSizes[step.output]
                // Best fit among free buffers; else grow the largest free one; else a new buffer.
                let fits = free.filter { sizes[$0] >= need }.min { sizes[$0] < sizes[$1] }
                let chosen: Int
                if let fits {
                    chosen = fits
                } else if let largest = free.max(by: { sizes[$0] < sizes[$1] }) {
                    chosen = largest
                    sizes[chosen] = need
                } else {
                    chosen = sizes.count
                    sizes.append(need)
                }
                free.removeAll { $0 == chosen }
                slot[step.output] = chosen
                owners[chosen] = step.output
            }
            release(after: s)
        }
        slotSizes = sizes
        valueSlot = slot
    }
}

/// The mutable state of one run: activation buffers and scratch for a fixed batch size and
/// thread count. Created once and reused for every call (no allocation per call); one thread at
/// a time uses a context. A context holds memory only: the threads belong to the model's
/// `Scheduler`, which the caller runs it on.
public final class ExecutionContext: @unchecked Sendable {
    public let graph: CompiledGraph
    public let batch: Int
    public let threads: Int
    private let buffers: [FloatBuffer]
    private let values: [UnsafeMutablePointer<Float>]
    private let scratch: FloatBuffer?
    /// One image's input, made on first use; see `spareInput()`.
    private var spare: FloatBuffer?

    public init(graph: CompiledGraph, batch: Int, threads: Int) throws {
        precondition(batch > 0 && threads > 0)
        self.graph = graph
        self.batch = batch
        self.threads = threads
        let plan = graph.plan!
        var buffers: [FloatBuffer] = []
        for size in plan.slotSizes {
            guard let b = FloatBuffer(count: size * batch) else {
                throw CoverGenreError(.outOfMemory, "cannot allocate \(size * batch * 4) bytes of activations")
            }
            buffers.append(b)
        }
        let scratchCount = graph.scratchCount(batch: batch, threads: threads)
        if scratchCount > 0 {
            guard let s = FloatBuffer(count: scratchCount) else {
                throw CoverGenreError(.outOfMemory, "cannot allocate \(scratchCount * 4) bytes of scratch")
            }
            scratch = s
        } else {
            scratch = nil
        }
        self.buffers = buffers
        self.values = plan.valueSlot.map { buffers[$0].pointer }
    }

    /// Bytes of activations and scratch this context holds.
    public var byteCount: Int { (buffers.reduce(0) { $0 + $1.count } + (scratch?.count ?? 0) + (spare?.count ?? 0)) * 4 }

    /// Room for one more input image, kept with the context: for a caller that makes a second
    /// view from the first (a flip-averaging model's mirror) while the graph may use `input` as
    /// scratch. Kept rather than allocated per call: an image's input is above malloc's mmap
    /// threshold, so a fresh buffer each call cost page faults that outweighed what it saved.
    public func spareInput() throws -> UnsafeMutablePointer<Float> {
        if let spare { return spare.pointer }
        guard let buffer = FloatBuffer(uninitializedCount: graph.inputShape.count) else {
            throw CoverGenreError(.outOfMemory, "cannot allocate \(graph.inputShape.count * 4) bytes for a second view")
        }
        spare = buffer
        return buffer.pointer
    }

    /// Where the caller writes the `batch` preprocessed input images (NHWC).
    public var input: UnsafeMutablePointer<Float> { values[0] }

    /// Runs the graph on the calling thread's scheduler (inside `Scheduler.run`: the model's
    /// threads), else, for contexts of more than one thread, on Dispatch's.
    public func run() {
        graph.run(buffers: values, scratch: scratch?.pointer, batch: batch, threads: threads)
    }

    /// Runs once, reporting each step's index and seconds.
    public func run(profile: (Int, Double) -> Void) {
        withoutActuallyEscaping(profile) { profile in
            graph.run(buffers: values, scratch: scratch?.pointer, batch: batch, threads: threads, profile: profile)
        }
    }

    /// Runs once, showing `observe` the input of every step before it runs (a graph node's index
    /// and its first input, all `batch` images): how `covergenre quantize` measures the ranges of
    /// the activations int8 layers will read. Meaningful on graphs compiled with `fuse: false`,
    /// where step i is node i.
    public func run(observingInputs observe: (_ node: Int, _ input: UnsafeBufferPointer<Float>) -> Void) {
        let graph = graph, values = values, batch = batch
        withoutActuallyEscaping(observe) { observe in
            graph.run(buffers: values, scratch: scratch?.pointer, batch: batch, threads: threads, before: { index in
                let step = graph.steps[index]
                observe(step.output - 1, UnsafeBufferPointer(start: values[step.inputs[0]], count: batch * step.inputShapes[0].count))
            })
        }
    }

    /// Logits of image n of the last run.
    public func logits(_ n: Int) -> UnsafeBufferPointer<Float> {
        UnsafeBufferPointer(start: values[graph.logitsValue] + n * graph.classCount, count: graph.classCount)
    }

    /// The embedding of image n of the last run, if the graph names one.
    public func embedding(_ n: Int) -> UnsafeBufferPointer<Float>? {
        graph.embeddingValue.map { UnsafeBufferPointer(start: values[$0] + n * graph.embeddingSize, count: graph.embeddingSize) }
    }
}
