import Service
import XCTest

/// The multipart/form-data parser reads untrusted request bodies: every malformed body is an
/// error with a message, every part's bytes are exactly what the client sent.
final class MultipartTests: XCTestCase {
    /// A body of `parts` (headers, content) with `boundary`, CRLF line ends, closed with `--`.
    static func body(_ boundary: String, _ parts: [(String, [UInt8])], preamble: String = "", epilogue: String = "") -> [UInt8] {
        var out = Array(preamble.utf8)
        for (headers, content) in parts {
            out += Array("--\(boundary)\r\n\(headers)\r\n\r\n".utf8) + content + Array("\r\n".utf8)
        }
        return out + Array("--\(boundary)--\r\n\(epilogue)".utf8)
    }

    func testBoundaryIsReadFromTheContentType() throws {
        XCTAssertEqual(try Multipart.boundary(contentType: "multipart/form-data; boundary=XyZ"), "XyZ")
        XCTAssertEqual(try Multipart.boundary(contentType: "Multipart/Form-Data;charset=utf-8; BOUNDARY=\"a b\""), "a b")
        XCTAssertNil(try Multipart.boundary(contentType: "image/jpeg"))
        XCTAssertNil(try Multipart.boundary(contentType: ""))
        XCTAssertThrowsError(try Multipart.boundary(contentType: "multipart/form-data")) { error in
            XCTAssertTrue("\(error)".contains("without a boundary"), "\(error)")
        }
        XCTAssertThrowsError(try Multipart.boundary(contentType: "multipart/form-data; boundary=" + String(repeating: "b", count: 71)))
        XCTAssertThrowsError(try Multipart.boundary(contentType: "multipart/form-data; boundary=\"\""))
    }

    func testPartsKeepTheirNamesTypesAndExactBytes() throws {
        let jpeg: [UInt8] = [0xFF, 0xD8, 0xFF, 0xE0, 0, 13, 10, 45, 45]
        let body = Self.body("XyZ", [
            ("Content-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\nContent-Type: image/jpeg", jpeg),
            ("content-disposition: form-data; name=top_k", Array("3".utf8)),
        ], preamble: "ignored preamble\r\n", epilogue: "ignored epilogue")
        let parts = try Multipart.parse(body, boundary: "XyZ", maxParts: 10)
        XCTAssertEqual(parts.count, 2)
        XCTAssertEqual(parts[0].name, "image")
        XCTAssertEqual(parts[0].filename, "a.jpg")
        XCTAssertEqual(parts[0].contentType, "image/jpeg")
        XCTAssertEqual(Array(parts[0].body), jpeg)
        XCTAssertEqual(parts[1].name, "top_k")
        XCTAssertNil(parts[1].filename)
        XCTAssertEqual(Array(parts[1].body), Array("3".utf8))
    }

    func testContentThatLooksLikeABoundaryButIsNotOneStaysInThePart() throws {
        // "--XyZ" inside content without a preceding CRLF is not a delimiter (RFC 2046).
        let content = Array("a--XyZ b\r\n-XyZ".utf8)
        let parts = try Multipart.parse(Self.body("XyZ", [("Content-Disposition: form-data; name=f", content)]), boundary: "XyZ", maxParts: 4)
        XCTAssertEqual(parts.count, 1)
        XCTAssertEqual(Array(parts[0].body), content)
        // CRLF "--XyZ" inside content is forbidden to clients (RFC 2046: the delimiter must not
        // occur in a part); such a body is refused, not cut short silently.
        let forbidden = Array("a\r\n--XyZx".utf8)
        XCTAssertThrowsError(try Multipart.parse(Self.body("XyZ", [("Content-Disposition: form-data; name=f", forbidden)]), boundary: "XyZ", maxParts: 4))
    }

    func testEmptyPartContentIsAllowed() throws {
        let parts = try Multipart.parse(Self.body("b", [("Content-Disposition: form-data; name=e", [])]), boundary: "b", maxParts: 4)
        XCTAssertEqual(parts.count, 1)
        XCTAssertTrue(parts[0].body.isEmpty)
    }

    func testMalformedBodiesAreErrorsWithAMessage() {
        let cases: [(String, [UInt8])] = [
            ("no boundary at all", Array("just bytes".utf8)),
            ("delimiter without a line end", Array("--b".utf8)),
            ("headers never end", Array("--b\r\nContent-Disposition: form-data; name=x\r\n".utf8)),
            ("part never terminated", Array("--b\r\nContent-Disposition: form-data; name=x\r\n\r\ncontent".utf8)),
            ("empty body", []),
        ]
        for (what, body) in cases {
            XCTAssertThrowsError(try Multipart.parse(body, boundary: "b", maxParts: 4), what) { error in
                XCTAssertFalse("\(error)".isEmpty, what)
            }
        }
    }

    func testPartCountIsBounded() {
        let parts = (0..<5).map { ("Content-Disposition: form-data; name=p\($0)", [UInt8($0)]) }
        XCTAssertNoThrow(try Multipart.parse(Self.body("b", parts), boundary: "b", maxParts: 5))
        XCTAssertThrowsError(try Multipart.parse(Self.body("b", parts), boundary: "b", maxParts: 4)) { error in
            XCTAssertTrue("\(error)".contains("more than 4 parts"), "\(error)")
        }
    }
}
