import Kernels
import ModelFormat
import SystemIO

/// A tensor held in Swift memory: weights being trained, imported or exported.
public struct HostTensor: Equatable, Sendable {
    public var shape: [Int]
    public var values: [Float]

    public init(shape: [Int], values: [Float]) {
        precondition(shape.reduce(1, *) == values.count, "shape \(shape) does not hold \(values.count) values")
        self.shape = shape
        self.values = values
    }

    public init(shape: [Int], repeating value: Float = 0) {
        self.init(shape: shape, values: [Float](repeating: value, count: shape.reduce(1, *)))
    }

    public var count: Int { values.count }
}

/// Named tensors in memory, in insertion order.
public struct TensorStore: Sendable {
    public private(set) var names: [String] = []
    private var tensors: [String: HostTensor] = [:]

    public init() {}

    public subscript(name: String) -> HostTensor? {
        get { tensors[name] }
        set {
            if newValue != nil, tensors[name] == nil { names.append(name) }
            if newValue == nil { names.removeAll { $0 == name } }
            tensors[name] = newValue
        }
    }

    public func tensor(_ name: String) throws -> HostTensor {
        guard let t = tensors[name] else { throw CoverGenreError(.modelFormat, "tensor \"\(name)\" is missing") }
        return t
    }

    public var count: Int { names.count }
    public var parameterCount: Int { tensors.values.reduce(0) { $0 + $1.count } }

    /// Reads every tensor of a model file.
    public init(file: ModelFile) throws {
        for info in file.tensors {
            let t = try file.floats(info.name)
            self[info.name] = HostTensor(shape: info.shape, values: t.array)
        }
    }
}

extension ModelWriter {
    /// Adds every tensor the graph references, in graph order, stored as `storage`.
    public mutating func add(_ store: TensorStore, only names: [String]? = nil, storage: DType) throws {
        for name in names ?? store.names {
            let t = try store.tensor(name)
            try add(name, shape: t.shape, values: t.values, storage: storage)
        }
    }
}

extension ModelDescription {
    /// Writes this description and the tensors its graph references as a `.cgm` file.
    public func write(tensors: TensorStore, to path: String, storage: DType = .float32) throws {
        try serialized(tensors: tensors, storage: storage).write(to: path)
    }

    public func serialized(tensors: TensorStore, storage: DType = .float32) throws -> ModelWriter {
        var writer = ModelWriter(metadata: json)
        var seen = Set<String>()
        let names = graph.tensorNames.filter { seen.insert($0).inserted }
        try writer.add(tensors, only: names, storage: storage)
        return writer
    }
}
