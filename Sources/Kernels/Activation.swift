import CKernels

/// The activations the engine fuses into convolutions, linear layers and additions.
public enum Activation: String, CaseIterable, Sendable {
    case none
    case relu
    case relu6

    /// The code the C kernels take.
    @inlinable public var code: Int32 {
        switch self {
        case .none: return Int32(CGK_ACT_NONE.rawValue)
        case .relu: return Int32(CGK_ACT_RELU.rawValue)
        case .relu6: return Int32(CGK_ACT_RELU6.rawValue)
        }
    }

    @inlinable public func apply(_ v: Float) -> Float {
        switch self {
        case .none: return v
        case .relu: return max(v, 0)
        case .relu6: return min(max(v, 0), 6)
        }
    }
}
