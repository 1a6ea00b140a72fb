import CKernels

/// Stems as strips: the packed forward of convolutions with few input channels, and the max pool
/// fused into it (see `cgk_im2col_strip`).
extension Conv2D {
    /// Whether the packed forward runs this shape as strips (`cgk_im2col_strip`) instead of im2col
    /// tiles: few input channels (stems), whose im2col copies a few floats per tap, and windows
    /// that overlap along the row (else a strip holds what im2col would), with a strip no larger
    /// than an im2col tile (a model file's odd geometry falls back to the tiles' bounded scratch).
    public static func usesStrips(_ shape: ConvShape) -> Bool {
        shape.method == .im2col && shape.groups == 1 && shape.window.inChannels <= 4 && shape.window.strideW < shape.window.kernelW
            && stripFloats(shape) <= tileFloats
    }

    /// Whether `pool`, a max pool reading this convolution's output, can run inside the packed
    /// forward: strips, and windows that tile the rows without overlap or padding (the 2x2
    /// stride-2 pool after the baseline CNN's stem).
    public static func canFusePool(_ shape: ConvShape, _ pool: WindowGeometry) -> Bool {
        usesStrips(shape) && pool.kernelH == pool.strideH && pool.kernelW == pool.strideW
            && pool.padTop == 0 && pool.padBottom == 0 && pool.padLeft == 0 && pool.padRight == 0
            && pool.inHeight == shape.window.outHeight && pool.inWidth == shape.window.outWidth
            && pool.inChannels == shape.outChannels && pool.outHeight > 0 && pool.outWidth > 0
            && pool.outHeight == shape.window.outHeight / pool.kernelH && pool.outWidth == shape.window.outWidth / pool.kernelW
    }

    /// Packs a convolution's weights (stored [KH, KW, Cin, Cout]) for `forward(packed:)`, in the
    /// row order its GEMMs read: as stored, or [KW, KH, Cin, Cout] for strips.
    public static func packWeights(_ shape: ConvShape, _ weight: UnsafePointer<Float>, arena: WeightArena? = nil) -> PackedMatrix? {
        inGEMMOrder(shape, weight) { PackedMatrix($0, rows: shape.depth, columns: shape.outChannels, arena: arena) }
    }

    /// `packWeights` from the half-precision values of an f16 model file.
    public static func packWeights(_ shape: ConvShape, halfs: UnsafePointer<UInt16>, arena: WeightArena? = nil) -> PackedMatrix? {
        inGEMMOrder(shape, halfs) { PackedMatrix(halfs: $0, rows: shape.depth, columns: shape.outChannels, arena: arena) }
    }

    private static func inGEMMOrder<T, R>(_ shape: ConvShape, _ weight: UnsafePointer<T>, _ body: (UnsafePointer<T>) -> R) -> R {
        guard usesStrips(shape), PackedMatrix.isAvailable else { return body(weight) }
        let w = shape.window, tap = w.inChannels * shape.outChannels
        let reordered = [T](unsafeUninitializedCapacity: shape.weightCount) { buffer, count in
            for kh in 0..<w.kernelH {
                for kw in 0..<w.kernelW {
                    (buffer.baseAddress! + (kw * w.kernelH + kh) * tap).initialize(from: weight + (kh * w.kernelW + kw) * tap, count: tap)
                }
            }
            count = shape.weightCount
        }
        return reordered.withUnsafeBufferPointer { body($0.baseAddress!) }
    }

    /// Floats of one output row's strip.
    static func stripFloats(_ shape: ConvShape) -> Int {
        let w = shape.window
        return ((w.outWidth - 1) * w.strideW + w.kernelW) * w.kernelH * w.inChannels
    }

    /// Scratch of one worker: its strip, and with a pool the output rows one pooled row reads.
    static func stripWorkerFloats(_ shape: ConvShape, pool: WindowGeometry?) -> Int {
        stripFloats(shape) + (pool.map { $0.kernelH * shape.window.outWidth * shape.outChannels } ?? 0)
    }

    /// Strips: a worker takes a contiguous range of (image, output row) items (pooled rows with a
    /// pool), builds each row's strip and multiplies it by the packed weights; with a pool, the
    /// rows one pooled row reads go to the worker's scratch and are pooled from there (without one,
    /// an item is one output row, written in place).
    static func stripPacked(
        _ shape: ConvShape, batch: Int, x: UnsafePointer<Float>, packed: PackedMatrix, bias: UnsafePointer<Float>?,
        activation: Activation, pool: WindowGeometry?, y: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>,
        threads: Int
    ) {
        var window = shape.window.c
        let w = shape.window, cout = shape.outChannels, rowFloats = w.outWidth * cout
        let lda = w.strideW * w.kernelH * w.inChannels, perWorker = stripWorkerFloats(shape, pool: pool)
        // One pooled row reads kernelH whole output rows: a window over them alone.
        let poolRows = pool.map { p in
            WindowGeometry(inHeight: p.kernelH, inWidth: w.outWidth, inChannels: cout, kernel: (p.kernelH, p.kernelW),
                           stride: (p.strideH, p.strideW), padding: .valid).c
        }
        let rowsOut = pool?.outHeight ?? w.outHeight, outPerImage = pool.map { $0.outPixels * cout } ?? shape.outElementsPerImage
        let outRowFloats = pool.map { $0.outWidth * cout } ?? rowFloats, convRows = pool?.kernelH ?? 1
        Parallel.forRanges(batch * rowsOut, threads: threads) { worker, items in
            let strip = scratch + worker * perWorker, rows = strip + stripFloats(shape)
            for item in items {
                let n = item / rowsOut, r = item % rowsOut
                let image = x + n * shape.inElementsPerImage, out = y + n * outPerImage + r * outRowFloats
                for j in 0..<convRows {
                    cgk_im2col_strip(image, &window, Int32(r * convRows + j), strip)
                    packed.multiply(strip, rows: w.outWidth, lda: lda, into: poolRows == nil ? out : rows + j * rowFloats,
                                    ldc: cout, bias: bias, activation: activation, threads: 1)
                }
                if var poolWindow = poolRows { cgk_maxpool(rows, &poolWindow, 0, 1, out, nil) }
            }
        }
    }
}
