import SystemIO

/// Execution contexts kept for reuse, so that steady-state calls allocate nothing. Any number of
/// threads may call `withContext` at once: up to `admission.limit` of them get a context of their
/// own (made on first need) and run; the rest wait their turn, asleep (see `Admission`).
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
    private let admission: Admission

    /// `maxInFlight`: contexts in use at once (default: unbounded, for single-owner pools such as
    /// training's).
    public init(graph: CompiledGraph, maxIdlePerKey: Int = 16, maxInFlight: Int = .max) {
        self.graph = graph
        self.maxIdlePerKey = maxIdlePerKey
        admission = Admission(limit: maxInFlight)
    }

    public func withContext<R>(batch: Int, threads: Int, _ body: (ExecutionContext) throws -> R) throws -> R {
        try admission.run { try withAdmittedContext(batch: batch, threads: threads, body) }
    }

    private func withAdmittedContext<R>(batch: Int, threads: Int, _ body: (ExecutionContext) throws -> R) throws -> R {
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
