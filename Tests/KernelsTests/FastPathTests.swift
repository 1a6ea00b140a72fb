import CKernels
import Kernels
import TestSupport
import XCTest

/// The inference-only fast paths against the naive references: packed-weight GEMMs (rows and
/// panels split, tails, fused bias and activation) and Winograd F(4x4, 3x3).
final class FastPathTests: XCTestCase {
    func testPackedGEMMMatchesReference() throws {
        try XCTSkipUnless(PackedMatrix.isAvailable, "the \(InstructionSet.current) kernel variant has no packed GEMM (OpenBLAS runs instead)")
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
        try XCTSkipUnless(PackedMatrix.isAvailable, "the \(InstructionSet.current) kernel variant has no packed GEMM (OpenBLAS runs instead)")
        var random = TestRandom(seed: 41)
        let cases: [(Int, Int, Int, Int, Padding)] = [
            (16, 16, 16, 16, .explicit(top: 1, bottom: 1, left: 1, right: 1)), // whole tiles
            (13, 9, 20, 33, .same),                                           // partial tiles, channel tails
            (7, 11, 17, 16, .valid),                                          // no padding
            (10, 6, 32, 24, .explicit(top: 0, bottom: 2, left: 2, right: 0)),  // asymmetric padding
        ]
        // Transformed weights over 512 KB switch to blocks whose 36 GEMMs the threads split, and
        // which take tiles of several images: 64 x 72 channels, 12 tiles per image, a batch of 2 or
        // 3 in one block; 61 x 61 channels, 255 tiles per image in blocks of 238, so at batch 2 the
        // second block holds the end of one image and the start of the next.
        let largeWeights: [(Int, Int, Int, Int, Padding)] = [(13, 9, 64, 72, .same), (66, 60, 61, 61, .same)]
        for (h, w, cin, cout, padding) in cases + largeWeights {
            let window = WindowGeometry(inHeight: h, inWidth: w, inChannels: cin, kernel: (3, 3), stride: (1, 1), padding: padding)
            let shape = ConvShape(window: window, outChannels: cout)
            let weight = random.floats(shape.weightCount, scale: 0.3), bias = random.floats(cout)
            let winograd = try XCTUnwrap(WinogradConvolution(shape, weight: weight))
            let runs = h * w > 1000 ? [(1, 2), (2, 1)] : [(1, 1), (2, 2), (3, 1)]
            for (batch, threads) in runs {
                let x = random.floats(batch * shape.inElementsPerImage)
                let expected = Reference.conv(batch: batch, x, shape, weight: weight, bias: bias, activation: .relu)
                var y = [Float](repeating: .nan, count: batch * shape.outElementsPerImage)
                var scratch = [Float](repeating: 0, count: winograd.scratchCount(batch: batch, threads: threads))
                winograd.forward(batch: batch, x: x, bias: bias, activation: .relu, y: &y, scratch: &scratch, threads: threads)
                XCTAssertLessThan(maxRelativeError(y, expected), 1e-4, "\(h)x\(w)x\(cin)->\(cout) batch \(batch) threads \(threads)")
            }
        }
        // Only 3x3 stride 1 with enough channels qualifies.
        let strided = ConvShape(window: WindowGeometry(inHeight: 8, inWidth: 8, inChannels: 16, kernel: (3, 3), stride: (2, 2),
                                                       padding: .same), outChannels: 16)
        XCTAssertFalse(WinogradConvolution.isEligible(strided))
    }

    func testPackedConvolutionMatchesReference() throws {
        try XCTSkipUnless(PackedMatrix.isAvailable, "the \(InstructionSet.current) kernel variant has no packed GEMM (OpenBLAS runs instead)")
        var random = TestRandom(seed: 42)
        let cases: [(Int, Int, Int, Int, (Int, Int), (Int, Int), Padding)] = [
            (23, 19, 3, 32, (3, 3), (2, 2), .same),   // Lite0's stem: strips
            (21, 26, 3, 24, (3, 3), (1, 1), .explicit(top: 1, bottom: 1, left: 1, right: 1)), // the baseline's stem: strips
            (12, 10, 4, 20, (5, 3), (1, 2), .explicit(top: 2, bottom: 1, left: 0, right: 1)), // strips, uneven padding
            (9, 7, 24, 40, (1, 1), (1, 1), .valid),   // pointwise: a plain GEMM
            (12, 10, 16, 20, (5, 3), (1, 2), .explicit(top: 2, bottom: 1, left: 0, right: 1)), // im2col tiles
        ]
        for (h, w, cin, cout, kernel, stride, padding) in cases {
            let shape = ConvShape(window: WindowGeometry(inHeight: h, inWidth: w, inChannels: cin, kernel: kernel, stride: stride,
                                                         padding: padding), outChannels: cout)
            XCTAssertTrue(Conv2D.canPack(shape))
            XCTAssertEqual(Conv2D.usesStrips(shape), cin <= 4, "\(shape.window)")
            let weight = random.floats(shape.weightCount, scale: 0.3), bias = random.floats(cout)
            let arena = WeightArena()
            let packed = try XCTUnwrap(Conv2D.packWeights(shape, weight, arena: arena))
            for (batch, threads) in [(1, 1), (1, 2), (3, 2)] {
                let x = random.floats(batch * shape.inElementsPerImage)
                let expected = Reference.conv(batch: batch, x, shape, weight: weight, bias: bias, activation: .relu6)
                var y = [Float](repeating: .nan, count: batch * shape.outElementsPerImage)
                var scratch = [Float](repeating: 0, count: max(1, Conv2D.packedScratchCount(shape, batch: batch, threads: threads)))
                Conv2D.forward(shape, batch: batch, x: x, packed: packed, bias: bias, activation: .relu6, y: &y, scratch: &scratch,
                               threads: threads)
                XCTAssertLessThan(maxRelativeError(y, expected), 1e-5, "\(shape.window) batch \(batch) threads \(threads)")
            }
        }
    }

    /// A stem's max pool run inside the convolution (each pooled row from the output rows it
    /// reads) gives the reference's conv-then-pool, including sizes the pool does not tile
    /// (the last row and column dropped) and 3x3 windows.
    func testStripConvolutionWithFusedPoolMatchesReference() throws {
        try XCTSkipUnless(PackedMatrix.isAvailable, "the \(InstructionSet.current) kernel variant has no packed GEMM (OpenBLAS runs instead)")
        var random = TestRandom(seed: 44)
        let cases: [(Int, Int, Int, (Int, Int), Int)] = [(20, 22, 32, (3, 3), 2), (19, 23, 17, (3, 3), 2), (17, 16, 8, (3, 3), 3)]
        for (h, w, cout, kernel, poolSide) in cases {
            let shape = ConvShape(window: WindowGeometry(inHeight: h, inWidth: w, inChannels: 3, kernel: kernel, stride: (1, 1),
                                                         padding: .explicit(top: 1, bottom: 1, left: 1, right: 1)), outChannels: cout)
            let pool = WindowGeometry(inHeight: shape.window.outHeight, inWidth: shape.window.outWidth, inChannels: cout,
                                      kernel: (poolSide, poolSide), stride: (poolSide, poolSide), padding: .valid)
            XCTAssertTrue(Conv2D.canFusePool(shape, pool))
            let weight = random.floats(shape.weightCount, scale: 0.3), bias = random.floats(cout)
            let packed = try XCTUnwrap(Conv2D.packWeights(shape, weight))
            for (batch, threads) in [(1, 1), (1, 2), (3, 2)] {
                let x = random.floats(batch * shape.inElementsPerImage)
                let conv = Reference.conv(batch: batch, x, shape, weight: weight, bias: bias, activation: .relu)
                let expected = (0..<batch).flatMap { n in
                    Reference.maxPool(Array(conv[n * shape.outElementsPerImage..<(n + 1) * shape.outElementsPerImage]), pool)
                }
                var y = [Float](repeating: .nan, count: batch * pool.outPixels * cout)
                var scratch = [Float](repeating: .nan, count: Conv2D.packedScratchCount(shape, batch: batch, threads: threads, pool: pool))
                Conv2D.forward(shape, batch: batch, x: x, packed: packed, bias: bias, activation: .relu, pool: pool, y: &y,
                               scratch: &scratch, threads: threads)
                XCTAssertLessThan(maxRelativeError(y, expected), 1e-5, "\(h)x\(w) pool \(poolSide) batch \(batch) threads \(threads)")
            }
        }
        // Overlapping or padded windows stay a step of their own.
        let stem = ConvShape(window: WindowGeometry(inHeight: 8, inWidth: 8, inChannels: 3, kernel: (3, 3), stride: (1, 1),
                                                    padding: .same), outChannels: 8)
        XCTAssertFalse(Conv2D.canFusePool(stem, WindowGeometry(inHeight: 8, inWidth: 8, inChannels: 8, kernel: (3, 3),
                                                               stride: (2, 2), padding: .same)))
    }

    /// A stem's weights packed from f16 go through the same (kw, kh, c) reordering as from floats:
    /// the two forwards agree exactly.
    func testStripWeightsFromHalfsMatchWidenedWeights() throws {
        try XCTSkipUnless(PackedMatrix.isAvailable, "the \(InstructionSet.current) kernel variant has no packed GEMM (OpenBLAS runs instead)")
        var random = TestRandom(seed: 45)
        let shape = ConvShape(window: WindowGeometry(inHeight: 13, inWidth: 17, inChannels: 3, kernel: (3, 5), stride: (1, 2),
                                                     padding: .same), outChannels: 20)
        XCTAssertTrue(Conv2D.usesStrips(shape))
        var halfs = [UInt16](repeating: 0, count: shape.weightCount)
        cgk_float_to_half(random.floats(shape.weightCount, scale: 0.5), &halfs, halfs.count)
        var widened = [Float](repeating: 0, count: shape.weightCount)
        cgk_half_to_float(halfs, &widened, halfs.count)
        let x = random.floats(shape.inElementsPerImage)
        var outputs: [[Float]] = []
        for packed in [try XCTUnwrap(Conv2D.packWeights(shape, halfs: halfs)), try XCTUnwrap(Conv2D.packWeights(shape, widened))] {
            var y = [Float](repeating: .nan, count: shape.outElementsPerImage)
            var scratch = [Float](repeating: .nan, count: Conv2D.packedScratchCount(shape, batch: 1, threads: 1))
            Conv2D.forward(shape, batch: 1, x: x, packed: packed, bias: nil, activation: .none, y: &y, scratch: &scratch, threads: 1)
            outputs.append(y)
        }
        XCTAssertEqual(outputs[0], outputs[1])
        let expected = Reference.conv(batch: 1, x, shape, weight: widened, bias: nil, activation: .none)
        XCTAssertLessThan(maxRelativeError(outputs[0], expected), 1e-5)
    }

    /// Packing straight from f16 (F16C) gives exactly the floats the scalar widening gives,
    /// subnormals, signed zeros and a partial last panel included.
    func testHalfPackingMatchesWidenedWeights() throws {
        try XCTSkipUnless(PackedMatrix.isAvailable, "the \(InstructionSet.current) kernel variant has no packed GEMM (OpenBLAS runs instead)")
        var random = TestRandom(seed: 43)
        let k = 37, n = 45
        var halfs = [UInt16](repeating: 0, count: k * n)
        cgk_float_to_half(random.floats(k * n, scale: 4), &halfs, halfs.count)
        halfs[0] = 0x0001; halfs[1] = 0x83FF; halfs[2] = 0x8000; halfs[n - 1] = 0x7BFF // subnormals, -0, largest
        var widened = [Float](repeating: 0, count: k * n)
        cgk_half_to_float(halfs, &widened, halfs.count)
        let arena = WeightArena()
        let fromHalfs = try XCTUnwrap(PackedMatrix(halfs: halfs, rows: k, columns: n, arena: arena))
        let fromFloats = try XCTUnwrap(PackedMatrix(widened, rows: k, columns: n))
        let a = random.floats(11 * k)
        var c1 = [Float](repeating: .nan, count: 11 * n), c2 = c1
        fromHalfs.multiply(a, rows: 11, lda: k, into: &c1, ldc: n, bias: nil, activation: .none, threads: 1)
        fromFloats.multiply(a, rows: 11, lda: k, into: &c2, ldc: n, bias: nil, activation: .none, threads: 1)
        XCTAssertEqual(c1.map(\.bitPattern), c2.map(\.bitPattern))
    }

    func testWeightArenaAlignsAndSpansChunks() throws {
        let arena = WeightArena()
        var pointers: [UnsafeMutablePointer<Float>] = []
        for count in [1, 17, 1 << 20, 3 << 20, 5] { // the 12 MB request needs a chunk of its own
            let p = try XCTUnwrap(arena.allocate(floats: count))
            XCTAssertEqual(Int(bitPattern: p) % 64, 0)
            p.update(repeating: Float(count), count: count)
            pointers.append(p)
        }
        for (p, count) in zip(pointers, [1, 17, 1 << 20, 3 << 20, 5]) {
            XCTAssertEqual(p[0], Float(count))
            XCTAssertEqual(p[count - 1], Float(count))
        }
        XCTAssertGreaterThanOrEqual(arena.mappedBytes, (1 + 17 + (1 << 20) + (3 << 20) + 5) * 4)
    }
}
