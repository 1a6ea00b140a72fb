import CKernels

/// Backward passes for training. Each takes the forward's inputs and dL/dy and produces the
/// gradients the caller asks for (a nil output is skipped). Parameter gradients are accumulated
/// (+=), input gradients overwritten. Work splits across threads so that the result does not
/// depend on scheduling: per-thread partial sums are added in thread order.
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

extension Pooling {
    /// dx = scatter of dy to each window's maximum (argmax from the forward pass).
    public static func maxBackward(_ window: WindowGeometry, batch: Int, dy: UnsafePointer<Float>, argmax: UnsafePointer<Int32>,
                                   dx: UnsafeMutablePointer<Float>, threads: Int) {
        let inCount = window.inPixels * window.inChannels, outCount = window.outPixels * window.inChannels
        Parallel.forEach(batch, threads: threads) { n in
            let target = dx + n * inCount
            target.update(repeating: 0, count: inCount)
            cgk_maxpool_backward(dy + n * outCount, argmax + n * outCount, outCount, target)
        }
    }

    /// dx[n, p, c] = dy[n, c] / pixels.
    public static func globalAverageBackward(batch: Int, pixels: Int, channels: Int, dy: UnsafePointer<Float>,
                                             dx: UnsafeMutablePointer<Float>) {
        let scale = 1 / Float(pixels)
        for n in 0..<batch {
            for p in 0..<pixels {
                let row = dx + (n * pixels + p) * channels
                for c in 0..<channels { row[c] = dy[n * channels + c] * scale }
            }
        }
    }

    /// Backward of channelMeanStd: d/dx of mean is 1/P; of std, (x - mean) / (P * std).
    public static func channelMeanStdBackward(batch: Int, pixels: Int, channels: Int, x: UnsafePointer<Float>,
                                              y: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>) {
        let inv = 1 / Float(pixels)
        for n in 0..<batch {
            let mean = y + n * 2 * channels, std = mean + channels
            let dmean = dy + n * 2 * channels, dstd = dmean + channels
            for p in 0..<pixels {
                let xi = x + (n * pixels + p) * channels, di = dx + (n * pixels + p) * channels
                for c in 0..<channels {
                    let s = std[c] > 1e-12 ? std[c] : 1e-12
                    di[c] = dmean[c] * inv + dstd[c] * (xi[c] - mean[c]) * inv / s
                }
            }
        }
    }

    /// Backward of adaptiveAverage (PyTorch bins): each bin's gradient spread evenly over it.
    public static func adaptiveAverageBackward(batch: Int, height: Int, width: Int, channels: Int, outHeight: Int,
                                               outWidth: Int, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>) {
        dx.update(repeating: 0, count: batch * height * width * channels)
        for n in 0..<batch {
            for oh in 0..<outHeight {
                let h0 = oh * height / outHeight, h1 = ((oh + 1) * height + outHeight - 1) / outHeight
                for ow in 0..<outWidth {
                    let w0 = ow * width / outWidth, w1 = ((ow + 1) * width + outWidth - 1) / outWidth
                    let scale = 1 / Float((h1 - h0) * (w1 - w0))
                    let g = dy + ((n * outHeight + oh) * outWidth + ow) * channels
                    for ih in h0..<h1 {
                        for iw in w0..<w1 {
                            let d = dx + ((n * height + ih) * width + iw) * channels
                            for c in 0..<channels { d[c] += g[c] * scale }
                        }
                    }
                }
            }
        }
    }
}

/// Batch normalization in training mode, on NHWC rows: statistics of the current batch,
/// y = act(gamma * (x - mean) / sqrt(var + eps) + beta).
public enum BatchNorm {
    /// Computes the batch mean and 1/std (biased variance, as PyTorch normalizes with) and the
    /// unbiased variance for the running average. `mean`, `invStd`, `variance` have `channels` floats.
    public static func statistics(_ x: UnsafePointer<Float>, rows: Int, channels: Int, epsilon: Float,
                                  mean: UnsafeMutablePointer<Float>, invStd: UnsafeMutablePointer<Float>,
                                  unbiasedVariance: UnsafeMutablePointer<Float>) {
        var sum = [Double](repeating: 0, count: channels), squares = sum
        cgk_channel_moments(x, rows, Int32(channels), &sum, &squares)
        for c in 0..<channels {
            let m = sum[c] / Double(rows)
            let v = max(squares[c] / Double(rows) - m * m, 0)
            mean[c] = Float(m)
            invStd[c] = Float(1 / (v + Double(epsilon)).squareRoot())
            unbiasedVariance[c] = Float(rows > 1 ? v * Double(rows) / Double(rows - 1) : v)
        }
    }

    /// dgamma += sum(dy * xhat), dbeta += sum(dy), dx = gamma * invStd * (dy - mean(dy) - xhat * mean(dy * xhat)).
    public static func backward(_ x: UnsafePointer<Float>, rows: Int, channels: Int, mean: UnsafePointer<Float>,
                                invStd: UnsafePointer<Float>, gamma: UnsafePointer<Float>, dy: UnsafePointer<Float>,
                                dx: UnsafeMutablePointer<Float>?, dgamma: UnsafeMutablePointer<Float>?,
                                dbeta: UnsafeMutablePointer<Float>?) {
        var sumDy = [Double](repeating: 0, count: channels), sumDyXhat = sumDy
        cgk_batchnorm_backward_reduce(dy, x, rows, Int32(channels), mean, invStd, &sumDy, &sumDyXhat)
        for c in 0..<channels {
            dgamma?[c] += Float(sumDyXhat[c])
            dbeta?[c] += Float(sumDy[c])
        }
        guard let dx else { return }
        let meanDy = sumDy.map { Float($0 / Double(rows)) }, meanDyXhat = sumDyXhat.map { Float($0 / Double(rows)) }
        cgk_batchnorm_backward_apply(dy, x, rows, Int32(channels), mean, invStd, gamma, meanDy, meanDyXhat, dx)
    }
}
