import ImageIO
import SystemIO
import TestSupport
import XCTest

/// Corrupt, truncated, empty, oversized and non-image inputs: each must give an image error,
/// never a crash, a hang or an image made up of padding.
final class HostileInputTests: XCTestCase {
    func assertImageError(_ bytes: [UInt8], _ what: String, codes: Set<CoverGenreError.Code> = [.imageDecode, .imageUnsupported],
                          file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try ImageDecoder.decode(bytes)
            XCTFail("\(what): decoded", file: file, line: line)
        } catch let error as CoverGenreError {
            XCTAssertTrue(codes.contains(error.code), "\(what): \(error.code) \(error.message)", file: file, line: line)
            XCTAssertFalse(error.message.isEmpty, file: file, line: line)
        } catch {
            XCTFail("\(what): \(error)", file: file, line: line)
        }
    }

    func testEmptyAndNonImageInputs() {
        assertImageError([], "empty")
        assertImageError(Array("hello, this is text, not an image\n".utf8), "text")
        assertImageError(Array("<html><body>Not found</body></html>".utf8), "html")
        assertImageError([0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 1, 0, 1, 0], "gif")
    }

    func testEveryTruncationOfAJPEGIsAnError() throws {
        let rgb = Fixtures.quadrants(width: 24, height: 16)
        for progressive in [false, true] {
            let jpeg = try Fixtures.jpeg(rgb, width: 24, height: 16, progressive: progressive)
            for length in 0..<(jpeg.count - 2) { // the last two bytes are the EOI marker
                assertImageError(Array(jpeg.prefix(length)), "jpeg truncated to \(length) (progressive \(progressive))")
            }
        }
    }

    func testEveryTruncationOfAPNGIsAnError() {
        let rgb = (0..<(7 * 5 * 3)).map { UInt8($0) }
        let png = Fixtures.png(width: 7, height: 5, color: .rgb, bitDepth: 8, samples: rgb)
        let iend = 12 // a missing IEND chunk does not spoil the pixels
        for length in 0..<(png.count - iend) { assertImageError(Array(png.prefix(length)), "png truncated to \(length)") }
        XCTAssertNoThrow(try ImageDecoder.decode(Array(png.prefix(png.count - iend))))
    }

    func testTruncatedWebPIsAnError() throws {
        let rgb = Fixtures.quadrants(width: 16, height: 16)
        let webp = try rgb.withUnsafeBufferPointer { try ImageEncoder.webp($0.baseAddress!, width: 16, height: 16, quality: 80) }
        for length in stride(from: 0, to: webp.count, by: 3) { assertImageError(Array(webp.prefix(length)), "webp truncated to \(length)") }
    }

    func testRandomCorruptionNeverCrashes() throws {
        var random = TestRandom(seed: 99)
        let rgb = Fixtures.quadrants(width: 32, height: 32)
        let samples: [[UInt8]] = [
            try Fixtures.jpeg(rgb, width: 32, height: 32),
            try Fixtures.jpeg(rgb, width: 32, height: 32, progressive: true),
            Fixtures.png(width: 32, height: 32, color: .rgb, bitDepth: 8, samples: rgb),
            try rgb.withUnsafeBufferPointer { try ImageEncoder.webp($0.baseAddress!, width: 32, height: 32) },
        ]
        for sample in samples {
            for _ in 0..<300 {
                var bytes = sample
                for _ in 0..<random.int(1...8) { bytes[random.int(0...(bytes.count - 1))] = UInt8(random.int(0...255)) }
                // Either outcome is fine; what matters is a clean return or a clean error.
                if let image = try? ImageDecoder.decode(bytes) { XCTAssertGreaterThan(image.width, 0) }
            }
        }
    }

    func testDecompressionBombsAreRefusedAtTheHeader() throws {
        // A PNG that claims 100,000 x 100,000 pixels with almost no data.
        let bomb = Fixtures.png(width: 1, height: 1, color: .rgb, bitDepth: 8, samples: [0, 0, 0], claimedWidth: 100_000,
                                claimedHeight: 100_000)
        assertImageError(bomb, "100000x100000 png", codes: [.imageTooLarge])
        // The same within the width limit but beyond the pixel budget.
        var limits = ImageLimits()
        limits.maxPixels = 1000
        let rgb = Fixtures.quadrants(width: 40, height: 40)
        XCTAssertThrowsError(try ImageDecoder.decode(try Fixtures.jpeg(rgb, width: 40, height: 40), limits: limits)) { error in
            XCTAssertEqual((error as? CoverGenreError)?.code, .imageTooLarge)
        }
        // A JPEG header claiming 65500 x 65500 (SOF dimensions patched in).
        var jpeg = try Fixtures.jpeg(rgb, width: 40, height: 40)
        let sof = try XCTUnwrap((0..<(jpeg.count - 1)).first { jpeg[$0] == 0xFF && jpeg[$0 + 1] == 0xC0 })
        jpeg[sof + 5] = 0xFF; jpeg[sof + 6] = 0xDC; jpeg[sof + 7] = 0xFF; jpeg[sof + 8] = 0xDC
        assertImageError(jpeg, "65500x65500 jpeg", codes: [.imageTooLarge])
    }

    func testOversizedFilesAreRefusedBeforeReading() throws {
        var limits = ImageLimits()
        limits.maxFileBytes = 10
        XCTAssertThrowsError(try ImageDecoder.decode([UInt8](repeating: 0xFF, count: 11), limits: limits)) { error in
            XCTAssertEqual((error as? CoverGenreError)?.code, .imageTooLarge)
        }
    }
}
