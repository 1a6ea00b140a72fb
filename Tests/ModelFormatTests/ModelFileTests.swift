import ModelFormat
import SystemIO
import TestSupport
import XCTest

final class ModelFileTests: XCTestCase {
    func smallModel() throws -> [UInt8] {
        var writer = ModelWriter(metadata: ["format": "test", "labels": ["a", "b"]])
        try writer.add("w", shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        try writer.add("h", shape: [3], values: [0.5, -2, 65504], storage: .float16)
        try writer.add("empty", shape: [0, 4], values: [])
        return writer.serialize()
    }

    func testRoundTripInMemoryAndFromDisk() throws {
        let bytes = try smallModel()
        let path = NSTemporaryPath("model.cgm")
        try Files.writeAtomically(path, bytes)
        for file in [try bytes.withUnsafeBytes { try ModelFile(copying: $0) }, try ModelFile(path: path)] {
            XCTAssertEqual(file.metadata["labels"], ["a", "b"])
            XCTAssertEqual(file.tensors.map(\.name), ["w", "h", "empty"])
            XCTAssertEqual(try file.floats("w").array, [1, 2, 3, 4, 5, 6])
            XCTAssertEqual(try file.floats("h").array, [0.5, -2, 65504])
            XCTAssertEqual(try file.floats("empty").count, 0)
            XCTAssertEqual(file.info("h")?.dtype, .float16)
            for t in file.tensors { XCTAssertEqual(t.offset % 64, 0) }
        }
    }

    func testEveryTruncationIsAnError() throws {
        let bytes = try smallModel()
        for length in 0..<bytes.count {
            XCTAssertThrowsError(try bytes.prefix(length).withUnsafeBytes { try ModelFile(copying: $0) }, "length \(length)") { error in
                XCTAssertEqual((error as? CoverGenreError)?.code, .modelFormat, "length \(length): \(error)")
            }
        }
    }

    func testEveryFlippedByteIsDetected() throws {
        let bytes = try smallModel()
        for i in 0..<bytes.count {
            var damaged = bytes
            damaged[i] ^= 0x5A
            XCTAssertThrowsError(try damaged.withUnsafeBytes { try ModelFile(copying: $0) }, "byte \(i)")
        }
    }

    /// With the checksum unchecked, the structural validation alone must still refuse or safely
    /// accept random damage: no out-of-bounds read (run under ASan in CI) and no crash.
    func testStructuralValidationWithoutChecksum() throws {
        var limits = ModelFileLimits()
        limits.verifyChecksum = false
        let bytes = try smallModel()
        var random = TestRandom(seed: 7)
        for _ in 0..<3000 {
            var damaged = bytes
            for _ in 0..<random.int(1...4) { damaged[random.int(0...(bytes.count - 1))] = UInt8(random.int(0...255)) }
            if let file = try? damaged.withUnsafeBytes({ try ModelFile(copying: $0, limits: limits) }) {
                for t in file.tensors {
                    XCTAssertLessThanOrEqual(t.offset + t.byteCount, file.fileSize)
                    _ = try? file.floats(t.name)
                }
            }
        }
    }

    func testLimitsAreEnforced() throws {
        let bytes = try smallModel()
        var limits = ModelFileLimits()
        limits.maxTensors = 2
        XCTAssertThrowsError(try bytes.withUnsafeBytes { try ModelFile(copying: $0, limits: limits) }) { error in
            XCTAssertEqual((error as? CoverGenreError)?.code, .limitExceeded)
        }
        limits = ModelFileLimits()
        limits.maxMetadataBytes = 10
        XCTAssertThrowsError(try bytes.withUnsafeBytes { try ModelFile(copying: $0, limits: limits) })
        limits = ModelFileLimits()
        limits.maxFileBytes = 100
        XCTAssertThrowsError(try bytes.withUnsafeBytes { try ModelFile(copying: $0, limits: limits) })
    }

    func testNewerFormatVersionIsReportedAsUnsupported() throws {
        var bytes = try smallModel()
        bytes[8] = 2
        XCTAssertThrowsError(try bytes.withUnsafeBytes { try ModelFile(copying: $0) }) { error in
            XCTAssertEqual((error as? CoverGenreError)?.code, .modelUnsupported)
        }
    }

    func testWriterRefusesInconsistentTensors() {
        var writer = ModelWriter(metadata: [:])
        XCTAssertThrowsError(try writer.add("x", shape: [2, 2], values: [1, 2, 3]))
        XCTAssertNoThrow(try writer.add("x", shape: [1], values: [1]))
        XCTAssertThrowsError(try writer.add("x", shape: [1], values: [1]))
        XCTAssertThrowsError(try writer.add("", shape: [1], values: [1]))
    }
}

/// A path in a fresh temporary directory.
func NSTemporaryPath(_ name: String) -> String {
    var template = Array("/tmp/covergenre-test-XXXXXX".utf8CString)
    let dir = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    return "\(dir)/\(name)"
}
