import Architectures
import Graph
import Kernels

/// Naive reference implementations: obviously correct loops in double precision, against
/// which the optimized kernels are checked.
public enum Reference {
    /// Convolution on each of `batch` NHWC images stored one after another.
    public static func conv(batch: Int, _ x: [Float], _ shape: ConvShape, weight: [Float], bias: [Float]?,
                            activation: Activation) -> [Float] {
        let size = shape.inElementsPerImage
        return (0..<batch).flatMap { n in
            conv(Array(x[(n * size)..<((n + 1) * size)]), shape, weight: weight, bias: bias, activation: activation)
        }
    }

    /// Convolution on one NHWC image; weight [KH, KW, Cin/groups, Cout].
    public static func conv(_ x: [Float], _ shape: ConvShape, weight: [Float], bias: [Float]?, activation: Activation) -> [Float] {
        let w = shape.window
        let cin = w.inChannels, cout = shape.outChannels, g = shape.groups
        let gi = cin / g, go = cout / g
        var y = [Float](repeating: 0, count: w.outPixels * cout)
        for oh in 0..<w.outHeight {
            for ow in 0..<w.outWidth {
                for co in 0..<cout {
                    let group = co / go
                    var acc = Double(bias?[co] ?? 0)
                    for kh in 0..<w.kernelH {
                        for kw in 0..<w.kernelW {
                            let ih = oh * w.strideH - w.padTop + kh, iw = ow * w.strideW - w.padLeft + kw
                            guard ih >= 0, ih < w.inHeight, iw >= 0, iw < w.inWidth else { continue }
                            for ci in 0..<gi {
                                let xv = x[(ih * w.inWidth + iw) * cin + group * gi + ci]
                                let wv = weight[((kh * w.kernelW + kw) * gi + ci) * cout + co]
                                acc += Double(xv) * Double(wv)
                            }
                        }
                    }
                    y[(oh * w.outWidth + ow) * cout + co] = activation.apply(Float(acc))
                }
            }
        }
        return y
    }

    /// Max pooling on one NHWC image; padding never wins.
    public static func maxPool(_ x: [Float], _ w: WindowGeometry) -> [Float] {
        let c = w.inChannels
        var y = [Float](repeating: -.infinity, count: w.outPixels * c)
        for oh in 0..<w.outHeight {
            for ow in 0..<w.outWidth {
                for ch in 0..<c {
                    var m = -Float.infinity
                    for kh in 0..<w.kernelH {
                        for kw in 0..<w.kernelW {
                            let ih = oh * w.strideH - w.padTop + kh, iw = ow * w.strideW - w.padLeft + kw
                            guard ih >= 0, ih < w.inHeight, iw >= 0, iw < w.inWidth else { continue }
                            m = max(m, x[(ih * w.inWidth + iw) * c + ch])
                        }
                    }
                    y[(oh * w.outWidth + ow) * c + ch] = m
                }
            }
        }
        return y
    }

    public static func linear(_ x: [Float], rows: Int, inFeatures: Int, outFeatures: Int, weight: [Float], bias: [Float]?,
                              activation: Activation) -> [Float] {
        var y = [Float](repeating: 0, count: rows * outFeatures)
        for r in 0..<rows {
            for o in 0..<outFeatures {
                var acc = Double(bias?[o] ?? 0)
                for i in 0..<inFeatures { acc += Double(x[r * inFeatures + i]) * Double(weight[i * outFeatures + o]) }
                y[r * outFeatures + o] = activation.apply(Float(acc))
            }
        }
        return y
    }
}

/// Reproducible random data for tests.
public struct TestRandom {
    public var generator: SplitMix64

    public init(seed: UInt64) { generator = SplitMix64(seed: seed) }

    public mutating func floats(_ count: Int, scale: Float = 1) -> [Float] {
        (0..<count).map { _ in Float(generator.unit() * 2 - 1) * scale }
    }

    public mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &generator) }

    public mutating func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) } }
}

/// Largest |a - b| relative to max(1, |b|); infinity where one side is NaN and the other is not
/// (an output never written keeps the NaN a test filled it with).
public func maxRelativeError(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count, "sizes differ: \(a.count) vs \(b.count)")
    var worst: Float = 0
    for i in a.indices {
        if a[i].isNaN || b[i].isNaN {
            if a[i].isNaN != b[i].isNaN { return .infinity }
            continue
        }
        worst = max(worst, abs(a[i] - b[i]) / max(1, abs(b[i])))
    }
    return worst
}
