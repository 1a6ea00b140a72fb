import CKernels

/// A 1x1 convolution whose output only a depthwise convolution reads (an inverted-residual
/// block's expansion), run as one step that never stores the expanded tensor: each thread keeps
/// the last `kernelH` expanded rows (a ring) and makes each next one with the packed GEMM just
/// before the depthwise rows that read it. EfficientNet-Lite0's first expansion is 4.8 MB per
/// image, far beyond L2; a ring of three rows stays in it.
///
/// Each output value is computed by the same operations, in the same order, as the two layers
/// run apart (the GEMM's sums over its depth do not depend on how many rows it is given), so
/// results are identical bit for bit.
public enum ExpandDepthwise {
    /// Whether the pair is worth fusing: the expanded tensor is over 2 MiB and its rows wide enough
    /// for an efficient GEMM per row (narrow rows would leave the 6-row microkernel idle).
    /// Measured on Lite0 (per-step CPU-time medians, 5 interleaved runs, AVX2 machine): its
    /// 112x112x96 pair 1.73 -> 1.36 ms fused; the 56x56x144 pairs (1.8 MB) 1.65 -> 1.67 ms, so
    /// they stay apart.
    public static func isWorthwhile(expand: ConvShape, depthwise: ConvShape) -> Bool {
        let w = depthwise.window
        return expand.method == .pointwise && depthwise.method == .depthwise && w.inChannels == expand.outChannels
            && w.inHeight == expand.window.inHeight && w.inWidth == expand.window.inWidth
            && w.inWidth >= 48 && w.inPixels * w.inChannels * MemoryLayout<Float>.size > 2 << 20
    }

    /// Output row bands per image: one per thread, so a thread recomputes only its band's first
    /// kernelH - strideH expanded rows.
    static func bands(_ depthwise: ConvShape, threads: Int) -> Int { min(max(threads, 1), depthwise.window.outHeight) }

    /// Floats of scratch: one ring of kernelH expanded rows per thread.
    public static func scratchCount(depthwise: ConvShape, threads: Int) -> Int {
        let w = depthwise.window
        return max(threads, 1) * w.kernelH * w.inWidth * w.inChannels
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
        let w = depthwise.window
        let height = w.inHeight, width = w.inWidth, channels = w.inChannels, inChannels = expand.window.inChannels
        let kernelH = w.kernelH, rowFloats = width * channels, outRows = w.outHeight
        let bands = bands(depthwise, threads: threads)
        Parallel.forRanges(batch * bands, threads: threads) { worker, items in
            let ring = scratch + worker * kernelH * rowFloats
            withUnsafeTemporaryAllocation(of: UnsafePointer<Float>?.self, capacity: kernelH) { rows in
                for item in items {
                    let n = item / bands, band = item % bands
                    let lo = band * outRows / bands, hi = (band + 1) * outRows / bands
                    let image = x + n * w.inPixels * inChannels
                    let out = y + n * w.outPixels * channels
                    var next = Int.min // the next expanded row to make; rows below it are in the ring
                    for oh in lo..<hi {
                        let ih0 = oh * w.strideH - w.padTop
                        let khLo = max(0, -ih0), khHi = min(kernelH, height - ih0)
                        // Rows below the window are never read again; the window's rows not yet made are.
                        next = max(next, ih0 + khLo)
                        while next < ih0 + khHi {
                            packed.multiply(image + next * width * inChannels, rows: width, lda: inChannels,
                                            into: ring + (next % kernelH) * rowFloats, ldc: channels, bias: expandBias,
                                            activation: expandActivation, threads: 1)
                            next += 1
                        }
                        for kh in khLo..<khHi { rows[kh] = UnsafePointer(ring + ((ih0 + kh) % kernelH) * rowFloats) }
                        cgk_depthwise_row(rows.baseAddress!, Int32(khLo), Int32(khHi), &window, weight, bias, activation.code, 0,
                                          Int32(channels), out + oh * w.outWidth * channels)
                    }
                }
            }
        }
    }
}
