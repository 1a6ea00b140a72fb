import CKernels

/// Batch normalization in training mode, on NHWC rows: statistics of the current batch,
/// y = act(gamma * (x - mean) / sqrt(var + eps) + beta).
public enum BatchNorm {
    /// Computes the batch mean and 1/std (biased variance, as PyTorch normalizes with) and the
    /// unbiased variance for the running average. `mean`, `invStd`, `variance` have `channels` floats.
    public static func statistics(_ x: UnsafePointer<Float>, rows: Int, channels: Int, epsilon: Float,
                                  mean: UnsafeMutablePointer<Float>, invStd: UnsafeMutablePointer<Float>,
                                  unbiasedVariance: UnsafeMutablePointer<Float>) {
        var sum = [Double](repeating: 0, count: channels), squares = sum
        cgk_channel_moments(x, rows, Int32(channels), &sum, &squares)
        for c in 0..<channels {
            let m = sum[c] / Double(rows)
            let v = max(squares[c] / Double(rows) - m * m, 0)
            mean[c] = Float(m)
            invStd[c] = Float(1 / (v + Double(epsilon)).squareRoot())
            unbiasedVariance[c] = Float(rows > 1 ? v * Double(rows) / Double(rows - 1) : v)
        }
    }

    /// dgamma += sum(dy * xhat), dbeta += sum(dy), dx = gamma * invStd * (dy - mean(dy) - xhat * mean(dy * xhat)).
    public static func backward(_ x: UnsafePointer<Float>, rows: Int, channels: Int, mean: UnsafePointer<Float>,
                                invStd: UnsafePointer<Float>, gamma: UnsafePointer<Float>, dy: UnsafePointer<Float>,
                                dx: UnsafeMutablePointer<Float>?, dgamma: UnsafeMutablePointer<Float>?,
                                dbeta: UnsafeMutablePointer<Float>?) {
        var sumDy = [Double](repeating: 0, count: channels), sumDyXhat = sumDy
        cgk_batchnorm_backward_reduce(dy, x, rows, Int32(channels), mean, invStd, &sumDy, &sumDyXhat)
        for c in 0..<channels {
            dgamma?[c] += Float(sumDyXhat[c])
            dbeta?[c] += Float(sumDy[c])
        }
        guard let dx else { return }
        let meanDy = sumDy.map { Float($0 / Double(rows)) }, meanDyXhat = sumDyXhat.map { Float($0 / Double(rows)) }
        cgk_batchnorm_backward_apply(dy, x, rows, Int32(channels), mean, invStd, gamma, meanDy, meanDyXhat, dx)
    }
}
