import SystemIO

/// Execution contexts kept for reuse, so that steady-state calls allocate nothing. Any number of
/// threads may call `withContext` at once: each gets a context of its own (made on first need).
public final class ContextPool: @unchecked Sendable {
    public let graph: CompiledGraph
    private struct Key: Hashable {
        let batch: Int
        let threads: Int
    }
    private let idle = Locked<[Key: [ExecutionContext]]>([:])
    /// Idle contexts kept per (batch, threads); more are freed on return, bounding memory after a
    /// burst of concurrent callers.
    private let maxIdlePerKey: Int

    public init(graph: CompiledGraph, maxIdlePerKey: Int = 16) {
        self.graph = graph
        self.maxIdlePerKey = maxIdlePerKey
    }

    public func withContext<R>(batch: Int, threads: Int, _ body: (ExecutionContext) throws -> R) throws -> R {
        let key = Key(batch: batch, threads: threads)
        let reused = idle.withLock { contexts in contexts[key]?.popLast() }
        let context = try reused ?? ExecutionContext(graph: graph, batch: batch, threads: threads)
        defer {
            idle.withLock { contexts in
                if contexts[key, default: []].count < maxIdlePerKey { contexts[key, default: []].append(context) }
            }
        }
        return try body(context)
    }

    /// Frees every idle context.
    public func trim() { idle.withLock { $0.removeAll() } }
}
