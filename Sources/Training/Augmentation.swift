import Architectures
import Graph
import ImageIO
import SystemIO

#if canImport(Glibc)
import Glibc
#endif

/// Training-time image augmentation: random resized crop, horizontal flip, small colour jitter.
/// Every random choice comes from a generator seeded per (run seed, epoch, sample), so a run is
/// reproducible however its decoding is scheduled, and resuming after a kill repeats it exactly.
public struct Augmentation: Equatable, Sendable {
    /// Fraction of the image area the crop keeps, and its aspect-ratio range.
    public var cropScale: ClosedRange<Double> = 0.35...1
    public var cropRatio: ClosedRange<Double> = (3.0 / 4)...(4.0 / 3)
    public var flip = true
    /// Brightness, contrast and saturation each vary by up to this factor (0.2 = +/-20%).
    public var jitter: Float = 0.2
    /// Gamma varies by up to this much (0.25 = 0.75...1.25): scanners and screens differ.
    public var gamma: Float = 0.25

    // How covers differ between sources, imitated before the crop; each is a probability.
    /// Shrink to a thumbnail (`thumbnailSide` pixels on the longer side) and let the crop enlarge
    /// it again: what low-resolution sources (Discogs thumbnails, old web shops) look like.
    public var thumbnail = 0.25
    public var thumbnailSide = 56...160
    /// Re-encode as a low-quality JPEG (`recompressQuality`): blocking and ringing of web copies.
    public var recompress = 0.25
    public var recompressQuality = 12...60
    /// A solid border or letterbox bars (`borderFraction` of the side each): scans, store frames,
    /// non-square artwork padded to a square.
    public var border = 0.15
    public var borderFraction = 0.03...0.14

    public init() {}

    public static let none: Augmentation? = nil
}

/// Turns a decoded image into the network's normalized input, with or without augmentation.
public struct ImagePipeline: Sendable {
    public let width: Int
    public let height: Int
    public let preprocessing: Preprocessing
    public let augmentation: Augmentation?

    public init(width: Int, height: Int, preprocessing: Preprocessing, augmentation: Augmentation?) {
        self.width = width
        self.height = height
        self.preprocessing = preprocessing
        self.augmentation = augmentation
    }

    /// Writes width x height x 3 floats. `random` drives the augmentation (unused without it);
    /// `mirror` forces a flipped view (test-time flip averaging).
    public func fill(_ image: RGBImage, into output: UnsafeMutablePointer<Float>, random: inout SplitMix64, mirror: Bool = false) throws {
        guard let a = augmentation else {
            let r = preprocessing.sourceRegion(imageWidth: image.width, imageHeight: image.height, outWidth: width, outHeight: height)
            try ImageResampler.resample(image, region: (r.0, r.1, r.2, r.3), width: width, height: height, mirror: mirror, into: output)
            ImageResampler.normalize(output, count: width * height, mean: preprocessing.mean, std: preprocessing.std)
            return
        }
        let image = try Self.degrade(image, a, random: &random)
        let w = Double(image.width), h = Double(image.height), area = w * h
        var region = (0.0, 0.0, w, h)
        for _ in 0..<10 { // torchvision's RandomResizedCrop: up to 10 tries, then the whole image
            let target = area * (a.cropScale.lowerBound + random.unit() * (a.cropScale.upperBound - a.cropScale.lowerBound))
            let logRatio = log(a.cropRatio.lowerBound) + random.unit() * (log(a.cropRatio.upperBound) - log(a.cropRatio.lowerBound))
            let ratio = exp(logRatio)
            let cw = (target * ratio).squareRoot(), ch = (target / ratio).squareRoot()
            if cw <= w && ch <= h {
                region = (random.unit() * (w - cw), random.unit() * (h - ch), cw, ch)
                break
            }
        }
        let flip = mirror != (a.flip && random.unit() < 0.5)
        try ImageResampler.resample(image, region: region, width: width, height: height, mirror: flip, into: output)
        if a.jitter > 0 {
            func factor() -> Float { 1 + a.jitter * Float(random.unit() * 2 - 1) }
            jitter(output, count: width * height, brightness: factor(), contrast: factor(), saturation: factor())
        }
        if a.gamma > 0 {
            let g = 1 + a.gamma * Float(random.unit() * 2 - 1)
            for i in 0..<(width * height * 3) { output[i] = 255 * powf(output[i] / 255, g) }
        }
        ImageResampler.normalize(output, count: width * height, mean: preprocessing.mean, std: preprocessing.std)
    }

    /// The source imitations of `a` (thumbnail, JPEG re-encoding, border), each drawn with its
    /// probability; returns `image` itself when none is drawn.
    package static func degrade(_ image: RGBImage, _ a: Augmentation, random: inout SplitMix64) throws -> RGBImage {
        var image = image
        if random.unit() < a.thumbnail {
            let side = a.thumbnailSide.lowerBound + Int(random.unit() * Double(a.thumbnailSide.count - 1))
            let scale = min(1, Double(side) / Double(max(image.width, image.height)))
            let w = max(1, Int((Double(image.width) * scale).rounded())), h = max(1, Int((Double(image.height) * scale).rounded()))
            var floats = [Float](repeating: 0, count: w * h * 3)
            try floats.withUnsafeMutableBufferPointer {
                try ImageResampler.resample(image, region: (0, 0, Double(image.width), Double(image.height)), width: w, height: h,
                                            into: $0.baseAddress!)
            }
            image = RGBImage(width: w, height: h, rgb: floats.map { UInt8(min(max($0.rounded(), 0), 255)) })
        }
        if random.unit() < a.recompress {
            let quality = a.recompressQuality.lowerBound + Int(random.unit() * Double(a.recompressQuality.count - 1))
            let bytes = try ImageEncoder.jpeg(image.pixels, width: image.width, height: image.height, quality: quality)
            image = try ImageDecoder.decode(bytes)
        }
        if random.unit() < a.border {
            // Letterbox (top and bottom), pillarbox (left and right) or a frame on all sides.
            let kind = Int(random.unit() * 3), fraction = a.borderFraction.lowerBound
                + random.unit() * (a.borderFraction.upperBound - a.borderFraction.lowerBound)
            let dx = kind == 0 ? 0 : Int(Double(image.width) * fraction), dy = kind == 1 ? 0 : Int(Double(image.height) * fraction)
            let tone = random.unit()
            let colour: [UInt8] = tone < 0.4 ? [0, 0, 0] : tone < 0.7 ? [255, 255, 255]
                : (0..<3).map { _ in UInt8(random.unit() * 255) }
            let w = image.width + 2 * dx, h = image.height + 2 * dy
            var rgb = [UInt8](repeating: 0, count: w * h * 3)
            for i in 0..<(w * h) { rgb[3 * i] = colour[0]; rgb[3 * i + 1] = colour[1]; rgb[3 * i + 2] = colour[2] }
            for y in 0..<image.height {
                for x in 0..<(image.width * 3) { rgb[((y + dy) * w + dx) * 3 + x] = image.pixels[y * image.rowStride + x] }
            }
            image = RGBImage(width: w, height: h, rgb: rgb)
        }
        return image
    }

    /// Colour jitter on 0...255 RGB floats, in place, as torchvision's ColorJitter (without hue).
    func jitter(_ p: UnsafeMutablePointer<Float>, count: Int, brightness: Float, contrast: Float, saturation: Float) {
        var meanGray: Float = 0
        for i in 0..<count { meanGray += 0.299 * p[3 * i] + 0.587 * p[3 * i + 1] + 0.114 * p[3 * i + 2] }
        meanGray = meanGray / Float(count) * brightness
        for i in 0..<count {
            var r = p[3 * i] * brightness, g = p[3 * i + 1] * brightness, b = p[3 * i + 2] * brightness
            r = (r - meanGray) * contrast + meanGray
            g = (g - meanGray) * contrast + meanGray
            b = (b - meanGray) * contrast + meanGray
            let gray = 0.299 * r + 0.587 * g + 0.114 * b
            p[3 * i] = min(max(gray + (r - gray) * saturation, 0), 255)
            p[3 * i + 1] = min(max(gray + (g - gray) * saturation, 0), 255)
            p[3 * i + 2] = min(max(gray + (b - gray) * saturation, 0), 255)
        }
    }

    /// The generator for one sample of one epoch.
    public static func random(seed: UInt64, epoch: Int, sample: Int) -> SplitMix64 {
        SplitMix64(seed: seed ^ (UInt64(epoch) &* 0xD1B5_4A32_D192_ED03) ^ (UInt64(sample) &* 0x9E37_79B9_7F4A_7C15))
    }
}
