import CKernels

/// A 1x1 convolution whose output only a depthwise convolution reads (an inverted-residual
/// block's expansion), run as one step that never stores the expanded tensor: each thread keeps
/// the last `kernelH + strideH` expanded rows (a ring) and makes each next one with the packed GEMM
/// just before the depthwise rows that read it, two output rows at a time as `Conv2D` computes
/// them (cgk_depthwise_row_pair). EfficientNet-Lite0's first expansion is 4.8 MB per image, far
/// beyond L2; a ring of five rows stays in it.
///
/// Each output value is computed by the same operations, in the same order, as the two layers
/// run apart (the GEMM's sums over its depth do not depend on how many rows it is given), so
/// results are identical bit for bit.
public enum ExpandDepthwise {
    /// Whether the pair is worth fusing: the expanded tensor is over 2 MiB and its rows wide enough
    /// for an efficient GEMM per row (narrow rows would leave the 6-row microkernel idle).
    /// Measured on Lite0 (per-step CPU-time medians, 5 interleaved runs, AVX2 machine): its
    /// 112x112x96 pair 1.73 -> 1.36 ms fused; the 56x56x144 pairs (1.8 MB) 1.65 -> 1.67 ms, so
    /// they stay apart. Again with the two-row depthwise kernel in both steps (int8 Lite0, batch 1,
    /// 7 interleaved rounds, AVX-512 machine): 0.97x on one thread, 1.03x on two; still apart.
    public static func isWorthwhile(expand: ConvShape, depthwise: ConvShape) -> Bool {
        let w = depthwise.window
        return expand.method == .pointwise && depthwise.method == .depthwise && w.inChannels == expand.outChannels
            && w.inHeight == expand.window.inHeight && w.inWidth == expand.window.inWidth
            && w.inWidth >= 48 && w.inPixels * w.inChannels * MemoryLayout<Float>.size > 2 << 20
    }

    /// Output row bands per image: one per thread, so a thread recomputes only its band's first
    /// kernelH - strideH expanded rows.
    static func bands(_ depthwise: ConvShape, threads: Int) -> Int { min(max(threads, 1), depthwise.window.outHeight) }

    /// Expanded rows a thread keeps: the rows two output rows read.
    static func ringRows(_ depthwise: ConvShape) -> Int { depthwise.window.kernelH + depthwise.window.strideH }

    /// Floats of scratch: one ring of expanded rows per thread.
    public static func scratchCount(depthwise: ConvShape, threads: Int) -> Int {
        let w = depthwise.window
        return max(threads, 1) * ringRows(depthwise) * w.inWidth * w.inChannels
    }

    /// y = dwAct(depthwise(expandAct(x * expand + expandBias)) + dwBias) for `batch` images.
    public static func forward(
        expand: ConvShape, packed: any PackedWeights, expandBias: UnsafePointer<Float>?, expandActivation: Activation,
        depthwise: ConvShape, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?, activation: Activation,
        batch: Int, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>,
        threads: Int
    ) {
        precondition(isWorthwhile(expand: expand, depthwise: depthwise) && packed.rows == expand.window.inChannels
                     && packed.columns == expand.outChannels)
        var window = depthwise.window.c
        let w = depthwise.window, channels = w.inChannels, inChannels = expand.window.inChannels
        let outRowFloats = w.outWidth * channels
        walk(depthwise, batch: batch, threads: threads, ring: scratch, expandRow: { n, r, into in
            packed.multiply(x + (n * w.inPixels + r * w.inWidth) * inChannels, rows: w.inWidth, lda: inChannels, into: into,
                            ldc: channels, bias: expandBias, activation: expandActivation, threads: 1)
        }, pair: { n, oh, rows in
            let out = y + n * w.outPixels * channels + oh * outRowFloats
            cgk_depthwise_row_pair(rows, Int32(oh), &window, weight, bias, activation.code, 0, Int32(channels), out, out + outRowFloats)
        }, single: { n, oh, khLo, khHi, rows in
            cgk_depthwise_row(rows, Int32(khLo), Int32(khHi), &window, weight, bias, activation.code, 0, Int32(channels),
                              y + n * w.outPixels * channels + oh * outRowFloats)
        })
    }

    /// The loop both forms share. Work items are (image, band of output rows), one band per
    /// thread; each thread keeps its ring of `ringRows` expanded rows (`ring` + worker * ring rows),
    /// makes each expanded row (`expandRow(image, row, into)`) just before the first output row
    /// that reads it, and hands the kernel the rows it reads: `pair(image, oh, rows)` for output rows
    /// oh and oh + 1 (rows[r] = input row oh * strideH - padTop + r, those inside the image; the
    /// kernel clips each row's taps), `single(image, oh, khLo, khHi, rows)` for a last row alone.
    static func walk<Element>(
        _ depthwise: ConvShape, batch: Int, threads: Int, ring: UnsafeMutablePointer<Element>,
        expandRow: (_ image: Int, _ row: Int, _ into: UnsafeMutablePointer<Element>) -> Void,
        pair: (_ image: Int, _ oh: Int, _ rows: UnsafePointer<UnsafePointer<Element>?>) -> Void,
        single: (_ image: Int, _ oh: Int, _ khLo: Int, _ khHi: Int, _ rows: UnsafePointer<UnsafePointer<Element>?>) -> Void
    ) {
        let w = depthwise.window
        let height = w.inHeight, kernelH = w.kernelH, strideH = w.strideH, ringCount = ringRows(depthwise)
        let rowCount = w.inWidth * w.inChannels, outRows = w.outHeight
        let bands = bands(depthwise, threads: threads)
        Parallel.forRanges(batch * bands, threads: threads) { worker, items in
            let rowsOfRing = ring + worker * ringCount * rowCount
            withUnsafeTemporaryAllocation(of: UnsafePointer<Element>?.self, capacity: ringCount) { rows in
                for item in items {
                    let n = item / bands, band = item % bands
                    let lo = band * outRows / bands, hi = (band + 1) * outRows / bands
                    var next = Int.min // the next expanded row to make; rows below it are in the ring
                    // Makes input rows [from, to) that are not made yet, and points rows[] at the
                    // window's rows from ih0; rows below `from` are never read again.
                    func expand(_ ih0: Int, _ from: Int, _ to: Int) {
                        next = max(next, ih0 + from)
                        while next < ih0 + to {
                            expandRow(n, next, rowsOfRing + (next % ringCount) * rowCount)
                            next += 1
                        }
                        for r in from..<to { rows[r] = UnsafePointer(rowsOfRing + ((ih0 + r) % ringCount) * rowCount) }
                    }
                    var oh = lo
                    while oh < hi {
                        let ih0 = oh * strideH - w.padTop
                        if oh + 1 < hi {
                            let rLo = max(0, -ih0), rHi = max(rLo, min(ringCount, height - ih0))
                            expand(ih0, rLo, rHi)
                            pair(n, oh, UnsafePointer(rows.baseAddress!))
                            oh += 2
                        } else {
                            let tLo = max(0, -ih0), tHi = max(tLo, min(kernelH, height - ih0))
                            expand(ih0, tLo, tHi)
                            single(n, oh, tLo, tHi, UnsafePointer(rows.baseAddress!))
                            oh += 1
                        }
                    }
                }
            }
        }
    }
}

extension ExpandDepthwise {
    /// `forward` for an int8 expansion and an int8 depthwise convolution: the ring holds the
    /// expanded rows as bytes in the depthwise convolution's input quantization (which the int8
    /// GEMM writes directly), a quarter of the float ring. `x` is bytes in the expansion's input
    /// quantization when `inputIsBytes`; `y` receives floats, or bytes in `output`'s quantization.
    /// Each output is what the two layers compute apart (the sums are exact integers).
    public static func forward(
        expand: ConvShape, packed: QuantizedMatrix, expandBias: UnsafePointer<Float>?, expandActivation: Activation,
        depthwise: QuantizedDepthwise, batch: Int, x: UnsafeRawPointer, inputIsBytes: Bool, output: ByteQuantization?,
        y: UnsafeMutableRawPointer, scratch: UnsafeMutableRawPointer, threads: Int
    ) {
        let shape = depthwise.shape
        precondition(isWorthwhile(expand: expand, depthwise: shape) && packed.rows == expand.window.inChannels
                     && packed.columns == expand.outChannels && packed.rows <= QuantizedMatrix.maxRowsForByteOutput)
        var window = shape.window.c
        var p = depthwise.parameters(output)
        let w = shape.window, channels = w.inChannels, inChannels = expand.window.inChannels
        let outRowBytes = w.outWidth * channels * (output == nil ? 4 : 1), inSize = inputIsBytes ? 1 : 4
        let ringInput = depthwise.input
        walk(shape, batch: batch, threads: threads, ring: scratch.assumingMemoryBound(to: UInt8.self), expandRow: { n, r, into in
            packed.multiply(x + (n * w.inPixels + r * w.inWidth) * inChannels * inSize, inputIsBytes: inputIsBytes, rows: w.inWidth,
                            lda: inChannels, into: UnsafeMutableRawPointer(into), output: ringInput, ldc: channels, bias: expandBias,
                            activation: expandActivation, threads: 1)
        }, pair: { n, oh, rows in
            let out = y + n * w.outHeight * outRowBytes + oh * outRowBytes
            cgk_depthwise_q8_row_pair(rows, Int32(oh), &window, &p, 0, Int32(channels), out, out + outRowBytes)
        }, single: { n, oh, khLo, khHi, rows in
            cgk_depthwise_q8_row(rows, Int32(khLo), Int32(khHi), &window, &p, 0, Int32(channels), y + n * w.outHeight * outRowBytes + oh * outRowBytes)
        })
    }
}
