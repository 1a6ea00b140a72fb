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
        bytes[8] = UInt8(ModelFileLayout.version + 1)
        XCTAssertThrowsError(try bytes.withUnsafeBytes { try ModelFile(copying: $0) }) { error in
            XCTAssertEqual((error as? CoverGenreError)?.code, .modelUnsupported)
        }
    }

    // Int8 storage: per-channel scales before the values, format version 2 only where needed.

    func int8Model() throws -> [UInt8] {
        var writer = ModelWriter(metadata: ["format": "test"])
        try writer.add("w", shape: [2, 3], values: [0.5, -1, 3, -0.25, 1, 1.5], storage: .int8)
        try writer.addInt8("q", shape: [2], scales: [0.5, 2], values: [-63, 7])
        try writer.add("f", shape: [1], values: [1])
        return writer.serialize()
    }

    func testInt8RoundTripAndVersions() throws {
        let bytes = try int8Model()
        XCTAssertEqual(bytes[8], 2, "a file with int8 tensors is version 2")
        XCTAssertEqual(try smallModel()[8], 1, "a float file stays version 1, which older readers read")
        let file = try bytes.withUnsafeBytes { try ModelFile(copying: $0) }
        XCTAssertEqual(file.version, 2)
        XCTAssertEqual(file.info("w")?.dtype, .int8)
        XCTAssertEqual(file.info("w")?.byteCount, 3 * 4 + 6)
        // Per channel (last dimension): column maxima 0.5, 1, 3 map to 63.
        let w = try file.floats("w").array, expected: [Float] = [0.5, -1, 3, -0.25, 1, 1.5]
        for (a, b) in zip(w, expected) { XCTAssertEqual(a, b, accuracy: 3 / 63 / 2 + 1e-6) }
        XCTAssertEqual(try file.floats("q").array, [-31.5, 14])
        let (scales, values) = try XCTUnwrap(file.int8(try XCTUnwrap(file.info("q"))))
        XCTAssertEqual([scales[0], scales[1]], [0.5, 2])
        XCTAssertEqual([values[0], values[1]], [-63, 7])
        // Copying a tensor keeps its bytes: no requantization.
        var copy = ModelWriter(metadata: ["format": "test"])
        for info in file.tensors { try copy.add(copying: info, of: file) }
        XCTAssertEqual(copy.serialize(), bytes)
    }

    func testInt8ScalesAndVersionAreValidated() throws {
        let bytes = try int8Model()
        let file = try bytes.withUnsafeBytes { try ModelFile(copying: $0) }
        let q = try XCTUnwrap(file.info("q"))
        func refused(_ damage: (inout [UInt8]) -> Void, _ what: String) {
            var damaged = bytes
            damage(&damaged)
            var limits = ModelFileLimits()
            limits.verifyChecksum = false
            XCTAssertThrowsError(try damaged.withUnsafeBytes { try ModelFile(copying: $0, limits: limits) }, what) { error in
                XCTAssertEqual((error as? CoverGenreError)?.code, .modelFormat, "\(what): \(error)")
            }
        }
        for (bits, name) in [(Float(0).bitPattern, "zero"), (Float(-1).bitPattern, "negative"), (Float.nan.bitPattern, "NaN"),
                             (Float.infinity.bitPattern, "infinite")] {
            refused({ b in withUnsafeBytes(of: bits.littleEndian) { b.replaceSubrange(q.offset..<(q.offset + 4), with: $0) } },
                    "\(name) scale")
        }
        refused({ $0[8] = 1 }, "int8 tensors in a version-1 file")
        XCTAssertThrowsError(try { var w = ModelWriter(metadata: [:]); try w.addInt8("s", shape: [2], scales: [1, 0], values: [1, 1]) }())
        XCTAssertThrowsError(try { var w = ModelWriter(metadata: [:]); try w.addInt8("s", shape: [], scales: [], values: [1]) }())
        XCTAssertThrowsError(try { var w = ModelWriter(metadata: [:]); try w.add("s", shape: [1], values: [.nan], storage: .int8) }())
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
