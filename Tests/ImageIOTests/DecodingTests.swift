import ImageIO
import SystemIO
import TestSupport
import XCTest

final class DecodingTests: XCTestCase {
    let width = 40, height = 30
    lazy var source = Fixtures.quadrants(width: width, height: height)

    func assertQuadrants(_ image: RGBImage, tolerance: Int, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(image.width, width, file: file, line: line)
        XCTAssertEqual(image.height, height, file: file, line: line)
        // Sample away from the quadrant edges, where JPEG's blocks blur.
        for (x, y) in [(5, 5), (width - 6, 5), (5, height - 6), (width - 6, height - 6)] {
            let p = image[x, y]
            let i = (y * width + x) * 3
            for (got, want) in [(p.0, source[i]), (p.1, source[i + 1]), (p.2, source[i + 2])] {
                XCTAssertLessThanOrEqual(abs(Int(got) - Int(want)), tolerance, "pixel (\(x), \(y))", file: file, line: line)
            }
        }
    }

    func testBaselineAndProgressiveJPEG() throws {
        let baseline = try ImageDecoder.decode(try Fixtures.jpeg(source, width: width, height: height))
        XCTAssertEqual(baseline.format, .jpeg)
        assertQuadrants(baseline, tolerance: 12)
        let progressive = try ImageDecoder.decode(try Fixtures.jpeg(source, width: width, height: height, progressive: true))
        assertQuadrants(progressive, tolerance: 12)
    }

    func testGrayJPEGBecomesRGB() throws {
        let gray = (0..<(width * height)).map { UInt8($0 % 256) }
        let image = try ImageDecoder.decode(try ImageEncoder.jpeg(gray, width: width, height: height, channels: 1, quality: 100))
        for y in 0..<height { for x in 0..<width { let p = image[x, y]; XCTAssertTrue(p.0 == p.1 && p.1 == p.2) } }
    }

    func testAdobeCMYKJPEGConvertsToRGB() throws {
        // Adobe stores inverted ink; inverted (C, M, Y, K) = (255, 0, 255, 255) is pure green paper.
        var cmyk = [UInt8]()
        for _ in 0..<(width * height) { cmyk += [255, 0, 255, 255] }
        let image = try ImageDecoder.decode(try ImageEncoder.jpeg(cmyk, width: width, height: height, channels: 4, quality: 100))
        let p = image[20, 15]
        XCTAssertGreaterThan(Int(p.0), 245)
        XCTAssertLessThan(Int(p.1), 10)
        XCTAssertGreaterThan(Int(p.2), 245)
    }

    func testExifOrientationIsApplied() throws {
        let jpeg = try Fixtures.jpeg(source, width: width, height: height, quality: 100)
        // Orientation 6: the stored image must be turned 90 degrees clockwise to be upright, so the
        // stored top-left (red) quadrant ends up top-right.
        for bigEndian in [true, false] {
            let rotated = try ImageDecoder.decode(Fixtures.withExifOrientation(jpeg, orientation: 6, bigEndian: bigEndian))
            XCTAssertEqual(rotated.width, height)
            XCTAssertEqual(rotated.height, width)
            let topRight = rotated[rotated.width - 5, 5]
            XCTAssertGreaterThan(Int(topRight.0), 180)
            XCTAssertLessThan(Int(topRight.2), 80)
        }
        // Orientation 3 (180 degrees): red moves to the bottom-right.
        let upsideDown = try ImageDecoder.decode(Fixtures.withExifOrientation(jpeg, orientation: 3))
        XCTAssertEqual(upsideDown.width, width)
        XCTAssertGreaterThan(Int(upsideDown[width - 5, height - 5].0), 180)
        // A malformed EXIF block is ignored, not fatal.
        var broken = Fixtures.withExifOrientation(jpeg, orientation: 6)
        broken[18] = 0xFF
        broken[19] = 0xFF // IFD offset far outside the segment
        XCTAssertNoThrow(try ImageDecoder.decode(broken))
    }

    func testPNGVariantsDecodeExactly() throws {
        let w = 5, h = 3
        let rgb = (0..<(w * h * 3)).map { UInt8(($0 * 37) % 256) }
        func check(_ png: [UInt8], expect: [UInt8], _ what: String) throws {
            let image = try ImageDecoder.decode(png)
            XCTAssertEqual(image.format, .png, what)
            XCTAssertEqual(Array(image.bytes), expect, what)
        }
        try check(Fixtures.png(width: w, height: h, color: .rgb, bitDepth: 8, samples: rgb), expect: rgb, "rgb8")
        let gray = (0..<(w * h)).map { UInt8($0 * 17) }
        try check(Fixtures.png(width: w, height: h, color: .gray, bitDepth: 8, samples: gray), expect: gray.flatMap { g -> [UInt8] in [g, g, g] }, "gray8")
        var rgba: [UInt8] = []
        for i in 0..<(w * h) { rgba += rgb[(i * 3)..<(i * 3 + 3)] + [UInt8(i * 10)] }
        try check(Fixtures.png(width: w, height: h, color: .rgba, bitDepth: 8, samples: rgba), expect: rgb, "rgba8 drops alpha")
        let grayAlpha = gray.flatMap { g -> [UInt8] in [g, 7] }
        try check(Fixtures.png(width: w, height: h, color: .grayAlpha, bitDepth: 8, samples: grayAlpha),
                  expect: gray.flatMap { g -> [UInt8] in [g, g, g] }, "gray+alpha")
        // 16-bit: 0x1234 scales to round(0x1234 * 255 / 65535) = 0x12.
        let wide = rgb.flatMap { v -> [UInt8] in [v, 0x34] }
        let expected16 = rgb.map { UInt8((Double(Int($0) << 8 | 0x34) * 255 / 65535).rounded()) }
        try check(Fixtures.png(width: w, height: h, color: .rgb, bitDepth: 16, samples: wide), expect: expected16, "rgb16")
        // Palette with transparency: indices map to palette colours, alpha dropped.
        let palette: [UInt8] = [255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9]
        let indices = (0..<(w * h)).map { UInt8($0 % 4) }
        try check(Fixtures.png(width: w, height: h, color: .palette, bitDepth: 8, samples: indices, palette: palette, transparency: [0, 128]),
                  expect: indices.flatMap { Array(palette[(Int($0) * 3)..<(Int($0) * 3 + 3)]) }, "palette")
        // 1-bit gray, packed most significant bit first; 8 columns per byte.
        let bits: [UInt8] = [0b1010_0000, 0b0101_0000, 0b1111_1000]
        let expectBits: [UInt8] = [1, 0, 1, 0, 0, 0, 1, 0, 1, 0, 1, 1, 1, 1, 1].flatMap { $0 == 1 ? [255, 255, 255] : [0, 0, 0] }
        try check(Fixtures.png(width: w, height: h, color: .gray, bitDepth: 1, samples: bits), expect: expectBits, "gray1")
    }

    func testWebPLosslessDecodesExactly() throws {
        let webp = try source.withUnsafeBufferPointer { try ImageEncoder.webp($0.baseAddress!, width: width, height: height) }
        let image = try ImageDecoder.decode(webp)
        XCTAssertEqual(image.format, .webp)
        XCTAssertEqual(Array(image.bytes), source)
    }

    func testDCTScalingShrinksLargeJPEGsButNotBelowTheTarget() throws {
        let big = Fixtures.quadrants(width: 1024, height: 800)
        let jpeg = try Fixtures.jpeg(big, width: 1024, height: 800, quality: 80)
        // 1/4 would give 256x200, below 224 rows; 1/2 gives 512x400.
        let scaled = try ImageDecoder.decode(jpeg, minimumSize: 224)
        XCTAssertEqual(scaled.width, 512)
        XCTAssertEqual(scaled.height, 400)
        XCTAssertEqual(scaled.sourceWidth, 1024)
        let small = try ImageDecoder.decode(jpeg, minimumSize: 100)
        XCTAssertEqual(small.width, 128)
        let full = try ImageDecoder.decode(jpeg)
        XCTAssertEqual(full.width, 1024)
    }
}
