#if canImport(Glibc)
import Glibc
#endif

/// Softmax cross-entropy for imbalanced data: optional per-class weights (PyTorch's `weight=`,
/// with its weighted-mean reduction) and label smoothing.
public struct CrossEntropy: Sendable {
    public var classWeights: [Float]?
    public var labelSmoothing: Float

    public init(classWeights: [Float]? = nil, labelSmoothing: Float = 0) {
        self.classWeights = classWeights
        self.labelSmoothing = labelSmoothing
    }

    /// Weights inversely proportional to class frequency, normalized to mean 1:
    /// w_c = N / (K * n_c). Classes absent from `counts` get weight 0.
    public static func balancedWeights(counts: [Int]) -> [Float] {
        let total = counts.reduce(0, +), present = counts.filter { $0 > 0 }.count
        return counts.map { $0 > 0 ? Float(total) / Float(present * $0) : 0 }
    }

    /// Mean loss over the batch; writes dL/dlogits into `gradient` (same layout as `logits`).
    /// loss = sum_n w[y_n] * CE(softmax(z_n), q_n) / sum_n w[y_n], q = (1 - s) onehot + s / K.
    public func loss(logits: UnsafePointer<Float>, labels: [Int], classes: Int, gradient: UnsafeMutablePointer<Float>?) -> Float {
        let weights = labels.map { classWeights?[$0] ?? 1 }
        let total = max(weights.reduce(0, +), 1e-12)
        let smooth = labelSmoothing / Float(classes)
        var loss: Double = 0
        for (n, label) in labels.enumerated() {
            let z = logits + n * classes
            var peak = -Float.infinity
            for k in 0..<classes { peak = max(peak, z[k]) }
            var sum: Double = 0
            for k in 0..<classes { sum += exp(Double(z[k] - peak)) }
            let logSum = log(sum) + Double(peak)
            var sample: Double = 0
            for k in 0..<classes {
                let q = Double((k == label ? 1 - labelSmoothing : 0) + smooth)
                let logP = Double(z[k]) - logSum
                sample -= q * logP
                if let gradient {
                    gradient[n * classes + k] = Float((exp(logP) - q) * Double(weights[n]) / Double(total))
                }
            }
            loss += sample * Double(weights[n])
        }
        return Float(loss / Double(total))
    }
}
