import CKernels
import Kernels
import TestSupport
import XCTest

/// Every backward pass against central finite differences of L = sum(r * y) for a fixed random r
/// (so dL/dy = r). Convolutions and linear layers are linear in each argument, so the differences
/// are exact up to float rounding and the tolerance can be tight.
final class BackwardTests: XCTestCase {
    /// Checks `analytic` against (f(v + h) - f(v - h)) / 2h at `samples` coordinates of `values`.
    func checkGradient(_ what: String, values: inout [Float], analytic: [Float], h: Float = 1e-2, tolerance: Float = 2e-3,
                       samples: Int = 40, seed: UInt64, file: StaticString = #filePath, line: UInt = #line,
                       loss: ([Float]) -> Double) {
        var random = TestRandom(seed: seed)
        for _ in 0..<min(samples, values.count) {
            let i = random.int(0...(values.count - 1))
            let saved = values[i]
            values[i] = saved + h
            let up = loss(values)
            values[i] = saved - h
            let down = loss(values)
            values[i] = saved
            let numeric = Float((up - down) / Double(2 * h))
            let scale = max(abs(numeric), abs(analytic[i]), 1e-2)
            XCTAssertLessThan(abs(numeric - analytic[i]) / scale, tolerance, "\(what)[\(i)]: numeric \(numeric) analytic \(analytic[i])",
                              file: file, line: line)
        }
    }

    func checkConvolution(height: Int, width: Int, cin: Int, cout: Int, kernel: Int, stride: Int, padding: Padding, groups: Int = 1,
                          seed: UInt64, file: StaticString = #filePath, line: UInt = #line) {
        var random = TestRandom(seed: seed)
        let window = WindowGeometry(inHeight: height, inWidth: width, inChannels: cin, kernel: (kernel, kernel),
                                    stride: (stride, stride), padding: padding)
        let shape = ConvShape(window: window, outChannels: cout, groups: groups)
        let batch = 3
        var x = random.floats(batch * shape.inElementsPerImage), w = random.floats(shape.weightCount), b = random.floats(cout)
        let r = random.floats(batch * shape.outElementsPerImage)
        func forward(_ x: [Float], _ w: [Float], _ b: [Float]) -> Double {
            var y = [Float](repeating: 0, count: batch * shape.outElementsPerImage)
            var scratch = [Float](repeating: 0, count: max(1, Conv2D.scratchCount(shape, batch: batch, threads: 1)))
            Conv2D.forward(shape, batch: batch, x: x, weight: w, bias: b, activation: .none, y: &y, scratch: &scratch, threads: 1)
            return zip(y, r).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }
        for threads in [1, 2] {
            var dx = [Float](repeating: .nan, count: x.count)
            var dw = [Float](repeating: 0, count: w.count), db = [Float](repeating: 0, count: cout)
            var scratch = [Float](repeating: 0, count: max(1, Conv2D.backwardScratchCount(shape, batch: batch, threads: threads)))
            Conv2D.backward(shape, batch: batch, x: x, weight: w, dy: r, dx: &dx, dweight: &dw, dbias: &db, scratch: &scratch, threads: threads)
            let label = "\(shape.method) threads \(threads)"
            checkGradient("\(label) dx", values: &x, analytic: dx, seed: seed, file: file, line: line) { forward($0, w, b) }
            checkGradient("\(label) dw", values: &w, analytic: dw, seed: seed + 1, file: file, line: line) { forward(x, $0, b) }
            checkGradient("\(label) db", values: &b, analytic: db, seed: seed + 2, file: file, line: line) { forward(x, w, $0) }
        }
    }

    func testConvolutionBackward() {
        checkConvolution(height: 7, width: 6, cin: 3, cout: 4, kernel: 3, stride: 1,
                         padding: .explicit(top: 1, bottom: 1, left: 1, right: 1), seed: 1)
        checkConvolution(height: 9, width: 8, cin: 2, cout: 5, kernel: 3, stride: 2, padding: .same, seed: 2)
        checkConvolution(height: 6, width: 6, cin: 4, cout: 6, kernel: 3, stride: 1, padding: .same, groups: 2, seed: 3)
    }

    func testDepthwiseAndPointwiseBackward() {
        checkConvolution(height: 8, width: 7, cin: 5, cout: 5, kernel: 5, stride: 2, padding: .same, groups: 5, seed: 4)
        checkConvolution(height: 5, width: 4, cin: 6, cout: 3, kernel: 1, stride: 1, padding: .valid, seed: 5)
    }

    func testDenseBackward() {
        var random = TestRandom(seed: 6)
        let rows = 70, n = 9, m = 5 // enough rows to exercise the row split
        var x = random.floats(rows * n), w = random.floats(n * m), b = random.floats(m)
        let r = random.floats(rows * m)
        func forward(_ x: [Float], _ w: [Float], _ b: [Float]) -> Double {
            var y = [Float](repeating: 0, count: rows * m)
            Dense.forward(rows: rows, inFeatures: n, outFeatures: m, x: x, weight: w, bias: b, activation: .none, y: &y, threads: 1)
            return zip(y, r).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }
        var dx = [Float](repeating: 0, count: x.count), dw = [Float](repeating: 0, count: w.count), db = [Float](repeating: 0, count: m)
        Dense.backward(rows: rows, inFeatures: n, outFeatures: m, x: x, weight: w, dy: r, dx: &dx, dweight: &dw, dbias: &db, threads: 2)
        checkGradient("dx", values: &x, analytic: dx, seed: 7) { forward($0, w, b) }
        checkGradient("dw", values: &w, analytic: dw, seed: 8) { forward(x, $0, b) }
        checkGradient("db", values: &b, analytic: db, seed: 9) { forward(x, w, $0) }
    }

    func testPoolingBackward() {
        var random = TestRandom(seed: 10)
        let w = WindowGeometry(inHeight: 7, inWidth: 6, inChannels: 3, kernel: (3, 3), stride: (2, 2), padding: .same)
        // Well-separated values, so a small step never changes which element wins a window.
        var x = (0..<(2 * w.inPixels * 3)).map { Float($0) * 0.37 }.shuffled(using: &random.generator)
        let r = random.floats(2 * w.outPixels * 3)
        func forward(_ x: [Float]) -> Double {
            var y = [Float](repeating: 0, count: r.count)
            Pooling.max(w, batch: 2, x: x, y: &y, threads: 1)
            return zip(y, r).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }
        var y = [Float](repeating: 0, count: r.count), argmax = [Int32](repeating: 0, count: r.count)
        Pooling.max(w, batch: 2, x: x, y: &y, argmax: &argmax, threads: 2)
        var dx = [Float](repeating: 0, count: x.count)
        Pooling.maxBackward(w, batch: 2, dy: r, argmax: argmax, dx: &dx, threads: 2)
        checkGradient("maxpool", values: &x, analytic: dx, h: 1e-2, seed: 11, loss: forward)

        var z = random.floats(2 * 5 * 7 * 4)
        let ra = random.floats(2 * 3 * 3 * 4)
        func adaptive(_ z: [Float]) -> Double {
            var y = [Float](repeating: 0, count: ra.count)
            Pooling.adaptiveAverage(batch: 2, height: 5, width: 7, channels: 4, outHeight: 3, outWidth: 3, x: z, y: &y, threads: 1)
            return zip(y, ra).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }
        var dz = [Float](repeating: 0, count: z.count)
        Pooling.adaptiveAverageBackward(batch: 2, height: 5, width: 7, channels: 4, outHeight: 3, outWidth: 3, dy: ra, dx: &dz)
        checkGradient("adaptive", values: &z, analytic: dz, seed: 12, loss: adaptive)

        let rg = random.floats(2 * 4)
        func global(_ z: [Float]) -> Double {
            var y = [Float](repeating: 0, count: 8)
            Pooling.globalAverage(batch: 2, pixels: 35, channels: 4, x: z, y: &y, threads: 1)
            return zip(y, rg).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }
        Pooling.globalAverageBackward(batch: 2, pixels: 35, channels: 4, dy: rg, dx: &dz)
        checkGradient("global", values: &z, analytic: dz, seed: 13, loss: global)

        let rs = random.floats(2 * 8)
        func stats(_ z: [Float]) -> Double {
            var y = [Float](repeating: 0, count: 16)
            Pooling.channelMeanStd(batch: 2, pixels: 35, channels: 4, x: z, y: &y, threads: 1)
            return zip(y, rs).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }
        var ys = [Float](repeating: 0, count: 16)
        Pooling.channelMeanStd(batch: 2, pixels: 35, channels: 4, x: z, y: &ys, threads: 1)
        Pooling.channelMeanStdBackward(batch: 2, pixels: 35, channels: 4, x: z, y: ys, dy: rs, dx: &dz)
        checkGradient("channel stats", values: &z, analytic: dz, h: 1e-2, tolerance: 1e-2, seed: 14, loss: stats)
    }

    func testBatchNormTrainingBackward() {
        var random = TestRandom(seed: 15)
        let rows = 24, channels = 5
        var x = random.floats(rows * channels, scale: 2), gamma = random.floats(channels), beta = random.floats(channels)
        let r = random.floats(rows * channels)
        func forward(_ x: [Float], _ gamma: [Float], _ beta: [Float]) -> Double {
            var mean = [Float](repeating: 0, count: channels), inv = mean, variance = mean
            BatchNorm.statistics(x, rows: rows, channels: channels, epsilon: 1e-3, mean: &mean, invStd: &inv, unbiasedVariance: &variance)
            var total = 0.0
            for i in 0..<(rows * channels) {
                let c = i % channels
                total += Double((x[i] - mean[c]) * inv[c] * gamma[c] + beta[c]) * Double(r[i])
            }
            return total
        }
        var mean = [Float](repeating: 0, count: channels), inv = mean, variance = mean
        BatchNorm.statistics(x, rows: rows, channels: channels, epsilon: 1e-3, mean: &mean, invStd: &inv, unbiasedVariance: &variance)
        var dx = [Float](repeating: 0, count: x.count), dg = [Float](repeating: 0, count: channels), db = dg
        BatchNorm.backward(x, rows: rows, channels: channels, mean: mean, invStd: inv, gamma: gamma, dy: r, dx: &dx, dgamma: &dg, dbeta: &db)
        checkGradient("bn dx", values: &x, analytic: dx, tolerance: 1e-2, seed: 16) { forward($0, gamma, beta) }
        checkGradient("bn dgamma", values: &gamma, analytic: dg, seed: 17) { forward(x, $0, beta) }
        checkGradient("bn dbeta", values: &beta, analytic: db, seed: 18) { forward(x, gamma, $0) }
        // The unbiased variance feeds the running statistics, as in PyTorch.
        for c in 0..<channels {
            let column = (0..<rows).map { Double(x[$0 * channels + c]) }
            let m = column.reduce(0, +) / Double(rows)
            XCTAssertEqual(Double(variance[c]), column.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(rows - 1), accuracy: 1e-4)
        }
    }

    func testActivationBackwardMasksByTheOutput() {
        let y: [Float] = [0, 0.5, 6, 3, 0], dy: [Float] = [1, 2, 3, 4, 5]
        var dx = [Float](repeating: 0, count: 5)
        cgk_activation_backward(y, dy, 5, Activation.relu6.code, &dx)
        XCTAssertEqual(dx, [0, 2, 0, 4, 0])
        cgk_activation_backward(y, dy, 5, Activation.relu.code, &dx)
        XCTAssertEqual(dx, [0, 2, 3, 4, 0])
    }
}
