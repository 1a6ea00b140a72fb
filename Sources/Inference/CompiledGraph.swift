import Graph
import Kernels
import ModelFormat
import SystemIO

#if canImport(Glibc)
import Glibc
#endif

/// Where a compiled graph gets its weights.
public protocol WeightSource {
    func floats(_ name: String) throws -> FloatTensor
    func shape(_ name: String) -> [Int]?
    /// The stored IEEE half values of a tensor kept in f16, else nil. Valid while the source lives.
    func halfs(_ name: String) -> UnsafePointer<UInt16>?
    /// The per-channel scales and values of a tensor kept in int8, else nil. Valid while the source lives.
    func int8(_ name: String) -> (scales: UnsafePointer<Float>, values: UnsafePointer<Int8>)?
}

extension WeightSource {
    public func halfs(_ name: String) -> UnsafePointer<UInt16>? { nil }
    public func int8(_ name: String) -> (scales: UnsafePointer<Float>, values: UnsafePointer<Int8>)? { nil }
}

extension ModelFile: WeightSource {
    public func shape(_ name: String) -> [Int]? { info(name)?.shape }

    public func halfs(_ name: String) -> UnsafePointer<UInt16>? {
        guard let tensor = info(name), tensor.dtype == .float16, tensor.elementCount > 0 else { return nil }
        return rawBytes(tensor).baseAddress!.assumingMemoryBound(to: UInt16.self)
    }

    public func int8(_ name: String) -> (scales: UnsafePointer<Float>, values: UnsafePointer<Int8>)? {
        guard let tensor = info(name), tensor.elementCount > 0 else { return nil }
        return int8(tensor)
    }
}

/// A graph bound to its weights, ready to run: one step per node, weights resolved to pointers,
/// batch norms turned into per-channel scale and shift. Immutable, so any number of threads may
/// run it at once, each with its own `ExecutionContext`.
public final class CompiledGraph: @unchecked Sendable {
    /// How a convolution or linear layer holds its weights. Packed and Winograd forms are made
    /// at load and are all the layer needs, so the float32 copy an f16 file was widened into is
    /// not kept (it would double the weights' memory); plain weights serve depthwise and grouped
    /// convolutions, and CPUs without the packed microkernels. Int8 layers are always `packed`,
    /// as a `QuantizedMatrix`.
    enum Weights {
        case plain(UnsafePointer<Float>)
        case packed(any PackedWeights)
        case winograd(WinogradConvolution)
    }

    enum Kernel {
        case conv(ConvShape, Weights, bias: UnsafePointer<Float>?, Activation)
        /// A 1x1 convolution and the depthwise convolution that alone reads its output, as one
        /// step (`ExpandDepthwise`); the 1x1 convolution's own step becomes an alias.
        case expandDepthwise(expand: ConvShape, any PackedWeights, expandBias: UnsafePointer<Float>?, expandActivation: Activation,
                             depthwise: ConvShape, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?, Activation)
        case linear(inFeatures: Int, outFeatures: Int, Weights, bias: UnsafePointer<Float>?, Activation)
        case scaleShift(scale: UnsafePointer<Float>, shift: UnsafePointer<Float>, Activation)
        case maxPool(WindowGeometry)
        case globalAveragePool
        case adaptiveAveragePool(height: Int, width: Int)
        case channelStats
        case concat
        case add(Activation)
        case activation(Activation)
        case softmax
        /// Flatten and dropout, and the first step of a fused pair: the output is the input's buffer.
        case alias
    }

    struct Step {
        let kernel: Kernel
        let inputs: [Int]            // value indices; value 0 is the graph input
        let inputShapes: [ActivationShape]
        let output: Int              // value index
        let outputShape: ActivationShape
        /// A max pool run inside this step's convolution (a stem as strips, `Conv2D.forward(pool:)`):
        /// the output is the pooled image; the convolution's own output became an alias. A field, not
        /// a Kernel case: a new case changed the enum's layout, and valgrind then reported every
        /// match on it as depending on uninitialised bytes.
        var pool: WindowGeometry? = nil
        /// A depthwise convolution run in int8 (its kernel is `.conv` with the float weights, or
        /// `.expandDepthwise`); a field for the reason `pool` is one.
        var depthwiseQ8: QuantizedDepthwise? = nil
        /// The input arrives as bytes in this step's own input quantization (`byteChains`).
        var inputBytes = false
        /// The output leaves as bytes in the reading step's input quantization (`byteChains`).
        var outputBytes: ByteQuantization? = nil
    }

    let steps: [Step]
    /// Per-image element count of each value (value 0 = graph input, value i+1 = node i).
    let valueSizes: [Int]
    public let inputShape: ActivationShape
    let logitsValue: Int
    let embeddingValue: Int?
    public let classCount: Int
    public let embeddingSize: Int
    /// Multiply-adds per image.
    public let macs: Int
    private let retained: [AnyObject]
    private(set) var plan: BufferPlan!

    /// `winograd`: run eligible 3x3 convolutions with Winograd F(4x4, 3x3) (faster; float
    /// rounding differs from direct convolution by about 1e-6 relative). `fuse`: run large
    /// expansions and the depthwise convolutions that read them as one step, and a stem and the
    /// max pool after it (identical results).
    public init(graph: GraphSpec, weights: WeightSource, limits: GraphLimits = GraphLimits(), winograd: Bool = true,
                fuse: Bool = true) throws {
        let resolved = try graph.resolve(tensorShape: weights.shape, limits: limits)
        var retained: [AnyObject] = []
        let arena = WeightArena()
        retained.append(arena)
        func pointer(_ name: String) throws -> UnsafePointer<Float> {
            let tensor = try weights.floats(name)
            retained.append(tensor.owner)
            return tensor.pointer
        }
        /// The best form of a weight matrix (rows x columns) for `prepare`'s kernels; plain when
        /// they decline it.
        func layerWeights(_ name: String, _ prepare: (UnsafePointer<Float>) -> Weights?) throws -> Weights {
            let tensor = try weights.floats(name)
            if let prepared = withExtendedLifetime(tensor.owner, { prepare(tensor.pointer) }) { return prepared }
            retained.append(tensor.owner)
            return .plain(tensor.pointer)
        }
        func ownedCopy(_ values: [Float]) throws -> UnsafePointer<Float> {
            guard let buffer = FloatBuffer(count: values.count) else { throw CoverGenreError(.outOfMemory, "out of memory compiling the graph") }
            values.withUnsafeBufferPointer { buffer.pointer.update(from: $0.baseAddress!, count: values.count) }
            retained.append(buffer)
            return UnsafePointer(buffer.pointer)
        }
        /// A weight matrix packed for the GEMM microkernels: f16 weights straight from the file,
        /// f32 ones from the map (`resolve` has checked the shape); plain without the microkernels.
        /// The packing functions set the row order (a convolution's: `Conv2D.packWeights`).
        func packedWeights(_ name: String, fromHalfs: (UnsafePointer<UInt16>) -> PackedMatrix?,
                           fromFloats: (UnsafePointer<Float>) -> PackedMatrix?) throws -> Weights {
            if let halfs = weights.halfs(name), let packed = fromHalfs(halfs) { return .packed(packed) }
            return try layerWeights(name) { fromFloats($0).map { .packed($0) } }
        }
        /// An int8 layer's channel scales m (`InputQuantization.channelScales`), if it has them:
        /// float32 only (the int8 weights were multiplied by exactly these values; a float16 copy,
        /// as an old `convert --storage f16` wrote, would no longer cancel them), finite, positive,
        /// and `count` of them when given.
        func channelScales(_ node: Node, _ input: InputQuantization, count: Int? = nil) throws -> [Float]? {
            guard let name = input.channelScales else { return nil }
            if weights.halfs(name) != nil || weights.int8(name) != nil {
                throw CoverGenreError(.modelFormat, "graph node \"\(node.name)\": channel scales \"\(name)\" must be stored as float32")
            }
            let m = try weights.floats(name).array
            guard m.allSatisfy({ $0.isFinite && $0 > 0 }), count.map({ m.count == $0 }) ?? true else {
                throw CoverGenreError(.modelFormat, "graph node \"\(node.name)\": channel scales \"\(name)\" are not all finite and positive"
                                      + (count.map { ", \($0) of them" } ?? ""))
            }
            return m
        }
        /// An int8 layer's weights (k x n) with the quantization of its input; nil for a float
        /// layer (whose weights may still be stored in int8, only to make the file smaller: they
        /// are widened to float32 like f16 ones). A node that asks for int8 inputs without int8
        /// weights is refused.
        func quantizedWeights(_ node: Node, _ weight: String, rows: Int, columns: Int, canRun: Bool) throws -> Weights? {
            let stored = weights.int8(weight)
            guard let input = node.op.inputQuantization else { return nil }
            guard let stored else {
                throw CoverGenreError(.modelFormat, "graph node \"\(node.name)\": input_quantization needs int8 weights; \"\(weight)\" is not int8")
            }
            guard canRun else {
                throw CoverGenreError(.modelUnsupported, "graph node \"\(node.name)\": int8 weights are supported on 1x1, im2col and linear layers, not this one")
            }
            guard rows <= QuantizedMatrix.maxRows else {
                throw CoverGenreError(.modelUnsupported, "graph node \"\(node.name)\": int8 layers take at most \(QuantizedMatrix.maxRows) inputs per output; this one has \(rows)")
            }
            let count = rows * columns
            if (0..<count).contains(where: { stored.values[$0] == -128 }) {
                throw CoverGenreError(.modelFormat, "graph node \"\(node.name)\": int8 weights \"\(weight)\" hold -128 (outside [-127, 127])")
            }
            let channelScales = try channelScales(node, input)
            guard let matrix = QuantizedMatrix(stored.values, rows: rows, columns: columns, weightScales: stored.scales,
                                               inputScale: input.scale, zeroPoint: input.zeroPoint, channelScales: channelScales,
                                               arena: arena)
            else {
                throw CoverGenreError(.modelFormat, "graph node \"\(node.name)\": the scales of int8 weights \"\(weight)\" overflow, "
                                      + "or memory ran out packing them")
            }
            return .packed(matrix)
        }
        var steps: [Step] = []
        for (i, r) in resolved.enumerated() {
            let kernel: Kernel
            switch r.node.op {
            case .conv2d(let a) where r.conv!.method == .depthwise && a.inputQuantization != nil:
                let shape = r.conv!, input = a.inputQuantization!
                guard shape.window.taps <= QuantizedDepthwise.maxTaps else {
                    throw CoverGenreError(.modelUnsupported, "graph node \"\(r.node.name)\": int8 depthwise convolutions take at most \(QuantizedDepthwise.maxTaps) taps; this one has \(shape.window.taps)")
                }
                let channelScales = try channelScales(r.node, input, count: shape.outChannels)
                let weight = try pointer(a.weight), bias = try a.bias.map(pointer)
                guard let quantized = QuantizedDepthwise(shape, weights: weight, bias: bias, activation: a.activation, inputScale: input.scale,
                                                         zeroPoint: input.zeroPoint, channelScales: channelScales)
                else {
                    throw CoverGenreError(.modelFormat, "graph node \"\(r.node.name)\": the weights or scales of an int8 depthwise convolution are not finite, or their scales overflow")
                }
                var step = Step(kernel: .conv(shape, .plain(weight), bias: bias, a.activation), inputs: r.inputIndices.map { $0 + 1 },
                                inputShapes: r.inputShapes, output: i + 1, outputShape: r.outputShape)
                step.depthwiseQ8 = quantized
                steps.append(step)
                continue
            case .conv2d(let a):
                let shape = r.conv!
                let layer: Weights
                if let quantized = try quantizedWeights(r.node, a.weight, rows: shape.depth, columns: shape.outChannels,
                                                        canRun: Conv2D.canPack(shape)) {
                    layer = quantized
                } else if winograd && WinogradConvolution.isEligible(shape) {
                    layer = try layerWeights(a.weight) { weight in
                        WinogradConvolution(shape, weight: weight, arena: arena).map { .winograd($0) }
                    }
                } else if Conv2D.canPack(shape) {
                    layer = try packedWeights(a.weight, fromHalfs: { Conv2D.packWeights(shape, halfs: $0, arena: arena) },
                                              fromFloats: { Conv2D.packWeights(shape, $0, arena: arena) })
                } else {
                    layer = .plain(try pointer(a.weight))
                }
                kernel = .conv(shape, layer, bias: try a.bias.map(pointer), a.activation)
            case .linear(let a):
                let inFeatures = r.inputShapes[0].channels
                let layer = try quantizedWeights(r.node, a.weight, rows: inFeatures, columns: a.outFeatures, canRun: true) ?? packedWeights(
                    a.weight, fromHalfs: { PackedMatrix(halfs: $0, rows: inFeatures, columns: a.outFeatures, arena: arena) },
                    fromFloats: { PackedMatrix($0, rows: inFeatures, columns: a.outFeatures, arena: arena) })
                kernel = .linear(inFeatures: inFeatures, outFeatures: a.outFeatures, layer, bias: try a.bias.map(pointer), a.activation)
            case .batchNorm(let a):
                let gamma = try weights.floats(a.gamma).array, beta = try weights.floats(a.beta).array
                let mean = try weights.floats(a.mean).array, variance = try weights.floats(a.variance).array
                var scale = [Float](repeating: 0, count: gamma.count), shift = scale
                for c in 0..<gamma.count {
                    scale[c] = gamma[c] / (variance[c] + Float(a.epsilon)).squareRoot()
                    shift[c] = beta[c] - mean[c] * scale[c]
                }
                guard scale.allSatisfy(\.isFinite), shift.allSatisfy(\.isFinite) else {
                    throw CoverGenreError(.modelFormat, "graph node \"\(r.node.name)\": batch norm statistics give non-finite scales")
                }
                kernel = .scaleShift(scale: try ownedCopy(scale), shift: try ownedCopy(shift), a.activation)
            case .maxPool: kernel = .maxPool(r.window!)
            case .globalAveragePool: kernel = .globalAveragePool
            case .adaptiveAveragePool(let h, let w): kernel = .adaptiveAveragePool(height: h, width: w)
            case .channelStats: kernel = .channelStats
            case .concat: kernel = .concat
            case .add(let act): kernel = .add(act)
            case .activation(let act): kernel = .activation(act)
            case .softmax: kernel = .softmax
            case .flatten, .dropout: kernel = .alias
            }
            steps.append(Step(kernel: kernel, inputs: r.inputIndices.map { $0 + 1 }, inputShapes: r.inputShapes,
                              output: i + 1, outputShape: r.outputShape))
        }
        let index = Dictionary(uniqueKeysWithValues: resolved.enumerated().map { ($1.node.name, $0 + 1) })
        let outputs = Set([index[graph.logits]!] + (graph.embedding.map { [index[$0]!] } ?? []))
        self.steps = fuse
            ? CompiledGraph.byteChains(CompiledGraph.fusingPools(CompiledGraph.fusingExpansions(steps, outputs: outputs), outputs: outputs),
                                       outputs: outputs)
            : steps
        self.valueSizes = [graph.inputShape.count] + resolved.map(\.outputShape.count)
        self.inputShape = graph.inputShape
        self.logitsValue = index[graph.logits]!
        self.embeddingValue = graph.embedding.map { index[$0]! }
        let sizes = [graph.inputShape.count] + resolved.map(\.outputShape.count)
        self.classCount = sizes[index[graph.logits]!]
        self.embeddingSize = graph.embedding.map { sizes[index[$0]!] } ?? 0
        self.macs = graph.macs(resolved)
        self.retained = retained
        self.plan = BufferPlan(self)
    }

    /// `steps` with each step and the next one made one step where `fuse` (given both) returns
    /// it: the next step alone reads the first's output, which is no graph output. The first step
    /// becomes an alias of its input; the fused step reads the first's inputs.
    private static func fusingPairs(_ steps: [Step], outputs: Set<Int>, _ fuse: (Step, Step) -> Step?) -> [Step] {
        var readers = [Int: Int]()
        for step in steps { for v in step.inputs { readers[v, default: 0] += 1 } }
        var steps = steps
        for i in steps.indices.dropLast() {
            let first = steps[i], next = steps[i + 1]
            guard next.inputs == [first.output], readers[first.output] == 1, !outputs.contains(first.output),
                  let fused = fuse(first, next)
            else { continue }
            steps[i] = Step(kernel: .alias, inputs: first.inputs, inputShapes: first.inputShapes, output: first.output,
                            outputShape: first.outputShape)
            steps[i + 1] = fused
        }
        return steps
    }

    /// Each 1x1 convolution (packed) followed by the depthwise convolution that alone reads it, as
    /// one step when `ExpandDepthwise` finds it worthwhile.
    /// An int8 depthwise convolution fuses with an int8 expansion only (its ring holds bytes the
    /// int8 GEMM writes).
    private static func fusingExpansions(_ steps: [Step], outputs: Set<Int>) -> [Step] {
        fusingPairs(steps, outputs: outputs) { first, next in
            guard case .conv(let expand, .packed(let packed), let expandBias, let expandActivation) = first.kernel,
                  case .conv(let depthwise, .plain(let weight), let bias, let activation) = next.kernel,
                  ExpandDepthwise.isWorthwhile(expand: expand, depthwise: depthwise)
            else { return nil }
            if next.depthwiseQ8 != nil {
                guard let q = packed as? QuantizedMatrix, q.rows <= QuantizedMatrix.maxRowsForByteOutput else { return nil }
            }
            var step = Step(kernel: .expandDepthwise(expand: expand, packed, expandBias: expandBias, expandActivation: expandActivation,
                                                     depthwise: depthwise, weight: weight, bias: bias, activation),
                            inputs: first.inputs, inputShapes: first.inputShapes, output: next.output, outputShape: next.outputShape)
            step.depthwiseQ8 = next.depthwiseQ8
            return step
        }
    }

    /// Where an int8 layer's output is read by one int8 layer only, the first writes bytes in the
    /// second's input quantization and the second reads them: the bytes the second would have made
    /// of the floats, so the answers do not change, and the tensor between them is a quarter of
    /// the memory traffic (an expansion's output, a depthwise convolution's). Writers: int8 1x1
    /// convolutions (depth up to `QuantizedMatrix.maxRowsForByteOutput`) and int8 depthwise
    /// convolutions, fused or not; readers: int8 1x1 convolutions, int8 expansions fused with
    /// their depthwise convolution, and int8 depthwise convolutions. An alias step that nothing
    /// reads after it (the first of a fused pair) is no reader.
    static func byteChains(_ steps: [Step], outputs: Set<Int>) -> [Step] {
        var readers = [Int: [Int]]()
        var read = Set<Int>(outputs)
        for step in steps { read.formUnion(step.inputs) }
        for (s, step) in steps.enumerated() {
            if case .alias = step.kernel, !read.contains(step.output) { continue }
            for v in Set(step.inputs) { readers[v, default: []].append(s) }
        }
        func pointwiseInt8(_ step: Step) -> QuantizedMatrix? {
            guard case .conv(let shape, .packed(let packed), _, _) = step.kernel, shape.method == .pointwise, step.pool == nil
            else { return nil }
            return packed as? QuantizedMatrix
        }
        /// How a step would read its input as bytes, if it can.
        func byteInput(_ step: Step) -> ByteQuantization? {
            guard step.inputs.count == 1 else { return nil }
            if let dw = step.depthwiseQ8 {
                if case .expandDepthwise(_, let packed, _, _, _, _, _, _) = step.kernel { return (packed as? QuantizedMatrix)?.inputBytes }
                return dw.input
            }
            return pointwiseInt8(step)?.inputBytes
        }
        func writesBytes(_ step: Step) -> Bool {
            if step.depthwiseQ8 != nil { return true }
            return pointwiseInt8(step).map { $0.rows <= QuantizedMatrix.maxRowsForByteOutput } ?? false
        }
        var steps = steps
        for s in steps.indices where writesBytes(steps[s]) && !outputs.contains(steps[s].output) {
            guard let r = readers[steps[s].output], r.count == 1, let quantization = byteInput(steps[r[0]]),
                  quantization.channels == steps[s].outputShape.channels
            else { continue }
            steps[s].outputBytes = quantization
            steps[r[0]].inputBytes = true
        }
        return steps
    }

    /// Each strip convolution (a stem, packed) followed by a max pool `Conv2D.canFusePool`
    /// accepts, as one step: the full-size output is never stored (the baseline CNN's 256x256x32
    /// stem output is 8 MB).
    private static func fusingPools(_ steps: [Step], outputs: Set<Int>) -> [Step] {
        fusingPairs(steps, outputs: outputs) { first, next in
            guard case .conv(let shape, .packed(let packed), _, _) = first.kernel, packed is PackedMatrix, first.pool == nil,
                  case .maxPool(let pool) = next.kernel, Conv2D.canFusePool(shape, pool)
            else { return nil }
            return Step(kernel: first.kernel, inputs: first.inputs, inputShapes: first.inputShapes, output: next.output,
                        outputShape: next.outputShape, pool: pool)
        }
    }

    /// A short description of each step, for profiles: its kind and shape.
    /// (Bytes on either side: `byteChains`.)
    public var stepDescriptions: [String] {
        steps.map { step in
            switch step.kernel {
            case .conv(let shape, let weights, _, _):
                let w = shape.window
                let method: String
                if case .winograd = weights { method = "winograd" } else if case .packed(let p) = weights, p is PackedMatrix,
                    Conv2D.usesStrips(shape) {
                    method = "strips"
                } else { method = "\(shape.method)" }
                let int8 = if case .packed(let p) = weights, p is QuantizedMatrix { " int8" } else if step.depthwiseQ8 != nil { " int8" } else { "" }
                let pooled = step.pool.map { " + maxpool \($0.kernelH)x\($0.kernelW)/\($0.strideH)" } ?? ""
                return "conv \(w.kernelH)x\(w.kernelW)/\(w.strideH) \(method)\(int8) \(w.inHeight)x\(w.inWidth)x\(w.inChannels)->\(shape.outChannels)"
                    + pooled + step.bytesDescription
            case .expandDepthwise(let expand, let packed, _, _, let depthwise, _, _, _):
                let w = depthwise.window
                return "expand\(packed is QuantizedMatrix ? " int8" : "")+depthwise\(step.depthwiseQ8 != nil ? " int8" : "") \(w.kernelH)x\(w.kernelW)/\(w.strideH) \(w.inHeight)x\(w.inWidth)x"
                    + "\(expand.window.inChannels)->\(w.inChannels)" + step.bytesDescription
            case .linear(let i, let o, let weights, _, _):
                let int8 = if case .packed(let p) = weights, p is QuantizedMatrix { " int8" } else { "" }
                return "linear\(int8) \(i)->\(o)"
            default: return "\(step.kernel)".split(separator: "(").first.map(String.init) ?? "step"
            }
        }
    }

    /// Floats of conv scratch one context needs.
    func scratchCount(batch: Int, threads: Int) -> Int {
        steps.reduce(0) { m, step in
            if case .expandDepthwise(_, _, _, _, let depthwise, _, _, _) = step.kernel {
                return max(m, ExpandDepthwise.scratchCount(depthwise: depthwise, threads: threads))
            }
            if let dw = step.depthwiseQ8 {
                return step.inputBytes ? m : max(m, (dw.scratchBytes(batch: batch) + 3) / 4)
            }
            if case .conv(let shape, let weights, _, _) = step.kernel {
                if case .winograd(let w) = weights { return max(m, w.scratchCount(batch: batch, threads: threads)) }
                if case .packed(let packed) = weights {
                    return max(m, Conv2D.packedScratchCount(shape, batch: batch, threads: threads, pool: step.pool,
                                                            strips: packed is PackedMatrix))
                }
                return max(m, Conv2D.scratchCount(shape, batch: batch, threads: threads))
            }
            return m
        }
    }

    /// Runs every step. `buffers[v]` is the storage of value v for `batch` images.
    func run(buffers: [UnsafeMutablePointer<Float>], scratch: UnsafeMutablePointer<Float>?, batch: Int, threads: Int,
             profile: ((Int, Double) -> Void)? = nil, before: ((Int) -> Void)? = nil) {
        for (index, step) in steps.enumerated() {
            before?(index)
            let start = profile == nil ? 0 : Clock.seconds
            defer { if let profile { profile(index, Clock.seconds - start) } }
            let y = buffers[step.output]
            let x = UnsafePointer(buffers[step.inputs[0]])
            let inShape = step.inputShapes[0]
            if let dw = step.depthwiseQ8 {
                if case .expandDepthwise(let expand, let packed, let expandBias, let expandActivation, _, _, _, _) = step.kernel {
                    ExpandDepthwise.forward(expand: expand, packed: packed as! QuantizedMatrix, expandBias: expandBias,
                                            expandActivation: expandActivation, depthwise: dw, batch: batch, x: UnsafeRawPointer(x),
                                            inputIsBytes: step.inputBytes, output: step.outputBytes, y: UnsafeMutableRawPointer(y),
                                            scratch: UnsafeMutableRawPointer(scratch!), threads: threads)
                } else {
                    dw.forward(batch: batch, x: UnsafeRawPointer(x), inputIsBytes: step.inputBytes, output: step.outputBytes,
                               y: UnsafeMutableRawPointer(y), scratch: scratch.map(UnsafeMutableRawPointer.init), threads: threads)
                }
                continue
            }
            if step.inputBytes || step.outputBytes != nil, case .conv(let shape, .packed(let packed), let bias, let act) = step.kernel {
                // An int8 1x1 convolution with bytes on either side (`byteChains`).
                (packed as! QuantizedMatrix).multiply(UnsafeRawPointer(x), inputIsBytes: step.inputBytes, rows: batch * shape.window.inPixels,
                                                      lda: shape.window.inChannels, into: UnsafeMutableRawPointer(y), output: step.outputBytes,
                                                      ldc: shape.outChannels, bias: bias, activation: act, threads: threads)
                continue
            }
            switch step.kernel {
            case .conv(let shape, let weights, let bias, let act):
                switch weights {
                case .winograd(let w):
                    w.forward(batch: batch, x: x, bias: bias, activation: act, y: y, scratch: scratch!, threads: threads)
                case .packed(let packed):
                    Conv2D.forward(shape, batch: batch, x: x, packed: packed, bias: bias, activation: act, pool: step.pool, y: y,
                                   scratch: scratch, threads: threads)
                case .plain(let weight):
                    Conv2D.forward(shape, batch: batch, x: x, weight: weight, bias: bias, activation: act, y: y, scratch: scratch,
                                   threads: threads)
                }
            case .expandDepthwise(let expand, let packed, let expandBias, let expandActivation, let depthwise, let weight,
                                  let bias, let act):
                ExpandDepthwise.forward(expand: expand, packed: packed, expandBias: expandBias, expandActivation: expandActivation,
                                        depthwise: depthwise, weight: weight, bias: bias, activation: act, batch: batch, x: x,
                                        y: y, scratch: scratch!, threads: threads)
            case .linear(let inFeatures, let outFeatures, let weights, let bias, let act):
                switch weights {
                case .packed(let packed):
                    packed.multiply(x, rows: batch, lda: inFeatures, into: y, ldc: outFeatures, bias: bias, activation: act, threads: threads)
                case .plain(let weight):
                    Dense.forward(rows: batch, inFeatures: inFeatures, outFeatures: outFeatures, x: x, weight: weight,
                                  bias: bias, activation: act, y: y, threads: threads)
                case .winograd:
                    preconditionFailure("linear layers have no Winograd form")
                }
            case .scaleShift(let scale, let shift, let act):
                Elementwise.scaleShift(x, rows: batch * inShape.pixels, channels: inShape.channels, scale: scale,
                                       shift: shift, activation: act, y: y, threads: threads)
            case .maxPool(let window):
                Pooling.max(window, batch: batch, x: x, y: y, threads: threads)
            case .globalAveragePool:
                Pooling.globalAverage(batch: batch, pixels: inShape.pixels, channels: inShape.channels, x: x, y: y, threads: threads)
            case .adaptiveAveragePool(let h, let w):
                Pooling.adaptiveAverage(batch: batch, height: inShape.height, width: inShape.width, channels: inShape.channels,
                                        outHeight: h, outWidth: w, x: x, y: y, threads: threads)
            case .channelStats:
                Pooling.channelMeanStd(batch: batch, pixels: inShape.pixels, channels: inShape.channels, x: x, y: y, threads: threads)
            case .concat:
                let outChannels = step.outputShape.channels
                for n in 0..<batch {
                    for p in 0..<inShape.pixels {
                        var offset = 0
                        for (value, shape) in zip(step.inputs, step.inputShapes) {
                            let c = shape.channels
                            (y + (n * inShape.pixels + p) * outChannels + offset)
                                .update(from: buffers[value] + (n * inShape.pixels + p) * c, count: c)
                            offset += c
                        }
                    }
                }
            case .add(let act):
                Elementwise.add(x, buffers[step.inputs[1]], count: batch * inShape.count, activation: act, y: y, threads: threads)
            case .activation(let act):
                if y != buffers[step.inputs[0]] { y.update(from: x, count: batch * inShape.count) }
                Elementwise.activate(y, count: batch * inShape.count, activation: act)
            case .softmax:
                if y != buffers[step.inputs[0]] { y.update(from: x, count: batch * inShape.count) }
                Elementwise.softmax(y, rows: batch * inShape.pixels, columns: inShape.channels)
            case .alias:
                break
            }
        }
    }
}

extension CompiledGraph.Step {
    /// " (bytes in/out)" where activations cross this step as bytes, for profiles.
    var bytesDescription: String {
        switch (inputBytes, outputBytes != nil) {
        case (true, true): return " (bytes in, out)"
        case (true, false): return " (bytes in)"
        case (false, true): return " (bytes out)"
        case (false, false): return ""
        }
    }
}
