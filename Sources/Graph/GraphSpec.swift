import Kernels
import ModelFormat
import SystemIO

/// The architecture of a model as data: a list of named nodes in execution order, each reading
/// earlier nodes' outputs. Every model (the study's baseline CNN, VGG-16, EfficientNet-Lite) is one
/// of these, stored in the model file's metadata and run by the same engine.
///
/// Activations are NHWC; a node's output per image is (height, width, channels), and vectors are
/// (1, 1, features), so flattening is free.
public struct GraphSpec: Equatable, Sendable {
    public var input: String
    public var inputShape: ActivationShape
    public var nodes: [Node]
    /// The node whose output holds the class scores (before softmax).
    public var logits: String
    /// The node whose output is the cover's feature vector (`cg_embed_*`), if any.
    public var embedding: String?

    public init(input: String = "image", inputShape: ActivationShape, nodes: [Node], logits: String, embedding: String? = nil) {
        self.input = input
        self.inputShape = inputShape
        self.nodes = nodes
        self.logits = logits
        self.embedding = embedding
    }

    public func node(_ name: String) -> Node? { nodes.first { $0.name == name } }

    /// Every tensor name the graph references, in node order.
    public var tensorNames: [String] { nodes.flatMap(\.op.tensorNames) }
}

public struct ActivationShape: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var height: Int
    public var width: Int
    public var channels: Int

    public init(height: Int, width: Int, channels: Int) {
        self.height = height
        self.width = width
        self.channels = channels
    }

    public static func vector(_ features: Int) -> ActivationShape { ActivationShape(height: 1, width: 1, channels: features) }

    public var count: Int { height * width * channels }
    public var pixels: Int { height * width }
    public var description: String { "\(height)x\(width)x\(channels)" }
}

public struct Node: Equatable, Sendable {
    public var name: String
    public var op: Op
    public var inputs: [String]

    public init(_ name: String, _ op: Op, inputs: [String]) {
        self.name = name
        self.op = op
        self.inputs = inputs
    }
}

/// How an int8 layer quantizes the float activations it reads (see `Quantization`): per tensor,
/// `x ≈ (q - zeroPoint) * scale`, q in [0, 255]. A layer with one has int8 weights.
///
/// With `channelScales` (a float32 tensor, one positive value m[c] per input channel) the layer
/// reads `x[c] / m[c]` instead, and its stored weights are the float weights with row c multiplied
/// by m[c]: the same function, with channels of very different ranges evened out before one scale
/// covers them all (docs/quantization.md, "balanced channels").
public struct InputQuantization: Equatable, Sendable {
    public var scale: Float
    public var zeroPoint: Int
    public var channelScales: String?

    public init(scale: Float, zeroPoint: Int, channelScales: String? = nil) {
        self.scale = scale
        self.zeroPoint = zeroPoint
        self.channelScales = channelScales
    }
}

public struct Conv2DAttributes: Equatable, Sendable {
    public var kernel: (Int, Int)
    public var stride: (Int, Int)
    public var padding: Padding
    public var groups: Int
    public var outChannels: Int
    public var activation: Activation
    /// [KH, KW, Cin/groups, Cout]
    public var weight: String
    /// [Cout], or none
    public var bias: String?
    /// Set in int8 models (`covergenre quantize`) on layers whose weights are int8.
    public var inputQuantization: InputQuantization?

    public init(kernel: (Int, Int), stride: (Int, Int) = (1, 1), padding: Padding, groups: Int = 1, outChannels: Int,
                activation: Activation = .none, weight: String, bias: String?, inputQuantization: InputQuantization? = nil) {
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.groups = groups
        self.outChannels = outChannels
        self.activation = activation
        self.weight = weight
        self.bias = bias
        self.inputQuantization = inputQuantization
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.kernel == b.kernel && a.stride == b.stride && a.padding == b.padding && a.groups == b.groups
            && a.outChannels == b.outChannels && a.activation == b.activation && a.weight == b.weight && a.bias == b.bias
            && a.inputQuantization == b.inputQuantization
    }
}

public struct LinearAttributes: Equatable, Sendable {
    public var outFeatures: Int
    public var activation: Activation
    /// [inFeatures, outFeatures]
    public var weight: String
    public var bias: String?
    /// Set in int8 models on layers whose weights are int8.
    public var inputQuantization: InputQuantization?

    public init(outFeatures: Int, activation: Activation = .none, weight: String, bias: String?,
                inputQuantization: InputQuantization? = nil) {
        self.outFeatures = outFeatures
        self.activation = activation
        self.weight = weight
        self.bias = bias
        self.inputQuantization = inputQuantization
    }
}

/// Batch normalization with stored statistics. Exported models fold it into the preceding
/// convolution; the engine also runs it standalone.
public struct BatchNormAttributes: Equatable, Sendable {
    public var epsilon: Double
    public var activation: Activation
    public var gamma: String, beta: String, mean: String, variance: String

    public init(epsilon: Double, activation: Activation = .none, gamma: String, beta: String, mean: String, variance: String) {
        self.epsilon = epsilon
        self.activation = activation
        self.gamma = gamma
        self.beta = beta
        self.mean = mean
        self.variance = variance
    }
}

public struct PoolAttributes: Equatable, Sendable {
    public var kernel: (Int, Int)
    public var stride: (Int, Int)
    public var padding: Padding

    public init(kernel: (Int, Int), stride: (Int, Int), padding: Padding = .valid) {
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
    }

    public static func == (a: Self, b: Self) -> Bool { a.kernel == b.kernel && a.stride == b.stride && a.padding == b.padding }
}

/// `indirect`: every case is one fully written word (a box pointer or a small number). As a
/// multi-payload enum its tag sat in spare bits of a partly written word, which valgrind rightly
/// reports as undefined when the compiled graph branches or selects on it.
public indirect enum Op: Equatable, Sendable {
    case conv2d(Conv2DAttributes)
    case linear(LinearAttributes)
    case batchNorm(BatchNormAttributes)
    case maxPool(PoolAttributes)
    /// (H, W, C) -> (1, 1, C)
    case globalAveragePool
    /// PyTorch's AdaptiveAvgPool2d: (H, W, C) -> (height, width, C)
    case adaptiveAveragePool(height: Int, width: Int)
    /// (H, W, C) -> (1, 1, 2C): per-channel mean, then per-channel standard deviation.
    case channelStats
    /// Concatenates channels of inputs with equal height and width.
    case concat
    case add(Activation)
    case activation(Activation)
    /// (H, W, C) -> (1, 1, H*W*C) in NHWC order.
    case flatten
    /// Training-time only; the identity at inference.
    case dropout(rate: Double)
    case softmax

    public var kind: String {
        switch self {
        case .conv2d: return "conv2d"
        case .linear: return "linear"
        case .batchNorm: return "batchnorm"
        case .maxPool: return "maxpool"
        case .globalAveragePool: return "global_avgpool"
        case .adaptiveAveragePool: return "adaptive_avgpool"
        case .channelStats: return "channel_stats"
        case .concat: return "concat"
        case .add: return "add"
        case .activation: return "activation"
        case .flatten: return "flatten"
        case .dropout: return "dropout"
        case .softmax: return "softmax"
        }
    }

    /// The activation quantization of an int8 convolution or linear layer.
    public var inputQuantization: InputQuantization? {
        switch self {
        case .conv2d(let a): return a.inputQuantization
        case .linear(let a): return a.inputQuantization
        default: return nil
        }
    }

    /// The weight tensor of a convolution or linear layer.
    public var weight: String? {
        switch self {
        case .conv2d(let a): return a.weight
        case .linear(let a): return a.weight
        default: return nil
        }
    }

    /// The bias tensor of a convolution or linear layer, if it has one.
    public var bias: String? {
        switch self {
        case .conv2d(let a): return a.bias
        case .linear(let a): return a.bias
        default: return nil
        }
    }

    /// This convolution or linear layer with `quantization` (nil for any other op).
    public func withInputQuantization(_ quantization: InputQuantization?) -> Op? {
        switch self {
        case .conv2d(var a):
            a.inputQuantization = quantization
            return .conv2d(a)
        case .linear(var a):
            a.inputQuantization = quantization
            return .linear(a)
        default:
            return nil
        }
    }

    public var tensorNames: [String] {
        switch self {
        case .conv2d(let a): return [a.weight] + (a.bias.map { [$0] } ?? []) + (a.inputQuantization?.channelScales.map { [$0] } ?? [])
        case .linear(let a): return [a.weight] + (a.bias.map { [$0] } ?? []) + (a.inputQuantization?.channelScales.map { [$0] } ?? [])
        case .batchNorm(let a): return [a.gamma, a.beta, a.mean, a.variance]
        default: return []
        }
    }
}
