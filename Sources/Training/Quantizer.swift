import CoverGenre
import Graph
import Inference
import Kernels
import ModelFormat
import SystemIO

/// How the range of an activation an int8 layer reads is chosen from what calibration covers
/// produced (`covergenre quantize --method`; docs/quantization.md says which was measured best).
public enum RangeMethod: String, CaseIterable, Sendable {
    /// The smallest and largest value seen: nothing clipped, coarsest steps.
    case minmax
    /// The 0.01th and 99.99th percentiles: the rare extremes are clipped.
    case percentile
    /// The range, shrunk towards zero by one factor on both sides, that minimizes the expected
    /// squared error of quantizing the histogram (rounding inside, clipping outside).
    case mse
}

/// A histogram of one activation over the calibration covers, over the fixed range a first pass
/// measured.
public struct ActivationHistogram: Sendable {
    public static let bins = 2048
    public let low: Float
    public let high: Float
    public private(set) var counts: [Double]

    public init(low: Float, high: Float) {
        self.low = min(low, 0)
        self.high = max(high, 0)
        counts = [Double](repeating: 0, count: Self.bins)
    }

    var width: Float { (high - low) / Float(Self.bins) }

    public mutating func add(_ values: UnsafeBufferPointer<Float>) {
        // A range too wide for a float (activations near ±3e38) has no meaningful bins.
        guard high > low, (high - low).isFinite else { counts[0] += Double(values.count); return }
        let scale = Float(Self.bins) / (high - low), last = Self.bins - 1
        counts.withUnsafeMutableBufferPointer { counts in
            for v in values where v.isFinite {
                counts[max(0, min(last, Int((v - low) * scale)))] += 1
            }
        }
    }

    /// The range `method` chooses, always containing 0.
    public func range(_ method: RangeMethod) -> (low: Float, high: Float) {
        let total = counts.reduce(0, +)
        guard total > 0, high > low else { return (low, high) }
        switch method {
        case .minmax:
            return (low, high)
        case .percentile:
            let tail = total * 1e-4
            var below = 0.0, lo = 0
            while lo < Self.bins - 1 && below + counts[lo] <= tail { below += counts[lo]; lo += 1 }
            var above = 0.0, hi = Self.bins - 1
            while hi > lo && above + counts[hi] <= tail { above += counts[hi]; hi -= 1 }
            return (min(0, low + Float(lo) * width), max(0, low + Float(hi + 1) * width))
        case .mse:
            var best = (error: Double.infinity, factor: Float(1))
            for step in 0..<100 {
                let factor = 1 - Float(step) / 125 // 1.0 down to 0.208
                let error = expectedError(low: low * factor, high: high * factor)
                if error < best.error { best = (error, factor) }
            }
            return (low * best.factor, high * best.factor)
        }
    }

    /// Expected squared quantization error of the histogram's values (each at its bin's centre)
    /// with the activation range [lo, hi]: a uniform rounding error inside, the distance to the
    /// range outside.
    func expectedError(low lo: Float, high hi: Float) -> Double {
        let (scale, zero) = Quantization.activation(low: lo, high: hi)
        let qlo = Double(-zero) * Double(scale), qhi = Double(255 - zero) * Double(scale)
        let rounding = Double(scale) * Double(scale) / 12
        var error = 0.0
        for (i, count) in counts.enumerated() where count > 0 {
            let x = Double(low) + (Double(i) + 0.5) * Double(width)
            if x < qlo { error += count * (qlo - x) * (qlo - x) } else if x > qhi { error += count * (x - qhi) * (x - qhi) } else {
                error += count * rounding
            }
        }
        return error
    }
}

/// Which float layers' weights `Quantizer.quantized` stores in int8 (widened at load).
public enum CompactLayers: String, CaseIterable, Sendable { case none, linear, all }

/// Post-training quantization of a float model (`covergenre quantize`): measures the inputs of
/// the layers to make int8 on calibration covers and writes the model with their weights int8
/// (symmetric per output channel) and their input ranges in the graph.
public struct Quantizer {
    public let model: Model
    public let path: String
    /// The model's graph compiled without fusion, so each step is one graph node and its input can
    /// be observed.
    private let pool: ContextPool

    public init(path: String) throws {
        self.path = path
        model = try Model(path: path)
        pool = ContextPool(graph: try CompiledGraph(graph: model.description.graph, weights: model.file, winograd: false, fuse: false))
    }

    public var graph: GraphSpec { model.description.graph }

    /// The nodes the engine can run in int8: convolutions with one group (1x1 and im2col),
    /// depthwise convolutions and linear layers, whose weights no other node shares.
    public var eligible: [Int] {
        var uses: [String: Int] = [:]
        for node in graph.nodes { for name in node.op.tensorNames { uses[name, default: 0] += 1 } }
        return graph.nodes.indices.filter { i in
            switch graph.nodes[i].op {
            case .conv2d(let a): return (a.groups == 1 || isDepthwise(i)) && uses[a.weight] == 1
            case .linear(let a): return uses[a.weight] == 1
            default: return false
            }
        }
    }

    /// Whether node `i` is a depthwise convolution (one filter per channel; weights [kh, kw, 1, C]).
    public func isDepthwise(_ i: Int) -> Bool {
        guard case .conv2d(let a) = graph.nodes[i].op, a.groups > 1, let shape = model.file.info(a.weight)?.shape, shape.count == 4
        else { return false }
        return shape[2] == 1 && shape[3] == a.groups
    }

    /// Runs every cover (once, unmirrored) through the float graph and hands `visit` the input of
    /// each of `nodes`. Returns how many covers decoded.
    private func observe(_ images: [String], nodes: Set<Int>, threads: Int,
                         _ visit: (_ node: Int, UnsafeBufferPointer<Float>) -> Void) -> Int {
        let decoded = Locked(0)
        return withoutActuallyEscaping(visit) { visit in
            // One cover's observations at a time: the histograms are shared, the graph runs are not.
            let visitor = Locked(visit)
            model.forEachInParallel(images.count, threads: threads) { i in
                guard let image = try? model.decode(.path(images[i])) else { return }
                let ran: Void? = try? pool.withContext(batch: 1, threads: 1) { context in
                    try model.preprocess(image, into: context.input)
                    context.run(observingInputs: { node, input in
                        guard nodes.contains(node) else { return }
                        visitor.withLock { $0(node, input) }
                    })
                }
                if ran != nil { decoded.withLock { $0 += 1 } }
            }
            return decoded.withLock { $0 }
        }
    }

    /// What calibration measured of one int8 layer's input: its histogram (of x[c] / m[c] for
    /// balanced channels) and the channel scales m, if balanced.
    public struct Measured {
        public var histogram: ActivationHistogram
        public var channelScales: [Float]?
    }

    /// Input channels of node `i` (the last dimension of what it reads).
    func inputChannels(_ i: Int) -> Int {
        switch graph.nodes[i].op {
        case .conv2d(let a): return model.file.info(a.weight)!.shape[2] * a.groups
        case .linear(let a): return model.file.info(a.weight)!.shape[0]
        default: return 1
        }
    }

    /// Per input channel, the largest |weight| of node `i` (every output and kernel tap).
    func weightMaxima(_ i: Int) throws -> [Float] {
        let channels = inputChannels(i)
        guard let name = graph.nodes[i].op.weight else { return [Float](repeating: 1, count: channels) }
        let info = model.file.info(name)!, values = try model.file.floats(name).array
        let columns = info.shape.last!
        var maxima = [Float](repeating: 0, count: channels)
        for (index, v) in values.enumerated() {
            let c = (index / columns) % channels
            maxima[c] = max(maxima[c], abs(v))
        }
        return maxima
    }

    /// The float weights of tensor `name` as an int8 layer stores them before quantizing: with
    /// balanced channels, row r (which reads input channel r % m.count) multiplied by m[r % m.count].
    func balancedWeights(_ name: String, m: [Float]?) throws -> [Float] {
        var values = try model.file.floats(name).array
        if let m, let columns = model.file.info(name)?.shape.last, columns > 0 {
            for i in values.indices { values[i] *= m[(i / columns) % m.count] }
        }
        return values
    }

    /// Measures the inputs of `nodes` over `images`: a first pass finds each input's range per
    /// channel, a second fills a histogram over the whole range. With `balance`, each channel c
    /// is first divided by m[c] = sqrt(max |x[c]| / max |w[c]|), which moves range from the
    /// activations' widest channels into the weights (whose scale is per output channel anyway);
    /// the layer's weights are multiplied by m when written (`quantized`).
    public func measure(_ images: [String], nodes: [Int], threads: Int, balance: Bool) throws -> [Int: Measured] {
        let wanted = Set(nodes)
        var lows: [Int: [Float]] = [:], highs: [Int: [Float]] = [:]
        let decoded = observe(images, nodes: wanted, threads: threads) { node, input in
            let channels = inputChannels(node)
            // Taken out while updated, so the arrays are not copied for every cover.
            var lo = lows.removeValue(forKey: node) ?? [Float](repeating: 0, count: channels)
            var hi = highs.removeValue(forKey: node) ?? lo
            for (i, v) in input.enumerated() where v.isFinite {
                let c = i % channels
                if v < lo[c] { lo[c] = v }
                if v > hi[c] { hi[c] = v }
            }
            lows[node] = lo
            highs[node] = hi
        }
        guard decoded > 0 else { throw CoverGenreError(.invalidArgument, "none of the \(images.count) calibration covers could be decoded") }
        var divisors: [Int: [Float]] = [:]
        var measured: [Int: Measured] = [:]
        for node in nodes {
            guard let lo = lows[node], let hi = highs[node] else { continue }
            var m = [Float](repeating: 1, count: lo.count)
            if isDepthwise(node) {
                // A depthwise convolution reads each channel alone: each gets its whole range of
                // bytes (m[c] = the channel's largest magnitude over the layer's), with or without
                // `balance`, at no cost (QuantizedDepthwise).
                let r = zip(lo, hi).map { max(abs($0), abs($1)) }, largest = r.max() ?? 0
                if largest > 0 { m = r.map { max(1e-4, $0 / largest) } }
                divisors[node] = m
            } else if balance {
                let w = try weightMaxima(node)
                for c in m.indices {
                    let x = max(abs(lo[c]), abs(hi[c]))
                    if x > 0 && w[c] > 0 { m[c] = min(1e4, max(1e-4, (x / w[c]).squareRoot())) }
                }
                divisors[node] = m
            }
            let low = zip(lo, m).map { $0 / $1 }.min() ?? 0, high = zip(hi, m).map { $0 / $1 }.max() ?? 0
            measured[node] = Measured(histogram: ActivationHistogram(low: low, high: high),
                                      channelScales: balance || isDepthwise(node) ? m : nil)
        }
        _ = observe(images, nodes: wanted, threads: threads) { node, input in
            guard measured[node] != nil else { return }
            if let m = divisors[node] {
                let scaled = input.enumerated().map { $1 / m[$0 % m.count] }
                scaled.withUnsafeBufferPointer { measured[node]!.histogram.add($0) }
            } else {
                measured[node]!.histogram.add(input)
            }
        }
        return measured
    }

    /// Bias correction: for each of `ranges`' nodes, the shift its int8 form adds to the mean of each
    /// output channel (before the activation), to be subtracted from its bias. The layer is linear,
    /// so the mean of its output is the weights times the mean of its input: per input channel c,
    /// the mean of x[c] (the float input) and of what the kernel multiplies instead (x[c] / m[c]
    /// quantized to the node's uint8 grid and back), over every pixel of `images` through the float
    /// graph; the weights as the writer stores them (times m, symmetric per output channel). A
    /// convolution's taps are taken to see the same mean (padding, zero in both, is ignored), so the
    /// shift of output o is sum over taps and c of (W'q[t,c,o] E[xq'[c]] - W[t,c,o] E[x[c]]).
    /// This removes the systematic part of each layer's own rounding and clipping error (Nagel et
    /// al., "Data-Free Quantization", 2019, empirical variant); nodes without a bias are left out.
    public func biasShifts(_ images: [String], ranges: [Int: (low: Float, high: Float)], channelScales: [Int: [Float]],
                           weightLevels: Float, threads: Int) throws -> [Int: [Float]] {
        let nodes = ranges.keys.filter { graph.nodes[$0].op.bias != nil }
        struct Sums { var x: [Double], xq: [Double], count: Int }
        var sums: [Int: Sums] = [:]
        var grids: [Int: (inverse: Float, scale: Float, zero: Float, m: [Float]?)] = [:]
        for i in nodes {
            let (scale, zero) = Quantization.activation(low: ranges[i]!.low, high: ranges[i]!.high)
            grids[i] = (1 / scale, scale, Float(zero), channelScales[i])
            sums[i] = Sums(x: [Double](repeating: 0, count: inputChannels(i)), xq: [Double](repeating: 0, count: inputChannels(i)), count: 0)
        }
        let decoded = observe(images, nodes: Set(nodes), threads: threads) { node, input in
            // Taken out while added to, so its arrays are not copied for every cover.
            guard let grid = grids[node], var sum = sums.removeValue(forKey: node) else { return }
            let channels = sum.x.count
            // Non-finite inputs (a broken activation) count in neither mean.
            for (index, v) in input.enumerated() where v.isFinite {
                let c = index % channels
                let scaled = grid.m.map { v / $0[c] } ?? v
                let q = max(0, min(255, (scaled * grid.inverse).rounded(.toNearestOrEven) + grid.zero))
                sum.x[c] += Double(v)
                sum.xq[c] += Double((q - grid.zero) * grid.scale)
            }
            sum.count += input.count / channels  // pixels: a channel's few skipped values barely move its mean
            sums[node] = sum
        }
        guard decoded > 0 else { throw CoverGenreError(.invalidArgument, "none of the \(images.count) calibration covers could be decoded") }
        var shifts: [Int: [Float]] = [:]
        for i in nodes {
            guard let sum = sums[i], sum.count > 0, let name = graph.nodes[i].op.weight, let info = model.file.info(name) else { continue }
            let channels = sum.x.count, outputs = info.shape.last!
            let weights = try model.file.floats(name).array
            // What the writer will store, quantized as the engine will: the balanced weights in
            // 8 bits; a depthwise convolution's own weights in 16 bits at load (its channel c reads
            // input channel c, and m[c] multiplies its output, not its weights).
            let depthwise = isDepthwise(i)
            let stored = depthwise ? weights : try balancedWeights(name, m: channelScales[i])
            let quantized: (scales: [Float], values: [Float])?
            if depthwise {
                quantized = stored.withUnsafeBufferPointer { Quantization.symmetric16($0, channels: outputs) }
                    .map { ($0.scales, $0.values.map { Float($0) }) }
            } else {
                quantized = stored.withUnsafeBufferPointer { Quantization.symmetric($0, channels: outputs, levels: weightLevels) }
                    .map { ($0.scales, $0.values.map { Float($0) }) }
            }
            guard let (scales, q) = quantized else { continue }
            let meanX = sum.x.map { $0 / Double(sum.count) }
            // The kernel's input in x's units: a depthwise convolution multiplies m back.
            let m = depthwise ? channelScales[i]?.map(Double.init) : nil
            let meanXq = sum.xq.enumerated().map { c, v in v / Double(sum.count) * (m?[c] ?? 1) }
            var shift = [Double](repeating: 0, count: outputs)
            for index in weights.indices {
                let o = index % outputs, c = depthwise ? o : (index / outputs) % channels
                shift[o] += Double(q[index] * scales[o]) * meanXq[c] - Double(weights[index]) * meanX[c]
            }
            shifts[i] = shift.map { Float($0) }
        }
        return shifts
    }

    /// The model with `ranges`' nodes made int8, as a writer ready to write. `provenance` is added
    /// to the model's provenance under "quantization".
    ///
    /// `compactFloatLayers`: store the weights of the layers left in floating point (all, or the
    /// linear ones) as int8 too (8 bits per output channel, widened to float32 at load): a smaller
    /// file for a change in the answers (measured in docs/quantization.md).
    /// `weightLevels`: the int8 weights' largest magnitude (127, or 63 for AVX2's full speed).
    public func quantized(ranges: [Int: (low: Float, high: Float)], channelScales: [Int: [Float]] = [:],
                          weightLevels: Float = Quantization.weightLevels, compactFloatLayers: CompactLayers = .none,
                          biasShifts: [Int: [Float]] = [:], provenance: JSON) throws -> ModelWriter {
        var description = model.description
        var int8Tensors = Set<String>()
        /// Depthwise weights: kept as the float model stores them (quantized to 16 bits at load).
        var depthwiseTensors = Set<String>()
        /// Balanced layers: weight name -> (m, name of the tensor holding m).
        var balanced: [String: (m: [Float], name: String)] = [:]
        for (i, range) in ranges {
            let (scale, zero) = Quantization.activation(low: range.low, high: range.high)
            var quantization = InputQuantization(scale: scale, zeroPoint: zero)
            let op = description.graph.nodes[i].op
            guard let weight = op.weight else {
                throw CoverGenreError(.invalidArgument, "graph node \"\(graph.nodes[i].name)\" has no weights to quantize")
            }
            if let m = channelScales[i] {
                quantization.channelScales = weight + ".channel_scales"
                balanced[weight] = (m, weight + ".channel_scales")
            }
            description.graph.nodes[i].op = op.withInputQuantization(quantization)!
            if isDepthwise(i) { depthwiseTensors.insert(weight) } else { int8Tensors.insert(weight) }
        }
        if case .object(var p) = description.provenance {
            p["quantization"] = provenance
            description.provenance = .object(p)
        } else {
            description.provenance = .object(["quantization": provenance])
        }
        /// Bias name -> the shift to subtract (`biasShifts`).
        var shifted: [String: [Float]] = [:]
        for (i, shift) in biasShifts {
            if let bias = graph.nodes[i].op.bias { shifted[bias] = shift }
        }
        var compact = Set<String>()
        for node in description.graph.nodes where node.op.inputQuantization == nil {
            switch node.op {
            case .conv2d(let a) where compactFloatLayers == .all: compact.insert(a.weight)
            case .linear(let a) where compactFloatLayers != .none: compact.insert(a.weight)
            default: break
            }
        }
        var writer = ModelWriter(metadata: description.json)
        for info in model.file.tensors {
            if depthwiseTensors.contains(info.name) {
                if let (m, name) = balanced[info.name] { try writer.add(name, shape: [m.count], values: m) }
                try writer.add(copying: info, of: model.file)
            } else if int8Tensors.contains(info.name) {
                if let (m, name) = balanced[info.name] { try writer.add(name, shape: [m.count], values: m) }
                try writer.add(info.name, shape: info.shape, values: try balancedWeights(info.name, m: balanced[info.name]?.m),
                               storage: .int8, int8Levels: weightLevels)
            } else if let shift = shifted[info.name], info.dtype != .int8, info.shape == [shift.count] {
                let values = try model.file.floats(info.name).array
                // Kept in the bias's own storage (float32 or float16).
                try writer.add(info.name, shape: info.shape, values: zip(values, shift).map { $0 - $1 }, storage: info.dtype)
            } else if compact.contains(info.name), info.dtype != .int8 {
                try writer.add(info.name, shape: info.shape, values: try model.file.floats(info.name).array, storage: .int8)
            } else {
                try writer.add(copying: info, of: model.file)
            }
        }
        return writer
    }
}
