import SystemIO

/// RFC 4180 CSV: comma-separated, fields optionally in double quotes (which may contain commas,
/// newlines and doubled quotes). Used for manifests, splits, reports and training curves.
public enum CSV {
    /// Parses every record. A trailing newline does not make an empty record; a UTF-8 BOM is skipped.
    public static func parse(_ text: String) throws -> [[String]] {
        var records: [[String]] = []
        var record: [String] = []
        var field = ""
        var quoted = false, afterQuote = false
        var scalars = Substring(text).unicodeScalars[...]
        if scalars.first == "\u{FEFF}" { scalars = scalars.dropFirst() }
        var line = 1
        var iterator = scalars.makeIterator()
        var pending: Unicode.Scalar? = nil
        func next() -> Unicode.Scalar? {
            if let p = pending { pending = nil; return p }
            return iterator.next()
        }
        while let c = next() {
            if quoted {
                if c == "\"" {
                    if let n = next() {
                        if n == "\"" { field.unicodeScalars.append("\"") } else { quoted = false; afterQuote = true; pending = n }
                    } else {
                        quoted = false
                        afterQuote = true
                    }
                } else {
                    if c == "\n" { line += 1 }
                    field.unicodeScalars.append(c)
                }
                continue
            }
            switch c {
            case ",":
                record.append(field); field = ""; afterQuote = false
            case "\r":
                continue
            case "\n":
                record.append(field); field = ""; afterQuote = false
                records.append(record); record = []
                line += 1
            case "\"":
                guard field.isEmpty, !afterQuote else { throw CoverGenreError(.invalidArgument, "CSV line \(line): stray quote inside a field") }
                quoted = true
            default:
                guard !afterQuote else { throw CoverGenreError(.invalidArgument, "CSV line \(line): text after a closing quote") }
                field.unicodeScalars.append(c)
            }
        }
        if quoted { throw CoverGenreError(.invalidArgument, "CSV line \(line): unterminated quoted field") }
        if !field.isEmpty || !record.isEmpty || afterQuote {
            record.append(field)
            records.append(record)
        }
        return records
    }

    /// Parses a file with a header row into dictionaries keyed by column name; every record must
    /// have the header's number of fields.
    public static func readTable(_ path: String, maxBytes: Int = 1 << 30) throws -> (header: [String], rows: [[String: String]]) {
        let bytes = try Files.read(path, maxBytes: maxBytes)
        guard let text = String(validating: bytes, as: UTF8.self) else { throw CoverGenreError(.invalidArgument, "\(path) is not UTF-8 text") }
        let records = try parse(text).filter { !($0.count == 1 && $0[0].isEmpty) }
        guard let header = records.first else { throw CoverGenreError(.invalidArgument, "\(path) is empty") }
        var rows: [[String: String]] = []
        for (i, record) in records.dropFirst().enumerated() {
            guard record.count == header.count else {
                throw CoverGenreError(.invalidArgument, "\(path) record \(i + 2): \(record.count) fields, the header has \(header.count)")
            }
            rows.append(Dictionary(zip(header, record), uniquingKeysWith: { first, _ in first }))
        }
        return (header, rows)
    }

    public static func escape(_ field: String) -> String {
        guard field.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return field }
        return "\"" + field.replacingAll("\"", with: "\"\"") + "\""
    }

    public static func format(_ rows: [[String]]) -> String {
        rows.map { $0.map(escape).joined(separator: ",") + "\n" }.joined()
    }

    /// Writes rows atomically.
    public static func write(_ path: String, _ rows: [[String]]) throws {
        try Files.writeAtomically(path, Array(format(rows).utf8))
    }
}

extension String {
    /// Replaces every occurrence of `target` (no Foundation).
    public func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var result = "", rest = Substring(self)
        while let range = rest.firstRange(of: target) {
            result += rest[..<range.lowerBound] + replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}
