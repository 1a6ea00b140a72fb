import ImageIO

/// Image files made by the tests themselves: the project ships no third-party images.
public enum Fixtures {
    /// A smooth RGB gradient with a distinct colour per quadrant, easy to recognise after
    /// resizing, rotation or lossy compression.
    public static func quadrants(width: Int, height: Int) -> [UInt8] {
        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height {
            for x in 0..<width {
                let top = y < height / 2, left = x < width / 2
                let color: (Int, Int, Int) = top ? (left ? (220, 30, 30) : (30, 200, 40)) : (left ? (30, 40, 210) : (230, 220, 40))
                let i = (y * width + x) * 3
                rgb[i] = UInt8(color.0)
                rgb[i + 1] = UInt8(color.1)
                rgb[i + 2] = UInt8(color.2)
            }
        }
        return rgb
    }

    /// A JPEG with an EXIF APP1 segment carrying `orientation`, inserted after SOI.
    public static func withExifOrientation(_ jpeg: [UInt8], orientation: UInt16, bigEndian: Bool = true) -> [UInt8] {
        func u16(_ v: UInt16) -> [UInt8] { bigEndian ? [UInt8(v >> 8), UInt8(v & 0xFF)] : [UInt8(v & 0xFF), UInt8(v >> 8)] }
        func u32(_ v: UInt32) -> [UInt8] { bigEndian ? [24, 16, 8, 0].map { UInt8((v >> $0) & 0xFF) } : [0, 8, 16, 24].map { UInt8((v >> $0) & 0xFF) } }
        var tiff: [UInt8] = bigEndian ? Array("MM".utf8) + [0, 42] : Array("II".utf8) + [42, 0]
        tiff += u32(8)                                   // IFD0 right after the header
        tiff += u16(1)                                   // one entry
        tiff += u16(0x0112) + u16(3) + u32(1) + u16(orientation) + [0, 0]
        tiff += u32(0)                                   // no next IFD
        let payload = Array("Exif".utf8) + [0, 0] + tiff
        let length = UInt16(payload.count + 2)
        return [0xFF, 0xD8, 0xFF, 0xE1, UInt8(length >> 8), UInt8(length & 0xFF)] + payload + jpeg[2...]
    }

    public enum PNGColor: UInt8 {
        case gray = 0, rgb = 2, palette = 3, grayAlpha = 4, rgba = 6
    }

    /// A PNG written without libpng (stored deflate blocks), so decoder tests do not check libpng
    /// against itself. `samples` holds the raw samples row by row (16-bit samples big-endian as
    /// two bytes, sub-byte depths packed MSB first), without filter bytes.
    public static func png(width: Int, height: Int, color: PNGColor, bitDepth: Int, samples: [UInt8],
                           palette: [UInt8]? = nil, transparency: [UInt8]? = nil, claimedWidth: Int? = nil,
                           claimedHeight: Int? = nil) -> [UInt8] {
        let channels: Int = [PNGColor.gray: 1, .rgb: 3, .palette: 1, .grayAlpha: 2, .rgba: 4][color]!
        let rowBytes = (width * channels * bitDepth + 7) / 8
        precondition(samples.count == rowBytes * height, "samples do not match the image size")
        var raw: [UInt8] = []
        for y in 0..<height { raw.append(0); raw += samples[(y * rowBytes)..<((y + 1) * rowBytes)] }
        var out: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        func chunk(_ type: String, _ data: [UInt8]) {
            out += be32(UInt32(data.count))
            let body = Array(type.utf8) + data
            out += body
            out += be32(crc32(body))
        }
        chunk("IHDR", be32(UInt32(claimedWidth ?? width)) + be32(UInt32(claimedHeight ?? height)) + [UInt8(bitDepth), color.rawValue, 0, 0, 0])
        if let palette { chunk("PLTE", palette) }
        if let transparency { chunk("tRNS", transparency) }
        chunk("IDAT", zlibStored(raw))
        chunk("IEND", [])
        return out
    }

    static func be32(_ v: UInt32) -> [UInt8] { [24, 16, 8, 0].map { UInt8((v >> $0) & 0xFF) } }

    static func crc32(_ data: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in data {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return ~crc
    }

    static func zlibStored(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]
        var offset = 0
        repeat {
            let n = min(65_535, data.count - offset)
            let final: UInt8 = offset + n == data.count ? 1 : 0
            out += [final, UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
            out += data[offset..<(offset + n)]
            offset += n
        } while offset < data.count
        var a: UInt32 = 1, b: UInt32 = 0
        for byte in data {
            a = (a + UInt32(byte)) % 65_521
            b = (b + a) % 65_521
        }
        return out + be32(b << 16 | a)
    }

    public static func jpeg(_ rgb: [UInt8], width: Int, height: Int, quality: Int = 95, progressive: Bool = false) throws -> [UInt8] {
        try ImageEncoder.jpeg(rgb, width: width, height: height, quality: quality, progressive: progressive)
    }
}
