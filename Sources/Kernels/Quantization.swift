/// The arithmetic of CoverGenre's 8-bit models, shared by the writer, the quantizer and the engine.
///
/// Weights are symmetric per output channel: `w ≈ q * scale[c]`, q in [-127, 127] (8 bits), or
/// in [-63, 63] (7 bits) when asked. AVX2 has no instruction that multiplies unsigned by signed
/// bytes into 32 bits; the one it has (vpmaddubsw) adds two products into a saturating 16-bit sum:
/// 2 x 255 x 63 = 32,130 fits, 2 x 255 x 127 does not. So the AVX2 kernel runs 8-bit weights with
/// each activation byte split in two (exact, at half its 7-bit speed) and 7-bit ones directly (ONNX
/// Runtime's `reduce_range` is the same trade). Either way the AVX-512 VNNI, AVX2 and generic
/// kernels compute the very same integers from the same inputs, so int8 adds no difference between
/// CPUs to the float rounding the layers around it already have; 8 bits answer closer to the float
/// model (docs/quantization.md).
///
/// Activations entering an int8 layer are asymmetric per tensor: `x ≈ (q - zeroPoint) * scale`,
/// q in [0, 255], with the range measured on calibration covers (`covergenre quantize`).
public enum Quantization {
    /// Largest weight magnitude: 8 bits.
    public static let weightLevels: Float = 127
    /// Largest weight magnitude of 7-bit weights, which AVX2 multiplies at full speed.
    public static let narrowWeightLevels: Float = 63

    /// Symmetric per-channel quantization of `values` (channels = the last dimension, so element i
    /// belongs to channel i % channels). An all-zero channel gets scale 1. Nil when `channels`
    /// does not divide the values or a value is not finite.
    /// `levels`: the largest magnitude (`weightLevels` or `narrowWeightLevels`).
    public static func symmetric(_ values: UnsafeBufferPointer<Float>, channels: Int,
                                 levels: Float = weightLevels) -> (scales: [Float], values: [Int8])? {
        symmetric(values, channels: channels, levels: levels, as: Int8.self)
    }

    /// Largest weight magnitude of a depthwise convolution's 16-bit weights (cgk_depthwise_q8).
    public static let depthwiseWeightLevels: Float = 32767

    /// `symmetric` with 16-bit values, for depthwise convolutions: with 9 or 25 taps per channel,
    /// 8-bit weights measurably changed the answers (docs/quantization.md).
    public static func symmetric16(_ values: UnsafeBufferPointer<Float>, channels: Int) -> (scales: [Float], values: [Int16])? {
        symmetric(values, channels: channels, levels: depthwiseWeightLevels, as: Int16.self)
    }

    /// Either: values rounded to nearest even after dividing by their channel's scale, clamped to
    /// [-levels, levels] (which `T` must hold).
    static func symmetric<T: FixedWidthInteger & SignedInteger>(_ values: UnsafeBufferPointer<Float>, channels: Int, levels: Float,
                                                                as: T.Type) -> (scales: [Float], values: [T])? {
        guard channels > 0, values.count % channels == 0, values.allSatisfy(\.isFinite) else { return nil }
        var largest = [Float](repeating: 0, count: channels)
        for (i, v) in values.enumerated() { largest[i % channels] = max(largest[i % channels], abs(v)) }
        let scales = largest.map { $0 > 0 ? $0 / levels : 1 }
        let quantized = values.enumerated().map { i, v -> T in
            T(max(-levels, min(levels, (v / scales[i % channels]).rounded(.toNearestOrEven))))
        }
        return (scales, quantized)
    }

    /// The activation quantization of a measured range: `[low, high]` widened to contain 0 (so
    /// zero, which padding and ReLU produce, is exact), 255 steps over it.
    public static func activation(low: Float, high: Float) -> (scale: Float, zeroPoint: Int) {
        let lo = min(low, 0), hi = max(high, 0)
        guard hi - lo > 0, (hi - lo).isFinite else { return (1, 0) }
        let scale = (hi - lo) / 255
        let zero = Int((-lo / scale).rounded(.toNearestOrEven))
        return (scale, max(0, min(255, zero)))
    }
}
