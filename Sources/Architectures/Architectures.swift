import Graph
import Kernels
import ModelFormat

#if canImport(Glibc)
import Glibc
#endif

/// How a parameter starts before training.
public enum Initializer: Equatable, Sendable {
    case zeros
    case ones
    /// N(0, 2 / fanIn): He initialization for layers followed by ReLU.
    case heNormal(fanIn: Int)
    /// U(-1/sqrt(fanIn), 1/sqrt(fanIn)): PyTorch's default for linear layers.
    case uniform(fanIn: Int)
}

public struct ParameterSpec: Equatable, Sendable {
    public let name: String
    public let shape: [Int]
    public let initializer: Initializer
    /// Batch-norm running statistics are updated by the forward pass, not by the optimizer.
    public let isRunningStatistic: Bool

    public init(_ name: String, _ shape: [Int], _ initializer: Initializer, isRunningStatistic: Bool = false) {
        self.name = name
        self.shape = shape
        self.initializer = initializer
        self.isRunningStatistic = isRunningStatistic
    }
}

/// A trainable network: its graph (batch norms unfolded), the parameters that graph references,
/// and the preprocessing its inputs get.
public struct Architecture: Sendable {
    public var name: String
    public var graph: GraphSpec
    public var parameters: [ParameterSpec]
    public var preprocessing: Preprocessing

    public init(name: String, graph: GraphSpec, parameters: [ParameterSpec], preprocessing: Preprocessing) {
        self.name = name
        self.graph = graph
        self.parameters = parameters
        self.preprocessing = preprocessing
    }

    /// Parameters initialized deterministically from `seed`.
    public func initialTensors(seed: UInt64) -> TensorStore {
        var random = SplitMix64(seed: seed)
        var store = TensorStore()
        for p in parameters {
            let count = p.shape.reduce(1, *)
            var values = [Float](repeating: 0, count: count)
            switch p.initializer {
            case .zeros: break
            case .ones: values = [Float](repeating: 1, count: count)
            case .heNormal(let fanIn):
                let std = (2.0 / Double(max(fanIn, 1))).squareRoot()
                for i in 0..<count { values[i] = Float(random.normal() * std) }
            case .uniform(let fanIn):
                let bound = 1.0 / Double(max(fanIn, 1)).squareRoot()
                for i in 0..<count { values[i] = Float((random.unit() * 2 - 1) * bound) }
            }
            store[p.name] = HostTensor(shape: p.shape, values: values)
        }
        return store
    }
}

/// Builds graphs node by node, recording parameters as it goes.
public struct GraphBuilder {
    public private(set) var nodes: [Node] = []
    public private(set) var parameters: [ParameterSpec] = []
    public private(set) var shapes: [String: ActivationShape]
    public let input: String

    public init(input: String = "image", shape: ActivationShape) {
        self.input = input
        shapes = [input: shape]
    }

    public func shape(_ name: String) -> ActivationShape { shapes[name]! }

    /// A convolution; with `batchNorm`, a bias-free conv followed by a batch norm node that
    /// carries the activation (folded together at export). Returns the output node's name.
    @discardableResult
    public mutating func conv(_ name: String, _ x: String, out: Int, kernel: Int, stride: Int = 1, padding: Padding,
                              groups: Int = 1, activation: Activation, batchNorm: Bool, epsilon: Double = 1e-5) -> String {
        let s = shape(x)
        let w = WindowGeometry(inHeight: s.height, inWidth: s.width, inChannels: s.channels, kernel: (kernel, kernel),
                               stride: (stride, stride), padding: padding)
        let fanIn = kernel * kernel * s.channels / groups
        parameters.append(ParameterSpec("\(name).weight", [kernel, kernel, s.channels / groups, out], .heNormal(fanIn: fanIn)))
        if !batchNorm { parameters.append(ParameterSpec("\(name).bias", [out], .zeros)) }
        nodes.append(Node(name, .conv2d(Conv2DAttributes(
            kernel: (kernel, kernel), stride: (stride, stride), padding: padding, groups: groups, outChannels: out,
            activation: batchNorm ? .none : activation, weight: "\(name).weight", bias: batchNorm ? nil : "\(name).bias")),
            inputs: [x]))
        shapes[name] = ActivationShape(height: w.outHeight, width: w.outWidth, channels: out)
        guard batchNorm else { return name }
        return self.batchNorm("\(name).bn", name, activation: activation, epsilon: epsilon)
    }

    @discardableResult
    public mutating func batchNorm(_ name: String, _ x: String, activation: Activation, epsilon: Double) -> String {
        let c = shape(x).channels
        parameters += [
            ParameterSpec("\(name).gamma", [c], .ones), ParameterSpec("\(name).beta", [c], .zeros),
            ParameterSpec("\(name).mean", [c], .zeros, isRunningStatistic: true),
            ParameterSpec("\(name).variance", [c], .ones, isRunningStatistic: true),
        ]
        nodes.append(Node(name, .batchNorm(BatchNormAttributes(
            epsilon: epsilon, activation: activation, gamma: "\(name).gamma", beta: "\(name).beta",
            mean: "\(name).mean", variance: "\(name).variance")), inputs: [x]))
        shapes[name] = shape(x)
        return name
    }

    @discardableResult
    public mutating func linear(_ name: String, _ x: String, out: Int, activation: Activation = .none) -> String {
        let features = shape(x).count
        let initializer: Initializer = activation == .none ? .uniform(fanIn: features) : .heNormal(fanIn: features)
        parameters += [ParameterSpec("\(name).weight", [features, out], initializer), ParameterSpec("\(name).bias", [out], .zeros)]
        nodes.append(Node(name, .linear(LinearAttributes(outFeatures: out, activation: activation, weight: "\(name).weight",
                                                         bias: "\(name).bias")), inputs: [x]))
        shapes[name] = .vector(out)
        return name
    }

    @discardableResult
    public mutating func maxPool(_ name: String, _ x: String, kernel: Int, stride: Int, padding: Padding = .valid) -> String {
        let s = shape(x)
        let w = WindowGeometry(inHeight: s.height, inWidth: s.width, inChannels: s.channels, kernel: (kernel, kernel),
                               stride: (stride, stride), padding: padding)
        nodes.append(Node(name, .maxPool(PoolAttributes(kernel: (kernel, kernel), stride: (stride, stride), padding: padding)), inputs: [x]))
        shapes[name] = ActivationShape(height: w.outHeight, width: w.outWidth, channels: s.channels)
        return name
    }

    /// Adds a shape-preserving or shape-known node (pools, flatten, add, dropout, stats, concat).
    @discardableResult
    public mutating func node(_ name: String, _ op: Op, _ inputs: [String]) -> String {
        let s = shape(inputs[0])
        let out: ActivationShape
        switch op {
        case .globalAveragePool: out = .vector(s.channels)
        case .channelStats: out = .vector(2 * s.channels)
        case .flatten: out = .vector(s.count)
        case .adaptiveAveragePool(let h, let w): out = ActivationShape(height: h, width: w, channels: s.channels)
        case .concat: out = ActivationShape(height: s.height, width: s.width, channels: inputs.reduce(0) { $0 + shape($1).channels })
        default: out = s
        }
        nodes.append(Node(name, op, inputs: inputs))
        shapes[name] = out
        return name
    }

    public func graph(logits: String, embedding: String?) -> GraphSpec {
        GraphSpec(input: input, inputShape: shapes[input]!, nodes: nodes, logits: logits, embedding: embedding)
    }
}

/// SplitMix64: a tiny, fast, reproducible generator for initialization, shuffling and augmentation.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public private(set) var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    public mutating func unit() -> Double { Double(next() >> 11) * 0x1.0p-53 }

    /// Standard normal (Box-Muller).
    public mutating func normal() -> Double {
        let u1 = max(unit(), 1e-300), u2 = unit()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }
}
