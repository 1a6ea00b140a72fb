import CKernels

/// How a tensor is held as bytes between two int8 layers (docs/quantization.md, "uint8 between
/// layers"): channel c of value v is the byte cgk_q8_quantize makes of v with `inverseScales[c]`
/// and `zeroPoint`, exactly what the reading layer would make of the float itself. The reading
/// layer owns it; the layer that writes the tensor uses it to write bytes instead of floats.
public final class ByteQuantization: @unchecked Sendable {
    public let inverseScales: UnsafeMutablePointer<Float>
    public let channels: Int
    public let zeroPoint: Int32

    init?(inverseScales: [Float], zeroPoint: Int) {
        guard !inverseScales.isEmpty, inverseScales.allSatisfy({ $0.isFinite && $0 > 0 }), (0...255).contains(zeroPoint) else { return nil }
        self.inverseScales = .allocate(capacity: inverseScales.count)
        self.inverseScales.initialize(from: inverseScales, count: inverseScales.count)
        channels = inverseScales.count
        self.zeroPoint = Int32(zeroPoint)
    }

    deinit { inverseScales.deallocate() }

    /// Quantizes `pixels` pixels of `channels` floats into bytes, split across `threads`.
    func quantize(_ x: UnsafePointer<Float>, pixels: Int, into q: UnsafeMutablePointer<UInt8>, threads: Int) {
        let c = channels
        Parallel.forRanges(pixels, threads: pixels >= 64 * max(threads, 1) ? threads : 1) { _, range in
            for p in range { cgk_q8_quantize(x + p * c, c, 0, self.inverseScales, self.zeroPoint, q + p * c) }
        }
    }
}

/// A depthwise convolution in int8 (cgk_depthwise_q8): uint8 activations quantized per channel
/// (a depthwise convolution reads each channel alone, so each gets its own range at no cost),
/// 16-bit weights per channel quantized here at load from the float weights the file holds, exact
/// int32 sums, and the float epilogue of the int8 GEMM. Its input arrives as bytes from the int8
/// 1x1 convolution before it, or is quantized from floats first; its output leaves as floats, or
/// as bytes in the quantization of the int8 layer after it (`ByteQuantization`). So between an
/// expansion and a projection the activations stay bytes: a quarter of the memory traffic, which
/// is what a depthwise convolution waits on in a network.
///
/// Channel c's input is read as x / (scale * m[c]) (the channel scales m give each channel its own
/// range); unlike a balanced 1x1 convolution's, the weights in the file are the float model's
/// own, not multiplied by m (per-channel weight quantization gains nothing from it, and a float16
/// file would round the products): m is multiplied back into the output scale.
public final class QuantizedDepthwise: @unchecked Sendable {
    public let shape: ConvShape
    private let weights: UnsafeMutablePointer<Int16>
    private let scales: UnsafeMutablePointer<Float>
    private let bias: UnsafePointer<Float>?
    public let activation: Activation
    /// How this layer's input is quantized (what the layer before it writes when it writes bytes).
    public let input: ByteQuantization

    /// The most taps whose int32 sums stay exact (cg_kernels.h: 257 x 255 x 32767 < 2^31).
    public static let maxTaps = 257

    /// Nil when the shape is no depthwise convolution, has over `maxTaps` taps, a weight is not
    /// finite, or a scale or its inverse is not finite and positive. `channelScales`: m[c], or nil
    /// for 1. `bias` must outlive this object.
    public init?(_ shape: ConvShape, weights: UnsafePointer<Float>, bias: UnsafePointer<Float>?, activation: Activation,
                 inputScale: Float, zeroPoint: Int, channelScales: [Float]?) {
        let channels = shape.outChannels, taps = shape.window.taps
        guard shape.method == .depthwise, taps <= QuantizedDepthwise.maxTaps, (0...255).contains(zeroPoint),
              inputScale.isFinite, inputScale > 0, channelScales.map({ $0.count == channels }) ?? true
        else { return nil }
        guard let (weightScales, values) = Quantization.symmetric16(UnsafeBufferPointer(start: weights, count: taps * channels),
                                                                       channels: channels)
        else { return nil }
        var scales = [Float](repeating: 0, count: channels), inverses = scales
        for c in 0..<channels {
            // Channel c's bytes count steps of s = inputScale * m[c], its weights steps of
            // weightScales[c].
            let s = inputScale * (channelScales?[c] ?? 1)
            scales[c] = s * weightScales[c]
            inverses[c] = 1 / s
            guard s.isFinite, s > 0, inverses[c].isFinite, scales[c].isFinite, scales[c] > 0 else { return nil }
        }
        guard let input = ByteQuantization(inverseScales: inverses, zeroPoint: zeroPoint) else { return nil }
        self.shape = shape
        self.weights = .allocate(capacity: values.count)
        self.weights.initialize(from: values, count: values.count)
        self.scales = .allocate(capacity: channels)
        self.scales.initialize(from: scales, count: channels)
        self.bias = bias
        self.activation = activation
        self.input = input
    }

    deinit {
        weights.deallocate()
        scales.deallocate()
    }

    /// The kernel's parameters, writing floats (output nil) or bytes for `output`.
    func parameters(_ output: ByteQuantization?) -> cgk_dwq8 {
        cgk_dwq8(weight: weights, scale: scales, bias: bias, zero: input.zeroPoint, activation: activation.code,
                 out_inv_scales: output.map { UnsafePointer($0.inverseScales) }, out_zero: output?.zeroPoint ?? 0)
    }

    /// Bytes of scratch for `batch` images whose input comes as floats (quantized into it first).
    public func scratchBytes(batch: Int) -> Int { batch * shape.inElementsPerImage }

    /// y = act(depthwise(x) + bias) for `batch` images. `x` holds bytes in `input`'s quantization
    /// when `inputIsBytes`, else floats (quantized into `scratch` first); `y` receives floats, or
    /// bytes in `output`'s quantization. Work is split as the float kernel's (`Conv2D.depthwiseWork`).
    public func forward(batch: Int, x: UnsafeRawPointer, inputIsBytes: Bool, output: ByteQuantization?,
                        y: UnsafeMutableRawPointer, scratch: UnsafeMutableRawPointer?, threads: Int) {
        let bytes: UnsafePointer<UInt8>
        if inputIsBytes {
            bytes = x.assumingMemoryBound(to: UInt8.self)
        } else {
            let q = scratch!.assumingMemoryBound(to: UInt8.self) // float scratch, used here as bytes
            input.quantize(x.assumingMemoryBound(to: Float.self), pixels: batch * shape.window.inPixels, into: q, threads: threads)
            bytes = UnsafePointer(q)
        }
        precondition(output.map { $0.channels == shape.outChannels } ?? true)
        var window = shape.window.c
        var p = parameters(output)
        let inStride = shape.inElementsPerImage, outStride = shape.outElementsPerImage * (output == nil ? 4 : 1)
        Conv2D.depthwiseWork(shape, batch: batch, threads: threads) { n, rows, channels in
            cgk_depthwise_q8(bytes + n * inStride, &window, &p, Int32(rows.lowerBound), Int32(rows.upperBound),
                             Int32(channels.lowerBound), Int32(channels.upperBound), y + n * outStride)
        }
    }
}
