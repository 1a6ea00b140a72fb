import CCodecs
import CKernels
import SystemIO

/// Turns decoded pixels into a model's float input.
public enum ImageResampler {
    /// Resamples the source rectangle `region` (x, y, width, height in source pixels) of `image` to
    /// `width` x `height` float RGB in 0...255, NHWC, with antialiasing when shrinking.
    public static func resample(
        _ image: RGBImage, region: (x: Double, y: Double, width: Double, height: Double), width: Int, height: Int,
        mirror: Bool = false, into output: UnsafeMutablePointer<Float>
    ) throws {
        let status = cgk_resample_rgb(image.pixels, Int32(image.width), Int32(image.height), image.rowStride,
                                      region.x, region.y, region.width, region.height, Int32(width), Int32(height),
                                      mirror ? 1 : 0, output)
        if status == -2 { throw CoverGenreError(.outOfMemory, "out of memory resizing a \(image.width)x\(image.height) image") }
        if status != 0 { throw CoverGenreError(.invalidArgument, "cannot resample region \(region) of a \(image.width)x\(image.height) image") }
    }

    /// `source` (height x width RGB floats, NHWC) with its columns in reverse order: what
    /// `resample(mirror: true)` writes, bit for bit, from `resample(mirror: false)`'s output.
    public static func mirrorColumns(_ source: UnsafePointer<Float>, width: Int, height: Int,
                                     into output: UnsafeMutablePointer<Float>) {
        for y in 0..<height {
            let from = source + y * width * 3, to = output + y * width * 3
            for x in 0..<width {
                let o = (width - 1 - x) * 3
                to[o] = from[3 * x]
                to[o + 1] = from[3 * x + 1]
                to[o + 2] = from[3 * x + 2]
            }
        }
    }

    /// x = (x / 255 - mean) / std per channel, in place.
    public static func normalize(_ pixels: UnsafeMutablePointer<Float>, count: Int, mean: [Float], std: [Float]) {
        let scale = (0..<3).map { 1 / (255 * std[$0]) }
        let shift = (0..<3).map { -mean[$0] / std[$0] }
        scale.withUnsafeBufferPointer { s in
            shift.withUnsafeBufferPointer { t in cgk_normalize_rgb(pixels, count, s.baseAddress!, t.baseAddress!) }
        }
    }
}

public enum ImageEncoder {
    /// PNG bytes of 8-bit RGB (channels 3) or gray (channels 1) pixels.
    public static func png(_ pixels: UnsafePointer<UInt8>, width: Int, height: Int, channels: Int = 3) throws -> [UInt8] {
        var out: UnsafeMutablePointer<UInt8>?
        var size = 0
        var message = [CChar](repeating: 0, count: 192)
        let status = cgc_encode_png(pixels, UInt32(width), UInt32(height), UInt32(channels), &out, &size, &message)
        guard status == CGC_OK, let out else { throw CoverGenreError(.internal, String(cString: message)) }
        defer { cgc_buffer_free(out) }
        return Array(UnsafeBufferPointer(start: out, count: size))
    }

    public static func png(_ image: RGBImage) throws -> [UInt8] {
        try png(image.pixels, width: image.width, height: image.height)
    }

    /// JPEG bytes; channels 1 (gray), 3 (RGB) or 4 (CMYK, Adobe inverted convention).
    public static func jpeg(_ pixels: UnsafePointer<UInt8>, width: Int, height: Int, channels: Int = 3, quality: Int = 90,
                            progressive: Bool = false) throws -> [UInt8] {
        var out: UnsafeMutablePointer<UInt8>?
        var size = 0
        var message = [CChar](repeating: 0, count: 192)
        let status = cgc_encode_jpeg(pixels, UInt32(width), UInt32(height), UInt32(channels), Int32(quality),
                                     progressive ? 1 : 0, &out, &size, &message)
        guard status == CGC_OK, let out else { throw CoverGenreError(.internal, String(cString: message)) }
        defer { cgc_buffer_free(out) }
        return Array(UnsafeBufferPointer(start: out, count: size))
    }

    /// WebP bytes of 8-bit RGB: lossless when `quality` is nil.
    public static func webp(_ rgb: UnsafePointer<UInt8>, width: Int, height: Int, quality: Float? = nil) throws -> [UInt8] {
        var out: UnsafeMutablePointer<UInt8>?
        var size = 0
        var message = [CChar](repeating: 0, count: 192)
        let status = cgc_encode_webp(rgb, UInt32(width), UInt32(height), quality ?? -1, &out, &size, &message)
        guard status == CGC_OK, let out else { throw CoverGenreError(.internal, String(cString: message)) }
        defer { cgc_buffer_free(out) }
        return Array(UnsafeBufferPointer(start: out, count: size))
    }
}
