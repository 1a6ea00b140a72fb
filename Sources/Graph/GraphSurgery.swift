import SystemIO

extension GraphSpec {
    /// The graph without the nodes none of `outputs` depends on (e.g. a classifier being replaced).
    public func pruned(keeping outputs: [String]) -> GraphSpec {
        var needed = Set(outputs)
        for node in nodes.reversed() where needed.contains(node.name) { needed.formUnion(node.inputs) }
        var graph = self
        graph.nodes = nodes.filter { needed.contains($0.name) }
        return graph
    }

    /// Appends another graph whose input is fed by `source`: the other graph's nodes are renamed
    /// with `prefix` (its input name becomes `source`). Returns the new graph and the renaming.
    public func appending(_ other: GraphSpec, at source: String, prefix: String) throws -> (GraphSpec, [String: String]) {
        var names = [other.input: source]
        for node in other.nodes { names[node.name] = prefix + node.name }
        let existing = Set(nodes.map(\.name))
        if let clash = other.nodes.first(where: { existing.contains(prefix + $0.name) }) {
            throw CoverGenreError(.invalidArgument, "appending would create a second node \"\(prefix + clash.name)\"")
        }
        var graph = self
        for var node in other.nodes {
            node.inputs = node.inputs.map { names[$0] ?? $0 }
            node.name = names[node.name]!
            node.op = node.op.renamingTensors { prefix + $0 }
            graph.nodes.append(node)
        }
        return (graph, names)
    }
}

extension Op {
    /// The same operation with its tensor names mapped.
    public func renamingTensors(_ rename: (String) -> String) -> Op {
        switch self {
        case .conv2d(var a):
            a.weight = rename(a.weight)
            a.bias = a.bias.map(rename)
            return .conv2d(a)
        case .linear(var a):
            a.weight = rename(a.weight)
            a.bias = a.bias.map(rename)
            return .linear(a)
        case .batchNorm(var a):
            a.gamma = rename(a.gamma)
            a.beta = rename(a.beta)
            a.mean = rename(a.mean)
            a.variance = rename(a.variance)
            return .batchNorm(a)
        default:
            return self
        }
    }
}
