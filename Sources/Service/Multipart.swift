/// A `multipart/form-data` body (RFC 7578) split into its parts, without copying more than the
/// parts' contents. Only what the API needs: each part's field name, file name, content type
/// and bytes. Malformed bodies are errors with a message, never a crash.
public struct MultipartPart: Sendable {
    public var name: String?
    public var filename: String?
    public var contentType: String?
    public var body: ArraySlice<UInt8>
}

public struct MultipartError: Error, CustomStringConvertible, Equatable {
    public let description: String
    init(_ description: String) { self.description = description }
}

public enum Multipart {
    /// The boundary parameter of a `multipart/form-data` content type, or nil if it is another type.
    public static func boundary(contentType: String) throws -> String? {
        let pieces = contentType.split(separator: ";").map { $0.trimmingSpaces }
        guard let type = pieces.first, type.lowercased() == "multipart/form-data" else { return nil }
        for piece in pieces.dropFirst() {
            guard let eq = piece.firstIndex(of: "=") else { continue }
            if piece[..<eq].trimmingSpaces.lowercased() == "boundary" {
                var value = piece[piece.index(after: eq)...].trimmingSpaces
                if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
                // RFC 2046: 1 to 70 characters.
                guard (1...70).contains(value.utf8.count) else { throw MultipartError("the multipart boundary must be 1 to 70 characters") }
                return value
            }
        }
        throw MultipartError("multipart/form-data without a boundary parameter")
    }

    /// The parts of `body`; at most `maxParts` (more is an error naming the limit).
    public static func parse(_ body: [UInt8], boundary: String, maxParts: Int) throws -> [MultipartPart] {
        let delimiter = Array("--\(boundary)".utf8)
        guard var position = find(delimiter, in: body, from: 0) else { throw MultipartError("the body does not contain the multipart boundary") }
        var parts: [MultipartPart] = []
        while true {
            position += delimiter.count
            // "--" after a delimiter ends the body.
            if body.count - position >= 2, body[position] == UInt8(ascii: "-"), body[position + 1] == UInt8(ascii: "-") { break }
            guard let lineEnd = find(crlf, in: body, from: position) else { throw MultipartError("a multipart delimiter is not followed by a line end") }
            let headerStart = lineEnd + 2
            guard let headerEnd = find(crlf + crlf, in: body, from: headerStart) else { throw MultipartError("a multipart part has no end of headers") }
            let contentStart = headerEnd + 4
            guard let next = find(crlf + delimiter, in: body, from: contentStart) else {
                throw MultipartError("a multipart part is not terminated by the boundary")
            }
            let contentEnd = next
            guard parts.count < maxParts else { throw MultipartError("more than \(maxParts) parts") }
            var part = MultipartPart(body: body[contentStart..<contentEnd])
            let headers = String(decoding: body[headerStart..<headerEnd], as: UTF8.self)
            for line in headers.split(separator: "\r\n") {
                guard let colon = line.firstIndex(of: ":") else { continue }
                let field = line[..<colon].trimmingSpaces.lowercased(), value = line[line.index(after: colon)...].trimmingSpaces
                if field == "content-type" { part.contentType = value }
                if field == "content-disposition" {
                    part.name = parameter("name", in: value)
                    part.filename = parameter("filename", in: value)
                }
            }
            parts.append(part)
            position = next + 2
        }
        return parts
    }

    static let crlf: [UInt8] = [13, 10]

    /// A `key="value"` (or unquoted) parameter of a header value.
    static func parameter(_ key: String, in value: String) -> String? {
        for piece in value.split(separator: ";").dropFirst() {
            let p = piece.trimmingSpaces
            guard let eq = p.firstIndex(of: "="), p[..<eq].trimmingSpaces.lowercased() == key else { continue }
            var v = p[p.index(after: eq)...].trimmingSpaces
            if v.count >= 2, v.hasPrefix("\""), v.hasSuffix("\"") { v = String(v.dropFirst().dropLast()) }
            return v
        }
        return nil
    }

    /// First index of `needle` in `haystack` at or after `from`.
    static func find(_ needle: [UInt8], in haystack: [UInt8], from: Int) -> Int? {
        guard !needle.isEmpty, from >= 0, haystack.count - from >= needle.count else { return nil }
        let first = needle[0], last = haystack.count - needle.count
        return haystack.withUnsafeBufferPointer { h in
            needle.withUnsafeBufferPointer { n in
                var i = from
                while i <= last {
                    if h[i] == first {
                        var j = 1
                        while j < n.count && h[i + j] == n[j] { j += 1 }
                        if j == n.count { return i }
                    }
                    i += 1
                }
                return nil
            }
        }
    }
}

extension StringProtocol {
    public var trimmingSpaces: String {
        var s = Substring(self)
        while let c = s.first, c == " " || c == "\t" { s = s.dropFirst() }
        while let c = s.last, c == " " || c == "\t" { s = s.dropLast() }
        return String(s)
    }
}
