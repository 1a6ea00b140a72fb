import ModelFormat
import SystemIO
import XCTest

final class JSONTests: XCTestCase {
    func testRoundTripOfEveryKind() throws {
        let value: JSON = ["a": [1, 2.5, -3e-7, true, false, nil], "b": "quote \" backslash \\ tab \t unicode é 🎵 \u{01}",
                           "c": ["nested": ["deeper": []]], "d": [:]]
        XCTAssertEqual(try JSON.parse(value.serialized), value)
        XCTAssertEqual(try JSON.parse(value.pretty), value)
    }

    func testSerializationIsCanonical() {
        let a: JSON = ["z": 1, "a": 2], b: JSON = ["a": 2, "z": 1]
        XCTAssertEqual(a.serialized, b.serialized)
        XCTAssertEqual(a.serialized, #"{"a":2,"z":1}"#)
        XCTAssertEqual(JSON(Float(0.485)).serialized, "0.485")
    }

    func testEscapesAndSurrogatePairs() throws {
        XCTAssertEqual(try JSON.parse(#""\u00e9\ud83c\udfb5\n\/""#), .string("é🎵\n/"))
    }

    func testMalformedDocumentsAreRejected() {
        let bad = ["", "{", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "01", "1.", ".5", "-", "tru", "nul", "\"abc", "\"\\x\"",
                   "\"\\ud800\"", "\"a\u{01}b\"", "[1] 2", "{\"a\":1,\"a\":2}", "1e999", "NaN", "[" + String(repeating: "[", count: 100)]
        for text in bad {
            XCTAssertThrowsError(try JSON.parse(text), "accepted \(text.prefix(20))") { error in
                XCTAssertEqual((error as? CoverGenreError)?.code, .modelFormat)
            }
        }
        var invalidUTF8: [UInt8] = Array("\"ab".utf8) + [0xC3, 0x28] + Array("\"".utf8)
        XCTAssertThrowsError(try invalidUTF8.withUnsafeMutableBytes { try JSON.parse(UnsafeRawBufferPointer($0)) })
    }

    func testDepthLimitHoldsButReasonableNestingWorks() throws {
        let deep = String(repeating: "[", count: 63) + String(repeating: "]", count: 63)
        XCTAssertNoThrow(try JSON.parse(deep))
        let tooDeep = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        XCTAssertThrowsError(try JSON.parse(tooDeep))
    }

    func testIntegerAccessorRejectsFractionsAndHugeValues() {
        XCTAssertEqual(JSON.number(3).int, 3)
        XCTAssertNil(JSON.number(3.5).int)
        XCTAssertNil(JSON.number(1e30).int)
        XCTAssertNil(JSON.string("3").int)
    }
}
