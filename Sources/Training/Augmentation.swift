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
        ImageResampler.normalize(output, count: width * height, mean: preprocessing.mean, std: preprocessing.std)
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
