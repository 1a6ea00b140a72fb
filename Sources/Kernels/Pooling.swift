import CKernels
#if canImport(Glibc)
import Glibc
#endif

public enum Pooling {
    /// Max pooling over `batch` NHWC images; `argmax` (optional, training) receives each output's
    /// input index within its image.
    public static func max(
        _ window: WindowGeometry, batch: Int, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
        argmax: UnsafeMutablePointer<Int32>? = nil, threads: Int
    ) {
        var w = window.c
        let inCount = window.inPixels * window.inChannels, outCount = window.outPixels * window.inChannels
        let rows = window.outHeight
        let bands = threads > 1 ? Swift.min(rows, threads * 2) : 1
        Parallel.forEach(batch * bands, threads: threads) { item in
            let n = item / bands, band = item % bands
            cgk_maxpool(x + n * inCount, &w, Int32(band * rows / bands), Int32((band + 1) * rows / bands),
                        y + n * outCount, argmax.map { $0 + n * outCount })
        }
    }

    /// y[n, c] = mean over pixels of x[n, p, c].
    public static func globalAverage(
        batch: Int, pixels: Int, channels: Int, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, threads: Int
    ) {
        Parallel.forEach(batch, threads: threads) { n in
            cgk_global_avgpool(x + n * pixels * channels, pixels, Int32(channels), y + n * channels)
        }
    }

    /// y[n] = [mean_c..., std_c...]: per-channel mean and standard deviation over each image's
    /// pixels. Cover style (colour, texture) lives in these statistics more than in objects.
    public static func channelMeanStd(
        batch: Int, pixels: Int, channels: Int, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, threads: Int
    ) {
        Parallel.forEach(batch, threads: threads) { n in
            let out = y + n * 2 * channels
            cgk_channel_mean_std(x + n * pixels * channels, pixels, Int32(channels), out, out + channels)
        }
    }

    /// PyTorch's AdaptiveAvgPool2d on NHWC images.
    public static func adaptiveAverage(
        batch: Int, height: Int, width: Int, channels: Int, outHeight: Int, outWidth: Int,
        x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, threads: Int
    ) {
        Parallel.forEach(batch, threads: threads) { n in
            cgk_adaptive_avgpool(x + n * height * width * channels, Int32(height), Int32(width), Int32(channels),
                                 Int32(outHeight), Int32(outWidth), y + n * outHeight * outWidth * channels)
        }
    }
}

// Backward (training), beside the forward above; the convention is the one at the top of Conv2D.swift.
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

public enum Elementwise {
    /// y = act(a + b) over n elements, split across threads.
    public static func add(
        _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int, activation: Activation,
        y: UnsafeMutablePointer<Float>, threads: Int
    ) {
        let chunks = threads > 1 && count >= 1 << 16 ? threads : 1
        Parallel.forRanges(count, threads: chunks) { _, r in
            cgk_add(a + r.lowerBound, b + r.lowerBound, r.count, activation.code, y + r.lowerBound)
        }
    }

    /// y[r, c] = act(x[r, c] * scale[c] + shift[c]).
    public static func scaleShift(
        _ x: UnsafePointer<Float>, rows: Int, channels: Int, scale: UnsafePointer<Float>, shift: UnsafePointer<Float>,
        activation: Activation, y: UnsafeMutablePointer<Float>, threads: Int
    ) {
        let chunks = threads > 1 && rows * channels >= 1 << 16 ? threads : 1
        Parallel.forRanges(rows, threads: chunks) { _, r in
            cgk_scale_shift(x + r.lowerBound * channels, r.count, channels, scale, shift, activation.code,
                            y + r.lowerBound * channels)
        }
    }

    /// Applies an activation in place.
    public static func activate(_ x: UnsafeMutablePointer<Float>, count: Int, activation: Activation) {
        cgk_bias_activation(x, 1, count, count, nil, activation.code)
    }

    /// Numerically stable softmax of each row, in place.
    public static func softmax(_ x: UnsafeMutablePointer<Float>, rows: Int, columns: Int) {
        for r in 0..<rows {
            let row = x + r * columns
            var peak = -Float.infinity
            for c in 0..<columns { peak = Swift.max(peak, row[c]) }
            var total: Float = 0
            for c in 0..<columns {
                row[c] = expf(row[c] - peak)
                total += row[c]
            }
            for c in 0..<columns { row[c] /= total }
        }
    }
}
