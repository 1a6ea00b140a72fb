import ModelFormat
import SystemIO

extension GraphSpec {
    /// Folds every batch norm that directly follows a convolution (and is its only reader) into
    /// that convolution: w' = w * s, b' = (b - mean) * s + beta with s = gamma / sqrt(var + eps),
    /// taking over the batch norm's activation. Exported and imported models are stored folded,
    /// so inference runs one fused conv + bias + activation per layer.
    ///
    /// Returns the new graph and the tensors it references (folded tensors replace the conv's).
    public func foldingBatchNorms(_ tensors: TensorStore) throws -> (GraphSpec, TensorStore) {
        var readers: [String: Int] = [:]
        for node in nodes { for i in node.inputs { readers[i, default: 0] += 1 } }
        for output in [logits] + (embedding.map { [$0] } ?? []) { readers[output, default: 0] += 1 }

        var out = tensors
        var result: [Node] = []
        var renamed: [String: String] = [:]
        var convIndex: [String: Int] = [:] // conv node name -> index in result
        for var node in nodes {
            node.inputs = node.inputs.map { renamed[$0] ?? $0 }
            if case .batchNorm(let bn) = node.op, node.inputs.count == 1, let ci = convIndex[node.inputs[0]],
               case .conv2d(var conv) = result[ci].op, conv.activation == .none, readers[result[ci].name] == 1 {
                let gamma = try out.tensor(bn.gamma).values, beta = try out.tensor(bn.beta).values
                let mean = try out.tensor(bn.mean).values, variance = try out.tensor(bn.variance).values
                var weight = try out.tensor(conv.weight)
                let cout = conv.outChannels
                var bias = try conv.bias.map { try out.tensor($0).values } ?? [Float](repeating: 0, count: cout)
                for c in 0..<cout {
                    let s = gamma[c] / (variance[c] + Float(bn.epsilon)).squareRoot()
                    var i = c
                    while i < weight.values.count {
                        weight.values[i] *= s
                        i += cout
                    }
                    bias[c] = (bias[c] - mean[c]) * s + beta[c]
                }
                let convName = result[ci].name
                let weightName = "\(convName).weight", biasName = "\(convName).bias"
                out[weightName] = weight
                out[biasName] = HostTensor(shape: [cout], values: bias)
                conv.weight = weightName
                conv.bias = biasName
                conv.activation = bn.activation
                result[ci].op = .conv2d(conv)
                renamed[node.name] = convName
                continue
            }
            if case .conv2d = node.op { convIndex[node.name] = result.count }
            result.append(node)
        }
        var graph = self
        graph.nodes = result
        graph.logits = renamed[logits] ?? logits
        graph.embedding = embedding.map { renamed[$0] ?? $0 }
        // Keep only what the folded graph references.
        var kept = TensorStore()
        for name in graph.tensorNames where kept[name] == nil { kept[name] = try out.tensor(name) }
        return (graph, kept)
    }
}
