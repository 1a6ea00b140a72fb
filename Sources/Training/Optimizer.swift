import CKernels
import Kernels
import SystemIO

#if canImport(Glibc)
import Glibc
#endif

/// Learning-rate schedules, as a function of the optimizer step.
public enum LearningRateSchedule: Equatable, Sendable {
    case constant
    /// Cosine decay from the base rate to `floor` (a fraction of it) at `totalSteps`.
    case cosine(totalSteps: Int, floor: Double = 0)
    /// Multiply by `factor` every `every` steps.
    case step(every: Int, factor: Double)

    /// The multiplier at `step`, after `warmupSteps` of linear warm-up from 0.
    public func factor(step: Int, warmupSteps: Int) -> Double {
        if warmupSteps > 0 && step < warmupSteps { return Double(step + 1) / Double(warmupSteps) }
        let s = step - warmupSteps
        switch self {
        case .constant: return 1
        case .cosine(let total, let floor):
            let span = max(total - warmupSteps, 1)
            let t = min(Double(s) / Double(span), 1)
            return floor + (1 - floor) * 0.5 * (1 + cos(Double.pi * t))
        case .step(let every, let factor): return pow(factor, Double(s / max(every, 1)))
        }
    }
}

/// SGD (momentum, L2 weight decay) and Adam/AdamW, over a network's trainable parameters.
/// Weight decay skips one-dimensional parameters (biases, batch-norm scales), as is customary.
public final class Optimizer {
    public enum Kind: String, Sendable, CaseIterable { case sgd, adam, adamw }

    public let kind: Kind
    public var learningRate: Double
    public var momentum: Double = 0.9
    public var weightDecay: Double = 0
    public var beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8
    public var schedule: LearningRateSchedule = .constant
    public var warmupSteps = 0
    /// Clip the global gradient norm to this (0 = no clipping).
    public var clipNorm: Double = 0
    /// Multiplies the learning rate per parameter (e.g. a smaller rate for pretrained layers).
    public var learningRateScale: (String) -> Double = { _ in 1 }
    public private(set) var step = 0
    /// First and second moments (Adam) or velocity (SGD), per parameter name.
    public private(set) var state: [String: [FloatBuffer]] = [:]

    public init(kind: Kind, learningRate: Double) {
        self.kind = kind
        self.learningRate = learningRate
    }

    public var currentLearningRate: Double { learningRate * schedule.factor(step: step, warmupSteps: warmupSteps) }

    /// Global L2 norm of the gradients.
    public static func gradientNorm(_ parameters: [Parameter]) -> Double {
        var total: Double = 0
        for p in parameters { if let g = p.gradient { for v in g.buffer { total += Double(v) * Double(v) } } }
        return total.squareRoot()
    }

    /// Applies one update; returns the gradient norm before clipping (computed only when clipping,
    /// 0 otherwise: it costs a pass over every gradient).
    @discardableResult
    public func update(_ parameters: [Parameter]) throws -> Double {
        let trainable = parameters.filter(\.isTrainable)
        let norm = clipNorm > 0 ? Self.gradientNorm(trainable) : 0
        let clip: Float = clipNorm > 0 && norm > clipNorm ? Float(clipNorm / norm) : 1
        let lr = currentLearningRate
        step += 1
        for p in trainable {
            let lr = lr * learningRateScale(p.name)
            let g = p.gradient!.pointer, w = p.value.pointer, n = p.count
            let decay = p.shape.count > 1 ? weightDecay : 0
            let buffers = try stateBuffers(p, count: kind == .sgd ? 1 : 2)
            switch kind {
            case .sgd:
                cgk_sgd_update(w, g, buffers[0].pointer, n, Float(lr), Float(momentum), Float(decay), clip)
            case .adam, .adamw:
                let c1 = 1 - pow(beta1, Double(step)), c2 = 1 - pow(beta2, Double(step))
                cgk_adam_update(w, g, buffers[0].pointer, buffers[1].pointer, n, Float(lr), Float(beta1), Float(beta2), Float(c1),
                                Float(c2), Float(epsilon), kind == .adam ? Float(decay) : 0, kind == .adamw ? Float(decay) : 0, clip)
            }
        }
        return norm
    }

    private func stateBuffers(_ p: Parameter, count: Int) throws -> [FloatBuffer] {
        if let s = state[p.name] { return s }
        let buffers = try (0..<count).map { _ -> FloatBuffer in
            guard let b = FloatBuffer(count: p.count) else { throw CoverGenreError(.outOfMemory, "optimizer state for \(p.name)") }
            return b
        }
        state[p.name] = buffers
        return buffers
    }

    /// Optimizer state as named tensors, for checkpoints.
    public func stateTensors() -> [String: HostTensorValues] {
        var out: [String: HostTensorValues] = [:]
        for (name, buffers) in state { for (k, b) in buffers.enumerated() { out["optimizer.\(k).\(name)"] = Array(b.buffer) } }
        return out
    }

    /// Restores state saved by `stateTensors` and the step count.
    public func restore(step: Int, tensors: [String: HostTensorValues], parameters: [Parameter]) throws {
        self.step = step
        state = [:]
        for p in parameters where p.isTrainable {
            var buffers: [FloatBuffer] = []
            var k = 0
            while let values = tensors["optimizer.\(k).\(p.name)"] {
                guard values.count == p.count, let b = FloatBuffer(count: p.count) else {
                    throw CoverGenreError(.modelFormat, "checkpoint: optimizer state for \(p.name) does not match")
                }
                values.withUnsafeBufferPointer { if p.count > 0 { b.pointer.update(from: $0.baseAddress!, count: p.count) } }
                buffers.append(b)
                k += 1
            }
            if !buffers.isEmpty { state[p.name] = buffers }
        }
    }
}

public typealias HostTensorValues = [Float]
