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

    public init?(_ shape: ConvShape, weight: UnsafePointer<Float>, arena: WeightArena? = nil) {
        guard Self.isEligible(shape) else { return nil }
        let cin = shape.window.inChannels, cout = shape.outChannels
        guard let transformed = FloatBuffer(uninitializedCount: 36 * cin * cout) else { return nil }
        cgk_winograd_weights(weight, Int32(cin), Int32(cout), transformed.pointer)
        var planes: [PackedMatrix] = []
        for p in 0..<36 {
            guard let packed = PackedMatrix(transformed.pointer + p * cin * cout, rows: cin, columns: cout, arena: arena) else {
                return nil
            }
            planes.append(packed)
        }
        self.shape = shape
        self.planes = planes
    }

    var tilesW: Int { (shape.window.outWidth + 3) / 4 }
    var tiles: Int { tilesW * ((shape.window.outHeight + 3) / 4) }

    /// Whether the transformed weights (36 x cin x cout floats, 4x the direct weights) fit in the
    /// L2 cache beside a block's V and M. When they do, each thread runs its own cache-sized
    /// blocks of tiles. When they do not (VGG-16's 128- to 512-channel layers: 2.4-38 MB), every
    /// block streams all of U from memory, so the threads split each block's 36 GEMMs instead,
    /// each reading its own planes once, and blocks are made large (below).
    var weightsFitInL2: Bool { 36 * shape.window.inChannels * shape.outChannels * 4 <= 512 * 1024 }

    /// Tiles per block, of one image or (when U streams from memory) of the batch's images in turn.
    func blockTiles(batch: Int, threads: Int) -> Int {
        let cin = shape.window.inChannels, cout = shape.outChannels
        let floatsPerTile = 36 * (cin + cout)
        if !weightsFitInL2 {
            // A block reads U once (36 x cin x cout floats) and writes and reads V and M (36 x
            // (cin + cout) per tile): at cin x cout / (cin + cout) tiles U costs no more per tile
            // than V and M do. Blocks span images, so at batch 16 a 14x14 map's 16 tiles per image
            // no longer stream U once per image (VGG-16's 512-channel layers: 38 MB each time).
            let balanced = cin * cout / (cin + cout)
            return max(1, min(batch * tiles, max((1 << 20) / floatsPerTile, balanced)))
        }
        let fit = max(4, (128 * 1024) / floatsPerTile) // V and M of a block: 512 KB, the L2 of one core
        return max(1, min(fit, (tiles + threads - 1) / max(threads, 1)))
    }

    public func scratchCount(batch: Int, threads: Int) -> Int {
        (weightsFitInL2 ? max(threads, 1) : 1) * 36 * blockTiles(batch: batch, threads: threads)
            * (shape.window.inChannels + shape.outChannels)
    }

    public func forward(batch: Int, x: UnsafePointer<Float>, bias: UnsafePointer<Float>?, activation: Activation,
                        y: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>, threads: Int) {
        withUnsafePointer(to: shape.window.c) { window in
            if weightsFitInL2 {
                forwardBlocksPerThread(window, batch: batch, x: x, bias: bias, activation: activation, y: y, scratch: scratch, threads: threads)
            } else {
                forwardPlanesPerThread(window, batch: batch, x: x, bias: bias, activation: activation, y: y, scratch: scratch, threads: threads)
            }
        }
    }

    private func forwardBlocksPerThread(_ window: UnsafePointer<cgk_window>, batch: Int, x: UnsafePointer<Float>,
                                        bias: UnsafePointer<Float>?, activation: Activation, y: UnsafeMutablePointer<Float>,
                                        scratch: UnsafeMutablePointer<Float>, threads: Int) {
        let cin = shape.window.inChannels, cout = shape.outChannels
        let block = blockTiles(batch: batch, threads: threads), blocks = (tiles + block - 1) / block
        let perWorker = 36 * block * (cin + cout)
        Parallel.forRanges(batch * blocks, threads: threads) { worker, items in
            let v = scratch + worker * perWorker, m = v + 36 * block * cin
            for item in items {
                let n = item / blocks, t0 = (item % blocks) * block, t1 = min(t0 + block, tiles)
                transformInput(window, x + n * shape.inElementsPerImage, tiles: t0..<t1, into: v, plane: (t1 - t0) * cin)
                for p in 0..<36 { multiplyPlane(p, v: v, m: m, rows: t1 - t0) }
                transformOutput(m, plane: (t1 - t0) * cout, tiles: t0..<t1, bias: bias, activation: activation,
                                into: y + n * shape.outElementsPerImage)
            }
        }
    }

    /// Calls body(image, tiles of that image, position in `range`) for each image's part of a range
    /// of the batch's tiles (image n's tile t is number n * tiles + t).
    private func forEachImage(in range: Range<Int>, _ body: (Int, Range<Int>, Int) -> Void) {
        var g = range.lowerBound
        while g < range.upperBound {
            let n = g / tiles, t = g % tiles, end = min(range.upperBound, (n + 1) * tiles)
            body(n, t..<(t + end - g), g - range.lowerBound)
            g = end
        }
    }

    private func forwardPlanesPerThread(_ window: UnsafePointer<cgk_window>, batch: Int, x: UnsafePointer<Float>,
                                        bias: UnsafePointer<Float>?, activation: Activation, y: UnsafeMutablePointer<Float>,
                                        scratch: UnsafeMutablePointer<Float>, threads: Int) {
        let cin = shape.window.inChannels, cout = shape.outChannels
        let block = blockTiles(batch: batch, threads: threads)
        let v = scratch, m = scratch + 36 * block * cin
        for g0 in stride(from: 0, to: batch * tiles, by: block) {
            let count = min(block, batch * tiles - g0)
            Parallel.forRanges(count, threads: threads) { _, r in
                forEachImage(in: (g0 + r.lowerBound)..<(g0 + r.upperBound)) { n, part, at in
                    transformInput(window, x + n * shape.inElementsPerImage, tiles: part, into: v + (r.lowerBound + at) * cin,
                                   plane: count * cin)
                }
            }
            Parallel.forRanges(36, threads: threads) { _, planes in
                for p in planes { multiplyPlane(p, v: v, m: m, rows: count) }
            }
            Parallel.forRanges(count, threads: threads) { _, r in
                forEachImage(in: (g0 + r.lowerBound)..<(g0 + r.upperBound)) { n, part, at in
                    transformOutput(m + (r.lowerBound + at) * cout, plane: count * cout, tiles: part, bias: bias,
                                    activation: activation, into: y + n * shape.outElementsPerImage)
                }
            }
        }
    }

    /// V[36][tile][cin] (plane stride `plane`) for `tiles` of one image, the first at `v`.
    private func transformInput(_ window: UnsafePointer<cgk_window>, _ image: UnsafePointer<Float>, tiles: Range<Int>,
                                into v: UnsafeMutablePointer<Float>, plane: Int) {
        cgk_winograd_input(image, window, Int32(tilesW), Int32(tiles.lowerBound), Int32(tiles.upperBound), v, plane)
    }

    /// M_p = V_p * U_p for the block's `rows` tiles.
    private func multiplyPlane(_ p: Int, v: UnsafeMutablePointer<Float>, m: UnsafeMutablePointer<Float>, rows: Int) {
        let cin = shape.window.inChannels, cout = shape.outChannels
        planes[p].multiply(v + p * rows * cin, rows: rows, lda: cin, into: m + p * rows * cout, ldc: cout,
                           bias: nil, activation: .none, threads: 1)
    }

    /// act(A^T M A + bias) of `tiles` into the image's NHWC output.
    private func transformOutput(_ m: UnsafePointer<Float>, plane: Int, tiles: Range<Int>, bias: UnsafePointer<Float>?,
                                 activation: Activation, into out: UnsafeMutablePointer<Float>) {
        cgk_winograd_output(m, plane, Int32(shape.outChannels), Int32(shape.window.outHeight), Int32(shape.window.outWidth),
                            Int32(tilesW), Int32(tiles.lowerBound), Int32(tiles.upperBound), bias, activation.code, out)
    }
}
