import Foundation

/// How well a model's probabilities mean what they say, and the temperature that makes them.
///
/// A classifier trained with cross-entropy on a small set is overconfident: the default model
/// said 0.67 on average where it was right 46% of the time. Temperature scaling (Guo et al., 2017)
/// divides the logits by one number T fitted on held-out data; it leaves every ranking (hence
/// accuracy) unchanged and only makes the probabilities honest.
public enum Calibration {
    /// One image: its logits per view (the image, and its mirror for flip-averaging models) and
    /// the index of its true class.
    public struct Sample: Sendable {
        public let viewLogits: [[Float]]
        public let truth: Int

        public init(viewLogits: [[Float]], truth: Int) {
            self.viewLogits = viewLogits
            self.truth = truth
        }
    }

    /// The model's probabilities at temperature T: the mean over views of softmax(logits / T).
    public static func probabilities(_ sample: Sample, temperature: Double) -> [Double] {
        let k = sample.viewLogits[0].count
        var p = [Double](repeating: 0, count: k)
        for z in sample.viewLogits {
            let scaled = z.map { Double($0) / temperature }
            let peak = scaled.max() ?? 0
            let e = scaled.map { exp($0 - peak) }
            let total = e.reduce(0, +)
            for c in 0..<k { p[c] += e[c] / total / Double(sample.viewLogits.count) }
        }
        return p
    }

    /// Mean negative log-likelihood of the true class.
    public static func nll(_ samples: [Sample], temperature: Double) -> Double {
        guard !samples.isEmpty else { return 0 }
        let total = samples.reduce(0.0) { $0 - log(max(probabilities($1, temperature: temperature)[$1.truth], 1e-12)) }
        return total / Double(samples.count)
    }

    /// Expected calibration error with `bins` equal-width confidence bins: the mean, weighted by
    /// bin size, of |accuracy - mean confidence| of the top class.
    public static func ece(_ samples: [Sample], temperature: Double, bins: Int = 15) -> Double {
        ece(samples.map { sample -> (Double, Bool) in
            let p = probabilities(sample, temperature: temperature)
            let top = p.indices.max { p[$0] < p[$1] || (p[$0] == p[$1] && $0 > $1) }!
            return (p[top], top == sample.truth)
        }, bins: bins)
    }

    /// The same from (top probability, was it right) pairs.
    public static func ece(_ answers: [(confidence: Double, correct: Bool)], bins: Int = 15) -> Double {
        guard !answers.isEmpty else { return 0 }
        var count = [Int](repeating: 0, count: bins), confidence = [Double](repeating: 0, count: bins)
        var correct = [Int](repeating: 0, count: bins)
        for (c, right) in answers {
            let b = min(bins - 1, max(0, Int(c * Double(bins))))
            count[b] += 1
            confidence[b] += c
            if right { correct[b] += 1 }
        }
        var error = 0.0
        for b in 0..<bins where count[b] > 0 {
            error += abs(Double(correct[b]) / Double(count[b]) - confidence[b] / Double(count[b])) * Double(count[b])
        }
        return error / Double(answers.count)
    }

    /// The temperature minimizing the NLL of `samples`: golden-section search over log T in
    /// [log 0.05, log 20] (the NLL is unimodal in T for a fixed model).
    public static func fitTemperature(_ samples: [Sample]) -> Double {
        var lo = log(0.05), hi = log(20.0)
        let ratio = (sqrt(5.0) - 1) / 2
        var a = hi - ratio * (hi - lo), b = lo + ratio * (hi - lo)
        var fa = nll(samples, temperature: exp(a)), fb = nll(samples, temperature: exp(b))
        for _ in 0..<60 {
            if fa < fb {
                hi = b; b = a; fb = fa
                a = hi - ratio * (hi - lo); fa = nll(samples, temperature: exp(a))
            } else {
                lo = a; a = b; fa = fb
                b = lo + ratio * (hi - lo); fb = nll(samples, temperature: exp(b))
            }
        }
        return exp((lo + hi) / 2)
    }

    /// Coverage and accuracy when only answers with a top probability of at least `threshold`
    /// are given ("unsure" otherwise), for each threshold.
    public static func coverage(_ answers: [(confidence: Double, correct: Bool)], thresholds: [Double])
        -> [(threshold: Double, coverage: Double, accuracy: Double)] {
        thresholds.map { t in
            let kept = answers.filter { $0.confidence >= t }
            let right = kept.filter(\.correct).count
            return (t, answers.isEmpty ? 0 : Double(kept.count) / Double(answers.count),
                    kept.isEmpty ? 0 : Double(right) / Double(kept.count))
        }
    }
}
