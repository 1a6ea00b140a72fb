import CKernels

/// A weight matrix a GEMM step multiplies by: packed float32 (`PackedMatrix`) or int8
/// (`QuantizedMatrix`). The layers (1x1 and im2col convolutions, linear layers, the fused
/// expansion) run either through this one call.
public protocol PackedWeights: AnyObject, Sendable {
    /// k: the GEMM depth (input features).
    var rows: Int { get }
    /// n: output features.
    var columns: Int { get }
    /// c[m x columns] = act(a[m x rows] * self + bias), split across `threads`.
    func multiply(_ a: UnsafePointer<Float>, rows m: Int, lda: Int, into c: UnsafeMutablePointer<Float>, ldc: Int,
                  bias: UnsafePointer<Float>?, activation: Activation, threads: Int)
}

extension PackedMatrix: PackedWeights {}

/// An int8 weight matrix (k x n, row-major, per-column scales) packed once for cgk_gemm_q8, with
/// the quantization of the activations it reads. Floats go in and come out: the kernel quantizes
/// each block of rows of `a` to uint8 as it reaches it, multiplies in integers, and applies the
/// scales, bias and activation to the int32 sums in registers (`Quantization` says how the AVX2
/// kernel keeps 8-bit weights exact).
public final class QuantizedMatrix: PackedWeights, @unchecked Sendable {
    public let rows: Int
    public let columns: Int
    public let input: (scale: Float, zeroPoint: Int)
    private let packed: UnsafeMutablePointer<Int8>
    /// A weight outside [-63, 63]: the AVX2 kernel splits the activations (cgk_q8_pack).
    public let isWide: Bool
    /// Per column: -zeroPoint * sum_k w[k][c] (the zero point's share of the integer sum), and
    /// input scale x weight scale.
    private let offsets: [Int32]
    private let scales: [Float]
    private let inverseScale: Float
    /// Per k, 1 / (input scale x channel scale), for balanced channels; else nil.
    private let inverseScales: [Float]?
    private let owner: AnyObject
    /// How this matrix quantizes each input row's k values, as bytes a layer before it can write
    /// instead of floats (`multiply(bytes:)`): the same multipliers, so the same bytes.
    public let inputBytes: ByteQuantization

    /// The deepest matrix whose output can be written as bytes (one pass of the kernel over k).
    public static let maxRowsForByteOutput = 2048

    /// The kernel this process runs: "avx512-vnni", "avx2" or "generic" (follows `InstructionSet`).
    public static var kernel: String { String(cString: cgk_q8_kernel()) }

    /// The deepest matrix the int32 sums hold exactly (cg_kernels.h: 65536 x 255 x 127 < 2^31).
    public static let maxRows = 65536

    /// Nil when rows exceed `maxRows`, a weight is -128 (outside the kernels' [-127, 127]), a scale
    /// or its inverse is not finite and
    /// positive, or memory is exhausted. `channelScales`: the balanced channels' m[c] (see
    /// `InputQuantization`), row k reading channel k % channelScales.count (im2col rows run over
    /// the kernel's taps, then channels).
    public init?(_ weights: UnsafePointer<Int8>, rows: Int, columns: Int, weightScales: UnsafePointer<Float>,
                 inputScale: Float, zeroPoint: Int, channelScales: [Float]? = nil, arena: WeightArena? = nil) {
        guard rows > 0, rows <= QuantizedMatrix.maxRows, columns > 0, inputScale.isFinite, inputScale > 0, (1 / inputScale).isFinite,
              (0...255).contains(zeroPoint) else { return nil }
        var perRow: [Float]? = nil
        if let channelScales {
            guard !channelScales.isEmpty, rows % channelScales.count == 0 else { return nil }
            let inverses = (0..<rows).map { 1 / (inputScale * channelScales[$0 % channelScales.count]) }
            guard inverses.allSatisfy({ $0.isFinite && $0 > 0 }) else { return nil }
            perRow = inverses
        }
        inverseScales = perRow
        var offsets = [Int32](repeating: 0, count: columns), scales = [Float](repeating: 0, count: columns)
        for c in 0..<columns {
            var sum = 0
            for k in 0..<rows {
                let w = Int(weights[k * columns + c])
                guard w >= -127 else { return nil }
                sum += w
            }
            offsets[c] = Int32(-zeroPoint * sum)
            scales[c] = inputScale * weightScales[c]
            guard scales[c].isFinite, scales[c] > 0 else { return nil }
        }
        let bytes = cgk_q8_pack_bytes(Int32(rows), Int32(columns))
        if let arena {
            guard let pointer = arena.allocate(floats: (bytes + 3) / 4) else { return nil }
            packed = UnsafeMutableRawPointer(pointer).bindMemory(to: Int8.self, capacity: bytes)
            owner = arena
        } else {
            guard let buffer = FloatBuffer(uninitializedCount: (bytes + 3) / 4) else { return nil }
            packed = UnsafeMutableRawPointer(buffer.pointer).bindMemory(to: Int8.self, capacity: bytes)
            owner = buffer
        }
        guard let inputBytes = ByteQuantization(inverseScales: perRow ?? [Float](repeating: 1 / inputScale, count: rows),
                                                zeroPoint: zeroPoint)
        else { return nil }
        self.inputBytes = inputBytes
        isWide = cgk_q8_pack(weights, columns, Int32(rows), Int32(columns), packed) != 0
        self.rows = rows
        self.columns = columns
        self.input = (inputScale, zeroPoint)
        self.offsets = offsets
        self.scales = scales
        self.inverseScale = 1 / inputScale
    }

    var panels: Int { (columns + 15) / 16 }

    /// Split as `PackedMatrix.multiply`: rows when there are many, else 16-column panels.
    public func multiply(_ a: UnsafePointer<Float>, rows m: Int, lda: Int, into c: UnsafeMutablePointer<Float>, ldc: Int,
                         bias: UnsafePointer<Float>?, activation: Activation, threads: Int) {
        multiply(UnsafeRawPointer(a), inputIsBytes: false, rows: m, lda: lda, into: UnsafeMutableRawPointer(c), output: nil,
                 ldc: ldc, bias: bias, activation: activation, threads: threads)
    }

    /// `multiply` with either side as bytes (cgk_gemm_q8_io): `a` holds bytes in `inputBytes`'
    /// quantization when `inputIsBytes`, else floats; `c` receives bytes in `output`'s
    /// quantization (one per column; needs `rows <= maxRowsForByteOutput`), else floats. lda and
    /// ldc count elements either way.
    public func multiply(_ a: UnsafeRawPointer, inputIsBytes: Bool, rows m: Int, lda: Int, into c: UnsafeMutableRawPointer,
                         output: ByteQuantization?, ldc: Int, bias: UnsafePointer<Float>?, activation: Activation, threads: Int) {
        precondition(output.map { $0.channels == columns && rows <= QuantizedMatrix.maxRowsForByteOutput } ?? true)
        let aSize = inputIsBytes ? 1 : 4, cSize = output == nil ? 4 : 1
        withInverseScales { perChannel in
            offsets.withUnsafeBufferPointer { offsets in
                scales.withUnsafeBufferPointer { scales in
                    let o = offsets.baseAddress!, s = scales.baseAddress!
                    let k = Int32(rows), n = Int32(columns), z = Int32(input.zeroPoint), inv = inverseScale, w: Int32 = isWide ? 1 : 0
                    func call(_ rows: Int, _ first: Int, _ panelBegin: Int, _ panelEnd: Int) {
                        let ap = a + first * lda * aSize, cp = c + first * ldc * cSize
                        var io = cgk_q8_io(a: inputIsBytes ? ap.assumingMemoryBound(to: UInt8.self) : nil,
                                           c: output == nil ? nil : cp.assumingMemoryBound(to: UInt8.self),
                                           out_inv_scales: output.map { UnsafePointer($0.inverseScales) }, out_zero: output?.zeroPoint ?? 0)
                        cgk_gemm_q8_io(Int32(rows), n, k, inputIsBytes ? nil : ap.assumingMemoryBound(to: Float.self), lda, inv, perChannel,
                                       z, packed, w, o, s, output == nil ? cp.assumingMemoryBound(to: Float.self) : nil, ldc, bias,
                                       activation.code, Int32(panelBegin), Int32(panelEnd), &io)
                    }
                    if threads <= 1 {
                        call(m, 0, 0, panels)
                    } else if m >= threads * PackedMatrix.rowSplitMinimum {
                        Parallel.forRanges(m, threads: threads) { _, range in call(range.count, range.lowerBound, 0, self.panels) }
                    } else {
                        Parallel.forRanges(panels, threads: threads) { _, range in call(m, 0, range.lowerBound, range.upperBound) }
                    }
                }
            }
        }
    }

    private func withInverseScales(_ body: (UnsafePointer<Float>?) -> Void) {
        guard let inverseScales else { return body(nil) }
        inverseScales.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}
