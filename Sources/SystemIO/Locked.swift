#if canImport(Glibc)
import Glibc
#endif

/// A value behind a pthread mutex.
///
/// Why not the standard library's `Mutex`: ThreadSanitizer (Tests/c/run.sh runs the concurrency
/// tests under it) understands pthread locks, while `Mutex`'s futex-based lock lives in the
/// uninstrumented standard library, so to TSan every access under it looks unsynchronized.
public final class Locked<Value>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    public init(_ value: Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
