import CKernels

/// 3x3 stride-1 convolutions by Winograd F(4x4, 3x3): 2.25x-4x fewer multiplications than
/// im2col + GEMM. Inference only (weights transformed and packed at load); results differ from
/// direct convolution by float rounding (about 1e-6 relative per layer, see the tests).
public final class WinogradConvolution: @unchecked Sendable {
    public let shape: ConvShape
    let planes: [PackedMatrix]

    /// 3x3, stride 1, one group, enough channels for the transforms to pay, packed GEMMs available.
    public static func isEligible(_ shape: ConvShape) -> Bool {
        let w = shape.window
        return PackedMatrix.isAvailable && w.kernelH == 3 && w.kernelW == 3 && w.strideH == 1 && w.strideW == 1
            && shape.groups == 1 && w.inChannels >= 16 && shape.outChannels >= 16 && w.outHeight >= 4 && w.outWidth >= 4
    }

    public init?(_ shape: ConvShape, weight: UnsafePointer<Float>) {
        guard Self.isEligible(shape) else { return nil }
        let cin = shape.window.inChannels, cout = shape.outChannels
        guard let transformed = FloatBuffer(count: 36 * cin * cout) else { return nil }
        cgk_winograd_weights(weight, Int32(cin), Int32(cout), transformed.pointer)
        var planes: [PackedMatrix] = []
        for p in 0..<36 {
            guard let packed = PackedMatrix(transformed.pointer + p * cin * cout, rows: cin, columns: cout) else { return nil }
            planes.append(packed)
        }
        self.shape = shape
        self.planes = planes
    }

    var tilesW: Int { (shape.window.outWidth + 3) / 4 }
    var tiles: Int { tilesW * ((shape.window.outHeight + 3) / 4) }

    /// Tiles per block: V and M of a block (36 x block x (cin + cout) floats) fit in the L2 cache;
    /// small images use smaller blocks so every thread gets one.
    func blockTiles(threads: Int) -> Int {
        let fit = max(4, (256 * 1024) / (36 * (shape.window.inChannels + shape.outChannels)))
        return max(1, min(fit, (tiles + threads - 1) / max(threads, 1)))
    }

    public func scratchCount(threads: Int) -> Int {
        max(threads, 1) * 36 * blockTiles(threads: threads) * (shape.window.inChannels + shape.outChannels)
    }

    public func forward(batch: Int, x: UnsafePointer<Float>, bias: UnsafePointer<Float>?, activation: Activation,
                        y: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>, threads: Int) {
        var window = shape.window.c
        let cin = shape.window.inChannels, cout = shape.outChannels
        let block = blockTiles(threads: threads), blocks = (tiles + block - 1) / block
        let perWorker = 36 * block * (cin + cout)
        let tilesW = Int32(self.tilesW)
        Parallel.forRanges(batch * blocks, threads: threads) { worker, items in
            let v = scratch + worker * perWorker, m = v + 36 * block * cin
            for item in items {
                let n = item / blocks, t0 = (item % blocks) * block, t1 = min(t0 + block, tiles), count = t1 - t0
                cgk_winograd_input(x + n * shape.inElementsPerImage, &window, tilesW, Int32(t0), Int32(t1), v, count * cin)
                for p in 0..<36 {
                    planes[p].multiply(v + p * count * cin, rows: count, lda: cin, into: m + p * count * cout, ldc: cout,
                                       bias: nil, activation: .none, threads: 1)
                }
                cgk_winograd_output(m, count * cout, Int32(cout), Int32(shape.window.outHeight), Int32(shape.window.outWidth), tilesW,
                                    Int32(t0), Int32(t1), bias, activation.code, y + n * shape.outElementsPerImage)
            }
        }
    }
}
