import Architectures
import CKernels
import Graph
import Kernels
import SystemIO

/// A parameter under training: its values, its gradient, and whether the optimizer moves it.
public final class Parameter {
    public let name: String
    public let shape: [Int]
    public let value: FloatBuffer
    /// nil for frozen parameters and running statistics.
    public let gradient: FloatBuffer?
    /// Batch-norm running mean/variance: updated by the forward pass, never by the optimizer.
    public let isStatistic: Bool

    init(name: String, tensor: HostTensor, trainable: Bool, isStatistic: Bool) throws {
        guard let value = FloatBuffer(count: tensor.count) else { throw CoverGenreError(.outOfMemory, "cannot allocate \(name)") }
        tensor.values.withUnsafeBufferPointer { if tensor.count > 0 { value.pointer.update(from: $0.baseAddress!, count: tensor.count) } }
        self.name = name
        shape = tensor.shape
        self.value = value
        self.isStatistic = isStatistic
        gradient = trainable && !isStatistic ? FloatBuffer(count: tensor.count) : nil
    }

    public var count: Int { value.count }
    public var isTrainable: Bool { gradient != nil }
    public var tensor: HostTensor { HostTensor(shape: shape, values: Array(value.buffer)) }
}

/// A graph that can be trained: forward in training or evaluation mode, backward from the
/// logits' gradient, for a fixed batch size. It runs the same kernels as inference; training adds
/// only what backward needs (saved activations, argmax indices, batch statistics, dropout masks).
///
/// Nodes whose parameters are all frozen and whose inputs need no gradient run as at inference
/// (batch norms with their running statistics) and share buffers, so a frozen backbone costs no
/// more memory than inference.
public final class TrainingNetwork {
    public let graph: GraphSpec
    public let batch: Int
    public let threads: Int
    public private(set) var parameters: [String: Parameter] = [:]
    /// Parameters in graph order (the order optimizers and checkpoints use).
    public private(set) var orderedParameters: [Parameter] = []

    let nodes: [ResolvedNode]
    let input: FloatBuffer
    /// Per node: its output buffer, and its gradient buffer when it needs one.
    var outputs: [UnsafeMutablePointer<Float>] = []
    var gradients: [UnsafeMutablePointer<Float>?] = []
    let requiresGradient: [Bool]
    var argmax: [UnsafeMutablePointer<Int32>?]
    var savedMean: [FloatBuffer?], savedInvStd: [FloatBuffer?], dropoutMasks: [FloatBuffer?]
    private var storage: [FloatBuffer] = []
    private var argmaxStorage: [UnsafeMutablePointer<Int32>] = []
    let scratch: FloatBuffer
    let accumulator: FloatBuffer
    let logitsIndex: Int
    let embeddingIndex: Int?
    /// Batch-norm momentum for running statistics (PyTorch's 0.1).
    public var batchNormMomentum: Float = 0.1

    public init(graph: GraphSpec, tensors: TensorStore, trainable: (String) -> Bool, batch: Int, threads: Int) throws {
        let nodes = try graph.resolve(tensorShape: { tensors[$0]?.shape })
        self.graph = graph
        self.nodes = nodes
        self.batch = batch
        self.threads = max(threads, 1)
        guard let input = FloatBuffer(count: batch * graph.inputShape.count) else { throw CoverGenreError(.outOfMemory, "input buffer") }
        self.input = input

        var statistics = Set<String>()
        for r in nodes { if case .batchNorm(let a) = r.node.op { statistics.formUnion([a.mean, a.variance]) } }
        var parameters: [String: Parameter] = [:], ordered: [Parameter] = []
        for r in nodes {
            for name in r.node.op.tensorNames where parameters[name] == nil {
                let p = try Parameter(name: name, tensor: try tensors.tensor(name), trainable: trainable(name),
                                      isStatistic: statistics.contains(name))
                parameters[name] = p
                ordered.append(p)
            }
        }
        self.parameters = parameters
        orderedParameters = ordered
        // A node needs a gradient if it owns a trainable parameter or reads a node that does.
        var requires = [Bool](repeating: false, count: nodes.count)
        for (i, r) in nodes.enumerated() {
            let own = r.node.op.tensorNames.contains { parameters[$0]!.isTrainable }
            requires[i] = own || r.inputIndices.contains { $0 >= 0 && requires[$0] }
        }
        requiresGradient = requires
        logitsIndex = nodes.firstIndex { $0.node.name == graph.logits }!
        embeddingIndex = graph.embedding.flatMap { e in nodes.firstIndex { $0.node.name == e } }
        argmax = Array(repeating: nil, count: nodes.count)
        savedMean = Array(repeating: nil, count: nodes.count)
        savedInvStd = savedMean
        dropoutMasks = savedMean

        var scratchCount = 0, largest = graph.inputShape.count
        for r in nodes {
            largest = max(largest, r.outputShape.count)
            if let conv = r.conv {
                scratchCount = max(scratchCount, Conv2D.scratchCount(conv, batch: batch, threads: self.threads),
                                   Conv2D.backwardScratchCount(conv, batch: batch, threads: self.threads))
            }
        }
        guard let scratch = FloatBuffer(count: max(scratchCount, 1)), let accumulator = FloatBuffer(count: batch * largest) else {
            throw CoverGenreError(.outOfMemory, "training scratch")
        }
        self.scratch = scratch
        self.accumulator = accumulator
        try allocate()
    }

    deinit { argmaxStorage.forEach { $0.deallocate() } }

    /// Output buffers: pinned for every value backward reads, shared (as at inference) otherwise.
    private func allocate() throws {
        var pinned = [Bool](repeating: false, count: nodes.count)
        for (i, r) in nodes.enumerated() where requiresGradient[i] {
            pinned[i] = true
            for j in r.inputIndices where j >= 0 { pinned[j] = true }
        }
        pinned[logitsIndex] = true
        if let e = embeddingIndex { pinned[e] = true }
        // Flatten's output is its input's memory: both share the root's buffer and lifetime.
        var root = Array(nodes.indices)
        for (i, r) in nodes.enumerated() {
            if case .flatten = r.node.op, let j = r.inputIndices.first, j >= 0 { root[i] = root[j] }
        }
        for i in nodes.indices where pinned[i] { pinned[root[i]] = true }
        var lastUse = [Int](repeating: -1, count: nodes.count)
        for (i, r) in nodes.enumerated() { for j in r.inputIndices where j >= 0 { lastUse[root[j]] = max(lastUse[root[j]], i) } }

        func make(_ count: Int) throws -> FloatBuffer {
            guard let b = FloatBuffer(count: count) else { throw CoverGenreError(.outOfMemory, "cannot allocate \(count * 4) bytes for training") }
            storage.append(b)
            return b
        }
        var free: [FloatBuffer] = []
        var shared: [Int: FloatBuffer] = [:] // root node -> its reusable buffer
        outputs = []
        for (i, r) in nodes.enumerated() {
            let count = batch * r.outputShape.count
            if root[i] != i {
                outputs.append(outputs[root[i]])
            } else if case .flatten = r.node.op {
                outputs.append(input.pointer) // flatten of the graph input
            } else if pinned[i] {
                outputs.append(try make(count).pointer)
            } else {
                let buffer = try free.firstIndex { $0.count >= count }.map { free.remove(at: $0) } ?? make(count)
                shared[i] = buffer
                outputs.append(buffer.pointer)
            }
            for j in Set(r.inputIndices) where j >= 0 && lastUse[root[j]] == i {
                if let buffer = shared.removeValue(forKey: root[j]) { free.append(buffer) }
            }
            gradients.append(requiresGradient[i] ? try make(count).pointer : nil)
            if case .maxPool = r.node.op, requiresGradient[i] {
                let a = UnsafeMutablePointer<Int32>.allocate(capacity: count)
                argmaxStorage.append(a)
                argmax[i] = a
            }
            if case .batchNorm = r.node.op {
                savedMean[i] = try make(r.outputShape.channels)
                savedInvStd[i] = try make(r.outputShape.channels)
            }
            if case .dropout = r.node.op { dropoutMasks[i] = try make(count) }
        }
    }

    public var inputPointer: UnsafeMutablePointer<Float> { input.pointer }
    public var classCount: Int { nodes[logitsIndex].outputShape.channels }
    public var logits: UnsafeMutablePointer<Float> { outputs[logitsIndex] }
    public var embedding: UnsafeMutablePointer<Float>? { embeddingIndex.map { outputs[$0] } }
    public var embeddingSize: Int { embeddingIndex.map { nodes[$0].outputShape.channels } ?? 0 }

    private func x(_ r: ResolvedNode, _ k: Int = 0) -> UnsafeMutablePointer<Float> {
        r.inputIndices[k] < 0 ? input.pointer : outputs[r.inputIndices[k]]
    }

    private func p(_ name: String) -> UnsafeMutablePointer<Float> { parameters[name]!.value.pointer }

    /// Runs the graph on `inputPointer`. In training mode batch norms use (and update) batch
    /// statistics and dropout drops; `seed` makes dropout reproducible.
    public func forward(training: Bool, seed: UInt64 = 0) {
        for (i, r) in nodes.enumerated() {
            let y = outputs[i], inShape = r.inputShapes[0]
            switch r.node.op {
            case .conv2d(let a):
                Conv2D.forward(r.conv!, batch: batch, x: x(r), weight: p(a.weight), bias: a.bias.map(p), activation: a.activation,
                               y: y, scratch: scratch.pointer, threads: threads)
            case .linear(let a):
                Dense.forward(rows: batch, inFeatures: inShape.channels, outFeatures: a.outFeatures, x: x(r), weight: p(a.weight),
                              bias: a.bias.map(p), activation: a.activation, y: y, threads: threads)
            case .batchNorm(let a):
                batchNormForward(i, r, a, training: training && parameters[a.gamma]!.isTrainable)
            case .maxPool:
                Pooling.max(r.window!, batch: batch, x: x(r), y: y, argmax: argmax[i], threads: threads)
            case .globalAveragePool:
                Pooling.globalAverage(batch: batch, pixels: inShape.pixels, channels: inShape.channels, x: x(r), y: y, threads: threads)
            case .adaptiveAveragePool(let h, let w):
                Pooling.adaptiveAverage(batch: batch, height: inShape.height, width: inShape.width, channels: inShape.channels,
                                        outHeight: h, outWidth: w, x: x(r), y: y, threads: threads)
            case .channelStats:
                Pooling.channelMeanStd(batch: batch, pixels: inShape.pixels, channels: inShape.channels, x: x(r), y: y, threads: threads)
            case .concat:
                var offset = 0
                for (k, shape) in r.inputShapes.enumerated() {
                    let source = x(r, k)
                    for row in 0..<(batch * inShape.pixels) {
                        (y + row * r.outputShape.channels + offset).update(from: source + row * shape.channels, count: shape.channels)
                    }
                    offset += shape.channels
                }
            case .add(let act):
                Elementwise.add(x(r), x(r, 1), count: batch * inShape.count, activation: act, y: y, threads: threads)
            case .activation(let act):
                y.update(from: x(r), count: batch * inShape.count)
                Elementwise.activate(y, count: batch * inShape.count, activation: act)
            case .softmax:
                y.update(from: x(r), count: batch * inShape.count)
                Elementwise.softmax(y, rows: batch * inShape.pixels, columns: inShape.channels)
            case .dropout(let rate):
                let count = batch * inShape.count
                let mask = dropoutMasks[i]!.pointer
                if training && rate > 0 {
                    var random = SplitMix64(seed: seed &+ UInt64(i) &* 0x9E37_79B9_7F4A_7C15)
                    let keep = Float(1 / (1 - rate))
                    for k in 0..<count { mask[k] = random.unit() < rate ? 0 : keep }
                } else {
                    mask.update(repeating: 1, count: count)
                }
                cgk_multiply(x(r), mask, count, y)
            case .flatten:
                break
            }
        }
    }

    private func batchNormForward(_ i: Int, _ r: ResolvedNode, _ a: BatchNormAttributes, training: Bool) {
        let channels = r.outputShape.channels, rows = batch * r.outputShape.pixels
        let mean = savedMean[i]!.pointer, invStd = savedInvStd[i]!.pointer
        let runningMean = p(a.mean), runningVariance = p(a.variance)
        if training {
            var variance = [Float](repeating: 0, count: channels)
            BatchNorm.statistics(x(r), rows: rows, channels: channels, epsilon: Float(a.epsilon), mean: mean, invStd: invStd,
                                 unbiasedVariance: &variance)
            let m = batchNormMomentum
            for c in 0..<channels {
                runningMean[c] = (1 - m) * runningMean[c] + m * mean[c]
                runningVariance[c] = (1 - m) * runningVariance[c] + m * variance[c]
            }
        } else {
            for c in 0..<channels {
                mean[c] = runningMean[c]
                invStd[c] = 1 / (runningVariance[c] + Float(a.epsilon)).squareRoot()
            }
        }
        let gamma = p(a.gamma), beta = p(a.beta)
        var scale = [Float](repeating: 0, count: channels), shift = scale
        for c in 0..<channels {
            scale[c] = gamma[c] * invStd[c]
            shift[c] = beta[c] - mean[c] * scale[c]
        }
        Elementwise.scaleShift(x(r), rows: rows, channels: channels, scale: scale, shift: shift, activation: a.activation,
                               y: outputs[i], threads: threads)
    }

    /// Sets every parameter gradient to zero.
    public func zeroGradients() {
        for p in orderedParameters { p.gradient?.zero() }
    }

    /// Back-propagates `dLogits` (batch x classes, already divided by the batch) through the
    /// graph, accumulating into the parameters' gradients. Call after `forward(training: true)`.
    public func backward(dLogits: UnsafePointer<Float>) {
        var written = [Bool](repeating: false, count: nodes.count)
        if let g = gradients[logitsIndex] {
            g.update(from: dLogits, count: batch * classCount)
            written[logitsIndex] = true
        }
        for i in stride(from: nodes.count - 1, through: 0, by: -1) where requiresGradient[i] && written[i] {
            backwardNode(i, &written)
        }
    }

    /// Where node i's backward writes the gradient for its input k: straight into that input's
    /// gradient if nothing has written it yet, else into the accumulator (then added).
    private func target(_ r: ResolvedNode, _ k: Int, _ written: [Bool]) -> UnsafeMutablePointer<Float>? {
        let j = r.inputIndices[k]
        guard j >= 0, requiresGradient[j], let g = gradients[j] else { return nil }
        return written[j] ? accumulator.pointer : g
    }

    private func commit(_ r: ResolvedNode, _ k: Int, _ written: inout [Bool]) {
        let j = r.inputIndices[k]
        guard j >= 0, requiresGradient[j], let g = gradients[j] else { return }
        if written[j] {
            let count = batch * nodes[j].outputShape.count
            cgk_add(g, accumulator.pointer, count, Int32(CGK_ACT_NONE.rawValue), g)
        }
        written[j] = true
    }

    private func backwardNode(_ i: Int, _ written: inout [Bool]) {
        let r = nodes[i]
        let dy = gradients[i]!, y = outputs[i], inShape = r.inputShapes[0]
        let outCount = batch * r.outputShape.count, inCount = batch * inShape.count
        func activationBackward(_ act: Activation) {
            if act != .none { cgk_activation_backward(y, dy, outCount, act.code, dy) }
        }
        func grad(_ name: String?) -> UnsafeMutablePointer<Float>? { name.flatMap { parameters[$0]!.gradient?.pointer } }

        switch r.node.op {
        case .conv2d(let a):
            activationBackward(a.activation)
            let dx = target(r, 0, written)
            Conv2D.backward(r.conv!, batch: batch, x: x(r), weight: p(a.weight), dy: dy, dx: dx, dweight: grad(a.weight),
                            dbias: grad(a.bias), scratch: scratch.pointer, threads: threads)
            commit(r, 0, &written)
        case .linear(let a):
            activationBackward(a.activation)
            Dense.backward(rows: batch, inFeatures: inShape.channels, outFeatures: a.outFeatures, x: x(r), weight: p(a.weight), dy: dy,
                           dx: target(r, 0, written), dweight: grad(a.weight), dbias: grad(a.bias), threads: threads)
            commit(r, 0, &written)
        case .batchNorm(let a):
            activationBackward(a.activation)
            let channels = r.outputShape.channels, rows = batch * r.outputShape.pixels
            let dx = target(r, 0, written)
            if parameters[a.gamma]!.isTrainable {
                BatchNorm.backward(x(r), rows: rows, channels: channels, mean: savedMean[i]!.pointer, invStd: savedInvStd[i]!.pointer,
                                   gamma: p(a.gamma), dy: dy, dx: dx, dgamma: grad(a.gamma), dbeta: grad(a.beta))
            } else if let dx {
                // Frozen (evaluation-mode) batch norm is a fixed per-channel scale.
                let gamma = p(a.gamma), invStd = savedInvStd[i]!.pointer
                let scale = (0..<channels).map { gamma[$0] * invStd[$0] }, zero = [Float](repeating: 0, count: channels)
                Elementwise.scaleShift(dy, rows: rows, channels: channels, scale: scale, shift: zero, activation: .none, y: dx, threads: threads)
            }
            commit(r, 0, &written)
        case .maxPool:
            if let dx = target(r, 0, written) {
                Pooling.maxBackward(r.window!, batch: batch, dy: dy, argmax: argmax[i]!, dx: dx, threads: threads)
                commit(r, 0, &written)
            }
        case .globalAveragePool:
            if let dx = target(r, 0, written) {
                Pooling.globalAverageBackward(batch: batch, pixels: inShape.pixels, channels: inShape.channels, dy: dy, dx: dx)
                commit(r, 0, &written)
            }
        case .adaptiveAveragePool(let h, let w):
            if let dx = target(r, 0, written) {
                Pooling.adaptiveAverageBackward(batch: batch, height: inShape.height, width: inShape.width, channels: inShape.channels,
                                                outHeight: h, outWidth: w, dy: dy, dx: dx)
                commit(r, 0, &written)
            }
        case .channelStats:
            if let dx = target(r, 0, written) {
                Pooling.channelMeanStdBackward(batch: batch, pixels: inShape.pixels, channels: inShape.channels, x: x(r), y: y, dy: dy, dx: dx)
                commit(r, 0, &written)
            }
        case .concat:
            var offset = 0
            for (k, shape) in r.inputShapes.enumerated() {
                if let dx = target(r, k, written) {
                    for row in 0..<(batch * inShape.pixels) {
                        (dx + row * shape.channels).update(from: dy + row * r.outputShape.channels + offset, count: shape.channels)
                    }
                    commit(r, k, &written)
                }
                offset += shape.channels
            }
        case .add(let act):
            activationBackward(act)
            for k in 0..<2 {
                if let dx = target(r, k, written) {
                    dx.update(from: dy, count: outCount)
                    commit(r, k, &written)
                }
            }
        case .activation(let act):
            if let dx = target(r, 0, written) {
                cgk_activation_backward(y, dy, outCount, act.code, dx)
                commit(r, 0, &written)
            }
        case .softmax:
            if let dx = target(r, 0, written) {
                let columns = inShape.channels
                for row in 0..<(batch * inShape.pixels) {
                    let yr = y + row * columns, gr = dy + row * columns, dr = dx + row * columns
                    var dot: Float = 0
                    for c in 0..<columns { dot += yr[c] * gr[c] }
                    for c in 0..<columns { dr[c] = yr[c] * (gr[c] - dot) }
                }
                commit(r, 0, &written)
            }
        case .dropout:
            if let dx = target(r, 0, written) {
                cgk_multiply(dy, dropoutMasks[i]!.pointer, inCount, dx)
                commit(r, 0, &written)
            }
        case .flatten:
            // The output aliases the input, but the gradients are separate buffers.
            if let dx = target(r, 0, written) {
                dx.update(from: dy, count: inCount)
                commit(r, 0, &written)
            }
        }
    }

    /// Current values of every parameter (weights and running statistics).
    public func tensors() -> TensorStore {
        var store = TensorStore()
        for p in orderedParameters { store[p.name] = p.tensor }
        return store
    }

    /// Overwrites parameters from a store (e.g. a checkpoint); every shape must match.
    public func load(_ store: TensorStore) throws {
        for p in orderedParameters {
            let t = try store.tensor(p.name)
            guard t.shape == p.shape else { throw CoverGenreError(.modelFormat, "\(p.name): shape \(t.shape), expected \(p.shape)") }
            t.values.withUnsafeBufferPointer { if t.count > 0 { p.value.pointer.update(from: $0.baseAddress!, count: t.count) } }
        }
    }
}
