import CKernels
import Kernels
import TestSupport
import XCTest

final class ConvolutionTests: XCTestCase {
    /// Runs the kernel and the naive reference on the same random data, for 1 and 2 threads and
    /// batch 1 and 3.
    func check(height: Int, width: Int, cin: Int, cout: Int, kernel: (Int, Int), stride: (Int, Int), padding: Padding,
               groups: Int = 1, activation: Activation = .none, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) {
        var random = TestRandom(seed: seed)
        let window = WindowGeometry(inHeight: height, inWidth: width, inChannels: cin, kernel: kernel, stride: stride, padding: padding)
        let shape = ConvShape(window: window, outChannels: cout, groups: groups)
        XCTAssertNil(shape.problem, file: file, line: line)
        let weight = random.floats(shape.weightCount, scale: 0.5)
        let bias = random.floats(cout)
        for batch in [1, 3] {
            let x = random.floats(batch * shape.inElementsPerImage)
            let expected = Reference.conv(batch: batch, x, shape, weight: weight, bias: bias, activation: activation)
            for threads in [1, 2] {
                var y = [Float](repeating: .nan, count: batch * shape.outElementsPerImage)
                var scratch = [Float](repeating: 0, count: max(1, Conv2D.scratchCount(shape, batch: batch, threads: threads)))
                Conv2D.forward(shape, batch: batch, x: x, weight: weight, bias: bias, activation: activation, y: &y,
                               scratch: &scratch, threads: threads)
                XCTAssertLessThan(maxRelativeError(y, expected), 1e-5,
                                  "\(shape.method) batch \(batch) threads \(threads)", file: file, line: line)
            }
        }
    }

    func testGeneralConvolutionWithExplicitPadding() {
        check(height: 9, width: 7, cin: 3, cout: 5, kernel: (3, 3), stride: (1, 1),
              padding: .explicit(top: 1, bottom: 1, left: 1, right: 1), activation: .relu, seed: 1)
    }

    func testStrideTwoWithSamePaddingOnOddAndEvenSizes() {
        check(height: 11, width: 10, cin: 4, cout: 6, kernel: (3, 3), stride: (2, 2), padding: .same, activation: .relu6, seed: 2)
        check(height: 8, width: 13, cin: 2, cout: 3, kernel: (5, 5), stride: (2, 2), padding: .same, seed: 3)
    }

    func testValidPaddingAndRectangularKernel() {
        check(height: 12, width: 9, cin: 3, cout: 4, kernel: (3, 2), stride: (2, 1), padding: .valid, seed: 4)
    }

    func testAsymmetricExplicitPadding() {
        check(height: 6, width: 7, cin: 2, cout: 3, kernel: (3, 3), stride: (1, 2),
              padding: .explicit(top: 0, bottom: 2, left: 2, right: 1), seed: 5)
    }

    func testGroupedConvolution() {
        check(height: 7, width: 6, cin: 6, cout: 9, kernel: (3, 3), stride: (1, 1), padding: .same, groups: 3, seed: 6)
    }

    func testDepthwiseConvolution() {
        check(height: 9, width: 11, cin: 70, cout: 70, kernel: (3, 3), stride: (1, 1), padding: .same, groups: 70,
              activation: .relu6, seed: 7)
        check(height: 10, width: 8, cin: 24, cout: 24, kernel: (5, 5), stride: (2, 2), padding: .same, groups: 24, seed: 8)
        // Several 4-pixel groups plus single pixels per row; 80 channels: single pixels take 64 channels at once,
        // then 16; ReLU.
        check(height: 6, width: 23, cin: 80, cout: 80, kernel: (3, 3), stride: (2, 2), padding: .same, groups: 80,
              activation: .relu, seed: 13)
    }

    /// The shapes the depthwise kernel specializes (kernel width 3 or 5, horizontal stride 1 or 2;
    /// rows of any height and stride) and two it does not (width 7; horizontal stride 3), on odd
    /// and even heights (a last row without a partner), rows that start in the padding, widths
    /// that leave single pixels, and channels that end in a partial group of 16.
    func testDepthwiseKernelShapes() {
        let shapes: [(h: Int, w: Int, c: Int, k: (Int, Int), s: (Int, Int))] = [
            (7, 13, 40, (3, 3), (1, 1)), (8, 9, 19, (3, 3), (2, 2)), (9, 14, 48, (5, 5), (1, 1)), (12, 11, 33, (5, 5), (2, 2)),
            (5, 6, 16, (5, 5), (1, 1)), (10, 7, 21, (3, 5), (3, 1)), (3, 3, 17, (3, 3), (1, 1)),
            (9, 12, 20, (3, 7), (2, 1)), (8, 13, 18, (3, 3), (1, 3)),
        ]
        for (i, shape) in shapes.enumerated() {
            check(height: shape.h, width: shape.w, cin: shape.c, cout: shape.c, kernel: shape.k, stride: shape.s, padding: .same,
                  groups: shape.c, activation: i % 2 == 0 ? .relu6 : .none, seed: 20 + UInt64(i))
        }
    }

    /// cgk_depthwise computes two output rows at a time (cgk_depthwise_row_pair), and the last row
    /// of an odd range alone (cgk_depthwise_row, as the fused expansion does at a band's end).
    /// Both must give the same bits, for any range of rows and channels a thread is given.
    func testDepthwiseRowPairsEqualSingleRows() {
        var random = TestRandom(seed: 30)
        for (h, w, c, k, s) in [(9, 12, 37, 3, 1), (11, 9, 32, 5, 2), (8, 10, 20, 5, 1), (7, 7, 18, 3, 2), (6, 5, 9, 7, 1)] {
            let window = WindowGeometry(inHeight: h, inWidth: w, inChannels: c, kernel: (k, k), stride: (s, s), padding: .same)
            var cw = window.c
            let x = random.floats(h * w * c), weight = random.floats(k * k * c, scale: 0.5), bias = random.floats(c)
            let outRows = window.outHeight, outRow = window.outWidth * c
            var single = [Float](repeating: .nan, count: outRows * outRow)
            x.withUnsafeBufferPointer { x in
                withUnsafeTemporaryAllocation(of: UnsafePointer<Float>?.self, capacity: k) { rows in
                    for oh in 0..<outRows {
                        let ih0 = oh * s - window.padTop, lo = max(0, -ih0), hi = min(k, h - ih0)
                        for kh in lo..<hi { rows[kh] = x.baseAddress! + (ih0 + kh) * w * c }
                        single.withUnsafeMutableBufferPointer {
                            cgk_depthwise_row(rows.baseAddress!, Int32(lo), Int32(hi), &cw, weight, bias, Activation.relu6.code, 0,
                                              Int32(c), $0.baseAddress! + oh * outRow)
                        }
                    }
                }
            }
            for (rowLo, rowHi, cLo, cHi) in [(0, outRows, 0, c), (1, outRows, 0, c), (0, outRows - 1, 16, c), (1, 3, 0, 16)] where cLo < c {
                var pairs = [Float](repeating: .nan, count: outRows * outRow)
                cgk_depthwise(x, &cw, weight, bias, Activation.relu6.code, Int32(rowLo), Int32(rowHi), Int32(cLo), Int32(min(cHi, c)), &pairs)
                var same = true
                for oh in rowLo..<rowHi {
                    for i in oh * outRow..<(oh + 1) * outRow where (cLo..<min(cHi, c)).contains(i % c) {
                        same = same && pairs[i].bitPattern == single[i].bitPattern
                    }
                }
                XCTAssertTrue(same, "\(h)x\(w)x\(c) \(k)x\(k)/\(s) rows \(rowLo)..<\(rowHi) channels \(cLo)..<\(cHi)")
            }
        }
    }

    func testPointwiseConvolutionIsAPlainGEMM() {
        let window = WindowGeometry(inHeight: 5, inWidth: 4, inChannels: 7, kernel: (1, 1), stride: (1, 1), padding: .valid)
        XCTAssertEqual(ConvShape(window: window, outChannels: 3).method, .pointwise)
        check(height: 5, width: 4, cin: 7, cout: 3, kernel: (1, 1), stride: (1, 1), padding: .valid, activation: .relu, seed: 9)
        check(height: 9, width: 9, cin: 8, cout: 16, kernel: (1, 1), stride: (2, 2), padding: .same, seed: 10)
    }

    func testLargeImageUsesSeveralTiles() {
        // 64x64 outputs with depth 27 exceed one im2col tile: rows are split across tiles and threads.
        check(height: 64, width: 64, cin: 3, cout: 8, kernel: (3, 3), stride: (1, 1), padding: .same, activation: .relu, seed: 11)
    }

    func testDenseMatchesReferenceForRowAndColumnSplits() {
        var random = TestRandom(seed: 12)
        for rows in [1, 3, 70] {
            let x = random.floats(rows * 33), w = random.floats(33 * 17), b = random.floats(17)
            let expected = Reference.linear(x, rows: rows, inFeatures: 33, outFeatures: 17, weight: w, bias: b, activation: .relu)
            for threads in [1, 2] {
                var y = [Float](repeating: .nan, count: rows * 17)
                Dense.forward(rows: rows, inFeatures: 33, outFeatures: 17, x: x, weight: w, bias: b, activation: .relu, y: &y, threads: threads)
                XCTAssertLessThan(maxRelativeError(y, expected), 1e-5, "rows \(rows) threads \(threads)")
            }
        }
    }

    func testSamePaddingMatchesTensorFlowRule() {
        // TF: out = ceil(in / stride), pad_total = max((out - 1) * stride + k - in, 0), extra at the end.
        let r = Padding.same.resolve(input: 224, kernel: 3, stride: 2)
        XCTAssertEqual(r.output, 112)
        XCTAssertEqual(r.before, 0)
        XCTAssertEqual(r.after, 1)
        let r5 = Padding.same.resolve(input: 15, kernel: 5, stride: 2)
        XCTAssertEqual(r5.output, 8)
        XCTAssertEqual(r5.before, 2)
        XCTAssertEqual(r5.after, 2)
    }
}
