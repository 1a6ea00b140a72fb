import CKernels
import Kernels
import TestSupport
import XCTest

final class PoolingAndElementwiseTests: XCTestCase {
    func testMaxPoolMatchesReferenceIncludingPadding() {
        var random = TestRandom(seed: 20)
        // 37 channels: two blocks of 16 kept in registers, then five one at a time.
        for (padding, stride, c) in [(Padding.valid, 2, 5), (.same, 2, 5), (.explicit(top: 1, bottom: 1, left: 1, right: 1), 1, 5),
                                     (.valid, 2, 37), (.same, 2, 37), (.explicit(top: 1, bottom: 1, left: 1, right: 1), 1, 37)] {
            let w = WindowGeometry(inHeight: 9, inWidth: 7, inChannels: c, kernel: (3, 3), stride: (stride, stride), padding: padding)
            let x = random.floats(2 * w.inPixels * c)
            var expected: [Float] = []
            for n in 0..<2 { expected += Reference.maxPool(Array(x[(n * w.inPixels * c)..<((n + 1) * w.inPixels * c)]), w) }
            for threads in [1, 2] {
                var y = [Float](repeating: .nan, count: 2 * w.outPixels * c)
                Pooling.max(w, batch: 2, x: x, y: &y, threads: threads)
                XCTAssertEqual(y, expected, "padding \(padding) channels \(c) threads \(threads)")
            }
        }
    }

    func testGlobalAverageAndChannelStatistics() {
        var random = TestRandom(seed: 21)
        let pixels = 13, channels = 6
        let x = random.floats(2 * pixels * channels)
        var mean = [Float](repeating: 0, count: 2 * channels)
        Pooling.globalAverage(batch: 2, pixels: pixels, channels: channels, x: x, y: &mean, threads: 2)
        var stats = [Float](repeating: 0, count: 4 * channels)
        Pooling.channelMeanStd(batch: 2, pixels: pixels, channels: channels, x: x, y: &stats, threads: 1)
        for n in 0..<2 {
            for c in 0..<channels {
                let values = (0..<pixels).map { Double(x[(n * pixels + $0) * channels + c]) }
                let m = values.reduce(0, +) / Double(pixels)
                let sd = (values.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(pixels)).squareRoot()
                XCTAssertEqual(Double(mean[n * channels + c]), m, accuracy: 1e-6)
                XCTAssertEqual(Double(stats[n * 2 * channels + c]), m, accuracy: 1e-6)
                XCTAssertEqual(Double(stats[n * 2 * channels + channels + c]), sd, accuracy: 1e-6)
            }
        }
    }

    func testAdaptiveAveragePoolUsesPyTorchBins() {
        // 5 -> 3 bins: [0,2), [1,4), [3,5) on each axis.
        let x = (0..<25).map { Float($0) } // one channel, 5x5, value = 5 * row + column
        var y = [Float](repeating: 0, count: 9)
        Pooling.adaptiveAverage(batch: 1, height: 5, width: 5, channels: 1, outHeight: 3, outWidth: 3, x: x, y: &y, threads: 1)
        let bins = [(0, 2), (1, 4), (3, 5)]
        for (i, (h0, h1)) in bins.enumerated() {
            for (j, (w0, w1)) in bins.enumerated() {
                var total: Float = 0
                for r in h0..<h1 { for c in w0..<w1 { total += Float(5 * r + c) } }
                XCTAssertEqual(y[i * 3 + j], total / Float((h1 - h0) * (w1 - w0)), accuracy: 1e-5)
            }
        }
    }

    func testAddScaleShiftAndActivations() {
        let a: [Float] = [-3, -0.5, 0, 2, 7], b: [Float] = [1, 1, 1, 1, 1]
        var y = [Float](repeating: 0, count: 5)
        Elementwise.add(a, b, count: 5, activation: .relu6, y: &y, threads: 1)
        XCTAssertEqual(y, [0, 0.5, 1, 3, 6])
        Elementwise.add(a, b, count: 5, activation: .none, y: &y, threads: 1)
        XCTAssertEqual(y, [-2, 0.5, 1, 3, 8])
        var z = [Float](repeating: 0, count: 4)
        Elementwise.scaleShift([1, 2, 3, 4], rows: 2, channels: 2, scale: [2, -1], shift: [0, 1], activation: .relu, y: &z, threads: 1)
        XCTAssertEqual(z, [2, 0, 6, 0])
    }

    func testSoftmaxIsStableForLargeLogits() {
        var x: [Float] = [1000, 1001, 999, -5, -1000, 0]
        Elementwise.softmax(&x, rows: 2, columns: 3)
        let e = [exp(-1.0), 1, exp(-2.0)], total = e.reduce(0, +)
        for i in 0..<3 { XCTAssertEqual(Double(x[i]), e[i] / total, accuracy: 1e-6) }
        XCTAssertEqual(Double(x[3] + x[4] + x[5]), 1, accuracy: 1e-6)
        XCTAssertTrue(x.allSatisfy(\.isFinite))
    }

    func testHalfConversionMatchesSwiftFloat16ForEveryHalf() {
        let halves = (0...UInt16.max).map { $0 }
        var floats = [Float](repeating: 0, count: halves.count)
        cgk_half_to_float(halves, &floats, halves.count)
        for (h, f) in zip(halves, floats) {
            let expected = Float(Float16(bitPattern: h))
            if expected.isNaN { XCTAssertTrue(f.isNaN) } else { XCTAssertEqual(f.bitPattern, expected.bitPattern, "half \(h)") }
        }
        var back = [UInt16](repeating: 0, count: halves.count)
        cgk_float_to_half(floats, &back, floats.count)
        for (h, r) in zip(halves, back) where !Float16(bitPattern: h).isNaN { XCTAssertEqual(r, h) }
    }

    func testFloatToHalfRoundsToNearestEvenLikeSwift() {
        var random = TestRandom(seed: 22)
        // Values across the whole half range, subnormals, ties and overflow.
        var values = random.floats(20_000, scale: 70_000)
        values += random.floats(5_000, scale: 1e-4) + [65504, 65519.99, 65520, 1e9, -1e9, 0, -0.0, 5.96e-8, 2.98e-8, 2.99e-8]
        values += (0..<2048).map { Float(bitPattern: 0x3880_0000 + UInt32($0) << 12) } // exact ties at 2^-14
        var out = [UInt16](repeating: 0, count: values.count)
        cgk_float_to_half(values, &out, values.count)
        for (v, h) in zip(values, out) { XCTAssertEqual(h, Float16(v).bitPattern, "value \(v)") }
    }

    func testXXH64MatchesPublishedVectors() {
        // Vectors from the xxHash reference implementation.
        XCTAssertEqual(cgk_xxh64(nil, 0, 0), 0xEF46_DB37_51D8_E999)
        XCTAssertEqual(Array("abc".utf8).withUnsafeBytes { cgk_xxh64($0.baseAddress, 3, 0) }, 0x44BC_2CF5_AD77_0999)
        // Every length through the 32-byte stripes, 8-, 4- and 1-byte tails gives a distinct hash.
        let bytes = (0..<100).map { UInt8($0) }
        let hashes = Set((0...100).map { n in bytes.withUnsafeBytes { cgk_xxh64($0.baseAddress, n, 0) } })
        XCTAssertEqual(hashes.count, 101)
    }
}
