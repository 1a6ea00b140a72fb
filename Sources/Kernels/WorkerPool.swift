import CKernels

#if canImport(Glibc)
import Glibc
#endif

/// Dedicated worker threads for one execution context: `Parallel` uses the pool of the calling
/// thread (set by `run(on:)`) instead of Dispatch, so a parallel region starts in about a
/// microsecond. A pool serves one caller at a time, which an execution context guarantees.
public final class WorkerPool: @unchecked Sendable {
    let pool: OpaquePointer?
    public let workers: Int

    public init(workers: Int) {
        pool = workers > 0 ? cgk_pool_create(Int32(workers)) : nil
        self.workers = pool.map { Int(cgk_pool_workers($0)) } ?? 0
    }

    deinit { if let pool { cgk_pool_destroy(pool) } }

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    /// The pool of the calling thread, if it is inside `run(on:)`.
    @usableFromInline static var current: WorkerPool? {
        pthread_getspecific(key).map { Unmanaged<WorkerPool>.fromOpaque($0).takeUnretainedValue() }
    }

    /// Runs `body` with this pool as the calling thread's pool.
    public func run<R>(_ body: () throws -> R) rethrows -> R {
        let previous = pthread_getspecific(Self.key)
        pthread_setspecific(Self.key, Unmanaged.passUnretained(self).toOpaque())
        defer { pthread_setspecific(Self.key, previous) }
        return try body()
    }

    /// body(part) for part in 0..<parts (parts <= workers + 1), the caller taking part 0.
    @usableFromInline func fork(_ parts: Int, _ body: (Int) -> Void) {
        guard let pool, parts > 1 else {
            for i in 0..<parts { body(i) }
            return
        }
        withoutActuallyEscaping(body) { body in
            var task = body
            withUnsafeMutablePointer(to: &task) { pointer in
                cgk_pool_run(pool, Int32(parts), { context, part in
                    context!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(Int(part))
                }, pointer)
            }
        }
    }
}
