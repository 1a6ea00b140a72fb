import SystemIO

/// The read side of the zip format, as much as `torch.save` archives need: the central directory
/// (with ZIP64 records), stored (uncompressed) entries, and CRC-32 checks. Every offset and size is
/// checked against the archive before use.
struct ZipArchive {
    struct Entry {
        let dataOffset: Int
        let size: Int
        let crc32: UInt32
    }

    let bytes: UnsafeRawBufferPointer
    private(set) var entries: [String: Entry] = [:]

    init(_ bytes: UnsafeRawBufferPointer, maxEntries: Int = 1 << 20) throws {
        self.bytes = bytes
        func fail(_ what: String) -> CoverGenreError { CoverGenreError(.modelFormat, "zip: \(what)") }
        // The end-of-central-directory record sits in the last 22 + 65535 bytes (its comment).
        let searchStart = max(0, bytes.count - 22 - 65_535)
        guard bytes.count >= 22,
              let eocd = stride(from: bytes.count - 22, through: searchStart, by: -1).first(where: { u32($0) == 0x0605_4B50 }) else {
            throw fail("no end-of-central-directory record (truncated archive?)")
        }
        var count = Int(u16(eocd + 10)), directorySize = Int(u32(eocd + 12)), directoryOffset = Int(u32(eocd + 16))
        if count == 0xFFFF || directoryOffset == 0xFFFF_FFFF || directorySize == 0xFFFF_FFFF {
            guard eocd >= 20, u32(eocd - 20) == 0x0706_4B50 else { throw fail("ZIP64 locator missing") }
            let record = u64(eocd - 20 + 8)
            guard bytes.count >= 56, record <= UInt64(bytes.count - 56), u32(Int(record)) == 0x0606_4B50 else { throw fail("ZIP64 record out of bounds") }
            let r = Int(record)
            guard u64(r + 32) <= UInt64(Int32.max), u64(r + 40) <= UInt64(Int.max), u64(r + 48) <= UInt64(Int.max) else {
                throw fail("ZIP64 sizes out of range")
            }
            count = Int(u64(r + 32))
            directorySize = Int(u64(r + 40))
            directoryOffset = Int(u64(r + 48))
        }
        guard count <= maxEntries else { throw fail("\(count) entries exceed the limit") }
        guard directoryOffset <= bytes.count, directorySize <= bytes.count - directoryOffset else {
            throw fail("central directory lies outside the archive")
        }
        var p = directoryOffset
        let end = directoryOffset + directorySize
        for _ in 0..<count {
            guard end - p >= 46, u32(p) == 0x0201_4B50 else { throw fail("malformed central directory entry") }
            let method = u16(p + 10), crc = u32(p + 16)
            var compressed = UInt64(u32(p + 20)), size = UInt64(u32(p + 24))
            let nameLength = Int(u16(p + 28)), extraLength = Int(u16(p + 30)), commentLength = Int(u16(p + 32))
            var local = UInt64(u32(p + 42))
            guard end - p - 46 >= nameLength + extraLength + commentLength else { throw fail("central directory entry overruns") }
            guard let name = String(validating: UnsafeRawBufferPointer(rebasing: bytes[(p + 46)..<(p + 46 + nameLength)]), as: UTF8.self) else {
                throw fail("entry name is not UTF-8")
            }
            // ZIP64 extended information: the 0xFFFFFFFF fields, in this order, as 8-byte values.
            var e = p + 46 + nameLength
            let extraEnd = e + extraLength
            while extraEnd - e >= 4 {
                let id = u16(e), length = Int(u16(e + 2))
                guard extraEnd - e - 4 >= length else { throw fail("extra field overruns") }
                if id == 0x0001 {
                    var q = e + 4
                    for field in [0, 1, 2] {
                        let needed = field == 0 ? size == 0xFFFF_FFFF : field == 1 ? compressed == 0xFFFF_FFFF : local == 0xFFFF_FFFF
                        guard needed else { continue }
                        guard e + 4 + length - q >= 8 else { throw fail("ZIP64 extra field too short") }
                        let value = u64(q)
                        switch field {
                        case 0: size = value
                        case 1: compressed = value
                        default: local = value
                        }
                        q += 8
                    }
                }
                e += 4 + length
            }
            guard method == 0 else { throw fail("\(name) is compressed (method \(method)); torch.save stores entries uncompressed") }
            guard compressed == size, local <= UInt64(bytes.count - 30) else { throw fail("\(name): inconsistent sizes or offset") }
            let l = Int(local)
            guard u32(l) == 0x0403_4B50 else { throw fail("\(name): local header missing") }
            let dataOffset = l + 30 + Int(u16(l + 26)) + Int(u16(l + 28))
            guard dataOffset <= bytes.count, size <= UInt64(bytes.count - dataOffset) else { throw fail("\(name): data lies outside the archive") }
            guard entries[name] == nil else { throw fail("entry \(name) appears twice") }
            entries[name] = Entry(dataOffset: dataOffset, size: Int(size), crc32: crc)
            p += 46 + nameLength + extraLength + commentLength
        }
    }

    /// An entry's bytes, after checking its CRC-32.
    func data(_ name: String) throws -> UnsafeRawBufferPointer {
        guard let entry = entries[name] else { throw CoverGenreError(.modelFormat, "zip: archive has no entry \(name)") }
        let data = UnsafeRawBufferPointer(rebasing: bytes[entry.dataOffset..<(entry.dataOffset + entry.size)])
        guard CRC32.checksum(data) == entry.crc32 else { throw CoverGenreError(.modelFormat, "zip: \(name) fails its CRC-32 check (damaged)") }
        return data
    }

    private func u16(_ at: Int) -> UInt16 { UInt16(littleEndian: (bytes.baseAddress! + at).loadUnaligned(as: UInt16.self)) }
    private func u32(_ at: Int) -> UInt32 { UInt32(littleEndian: (bytes.baseAddress! + at).loadUnaligned(as: UInt32.self)) }
    private func u64(_ at: Int) -> UInt64 { UInt64(littleEndian: (bytes.baseAddress! + at).loadUnaligned(as: UInt64.self)) }
}

/// CRC-32 (IEEE 802.3, as zip uses), table-driven.
enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 == 1 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum(_ data: UnsafeRawBufferPointer) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { t in
            for byte in data { crc = t[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        }
        return ~crc
    }
}
