import CCodecs
import CKernels
import SystemIO

#if canImport(Glibc)
import Glibc
#endif

/// Limits applied to every image before its pixels are allocated. Covers come from the internet;
/// a 100,000 x 100,000 PNG header is refused at the header, never decoded.
public struct ImageLimits: Sendable {
    public var maxWidth = 16_384
    public var maxHeight = 16_384
    public var maxPixels = 64 << 20
    public var maxFileBytes = 64 << 20
    /// Progressive JPEG scans (each is a full pass over the image).
    public var maxJPEGScans = 500

    public init() {}
}

public enum ImageFormat: String, Sendable {
    case jpeg, png, webp

    init?(_ c: cgc_format) {
        switch c {
        case CGC_FORMAT_JPEG: self = .jpeg
        case CGC_FORMAT_PNG: self = .png
        case CGC_FORMAT_WEBP: self = .webp
        default: return nil
        }
    }

    /// The file extension that matches the content.
    public var fileExtension: String { self == .jpeg ? "jpg" : rawValue }
}

/// A decoded image: 8-bit RGB, `rowStride` bytes between rows.
public final class RGBImage: @unchecked Sendable {
    public let width: Int
    public let height: Int
    public let rowStride: Int
    public let format: ImageFormat?
    /// Size as stored in the file (before DCT scaling and EXIF rotation).
    public let sourceWidth: Int
    public let sourceHeight: Int
    public let pixels: UnsafeMutablePointer<UInt8>
    private enum Ownership { case mallocByCodec, swiftAllocated, borrowed }
    private let ownership: Ownership

    init(decoded image: cgc_image) {
        width = Int(image.width)
        height = Int(image.height)
        rowStride = width * 3
        sourceWidth = Int(image.source_width)
        sourceHeight = Int(image.source_height)
        format = ImageFormat(image.format)
        pixels = image.pixels
        ownership = .mallocByCodec
    }

    /// Copies the pixels: `width * 3` bytes per row, rows `rowStride` bytes apart.
    public convenience init(width: Int, height: Int, copying rgb: UnsafePointer<UInt8>, rowStride: Int? = nil) {
        let storage = UnsafeMutablePointer<UInt8>.allocate(capacity: max(width * height * 3, 1))
        let stride = rowStride ?? width * 3
        for y in 0..<height { (storage + y * width * 3).update(from: rgb + y * stride, count: width * 3) }
        self.init(width: width, height: height, pixels: storage, rowStride: width * 3, ownership: .swiftAllocated)
    }

    public convenience init(width: Int, height: Int, rgb: [UInt8]) {
        precondition(rgb.count == width * height * 3, "RGB data does not match \(width)x\(height)")
        let storage = UnsafeMutablePointer<UInt8>.allocate(capacity: max(rgb.count, 1))
        rgb.withUnsafeBufferPointer { if !rgb.isEmpty { storage.update(from: $0.baseAddress!, count: rgb.count) } }
        self.init(width: width, height: height, pixels: storage, rowStride: width * 3, ownership: .swiftAllocated)
    }

    /// Wraps the caller's pixels without copying; they must outlive this object (the C API uses
    /// it for the duration of one call).
    public convenience init(borrowing rgb: UnsafePointer<UInt8>, width: Int, height: Int, rowStride: Int) {
        self.init(width: width, height: height, pixels: UnsafeMutablePointer(mutating: rgb), rowStride: rowStride, ownership: .borrowed)
    }

    private init(width: Int, height: Int, pixels: UnsafeMutablePointer<UInt8>, rowStride: Int, ownership: Ownership) {
        self.width = width
        self.height = height
        self.rowStride = rowStride
        sourceWidth = width
        sourceHeight = height
        format = nil
        self.pixels = pixels
        self.ownership = ownership
    }

    deinit {
        switch ownership {
        case .mallocByCodec: free(pixels)
        case .swiftAllocated: pixels.deallocate()
        case .borrowed: break
        }
    }

    /// The pixel rows, tightly packed.
    public var bytes: [UInt8] {
        (0..<height).flatMap { y in Array(UnsafeBufferPointer(start: pixels + y * rowStride, count: width * 3)) }
    }

    public subscript(x: Int, y: Int) -> (UInt8, UInt8, UInt8) {
        let p = pixels + y * rowStride + x * 3
        return (p[0], p[1], p[2])
    }
}

public enum ImageDecoder {
    /// Decodes JPEG, PNG or WebP bytes (format sniffed from content). `minimumSize` lets JPEG
    /// decoding use DCT scaling while the result stays at least that large in both directions.
    public static func decode(_ bytes: UnsafeRawBufferPointer, limits: ImageLimits = ImageLimits(),
                              minimumSize: Int = 0) throws -> RGBImage {
        guard bytes.count <= limits.maxFileBytes else {
            throw CoverGenreError(.imageTooLarge, "image is \(bytes.count) bytes; the limit is \(limits.maxFileBytes)")
        }
        var c = cgc_limits(max_width: UInt32(limits.maxWidth), max_height: UInt32(limits.maxHeight),
                           max_pixels: UInt64(limits.maxPixels), max_jpeg_scans: UInt32(limits.maxJPEGScans),
                           scale_min_width: UInt32(minimumSize), scale_min_height: UInt32(minimumSize))
        var image = cgc_image()
        let status = cgc_decode(bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count, &c, &image)
        guard status == CGC_OK else {
            let message = withUnsafeBytes(of: &image.message) { String(cString: $0.baseAddress!.assumingMemoryBound(to: CChar.self)) }
            throw CoverGenreError(errorCode(status), message)
        }
        return RGBImage(decoded: image)
    }

    public static func decode(_ bytes: [UInt8], limits: ImageLimits = ImageLimits(), minimumSize: Int = 0) throws -> RGBImage {
        try bytes.withUnsafeBytes { try decode($0, limits: limits, minimumSize: minimumSize) }
    }

    public static func decode(path: String, limits: ImageLimits = ImageLimits(), minimumSize: Int = 0) throws -> RGBImage {
        let bytes: [UInt8]
        do {
            bytes = try Files.read(path, maxBytes: limits.maxFileBytes)
        } catch let error as CoverGenreError where error.code == .limitExceeded {
            throw CoverGenreError(.imageTooLarge, error.message)
        }
        do {
            return try decode(bytes, limits: limits, minimumSize: minimumSize)
        } catch let error as CoverGenreError {
            throw CoverGenreError(error.code, "\(path): \(error.message)")
        }
    }

    /// Format and stored size from the header alone.
    public static func probe(_ bytes: UnsafeRawBufferPointer) throws -> (format: ImageFormat, width: Int, height: Int) {
        var format = CGC_FORMAT_UNKNOWN
        var width: UInt32 = 0, height: UInt32 = 0
        var message = [CChar](repeating: 0, count: 192)
        let status = cgc_probe(bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count, &format, &width, &height, &message)
        guard status == CGC_OK, let f = ImageFormat(format) else {
            throw CoverGenreError(errorCode(status), String(cString: message))
        }
        return (f, Int(width), Int(height))
    }

    static func errorCode(_ status: cgc_status) -> CoverGenreError.Code {
        switch status {
        case CGC_ERR_UNSUPPORTED: return .imageUnsupported
        case CGC_ERR_TOO_LARGE: return .imageTooLarge
        case CGC_ERR_NO_MEMORY: return .outOfMemory
        default: return .imageDecode
        }
    }
}
