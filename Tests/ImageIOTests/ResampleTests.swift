import ImageIO
import TestSupport
import XCTest

final class ResampleTests: XCTestCase {
    /// The triangle filter of width max(scale, 1), written out naively in double precision.
    func referenceResample(_ image: RGBImage, region: (Double, Double, Double, Double), width: Int, height: Int) -> [Float] {
        func weights(_ size: Int, _ start: Double, _ length: Double, _ out: Int) -> [[(Int, Double)]] {
            let scale = length / Double(out), widen = max(scale, 1)
            return (0..<out).map { i in
                let center = start + (Double(i) + 0.5) * scale
                let lo = max(0, Int((center - widen + 0.5).rounded(.down))), hi = min(size, Int((center + widen + 0.5).rounded(.down)))
                let taps = (lo..<hi).map { ($0, max(0, 1 - abs((Double($0) + 0.5 - center) / widen))) }
                let total = taps.reduce(0) { $0 + $1.1 }
                return taps.map { ($0.0, $0.1 / total) }
            }
        }
        let wx = weights(image.width, region.0, region.2, width), wy = weights(image.height, region.1, region.3, height)
        var out = [Float](repeating: 0, count: width * height * 3)
        for j in 0..<height {
            for i in 0..<width {
                for c in 0..<3 {
                    var acc = 0.0
                    for (y, a) in wy[j] { for (x, b) in wx[i] { acc += a * b * Double(image.pixels[(y * image.width + x) * 3 + c]) } }
                    out[(j * width + i) * 3 + c] = Float(acc)
                }
            }
        }
        return out
    }

    func testResampleMatchesNaiveFilterForShrinkAndEnlarge() throws {
        var random = TestRandom(seed: 30)
        let image = RGBImage(width: 37, height: 23, rgb: random.bytes(37 * 23 * 3))
        for (region, w, h) in [((0.0, 0.0, 37.0, 23.0), 10, 7), ((3.5, 2.0, 20.0, 15.0), 50, 31), ((0.0, 0.0, 37.0, 23.0), 37, 23),
                                ((1.7, 0.9, 33.0, 21.0), 14, 9)] {
            var out = [Float](repeating: .nan, count: w * h * 3)
            try ImageResampler.resample(image, region: region, width: w, height: h, into: &out)
            let expected = referenceResample(image, region: region, width: w, height: h)
            XCTAssertLessThan(maxRelativeError(out, expected), 1e-4, "region \(region) -> \(w)x\(h)")
        }
    }

    func testShrinkingAveragesEveryPixel() throws {
        // A one-pixel checkerboard shrunk 8x must come out uniform grey (point sampling would alias).
        var rgb = [UInt8](repeating: 0, count: 64 * 64 * 3)
        for y in 0..<64 { for x in 0..<64 where (x + y) % 2 == 0 { for c in 0..<3 { rgb[(y * 64 + x) * 3 + c] = 255 } } }
        var out = [Float](repeating: 0, count: 8 * 8 * 3)
        try ImageResampler.resample(RGBImage(width: 64, height: 64, rgb: rgb), region: (0, 0, 64, 64), width: 8, height: 8, into: &out)
        for v in out[27...] .prefix(30) { XCTAssertEqual(v, 127.5, accuracy: 1.0) }
    }

    func testMirrorFlipsColumns() throws {
        let image = RGBImage(width: 4, height: 1, rgb: [0, 0, 0, 10, 10, 10, 20, 20, 20, 30, 30, 30])
        var out = [Float](repeating: 0, count: 12), mirrored = out
        try ImageResampler.resample(image, region: (0, 0, 4, 1), width: 4, height: 1, into: &out)
        try ImageResampler.resample(image, region: (0, 0, 4, 1), width: 4, height: 1, mirror: true, into: &mirrored)
        XCTAssertEqual(out.map { Int($0) }, [0, 0, 0, 10, 10, 10, 20, 20, 20, 30, 30, 30])
        XCTAssertEqual(mirrored.map { Int($0) }, [30, 30, 30, 20, 20, 20, 10, 10, 10, 0, 0, 0])
    }

    func testMirroringTheOutputEqualsResamplingMirrored() throws {
        // The engine makes a flip-averaging model's mirror view by reversing the plain view's
        // columns; that must be the resampler's mirrored output exactly, for any region.
        var random = TestRandom(seed: 31)
        let (w, h, outW, outH) = (37, 29, 17, 13)
        let image = RGBImage(width: w, height: h, rgb: random.bytes(w * h * 3))
        for region in [(0.0, 0.0, 37.0, 29.0), (3.3, 2.1, 30.5, 25.2), (10.0, 0.5, 5.0, 28.0)] {
            var plain = [Float](repeating: 0, count: outW * outH * 3), mirrored = plain, flipped = plain
            try ImageResampler.resample(image, region: region, width: outW, height: outH, into: &plain)
            try ImageResampler.resample(image, region: region, width: outW, height: outH, mirror: true, into: &mirrored)
            ImageResampler.mirrorColumns(plain, width: outW, height: outH, into: &flipped)
            XCTAssertEqual(flipped, mirrored, "region \(region)")
            XCTAssertNotEqual(flipped, plain)
        }
    }

    func testNormalizeUsesMeanAndStd() {
        var pixels: [Float] = [0, 127.5, 255]
        ImageResampler.normalize(&pixels, count: 1, mean: [0, 0.5, 1], std: [0.5, 0.25, 2])
        XCTAssertEqual(pixels[0], 0, accuracy: 1e-6)
        XCTAssertEqual(pixels[1], 0, accuracy: 1e-6)
        XCTAssertEqual(pixels[2], 0, accuracy: 1e-6)
    }

    func testBadRegionsAreRefused() {
        let image = RGBImage(width: 2, height: 2, rgb: [UInt8](repeating: 0, count: 12))
        var out = [Float](repeating: 0, count: 12)
        XCTAssertThrowsError(try ImageResampler.resample(image, region: (0, 0, 0, 2), width: 2, height: 2, into: &out))
        XCTAssertThrowsError(try ImageResampler.resample(image, region: (.nan, 0, 2, 2), width: 2, height: 2, into: &out))
    }
}
