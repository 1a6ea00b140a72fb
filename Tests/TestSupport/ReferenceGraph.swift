import Graph
import Kernels

#if canImport(Glibc)
import Glibc
#endif

/// Runs a graph node by node with the naive reference ops: the independent Swift-side check of
/// the engine (the Python tests add ONNX Runtime as a second, fully independent one).
public enum ReferenceGraph {
    /// `x` as an int8 layer reads it: quantized to uint8 exactly as the kernels do, then
    /// dequantized (x[c] / m[c] with balanced channels: the stored weights carry m[c]).
    public static func fakeQuantized(_ x: [Float], _ q: InputQuantization?, channelScales: [Float]? = nil) -> [Float] {
        guard let q else { return x }
        let lo = Float(-q.zeroPoint), hi = Float(255 - q.zeroPoint)
        return x.enumerated().map { i, v in
            let inverse = channelScales.map { 1 / (q.scale * $0[i % $0.count]) } ?? 1 / q.scale
            var t = v * inverse
            t = t > lo ? t : lo
            t = t < hi ? t : hi
            return t.rounded(.toNearestOrEven) * q.scale
        }
    }

    public static func run(_ graph: GraphSpec, tensors: TensorStore, input: [Float]) throws -> [String: [Float]] {
        let resolved = try graph.resolve(tensorShape: { tensors[$0]?.shape })
        var values: [String: [Float]] = [graph.input: input]
        for r in resolved {
            // An int8 layer sees its input as the quantized values it reads (`InputQuantization`);
            // its weights are the dequantized int8 values `TensorStore(file:)` reads. A depthwise
            // convolution's weights are its float ones, not multiplied by m: m multiplies its input
            // back (QuantizedDepthwise).
            let m = r.node.op.inputQuantization?.channelScales.map { tensors[$0]!.values }
            var x = fakeQuantized(values[r.node.inputs[0]]!, r.node.op.inputQuantization, channelScales: m)
            if let m, r.conv?.method == .depthwise { x = x.enumerated().map { $1 * m[$0 % m.count] } }
            let s = r.inputShapes[0]
            var y: [Float]
            switch r.node.op {
            case .conv2d(let a):
                y = Reference.conv(x, r.conv!, weight: tensors[a.weight]!.values, bias: a.bias.map { tensors[$0]!.values },
                                   activation: a.activation)
            case .linear(let a):
                y = Reference.linear(x, rows: 1, inFeatures: s.channels, outFeatures: a.outFeatures,
                                     weight: tensors[a.weight]!.values, bias: a.bias.map { tensors[$0]!.values }, activation: a.activation)
            case .batchNorm(let a):
                let g = tensors[a.gamma]!.values, b = tensors[a.beta]!.values, m = tensors[a.mean]!.values, v = tensors[a.variance]!.values
                y = x.indices.map { i in
                    let c = i % s.channels
                    let normalized = (Double(x[i]) - Double(m[c])) / (Double(v[c]) + a.epsilon).squareRoot()
                    return a.activation.apply(Float(normalized * Double(g[c]) + Double(b[c])))
                }
            case .maxPool:
                y = Reference.maxPool(x, r.window!)
            case .globalAveragePool:
                y = (0..<s.channels).map { c in Float((0..<s.pixels).reduce(0.0) { $0 + Double(x[$1 * s.channels + c]) } / Double(s.pixels)) }
            case .adaptiveAveragePool(let oh, let ow):
                y = []
                for i in 0..<oh {
                    for j in 0..<ow {
                        let h0 = i * s.height / oh, h1 = ((i + 1) * s.height + oh - 1) / oh
                        let w0 = j * s.width / ow, w1 = ((j + 1) * s.width + ow - 1) / ow
                        for c in 0..<s.channels {
                            var acc = 0.0
                            for h in h0..<h1 { for w in w0..<w1 { acc += Double(x[(h * s.width + w) * s.channels + c]) } }
                            y.append(Float(acc / Double((h1 - h0) * (w1 - w0))))
                        }
                    }
                }
            case .channelStats:
                var means: [Float] = [], stds: [Float] = []
                for c in 0..<s.channels {
                    let v = (0..<s.pixels).map { Double(x[$0 * s.channels + c]) }
                    let m = v.reduce(0, +) / Double(v.count)
                    means.append(Float(m))
                    stds.append(Float((v.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(v.count)).squareRoot()))
                }
                y = means + stds
            case .concat:
                y = []
                for p in 0..<s.pixels {
                    for (name, shape) in zip(r.node.inputs, r.inputShapes) {
                        y += values[name]![(p * shape.channels)..<((p + 1) * shape.channels)]
                    }
                }
            case .add(let act):
                let other = values[r.node.inputs[1]]!
                y = x.indices.map { act.apply(x[$0] + other[$0]) }
            case .activation(let act):
                y = x.map(act.apply)
            case .flatten, .dropout:
                y = x
            case .softmax:
                let peak = x.max()!
                let e = x.map { exp(Double($0 - peak)) }
                let total = e.reduce(0, +)
                y = e.map { Float($0 / total) }
            }
            values[r.node.name] = y
        }
        return values
    }
}
