import CKernels

#if canImport(Glibc)
import Glibc
#endif

/// The threads of one loaded model, shared by every call into it (`cgk_pool` in threadpool.c).
///
/// A model with `threads` = n owns n - 1 workers for its whole life, however many threads call
/// it: each caller's own thread works too. `run` marks a call in progress and makes this the
/// calling thread's scheduler, so that `Parallel` inside it forks onto these workers (a region
/// starts in about a microsecond, against tens for Dispatch). A region takes only the workers
/// that are idle, so overlapping calls share them instead of queueing behind each other.
public final class Scheduler: @unchecked Sendable {
    let pool: OpaquePointer?
    /// Worker threads owned (threads - 1, fewer if the system refused to start some).
    public let workers: Int

    public init(threads: Int) {
        pool = threads > 1 ? cgk_pool_create(Int32(clamping: threads - 1)) : nil
        workers = pool.map { Int(cgk_pool_workers($0)) } ?? 0
    }

    deinit { if let pool { cgk_pool_destroy(pool) } }

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    /// The scheduler of the calling thread, if it is inside `run`.
    @usableFromInline static var current: Scheduler? {
        pthread_getspecific(key).map { Unmanaged<Scheduler>.fromOpaque($0).takeUnretainedValue() }
    }

    /// Runs `body` as one call on this scheduler: `Parallel` regions inside it use these workers.
    public func run<R>(_ body: () throws -> R) rethrows -> R {
        let previous = pthread_getspecific(Self.key)
        pthread_setspecific(Self.key, Unmanaged.passUnretained(self).toOpaque())
        if let pool { cgk_pool_enter(pool) }
        defer {
            if let pool { cgk_pool_leave(pool) }
            pthread_setspecific(Self.key, previous)
        }
        return try body()
    }

    /// body(part) exactly once for every part in 0..<parts, on the calling thread and on up to
    /// `maxThreads - 1` idle workers.
    public func fork(_ parts: Int, maxThreads: Int, _ body: (Int) -> Void) {
        guard let pool, parts > 1, maxThreads > 1 else {
            for i in 0..<parts { body(i) }
            return
        }
        withoutActuallyEscaping(body) { body in
            var task = body
            withUnsafeMutablePointer(to: &task) { pointer in
                cgk_pool_run(pool, Int32(clamping: parts), Int32(clamping: maxThreads), { context, part in
                    context!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(Int(part))
                }, pointer)
            }
        }
    }
}
