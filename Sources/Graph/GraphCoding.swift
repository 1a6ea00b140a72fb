import Kernels
import ModelFormat
import SystemIO

/// JSON form of the graph, as stored in the model file's metadata under "graph".
extension GraphSpec {
    public var json: JSON {
        var object: [String: JSON] = [
            "input": .string(input),
            "input_shape": JSON([inputShape.height, inputShape.width, inputShape.channels]),
            "nodes": .array(nodes.map(\.json)),
            "logits": .string(logits),
        ]
        if let embedding { object["embedding"] = .string(embedding) }
        return .object(object)
    }

    /// Decodes and structurally checks a graph; shapes are checked by `inferShapes`.
    public init(json: JSON, limits: GraphLimits = GraphLimits()) throws {
        let f = FieldReader(json, context: "graph")
        let shape = try f.ints("input_shape", count: 3)
        inputShape = ActivationShape(height: shape[0], width: shape[1], channels: shape[2])
        input = try f.string("input")
        logits = try f.string("logits")
        embedding = try f.optionalString("embedding")
        let nodeList = try f.array("nodes")
        guard nodeList.count <= limits.maxNodes else {
            throw CoverGenreError(.limitExceeded, "graph has \(nodeList.count) nodes; the limit is \(limits.maxNodes)")
        }
        nodes = try nodeList.enumerated().map { try Node(json: $1, index: $0) }
    }
}

extension Node {
    var json: JSON {
        var o: [String: JSON] = ["name": .string(name), "op": .string(op.kind), "inputs": JSON(inputs)]
        switch op {
        case .conv2d(let a):
            o["kernel"] = JSON([a.kernel.0, a.kernel.1])
            o["stride"] = JSON([a.stride.0, a.stride.1])
            o["padding"] = a.padding.json
            o["groups"] = JSON(a.groups)
            o["out_channels"] = JSON(a.outChannels)
            o["activation"] = .string(a.activation.rawValue)
            o["weight"] = .string(a.weight)
            if let bias = a.bias { o["bias"] = .string(bias) }
            if let q = a.inputQuantization { o["input_quantization"] = q.json }
        case .linear(let a):
            o["out_features"] = JSON(a.outFeatures)
            o["activation"] = .string(a.activation.rawValue)
            o["weight"] = .string(a.weight)
            if let bias = a.bias { o["bias"] = .string(bias) }
            if let q = a.inputQuantization { o["input_quantization"] = q.json }
        case .batchNorm(let a):
            o["epsilon"] = .number(a.epsilon)
            o["activation"] = .string(a.activation.rawValue)
            o["gamma"] = .string(a.gamma)
            o["beta"] = .string(a.beta)
            o["mean"] = .string(a.mean)
            o["variance"] = .string(a.variance)
        case .maxPool(let a):
            o["kernel"] = JSON([a.kernel.0, a.kernel.1])
            o["stride"] = JSON([a.stride.0, a.stride.1])
            o["padding"] = a.padding.json
        case .adaptiveAveragePool(let h, let w):
            o["output_size"] = JSON([h, w])
        case .add(let activation), .activation(let activation):
            o["activation"] = .string(activation.rawValue)
        case .dropout(let rate):
            o["rate"] = .number(rate)
        case .globalAveragePool, .channelStats, .concat, .flatten, .softmax:
            break
        }
        return .object(o)
    }

    init(json: JSON, index: Int) throws {
        let f = FieldReader(json, context: "graph node #\(index)")
        name = try f.string("name")
        inputs = try f.strings("inputs")
        let kind = try f.string("op")
        let g = FieldReader(json, context: "graph node \"\(name)\"")
        switch kind {
        case "conv2d":
            let k = try g.ints("kernel", count: 2), s = try g.ints("stride", count: 2)
            op = .conv2d(Conv2DAttributes(
                kernel: (k[0], k[1]), stride: (s[0], s[1]), padding: try g.padding("padding"),
                groups: try g.int("groups"), outChannels: try g.int("out_channels"),
                activation: try g.activation("activation"), weight: try g.string("weight"), bias: try g.optionalString("bias"),
                inputQuantization: try g.inputQuantization()))
        case "linear":
            op = .linear(LinearAttributes(outFeatures: try g.int("out_features"), activation: try g.activation("activation"),
                                          weight: try g.string("weight"), bias: try g.optionalString("bias"),
                                          inputQuantization: try g.inputQuantization()))
        case "batchnorm":
            op = .batchNorm(BatchNormAttributes(
                epsilon: try g.double("epsilon"), activation: try g.activation("activation"), gamma: try g.string("gamma"),
                beta: try g.string("beta"), mean: try g.string("mean"), variance: try g.string("variance")))
        case "maxpool":
            let k = try g.ints("kernel", count: 2), s = try g.ints("stride", count: 2)
            op = .maxPool(PoolAttributes(kernel: (k[0], k[1]), stride: (s[0], s[1]), padding: try g.padding("padding")))
        case "global_avgpool": op = .globalAveragePool
        case "adaptive_avgpool":
            let size = try g.ints("output_size", count: 2)
            op = .adaptiveAveragePool(height: size[0], width: size[1])
        case "channel_stats": op = .channelStats
        case "concat": op = .concat
        case "add": op = .add(try g.activation("activation"))
        case "activation": op = .activation(try g.activation("activation"))
        case "flatten": op = .flatten
        case "dropout": op = .dropout(rate: try g.double("rate"))
        case "softmax": op = .softmax
        default:
            throw CoverGenreError(.modelUnsupported, "graph node \"\(name)\": unknown op \"\(kind)\" (made by a newer CoverGenre?)")
        }
    }
}

extension InputQuantization {
    var json: JSON {
        var o: [String: JSON] = ["scale": .number(Double(scale)), "zero_point": JSON(zeroPoint)]
        if let channelScales { o["channel_scales"] = .string(channelScales) }
        return .object(o)
    }
}

extension FieldReader {
    /// An int8 layer's "input_quantization": a finite positive scale (as a float32) and a zero
    /// point in [0, 255]; nil when absent.
    func inputQuantization() throws -> InputQuantization? {
        guard has("input_quantization") else { return nil }
        let q = FieldReader(try value("input_quantization"), context: "\(context) input_quantization")
        let scale = Float(try q.double("scale"))
        // Its inverse is what the kernels multiply by: a subnormal scale would make it infinite.
        guard scale.isFinite, scale > 0, (1 / scale).isFinite else { throw q.fail("scale \(scale) is not finite and positive with a finite inverse") }
        return InputQuantization(scale: scale, zeroPoint: try q.int("zero_point", range: 0...255),
                                 channelScales: try q.optionalString("channel_scales"))
    }
}

extension Padding {
    var json: JSON {
        switch self {
        case .same: return "same"
        case .valid: return "valid"
        case .explicit(let t, let b, let l, let r): return JSON([t, b, l, r])
        }
    }
}

/// Typed access to a JSON object's members with errors that name the field.
public struct FieldReader {
    let object: [String: JSON]
    let context: String
    let isObject: Bool

    public init(_ json: JSON, context: String) {
        object = json.object ?? [:]
        isObject = json.object != nil
        self.context = context
    }

    public func fail(_ what: String) -> CoverGenreError { CoverGenreError(.modelFormat, "\(context): \(what)") }

    public func value(_ key: String) throws -> JSON {
        guard isObject else { throw fail("not a JSON object") }
        guard let v = object[key] else { throw fail("missing \"\(key)\"") }
        return v
    }

    public func has(_ key: String) -> Bool { object[key] != nil && object[key] != .null }

    public func string(_ key: String) throws -> String {
        guard let s = try value(key).string else { throw fail("\"\(key)\" is not a string") }
        return s
    }

    public func optionalString(_ key: String) throws -> String? { has(key) ? try string(key) : nil }

    public func int(_ key: String, range: ClosedRange<Int> = 0...Int(Int32.max)) throws -> Int {
        guard let i = try value(key).int, range.contains(i) else { throw fail("\"\(key)\" is not an integer in \(range)") }
        return i
    }

    public func double(_ key: String) throws -> Double {
        guard let d = try value(key).double else { throw fail("\"\(key)\" is not a number") }
        return d
    }

    public func bool(_ key: String) throws -> Bool {
        guard let b = try value(key).bool else { throw fail("\"\(key)\" is not true or false") }
        return b
    }

    public func array(_ key: String) throws -> [JSON] {
        guard let a = try value(key).array else { throw fail("\"\(key)\" is not an array") }
        return a
    }

    public func ints(_ key: String, count: Int? = nil) throws -> [Int] {
        let items = try array(key)
        let values = items.compactMap { $0.int }
        guard values.count == items.count, count == nil || values.count == count!, values.allSatisfy({ $0 >= 0 && $0 <= Int(Int32.max) }) else {
            throw fail("\"\(key)\" is not \(count.map { "a list of \($0)" } ?? "a list of") non-negative integers")
        }
        return values
    }

    public func doubles(_ key: String) throws -> [Double] {
        let items = try array(key)
        let values = items.compactMap { $0.double }
        guard values.count == items.count else { throw fail("\"\(key)\" is not a list of numbers") }
        return values
    }

    public func strings(_ key: String) throws -> [String] {
        let items = try array(key)
        let values = items.compactMap { $0.string }
        guard values.count == items.count else { throw fail("\"\(key)\" is not a list of strings") }
        return values
    }

    public func activation(_ key: String) throws -> Activation {
        let name = try string(key)
        guard let a = Activation(rawValue: name) else { throw fail("unknown activation \"\(name)\"") }
        return a
    }

    public func padding(_ key: String) throws -> Padding {
        let v = try value(key)
        if v.string == "same" { return .same }
        if v.string == "valid" { return .valid }
        let p = try ints(key, count: 4)
        return .explicit(top: p[0], bottom: p[1], left: p[2], right: p[3])
    }
}
