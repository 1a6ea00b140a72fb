#if canImport(Glibc)
import Glibc
#endif

/// Memory for the weights a model packs at load, handed out from a few large chunks.
///
/// Packing a model's weights into separate allocations made loading fault in every 4 KB page
/// (Lite0: about 4,600 faults, 10-15 ms on a VM). Chunks of at least 8 MB, aligned to 2 MB and
/// advised for transparent huge pages, fault in 2 MB at a time, and the GEMMs that stream the
/// weights then miss the TLB less. Not thread-safe: one loader fills it, then it is only read.
public final class WeightArena: @unchecked Sendable {
    private static let hugePage = 2 << 20
    private static let chunkBytes = 8 << 20
    private var chunks: [UnsafeMutableRawBufferPointer] = []
    private var used = 0

    public init() {}

    deinit {
        for chunk in chunks { munmap(chunk.baseAddress, chunk.count) }
    }

    /// Bytes mapped so far (resident only once written).
    public var mappedBytes: Int { chunks.reduce(0) { $0 + $1.count } }

    /// `count` floats, 64-byte aligned, uninitialized; nil when memory is exhausted.
    public func allocate(floats count: Int) -> UnsafeMutablePointer<Float>? {
        let bytes = (max(count, 1) * MemoryLayout<Float>.stride + 63) & ~63
        if chunks.isEmpty || used + bytes > chunks[chunks.count - 1].count {
            guard let chunk = Self.mapChunk(bytes: max(bytes, Self.chunkBytes)) else { return nil }
            chunks.append(chunk)
            used = 0
        }
        let pointer = chunks[chunks.count - 1].baseAddress! + used
        used += bytes
        return pointer.bindMemory(to: Float.self, capacity: count)
    }

    /// An anonymous mapping of at least `bytes`, starting on a 2 MB boundary.
    private static func mapChunk(bytes: Int) -> UnsafeMutableRawBufferPointer? {
        let size = (bytes + hugePage - 1) / hugePage * hugePage
        guard let raw = mmap(nil, size + hugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), raw != MAP_FAILED
        else { return nil }
        // Trim the unaligned head and the tail so the chunk covers whole huge pages.
        let address = Int(bitPattern: raw), aligned = (address + hugePage - 1) / hugePage * hugePage
        if aligned > address { munmap(raw, aligned - address) }
        let tail = address + size + hugePage - (aligned + size)
        if tail > 0 { munmap(UnsafeMutableRawPointer(bitPattern: aligned + size), tail) }
        let base = UnsafeMutableRawPointer(bitPattern: aligned)!
        _ = madvise(base, size, MADV_HUGEPAGE) // advice only: without THP the chunk works with 4 KB pages
        return UnsafeMutableRawBufferPointer(start: base, count: size)
    }
}
