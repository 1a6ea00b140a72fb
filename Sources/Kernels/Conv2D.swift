import CKernels

// Backward passes for training sit beside their forwards. Each takes the forward's inputs and
// dL/dy and produces the gradients the caller asks for (a nil output is skipped). Parameter
// gradients are accumulated (+=), input gradients overwritten. Work splits across threads so that
// the result does not depend on scheduling: per-thread partial sums are added in thread order.

/// A 2-D convolution on NHWC images with weights laid out [KH, KW, Cin/groups, Cout] (so each
/// group's weights are a row-major [KH*KW*Cin/groups, Cout] GEMM operand, columns of its group).
/// Depthwise convolution (groups == Cin == Cout) stores [KH, KW, C].
public struct ConvShape: Equatable, Sendable {
    public var window: WindowGeometry
    public var outChannels: Int
    public var groups: Int

    public init(window: WindowGeometry, outChannels: Int, groups: Int = 1) {
        self.window = window
        self.outChannels = outChannels
        self.groups = groups
    }

    public enum Method: Sendable { case depthwise, pointwise, im2col }

    public var method: Method {
        if groups > 1 && groups == window.inChannels && outChannels == window.inChannels { return .depthwise }
        if groups == 1 && window.kernelH == 1 && window.kernelW == 1 && window.strideH == 1 && window.strideW == 1
            && window.padTop == 0 && window.padLeft == 0 && window.padBottom == 0 && window.padRight == 0
        {
            return .pointwise
        }
        return .im2col
    }

    /// GEMM depth per group: KH * KW * Cin / groups.
    public var depth: Int { window.taps * (window.inChannels / groups) }
    public var weightCount: Int { method == .depthwise ? window.taps * outChannels : depth * outChannels }
    public var outElementsPerImage: Int { window.outPixels * outChannels }
    public var inElementsPerImage: Int { window.inPixels * window.inChannels }
    /// Multiply-adds per image.
    public var macsPerImage: Int { window.outPixels * outChannels * (method == .depthwise ? window.taps : depth) }

    /// Checks the invariants the kernels rely on; a model file's graph is validated through this.
    public var problem: String? {
        let w = window
        if w.inHeight <= 0 || w.inWidth <= 0 || w.inChannels <= 0 || outChannels <= 0 { return "non-positive size" }
        if w.kernelH <= 0 || w.kernelW <= 0 || w.strideH <= 0 || w.strideW <= 0 { return "non-positive kernel or stride" }
        if w.padTop < 0 || w.padLeft < 0 || w.padBottom < 0 || w.padRight < 0 { return "negative padding" }
        if w.padTop >= w.kernelH || w.padBottom >= w.kernelH || w.padLeft >= w.kernelW || w.padRight >= w.kernelW {
            return "padding as large as the kernel"
        }
        if w.outHeight <= 0 || w.outWidth <= 0 { return "kernel larger than the padded input" }
        if groups <= 0 || w.inChannels % groups != 0 || outChannels % groups != 0 {
            return "groups \(groups) do not divide channels \(w.inChannels) -> \(outChannels)"
        }
        return nil
    }
}

public enum Conv2D {
    /// im2col tiles are sized to stay in the L2 cache next to the weights.
    @usableFromInline static let tileFloats = 128 * 1024

    @usableFromInline static func tileRows(_ shape: ConvShape) -> Int {
        max(16, min(shape.window.outPixels, tileFloats / max(shape.depth, 1)))
    }

    /// Row tiles for a forward split across threads: no longer than `tileRows`, and as many as
    /// a multiple of the thread count, so each thread gets the same share (a 112x112 stem in
    /// three tiles left one of two threads idle for a third of the layer).
    static func rowTiles(_ shape: ConvShape, threads: Int) -> (count: Int, rows: Int) {
        let pixels = shape.window.outPixels, most = tileRows(shape), t = max(threads, 1)
        let count = ((pixels + most - 1) / most + t - 1) / t * t
        let rows = (pixels + count - 1) / count
        return ((pixels + rows - 1) / rows, rows)
    }

    /// Whether a multi-threaded forward splits output rows (many row tiles) or, for small
    /// images, im2cols once and splits output channels.
    @usableFromInline static func splitsRows(_ shape: ConvShape, batch: Int, threads: Int) -> Bool {
        let tiles = (shape.window.outPixels + tileRows(shape) - 1) / tileRows(shape)
        return threads <= 1 || batch * tiles >= threads
    }

    /// Floats of scratch `forward(packed:)` needs for this shape, batch and thread count, and
    /// the pool fused into it, if any; `strips` false for weights that never run as strips (int8).
    public static func packedScratchCount(_ shape: ConvShape, batch: Int, threads: Int, pool: WindowGeometry? = nil,
                                          strips: Bool = true) -> Int {
        guard strips && usesStrips(shape) else { return scratchCount(shape, batch: batch, threads: threads) }
        return max(threads, 1) * stripWorkerFloats(shape, pool: pool)
    }

    /// Floats of scratch the plain `forward` needs for this shape, batch and thread count (the
    /// packed one: `packedScratchCount`).
    public static func scratchCount(_ shape: ConvShape, batch: Int, threads: Int) -> Int {
        guard shape.method == .im2col else { return 0 }
        if splitsRows(shape, batch: batch, threads: threads) {
            return max(threads, 1) * tileRows(shape) * shape.depth
        }
        return shape.window.outPixels * shape.depth
    }

    /// y = act(conv(x, weight) + bias) for `batch` images, GEMMs through OpenBLAS.
    public static func forward(
        _ shape: ConvShape, batch: Int, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        bias: UnsafePointer<Float>?, activation: Activation, y: UnsafeMutablePointer<Float>,
        scratch: UnsafeMutablePointer<Float>?, threads: Int
    ) {
        switch shape.method {
        case .depthwise: depthwise(shape, batch: batch, x: x, weight: weight, bias: bias, activation: activation, y: y, threads: threads)
        case .pointwise: pointwise(shape, batch: batch, x: x, weight: weight, bias: bias, activation: activation, y: y, threads: threads)
        case .im2col:
            general(shape, batch: batch, x: x, weight: weight, bias: bias, activation: activation, y: y, scratch: scratch!, threads: threads)
        }
    }

    /// Whether `forward(packed:)` can run this shape: one group, not depthwise.
    public static func canPack(_ shape: ConvShape) -> Bool { shape.method != .depthwise && shape.groups == 1 }

    /// `forward` with the weights packed once by `packWeights` (inference only): the GEMMs run on
    /// the packed microkernels with bias and activation fused. With `pool` (which `canFusePool`
    /// accepts) the max pool that reads this convolution's output runs on each band of output rows
    /// as it is made, and `y` receives the pooled image: the full-size output is never stored.
    ///
    /// `packed` is float32 (`PackedMatrix`, packed by `packWeights`, in strips order for a stem) or
    /// int8 (`QuantizedMatrix`, in plain im2col order: int8 stems run as im2col tiles).
    public static func forward(
        _ shape: ConvShape, batch: Int, x: UnsafePointer<Float>, packed: any PackedWeights, bias: UnsafePointer<Float>?,
        activation: Activation, pool: WindowGeometry? = nil, y: UnsafeMutablePointer<Float>,
        scratch: UnsafeMutablePointer<Float>?, threads: Int
    ) {
        precondition(canPack(shape) && packed.rows == shape.depth && packed.columns == shape.outChannels)
        precondition(pool == nil || canFusePool(shape, pool!))
        if usesStrips(shape), let packed = packed as? PackedMatrix {
            stripPacked(shape, batch: batch, x: x, packed: packed, bias: bias, activation: activation, pool: pool, y: y,
                        scratch: scratch!, threads: threads)
        } else if shape.method == .pointwise {
            packed.multiply(x, rows: batch * shape.window.inPixels, lda: shape.window.inChannels, into: y, ldc: shape.outChannels,
                            bias: bias, activation: activation, threads: threads)
        } else {
            generalPacked(shape, batch: batch, x: x, packed: packed, bias: bias, activation: activation, y: y, scratch: scratch!, threads: threads)
        }
    }

    /// im2col tiles (per thread, cache-sized) multiplied by the packed weights, bias and
    /// activation fused; small images split the output channels instead.
    static func generalPacked(
        _ shape: ConvShape, batch: Int, x: UnsafePointer<Float>, packed: any PackedWeights, bias: UnsafePointer<Float>?,
        activation: Activation, y: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>, threads: Int
    ) {
        var window = shape.window.c
        let pixels = shape.window.outPixels, depth = shape.depth, cout = shape.outChannels
        let channels = Int32(shape.window.inChannels)
        if splitsRows(shape, batch: batch, threads: threads) {
            let (tiles, rowsPerTile) = rowTiles(shape, threads: threads)
            Parallel.forRanges(batch * tiles, threads: threads) { worker, items in
                let col = scratch + worker * rowsPerTile * depth
                for item in items {
                    let n = item / tiles, r0 = (item % tiles) * rowsPerTile, r1 = min(r0 + rowsPerTile, pixels)
                    cgk_im2col(x + n * shape.inElementsPerImage, &window, 0, channels, r0, r1, col, depth)
                    packed.multiply(col, rows: r1 - r0, lda: depth, into: y + (n * pixels + r0) * cout, ldc: cout, bias: bias,
                                    activation: activation, threads: 1)
                }
            }
            return
        }
        for n in 0..<batch {
            cgk_im2col(x + n * shape.inElementsPerImage, &window, 0, channels, 0, pixels, scratch, depth)
            packed.multiply(scratch, rows: pixels, lda: depth, into: y + n * pixels * cout, ldc: cout, bias: bias,
                            activation: activation, threads: threads)
        }
    }

    static func depthwise(
        _ shape: ConvShape, batch: Int, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        bias: UnsafePointer<Float>?, activation: Activation, y: UnsafeMutablePointer<Float>, threads: Int
    ) {
        var window = shape.window.c
        depthwiseWork(shape, batch: batch, threads: threads) { n, rows, channels in
            cgk_depthwise(x + n * shape.inElementsPerImage, &window, weight, bias, activation.code, Int32(rows.lowerBound),
                          Int32(rows.upperBound), Int32(channels.lowerBound), Int32(channels.upperBound), y + n * shape.outElementsPerImage)
        }
    }

    /// How a depthwise convolution's work is split, float and int8 alike: `body(image, output rows,
    /// channels)`, concurrently. Small images split channels in the 16-wide groups the preceding
    /// 1x1 convolution split its output columns by (PackedMatrix.multiply), so each thread reads what
    /// it just wrote; large images split output rows, as that convolution split its rows. Work items
    /// are then (image, output row band); bands keep every thread busy at batch 1, and each holds
    /// whole pairs of rows, which the kernels compute together.
    public static func depthwiseWork(_ shape: ConvShape, batch: Int, threads: Int,
                                     _ body: (_ image: Int, _ rows: Range<Int>, _ channels: Range<Int>) -> Void) {
        let rows = shape.window.outHeight, channels = shape.outChannels
        if threads > 1 && batch * shape.window.outPixels < threads * PackedMatrix.rowSplitMinimum {
            let groups = (channels + 15) / 16
            for n in 0..<batch {
                Parallel.forRanges(groups, threads: threads) { _, range in
                    body(n, 0..<rows, (range.lowerBound * 16)..<min(range.upperBound * 16, channels))
                }
            }
            return
        }
        let pairs = (rows + 1) / 2
        let bands = threads > 1 ? min(pairs, threads * 4) : 1
        Parallel.forEach(batch * bands, threads: threads) { item in
            let n = item / bands, band = item % bands
            body(n, min(rows, 2 * (band * pairs / bands))..<min(rows, 2 * ((band + 1) * pairs / bands)), 0..<channels)
        }
    }

    static func pointwise(
        _ shape: ConvShape, batch: Int, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        bias: UnsafePointer<Float>?, activation: Activation, y: UnsafeMutablePointer<Float>, threads: Int
    ) {
        Dense.forward(rows: batch * shape.window.inPixels, inFeatures: shape.window.inChannels,
                      outFeatures: shape.outChannels, x: x, weight: weight, bias: bias,
                      activation: activation, y: y, threads: threads)
    }

    static func general(
        _ shape: ConvShape, batch: Int, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        bias: UnsafePointer<Float>?, activation: Activation, y: UnsafeMutablePointer<Float>,
        scratch: UnsafeMutablePointer<Float>, threads: Int
    ) {
        var window = shape.window.c
        let pixels = shape.window.outPixels, depth = shape.depth, cout = shape.outChannels
        let groupIn = shape.window.inChannels / shape.groups, groupOut = cout / shape.groups
        if splitsRows(shape, batch: batch, threads: threads) {
            let (tiles, rowsPerTile) = rowTiles(shape, threads: threads)
            Parallel.forRanges(batch * tiles, threads: threads) { worker, items in
                let col = scratch + worker * rowsPerTile * depth
                for item in items {
                    let n = item / tiles, r0 = (item % tiles) * rowsPerTile, r1 = min(r0 + rowsPerTile, pixels)
                    let image = x + n * shape.inElementsPerImage
                    let out = y + (n * pixels + r0) * cout
                    for g in 0..<shape.groups {
                        cgk_im2col(image, &window, Int32(g * groupIn), Int32(groupIn), r0, r1, col, depth)
                        sgemm(m: r1 - r0, n: groupOut, k: depth, a: col, lda: depth, b: weight + g * groupOut,
                              ldb: cout, c: out + g * groupOut, ldc: cout)
                    }
                    cgk_bias_activation(out, r1 - r0, cout, cout, bias, activation.code)
                }
            }
            return
        }
        // Few, small images: im2col each once, then split the output channels across threads.
        for n in 0..<batch {
            let image = x + n * shape.inElementsPerImage
            let out = y + n * pixels * cout
            for g in 0..<shape.groups {
                cgk_im2col(image, &window, Int32(g * groupIn), Int32(groupIn), 0, pixels, scratch, depth)
                Parallel.forRanges(groupOut, threads: threads) { _, columns in
                    let c0 = g * groupOut + columns.lowerBound
                    sgemm(m: pixels, n: columns.count, k: depth, a: scratch, lda: depth, b: weight + c0, ldb: cout,
                          c: out + c0, ldc: cout)
                    cgk_bias_activation(out + c0, pixels, columns.count, cout, bias.map { $0 + c0 }, activation.code)
                }
            }
        }
    }
}

// Backward (training): see the convention at the top of this file.
extension Conv2D {
    /// Floats of scratch `backward` needs.
    public static func backwardScratchCount(_ shape: ConvShape, batch: Int, threads: Int) -> Int {
        switch shape.method {
        case .depthwise: return max(threads, 1) * shape.weightCount
        case .pointwise: return 0
        case .im2col:
            let workers = min(max(threads, 1), batch)
            // Per worker: an im2col tile, its gradient, and private weight/bias gradient sums.
            return workers * (2 * tileRows(shape) * shape.depth + shape.weightCount + shape.outChannels)
        }
    }

    /// dweight += dL/dweight, dbias += dL/dbias, dx = dL/dx (each optional).
    public static func backward(
        _ shape: ConvShape, batch: Int, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?,
        dbias: UnsafeMutablePointer<Float>?, scratch: UnsafeMutablePointer<Float>?, threads: Int
    ) {
        switch shape.method {
        case .pointwise:
            Dense.backward(rows: batch * shape.window.inPixels, inFeatures: shape.window.inChannels, outFeatures: shape.outChannels,
                           x: x, weight: weight, dy: dy, dx: dx, dweight: dweight, dbias: dbias, threads: threads)
        case .depthwise:
            depthwiseBackward(shape, batch: batch, x: x, weight: weight, dy: dy, dx: dx, dweight: dweight, dbias: dbias,
                              scratch: scratch!, threads: threads)
        case .im2col:
            generalBackward(shape, batch: batch, x: x, weight: weight, dy: dy, dx: dx, dweight: dweight, dbias: dbias,
                            scratch: scratch!, threads: threads)
        }
    }

    static func depthwiseBackward(
        _ shape: ConvShape, batch: Int, x: UnsafePointer<Float>, weight: UnsafePointer<Float>, dy: UnsafePointer<Float>,
        dx: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?, dbias: UnsafeMutablePointer<Float>?,
        scratch: UnsafeMutablePointer<Float>, threads: Int
    ) {
        var window = shape.window.c
        let workers = min(max(threads, 1), batch)
        let wc = shape.weightCount
        Parallel.forRanges(batch, threads: workers) { worker, images in
            let partial = scratch + worker * wc
            partial.update(repeating: 0, count: wc)
            for n in images {
                let image = dx.map { $0 + n * shape.inElementsPerImage }
                image?.update(repeating: 0, count: shape.inElementsPerImage)
                cgk_depthwise_backward(x + n * shape.inElementsPerImage, dy + n * shape.outElementsPerImage, &window, weight,
                                       image, dweight == nil ? nil : partial)
            }
        }
        if let dweight { for w in 0..<workers { for i in 0..<wc { dweight[i] += scratch[w * wc + i] } } }
        if let dbias { cgk_column_sum(dy, batch * shape.window.outPixels, shape.outChannels, dbias) }
    }

    static func generalBackward(
        _ shape: ConvShape, batch: Int, x: UnsafePointer<Float>, weight: UnsafePointer<Float>, dy: UnsafePointer<Float>,
        dx: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?, dbias: UnsafeMutablePointer<Float>?,
        scratch: UnsafeMutablePointer<Float>, threads: Int
    ) {
        var window = shape.window.c
        let pixels = shape.window.outPixels, depth = shape.depth, cout = shape.outChannels
        let groupIn = shape.window.inChannels / shape.groups, groupOut = cout / shape.groups
        let rowsPerTile = tileRows(shape)
        let workers = min(max(threads, 1), batch)
        let perWorker = 2 * rowsPerTile * depth + shape.weightCount + cout
        Parallel.forRanges(batch, threads: workers) { worker, images in
            let base = scratch + worker * perWorker
            let col = base, dcol = base + rowsPerTile * depth
            let dw = dcol + rowsPerTile * depth, db = dw + shape.weightCount
            dw.update(repeating: 0, count: shape.weightCount + cout)
            for n in images {
                let image = x + n * shape.inElementsPerImage
                let g = dy + n * pixels * cout
                let imageGradient = dx.map { $0 + n * shape.inElementsPerImage }
                imageGradient?.update(repeating: 0, count: shape.inElementsPerImage)
                for r0 in stride(from: 0, to: pixels, by: rowsPerTile) {
                    let r1 = min(r0 + rowsPerTile, pixels), rows = r1 - r0
                    for group in 0..<shape.groups {
                        let c0 = group * groupOut
                        if dweight != nil {
                            cgk_im2col(image, &window, Int32(group * groupIn), Int32(groupIn), r0, r1, col, depth)
                            // dW[depth, groupOut] += col^T [depth, rows] * dy[rows, groupOut]
                            sgemm(transA: true, m: depth, n: groupOut, k: rows, a: col, lda: depth, b: g + r0 * cout + c0,
                                  ldb: cout, beta: 1, c: dw + c0, ldc: cout)
                        }
                        if let imageGradient {
                            // dcol[rows, depth] = dy[rows, groupOut] * W[depth, groupOut]^T
                            sgemm(transB: true, m: rows, n: depth, k: groupOut, a: g + r0 * cout + c0, lda: cout,
                                  b: weight + c0, ldb: cout, c: dcol, ldc: depth)
                            cgk_col2im(dcol, depth, &window, Int32(group * groupIn), Int32(groupIn), r0, r1, imageGradient)
                        }
                    }
                }
                if dbias != nil { cgk_column_sum(g, pixels, cout, db) }
            }
        }
        for w in 0..<workers {
            let dw = scratch + w * perWorker + 2 * rowsPerTile * depth
            if let dweight { for i in 0..<shape.weightCount { dweight[i] += dw[i] } }
            if let dbias { for i in 0..<cout { dbias[i] += dw[shape.weightCount + i] } }
        }
    }
}

/// A fully connected layer: y[rows, out] = act(x[rows, in] * W[in, out] + b).
public enum Dense {
    public static func forward(
        rows: Int, inFeatures: Int, outFeatures: Int, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        bias: UnsafePointer<Float>?, activation: Activation, y: UnsafeMutablePointer<Float>, threads: Int
    ) {
        // Enough rows for every thread: split rows (each GEMM streams all of W). Otherwise split
        // the output columns, so a batch-1 layer still uses every thread.
        if threads <= 1 || rows >= threads * 32 {
            Parallel.forRanges(rows, threads: threads) { _, range in
                let out = y + range.lowerBound * outFeatures
                sgemm(m: range.count, n: outFeatures, k: inFeatures, a: x + range.lowerBound * inFeatures,
                      lda: inFeatures, b: weight, ldb: outFeatures, c: out, ldc: outFeatures)
                cgk_bias_activation(out, range.count, outFeatures, outFeatures, bias, activation.code)
            }
        } else {
            Parallel.forRanges(outFeatures, threads: threads) { _, columns in
                let c0 = columns.lowerBound
                sgemm(m: rows, n: columns.count, k: inFeatures, a: x, lda: inFeatures, b: weight + c0,
                      ldb: outFeatures, c: y + c0, ldc: outFeatures)
                cgk_bias_activation(y + c0, rows, columns.count, outFeatures, bias.map { $0 + c0 }, activation.code)
            }
        }
    }
}

extension Dense {
    /// Backward of y = x W + b over `rows` rows: dW += x^T dy (output columns split across threads),
    /// db += column sums of dy, dx = dy W^T (rows split across threads).
    public static func backward(
        rows: Int, inFeatures: Int, outFeatures: Int, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?,
        dbias: UnsafeMutablePointer<Float>?, threads: Int
    ) {
        if let dweight {
            Parallel.forRanges(outFeatures, threads: threads) { _, columns in
                let c0 = columns.lowerBound
                sgemm(transA: true, m: inFeatures, n: columns.count, k: rows, a: x, lda: inFeatures, b: dy + c0, ldb: outFeatures,
                      beta: 1, c: dweight + c0, ldc: outFeatures)
            }
        }
        if let dbias { cgk_column_sum(dy, rows, outFeatures, dbias) }
        if let dx {
            Parallel.forRanges(rows, threads: rows >= threads * 16 ? threads : 1) { _, range in
                sgemm(transB: true, m: range.count, n: inFeatures, k: outFeatures, a: dy + range.lowerBound * outFeatures,
                      lda: outFeatures, b: weight, ldb: outFeatures, c: dx + range.lowerBound * inFeatures, ldc: inFeatures)
            }
        }
    }
}
