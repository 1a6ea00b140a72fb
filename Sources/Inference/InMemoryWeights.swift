import Graph
import Kernels
import ModelFormat
import SystemIO

/// Serves tensors held in Swift memory to the engine (64-byte-aligned copies): used to run a
/// model while it is being trained, imported or tested, before it is written to a file.
public final class InMemoryWeights: WeightSource, @unchecked Sendable {
    private let shapes: [String: [Int]]
    private let buffers: [String: FloatBuffer]

    public init(_ store: TensorStore) {
        var shapes: [String: [Int]] = [:], buffers: [String: FloatBuffer] = [:]
        for name in store.names {
            let t = store[name]!
            let b = FloatBuffer(count: t.count)!
            if t.count > 0 { t.values.withUnsafeBufferPointer { b.pointer.update(from: $0.baseAddress!, count: t.count) } }
            shapes[name] = t.shape
            buffers[name] = b
        }
        self.shapes = shapes
        self.buffers = buffers
    }

    public func floats(_ name: String) throws -> FloatTensor {
        guard let b = buffers[name], let shape = shapes[name] else { throw CoverGenreError(.modelFormat, "tensor \"\(name)\" is missing") }
        return FloatTensor(shape: shape, pointer: b.pointer, owner: b)
    }

    public func shape(_ name: String) -> [Int]? { shapes[name] }
}
