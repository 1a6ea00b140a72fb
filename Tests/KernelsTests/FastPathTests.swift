import CKernels
import Kernels
import TestSupport
import XCTest

/// The inference-only fast paths against the naive references: packed-weight GEMMs (rows and
/// panels split, tails, fused bias and activation) and Winograd F(4x4, 3x3).
final class FastPathTests: XCTestCase {
    func testPackedGEMMMatchesReference() throws {
        try XCTSkipUnless(PackedMatrix.isAvailable, "no AVX2+FMA microkernel on this CPU")
        var random = TestRandom(seed: 40)
        for (m, k, n) in [(1, 1, 1), (5, 7, 17), (49, 192, 70), (13, 400, 33), (250, 24, 48), (12, 16, 16), (53, 600, 20), (101, 3, 5)] {
            let a = random.floats(m * k), b = random.floats(k * n), bias = random.floats(n)
            let packed = try XCTUnwrap(PackedMatrix(b, rows: k, columns: n))
            for activation in [Activation.none, .relu, .relu6] {
                let expected = Reference.linear(a, rows: m, inFeatures: k, outFeatures: n, weight: b, bias: bias, activation: activation)
                for threads in [1, 2] {
                    var c = [Float](repeating: .nan, count: m * n)
                    packed.multiply(a, rows: m, lda: k, into: &c, ldc: n, bias: bias, activation: activation, threads: threads)
                    XCTAssertLessThan(maxRelativeError(c, expected), 1e-5, "\(m)x\(k)x\(n) \(activation) threads \(threads)")
                }
            }
        }
    }

    func testWinogradMatchesDirectConvolution() throws {
        try XCTSkipUnless(PackedMatrix.isAvailable, "no AVX2+FMA microkernel on this CPU")
        var random = TestRandom(seed: 41)
        let cases: [(Int, Int, Int, Int, Padding)] = [
            (16, 16, 16, 16, .explicit(top: 1, bottom: 1, left: 1, right: 1)), // whole tiles
            (13, 9, 20, 33, .same),                                           // partial tiles, channel tails
            (7, 11, 17, 16, .valid),                                          // no padding
            (10, 6, 32, 24, .explicit(top: 0, bottom: 2, left: 2, right: 0)),  // asymmetric padding
        ]
        // Transformed weights over 512 KB switch to whole-image blocks whose 36 GEMMs the threads
        // split: 64 x 72 channels in one block, and 61 x 61 channels over two blocks (255 tiles).
        let largeWeights: [(Int, Int, Int, Int, Padding)] = [(13, 9, 64, 72, .same), (66, 60, 61, 61, .same)]
        for (h, w, cin, cout, padding) in cases + largeWeights {
            let window = WindowGeometry(inHeight: h, inWidth: w, inChannels: cin, kernel: (3, 3), stride: (1, 1), padding: padding)
            let shape = ConvShape(window: window, outChannels: cout)
            let weight = random.floats(shape.weightCount, scale: 0.3), bias = random.floats(cout)
            let winograd = try XCTUnwrap(WinogradConvolution(shape, weight: weight))
            let runs = h * w > 1000 ? [(1, 2)] : [(1, 1), (2, 2), (3, 1)]
            for (batch, threads) in runs {
                let x = random.floats(batch * shape.inElementsPerImage)
                var expected: [Float] = []
                for n in 0..<batch {
                    expected += Reference.conv(Array(x[(n * shape.inElementsPerImage)..<((n + 1) * shape.inElementsPerImage)]), shape,
                                               weight: weight, bias: bias, activation: .relu)
                }
                var y = [Float](repeating: .nan, count: batch * shape.outElementsPerImage)
                var scratch = [Float](repeating: 0, count: winograd.scratchCount(threads: threads))
                winograd.forward(batch: batch, x: x, bias: bias, activation: .relu, y: &y, scratch: &scratch, threads: threads)
                XCTAssertLessThan(maxRelativeError(y, expected), 1e-4, "\(h)x\(w)x\(cin)->\(cout) batch \(batch) threads \(threads)")
            }
        }
        // Only 3x3 stride 1 with enough channels qualifies.
        let strided = ConvShape(window: WindowGeometry(inHeight: 8, inWidth: 8, inChannels: 16, kernel: (3, 3), stride: (2, 2),
                                                       padding: .same), outChannels: 16)
        XCTAssertFalse(WinogradConvolution.isEligible(strided))
    }
}
