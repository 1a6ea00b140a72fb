#if canImport(Glibc)
import Glibc
#endif

/// An owned, 64-byte-aligned block of floats: activations, scratch and converted weights.
/// Cache-line alignment keeps SIMD loads aligned and threads from sharing lines at block starts.
public final class FloatBuffer: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int

    /// Allocates `count` floats, zeroed. Returns nil when memory is exhausted.
    public convenience init?(count: Int) {
        self.init(uninitializedCount: count)
        zero()
    }

    /// Allocates `count` floats left unwritten, for buffers the caller fills completely at once
    /// (packed and converted weights): zeroing them first cost a fifth of a model's load time.
    public init?(uninitializedCount count: Int) {
        var raw: UnsafeMutableRawPointer?
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        guard count >= 0, posix_memalign(&raw, 64, bytes) == 0, let raw else { return nil }
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        self.count = count
    }

    deinit { free(pointer) }

    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: pointer, count: count) }

    public func zero() { memset(pointer, 0, max(count, 1) * MemoryLayout<Float>.stride) }
}
