import CKernels
import Kernels
import TestSupport
import XCTest

/// The int8 GEMM (cgk_gemm_q8 through `QuantizedMatrix`) against a naive reference of the same
/// arithmetic: quantization, integer sums and the float epilogue are specified exactly
/// (Quantization, cg_kernels.h), so every kernel variant must match it bit for bit. scripts/test.sh
/// runs this under every variant the CPU executes.
final class QuantizedGEMMTests: XCTestCase {
    /// The kernel cgk_gemm_q8 runs, per variant: VNNI where the AVX-512 variant has it.
    func testTheInt8KernelFollowsTheVariant() {
        let kernel = QuantizedMatrix.kernel, variant = InstructionSet.current
        print("int8 kernel: \(kernel) (kernel variant \(variant))")
        switch variant {
        case .generic: XCTAssertEqual(kernel, "generic")
        case .avx2: XCTAssertEqual(kernel, "avx2")
        case .avx512:
            XCTAssertTrue(["avx512-vnni", "avx2"].contains(kernel), kernel)
            if kernel == "avx2" { print("avx512-vnni: not executed (this CPU has AVX-512 without VNNI)") }
        }
    }

    /// The reference: quantize each value (multiply, clamp, round half to even), sum in integers,
    /// then (acc + offset) * scale + bias and the activation, each step one float operation.
    static func reference(m: Int, n: Int, k: Int, a: [Float], weights: [Int8], weightScales: [Float], inputScale: Float,
                          zero: Int, channelScales: [Float]? = nil, bias: [Float]?, activation: Activation) -> [Float] {
        let lo = Float(-zero), hi = Float(255 - zero)
        // Per column of A: 1 / scale, or 1 / (scale * m[channel]) with balanced channels.
        let inverses = (0..<k).map { kk in channelScales.map { 1 / (inputScale * $0[kk % $0.count]) } ?? 1 / inputScale }
        let q = a.enumerated().map { i, x -> Int in
            var t = x * inverses[i % k]
            t = t > lo ? t : lo
            t = t < hi ? t : hi
            return Int(t.rounded(.toNearestOrEven)) + zero
        }
        var c = [Float](repeating: 0, count: m * n)
        for col in 0..<n {
            var sum = 0
            for kk in 0..<k { sum += Int(weights[kk * n + col]) }
            let offset = -zero * sum, scale = inputScale * weightScales[col]
            for r in 0..<m {
                var acc = 0
                for kk in 0..<k { acc += q[r * k + kk] * Int(weights[kk * n + col]) }
                var v = Float(Int32(acc + offset))
                v = v * scale
                if let bias { v = v + bias[col] }
                c[r * n + col] = activation.apply(v)
            }
        }
        return c
    }

    func check(m: Int, n: Int, k: Int, zero: Int, bias: Bool, activation: Activation, threads: Int, seed: UInt64,
               channels: Int? = nil, wide: Bool = false, file: StaticString = #filePath, line: UInt = #line) throws {
        var random = TestRandom(seed: seed)
        let range = wide ? -127...127 : -63...63
        let weights = (0..<(k * n)).map { _ in Int8(random.int(range)) }
        let weightScales = (0..<n).map { _ in Float(random.generator.unit() * 0.02 + 0.001) }
        let inputScale: Float = 0.05
        // Values beyond the quantized range on both sides, exact halfway points, and a NaN.
        var a = random.floats(m * k, scale: 10)
        for i in stride(from: 0, to: a.count, by: 7) { a[i] = (Float(random.int(-300...300)) + 0.5) * inputScale }
        if a.count > 3 { a[3] = .nan }
        let biases = bias ? random.floats(n) : nil
        let channelScales = channels.map { c in (0..<c).map { _ in Float(random.generator.unit() * 20 + 0.05) } }
        let matrix = try XCTUnwrap(weights.withUnsafeBufferPointer { w in
            weightScales.withUnsafeBufferPointer { s in
                QuantizedMatrix(w.baseAddress!, rows: k, columns: n, weightScales: s.baseAddress!, inputScale: inputScale, zeroPoint: zero,
                                channelScales: channelScales)
            }
        })
        XCTAssertEqual(matrix.isWide, wide && weights.contains { abs($0) > 63 }, file: file, line: line)
        let expected = Self.reference(m: m, n: n, k: k, a: a, weights: weights, weightScales: weightScales, inputScale: inputScale,
                                      zero: zero, channelScales: channelScales, bias: biases, activation: activation)
        var c = [Float](repeating: .nan, count: m * n)
        let run = { (threads: Int) in
            a.withUnsafeBufferPointer { a in
                c.withUnsafeMutableBufferPointer { c in
                    if let biases {
                        biases.withUnsafeBufferPointer { b in
                            matrix.multiply(a.baseAddress!, rows: m, lda: k, into: c.baseAddress!, ldc: n, bias: b.baseAddress!,
                                            activation: activation, threads: threads)
                        }
                    } else {
                        matrix.multiply(a.baseAddress!, rows: m, lda: k, into: c.baseAddress!, ldc: n, bias: nil,
                                        activation: activation, threads: threads)
                    }
                }
            }
        }
        if threads > 1 {
            Scheduler(threads: threads).run { run(threads) }
        } else {
            run(1)
        }
        let same = zip(c, expected).allSatisfy { $0.bitPattern == $1.bitPattern }
        XCTAssertTrue(same, "m \(m) n \(n) k \(k) zero \(zero) threads \(threads): first difference at "
                      + "\(zip(c, expected).enumerated().first { $1.0.bitPattern != $1.1.bitPattern }.map { "\($0.offset): \($0.element)" } ?? "-")",
                      file: file, line: line)
    }

    /// 7-bit and 8-bit ("wide") weights: AVX2 multiplies the second with split activations.
    func testBitExactAgainstTheReference() throws {
        var seed: UInt64 = 1
        for wide in [false, true] {
            for (m, n, k) in [(1, 1, 1), (2, 15, 3), (5, 16, 4), (7, 17, 5), (12, 33, 16), (13, 100, 33), (25, 32, 7), (97, 24, 144)] {
                for zero in [0, 1, 128, 255] {
                    for (bias, activation) in [(false, Activation.none), (true, .relu6), (true, .relu)] {
                        try check(m: m, n: n, k: k, zero: zero, bias: bias, activation: activation, threads: 1, seed: seed, wide: wide)
                        seed += 1
                    }
                }
            }
        }
    }

    /// Lite0-like shapes, and every split across threads (rows, then panels) gives the same bits.
    func testLargeShapesAndThreadSplits() throws {
        for (m, n, k) in [(400, 24, 144), (49, 1152, 192), (3, 40, 1152), (196, 80, 480)] {
            for threads in [1, 2, 3] {
                try check(m: m, n: n, k: k, zero: 37, bias: true, activation: .relu6, threads: threads, seed: UInt64(m * n + threads),
                          wide: threads == 2)
            }
        }
    }

    /// Balanced channels: a multiplier per column of A (per input channel, repeated over an im2col
    /// row's taps), in the vector quantizers' full blocks and masked tails alike.
    func testPerChannelInputScalesAreBitExact() throws {
        var seed: UInt64 = 500
        for (m, n, k, channels) in [(3, 17, 5, 5), (13, 33, 100, 100), (25, 24, 144, 144), (9, 16, 72, 8), (40, 40, 2100, 2100)] {
            for threads in [1, 2] {
                try check(m: m, n: n, k: k, zero: 9, bias: true, activation: .relu6, threads: threads, seed: seed, channels: channels,
                          wide: threads == 1)
                seed += 1
            }
        }
    }

    func testMinus128IsRefused() {
        let weights: [Int8] = [0, -128, 1, -1], scales: [Float] = [1, 1]
        let matrix = weights.withUnsafeBufferPointer { w in
            scales.withUnsafeBufferPointer { QuantizedMatrix(w.baseAddress!, rows: 2, columns: 2, weightScales: $0.baseAddress!,
                                                             inputScale: 1, zeroPoint: 0) }
        }
        XCTAssertNil(matrix)
    }

    func testQuantizationHelpers() throws {
        let values: [Float] = [0.25, -3, 0, 0, 1, 4]
        let (scales, q) = try XCTUnwrap(values.withUnsafeBufferPointer { Quantization.symmetric($0, channels: 2, levels: 63) })
        XCTAssertEqual(scales, [1 / 63, 4 / 63], accuracy: 1e-7)
        XCTAssertEqual(q, [16, -47, 0, 0, 63, 63])
        let zeros: [Float] = [0, 0]
        XCTAssertEqual(zeros.withUnsafeBufferPointer { Quantization.symmetric($0, channels: 1) }?.scales, [1])
        let nan: [Float] = [.nan]
        XCTAssertNil(nan.withUnsafeBufferPointer { Quantization.symmetric($0, channels: 1) })
        // Zero is always representable exactly, whatever the range.
        for (lo, hi) in [(Float(0), Float(6)), (-1, 3), (2, 5), (-4, -1), (-0.3, 0.01)] {
            let (scale, zero) = Quantization.activation(low: lo, high: hi)
            XCTAssertGreaterThan(scale, 0)
            XCTAssertTrue((0...255).contains(zero))
            XCTAssertLessThanOrEqual(Float(-zero) * scale, min(lo, 0) + scale)
            XCTAssertGreaterThanOrEqual(Float(255 - zero) * scale, max(hi, 0) - scale)
        }
        XCTAssertEqual(Quantization.activation(low: 0, high: 6).zeroPoint, 0)
    }
}

private func XCTAssertEqual(_ a: [Float], _ b: [Float], accuracy: Float, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, file: file, line: line)
    for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: accuracy, file: file, line: line) }
}
