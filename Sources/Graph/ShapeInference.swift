import Kernels
import ModelFormat
import SystemIO

/// Bounds on what a graph may ask the engine to allocate; a hostile model file cannot make the
/// engine reserve more than these.
public struct GraphLimits: Sendable {
    public var maxNodes = 10_000
    public var maxInputSide = 4096
    /// Elements of any one activation, per image.
    public var maxActivationElements = 1 << 27
    /// Multiply-adds per image over the whole graph (VGG-16 at 224 px: 15.5 G).
    public var maxMultiplyAddsPerImage = 1 << 40

    public init() {}
}

/// The range every integer attribute of a node must fall in before any arithmetic uses it: wider
/// than any real network needs, narrow enough that every product the engine forms from them
/// (window geometry, im2col depth, weight counts, multiply-adds) fits in 64 bits. A model file is
/// untrusted input, its checksum only proves it was not damaged; these are checked first.
public enum AttributeRange {
    public static let kernel = 1...1024
    public static let stride = 1...1024
    /// Explicit padding; also smaller than the kernel along its axis (checked with the geometry).
    public static let padding = 0...1023
    public static let channels = 1...(1 << 16)
    public static let features = 1...(1 << 20)
    public static let poolOutput = 1...1024
    /// kernel height x kernel width x input channels per group: one im2col row.
    public static let convolutionDepth = 1...(1 << 24)
}

/// A node with every shape resolved: what the engine and the trainer build layers from.
public struct ResolvedNode: Sendable {
    public let node: Node
    /// Indices into the resolved list of the nodes this one reads (-1 = the graph input).
    public let inputIndices: [Int]
    public let inputShapes: [ActivationShape]
    public let outputShape: ActivationShape
    /// For convolutions and pooling: the window geometry.
    public let conv: ConvShape?
    public let window: WindowGeometry?
}

extension GraphSpec {
    /// Resolves and checks every node's shapes, and every referenced tensor's shape via
    /// `tensorShape` (nil = tensor missing). Throws a model-format error naming the node.
    public func resolve(tensorShape: (String) -> [Int]?, limits: GraphLimits = GraphLimits()) throws -> [ResolvedNode] {
        func fail(_ node: String, _ what: String) -> CoverGenreError {
            CoverGenreError(.modelFormat, "graph node \"\(node)\": \(what)")
        }
        let s = inputShape
        guard s.height > 0, s.width > 0, s.channels > 0, s.height <= limits.maxInputSide, s.width <= limits.maxInputSide,
              s.channels <= 1 << 16 else {
            throw CoverGenreError(.modelFormat, "graph input shape \(s) is outside 1...\(limits.maxInputSide) pixels, 1...65536 channels")
        }
        guard nodes.count <= limits.maxNodes else {
            throw CoverGenreError(.limitExceeded, "graph has \(nodes.count) nodes; the limit is \(limits.maxNodes)")
        }
        var indexOf: [String: Int] = [input: -1]
        var shapes: [ActivationShape] = []
        var resolved: [ResolvedNode] = []
        resolved.reserveCapacity(nodes.count)

        func check(_ node: String, _ attribute: String, _ values: [Int], _ range: ClosedRange<Int>) throws {
            for v in values where !range.contains(v) {
                throw fail(node, "\(attribute) \(values.count == 1 ? "\(values[0])" : "\(values)") is outside \(range)")
            }
        }
        /// Preconditions of a sliding window (convolution, pooling), checked before its geometry.
        func checkWindow(_ node: String, kernel: (Int, Int), stride: (Int, Int), padding: Padding) throws {
            try check(node, "kernel", [kernel.0, kernel.1], AttributeRange.kernel)
            try check(node, "stride", [stride.0, stride.1], AttributeRange.stride)
            if case .explicit(let top, let bottom, let left, let right) = padding {
                try check(node, "padding", [top, bottom, left, right], AttributeRange.padding)
            }
        }
        var multiplyAdds = 0
        func count(_ node: String, _ factors: Int...) throws {
            var product = 1, overflow = false
            for f in factors where !overflow { (product, overflow) = product.multipliedReportingOverflow(by: f) }
            if !overflow { (multiplyAdds, overflow) = multiplyAdds.addingReportingOverflow(product) }
            guard !overflow, multiplyAdds <= limits.maxMultiplyAddsPerImage else {
                throw CoverGenreError(.limitExceeded, "graph node \"\(node)\": the graph needs more than \(limits.maxMultiplyAddsPerImage) multiply-adds per image")
            }
        }

        func expectTensor(_ node: String, _ name: String, _ shape: [Int]) throws {
            guard let actual = tensorShape(name) else { throw fail(node, "tensor \"\(name)\" is missing") }
            guard actual == shape else { throw fail(node, "tensor \"\(name)\" has shape \(actual), expected \(shape)") }
        }

        for node in nodes {
            let name = node.name
            guard !name.isEmpty, indexOf[name] == nil else { throw fail(name, "name is empty or used twice") }
            var inputIndices: [Int] = []
            var inputShapes: [ActivationShape] = []
            for i in node.inputs {
                guard let index = indexOf[i] else { throw fail(name, "input \"\(i)\" is not an earlier node") }
                inputIndices.append(index)
                inputShapes.append(index < 0 ? inputShape : shapes[index])
            }
            let arity: ClosedRange<Int>
            switch node.op {
            case .add: arity = 2...2
            case .concat: arity = 2...64
            default: arity = 1...1
            }
            guard arity.contains(inputShapes.count) else { throw fail(name, "\(node.op.kind) takes \(arity) inputs, got \(inputShapes.count)") }
            let x = inputShapes[0]
            var output: ActivationShape
            var conv: ConvShape?
            var window: WindowGeometry?

            // Each operator's preconditions come first, next to its shape rule: nothing below
            // divides, multiplies or allocates with an attribute that was not checked.
            switch node.op {
            case .conv2d(let a):
                // kernel, stride, padding in range; 1 <= out_channels, groups <= 65536; groups
                // divide both channel counts; kernel area x channels per group is one im2col row.
                try checkWindow(name, kernel: a.kernel, stride: a.stride, padding: a.padding)
                try check(name, "out_channels", [a.outChannels], AttributeRange.channels)
                try check(name, "groups", [a.groups], AttributeRange.channels)
                guard x.channels % a.groups == 0, a.outChannels % a.groups == 0 else {
                    throw fail(name, "groups \(a.groups) do not divide the channels \(x.channels) -> \(a.outChannels)")
                }
                try check(name, "kernel area x input channels per group", [a.kernel.0 * a.kernel.1 * (x.channels / a.groups)],
                          AttributeRange.convolutionDepth)
                let w = WindowGeometry(inHeight: x.height, inWidth: x.width, inChannels: x.channels, kernel: a.kernel,
                                       stride: a.stride, padding: a.padding)
                let shape = ConvShape(window: w, outChannels: a.outChannels, groups: a.groups)
                if let problem = shape.problem { throw fail(name, problem) }
                try expectTensor(name, a.weight, [a.kernel.0, a.kernel.1, x.channels / a.groups, a.outChannels])
                if let bias = a.bias { try expectTensor(name, bias, [a.outChannels]) }
                if let scales = a.inputQuantization?.channelScales { try expectTensor(name, scales, [x.channels]) }
                output = ActivationShape(height: w.outHeight, width: w.outWidth, channels: a.outChannels)
                try count(name, w.outPixels, a.outChannels, a.kernel.0 * a.kernel.1, x.channels / a.groups)
                conv = shape
                window = w
            case .linear(let a):
                // A vector input; 1 <= out_features <= 2^20.
                guard x.height == 1, x.width == 1 else { throw fail(name, "linear needs a vector input, got \(x); add a flatten node") }
                try check(name, "out_features", [a.outFeatures], AttributeRange.features)
                try count(name, x.channels, a.outFeatures)
                try expectTensor(name, a.weight, [x.channels, a.outFeatures])
                if let bias = a.bias { try expectTensor(name, bias, [a.outFeatures]) }
                if let scales = a.inputQuantization?.channelScales { try expectTensor(name, scales, [x.channels]) }
                output = .vector(a.outFeatures)
            case .batchNorm(let a):
                guard a.epsilon >= 0, a.epsilon.isFinite else { throw fail(name, "epsilon must be finite and non-negative") }
                for t in [a.gamma, a.beta, a.mean, a.variance] { try expectTensor(name, t, [x.channels]) }
                output = x
            case .maxPool(let a):
                // kernel, stride, padding in range, padding smaller than the kernel.
                try checkWindow(name, kernel: a.kernel, stride: a.stride, padding: a.padding)
                let w = WindowGeometry(inHeight: x.height, inWidth: x.width, inChannels: x.channels, kernel: a.kernel,
                                       stride: a.stride, padding: a.padding)
                let shape = ConvShape(window: w, outChannels: x.channels, groups: 1)
                if let problem = shape.problem { throw fail(name, problem) }
                output = ActivationShape(height: w.outHeight, width: w.outWidth, channels: x.channels)
                window = w
            case .globalAveragePool:
                output = .vector(x.channels)
            case .adaptiveAveragePool(let h, let w):
                // 1 <= output height, width <= 1024.
                try check(name, "output_size", [h, w], AttributeRange.poolOutput)
                output = ActivationShape(height: h, width: w, channels: x.channels)
            case .channelStats:
                output = .vector(2 * x.channels)
            case .concat:
                guard inputShapes.allSatisfy({ $0.height == x.height && $0.width == x.width }) else {
                    throw fail(name, "concat inputs differ in height or width: \(inputShapes)")
                }
                output = ActivationShape(height: x.height, width: x.width, channels: inputShapes.reduce(0) { $0 + $1.channels })
            case .add:
                guard inputShapes[1] == x else { throw fail(name, "add inputs differ: \(x) and \(inputShapes[1])") }
                output = x
            case .activation, .softmax:
                output = x
            case .dropout(let rate):
                guard rate >= 0, rate < 1 else { throw fail(name, "dropout rate \(rate) outside [0, 1)") }
                output = x
            case .flatten:
                output = .vector(x.count)
            }
            guard output.count > 0, output.count <= limits.maxActivationElements else {
                throw fail(name, "output \(output) has \(output.count) elements; the limit is \(limits.maxActivationElements)")
            }
            indexOf[name] = resolved.count
            shapes.append(output)
            resolved.append(ResolvedNode(node: node, inputIndices: inputIndices, inputShapes: inputShapes,
                                         outputShape: output, conv: conv, window: window))
        }
        guard let logitsIndex = indexOf[logits], logitsIndex >= 0 else {
            throw CoverGenreError(.modelFormat, "graph output \"\(logits)\" is not a node")
        }
        guard shapes[logitsIndex].height == 1, shapes[logitsIndex].width == 1 else {
            throw CoverGenreError(.modelFormat, "graph output \"\(logits)\" is \(shapes[logitsIndex]), not a vector")
        }
        if let embedding {
            guard let e = indexOf[embedding], e >= 0 else { throw CoverGenreError(.modelFormat, "embedding \"\(embedding)\" is not a node") }
            guard shapes[e].height == 1, shapes[e].width == 1 else {
                throw CoverGenreError(.modelFormat, "embedding \"\(embedding)\" is \(shapes[e]), not a vector")
            }
        }
        return resolved
    }

    /// Multiply-adds per image (convolutions and linear layers).
    public func macs(_ resolved: [ResolvedNode]) -> Int {
        resolved.reduce(0) { total, r in
            if let conv = r.conv { return total + conv.macsPerImage }
            if case .linear(let a) = r.node.op { return total + r.inputShapes[0].channels * a.outFeatures }
            return total
        }
    }
}
