import CKernels

/// A weight matrix (k x n, row-major) packed once for cgk_gemm_packed. Inference packs every
/// convolution and linear layer when the model loads; nil when the CPU lacks the microkernels.
public final class PackedMatrix: @unchecked Sendable {
    public let rows: Int
    public let columns: Int
    private let pointer: UnsafeMutablePointer<Float>
    /// Keeps the packed values alive: their own buffer, or the model's arena.
    private let owner: AnyObject

    public static var isAvailable: Bool { cgk_gemm_packed_available() != 0 }

    /// Packs `matrix` into `arena` when given (a model's packed weights share one), else into a
    /// buffer of its own.
    public convenience init?(_ matrix: UnsafePointer<Float>, rows: Int, columns: Int, leadingDimension: Int? = nil,
                             arena: WeightArena? = nil) {
        self.init(rows: rows, columns: columns, arena: arena) {
            cgk_pack_b(matrix, leadingDimension ?? columns, Int32(rows), Int32(columns), $0)
        }
    }

    /// Packs half-precision weights (as stored in an f16 model file) without a float32 copy.
    public convenience init?(halfs matrix: UnsafePointer<UInt16>, rows: Int, columns: Int, arena: WeightArena? = nil) {
        self.init(rows: rows, columns: columns, arena: arena) { cgk_pack_b_f16(matrix, columns, Int32(rows), Int32(columns), $0) }
    }

    private init?(rows: Int, columns: Int, arena: WeightArena?, pack: (UnsafeMutablePointer<Float>) -> Void) {
        guard PackedMatrix.isAvailable else { return nil }
        let count = cgk_pack_b_floats(Int32(rows), Int32(columns))
        if let arena {
            guard let pointer = arena.allocate(floats: count) else { return nil }
            self.pointer = pointer
            owner = arena
        } else {
            guard let buffer = FloatBuffer(uninitializedCount: count) else { return nil }
            pointer = buffer.pointer
            owner = buffer
        }
        pack(pointer)
        self.rows = rows
        self.columns = columns
    }

    var panels: Int { (columns + 15) / 16 }

    /// Products with at least threads x this many rows split rows across threads; smaller ones
    /// split the 16-column panels.
    public static let rowSplitMinimum = 96

    /// c[m x columns] = act(a[m x rows] * self + bias), split across threads by rows when there
    /// are many, else by 16-column panels.
    public func multiply(_ a: UnsafePointer<Float>, rows m: Int, lda: Int, into c: UnsafeMutablePointer<Float>, ldc: Int,
                         bias: UnsafePointer<Float>?, activation: Activation, threads: Int) {
        if threads <= 1 {
            cgk_gemm_packed(Int32(m), Int32(columns), Int32(rows), a, lda, pointer, c, ldc, bias, activation.code, 0, Int32(panels))
        } else if m >= threads * PackedMatrix.rowSplitMinimum {
            Parallel.forRanges(m, threads: threads) { _, range in
                cgk_gemm_packed(Int32(range.count), Int32(columns), Int32(rows), a + range.lowerBound * lda, lda, pointer,
                                c + range.lowerBound * ldc, ldc, bias, activation.code, 0, Int32(panels))
            }
        } else {
            Parallel.forRanges(panels, threads: threads) { _, range in
                cgk_gemm_packed(Int32(m), Int32(columns), Int32(rows), a, lda, pointer, c, ldc, bias, activation.code,
                                Int32(range.lowerBound), Int32(range.upperBound))
            }
        }
    }
}
