#if canImport(Glibc)
import Glibc
#endif

/// At most `limit` holders at once, admitted in arrival order; the others sleep until a holder
/// leaves.
///
/// Why: with more callers than cores only `cores` calls can run at any moment. Letting all of
/// them in gives each its own activation buffers (a 32-caller burst on Lite0: 32 contexts, hundreds
/// of MB that evict each other from the caches) for no gain in throughput; queueing them keeps a
/// few contexts hot and the same total throughput, with first-come, first-served latency.
public final class Admission: @unchecked Sendable {
    public let limit: Int
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    /// Waiters sleep on the condition of their ticket's slot, so a holder leaving wakes the one
    /// waiter whose turn it is (and the rare waiter sharing its slot), not every waiter.
    private let turns: UnsafeMutablePointer<pthread_cond_t>
    private static let slots = 64
    /// Tickets handed out, and holders that have left: ticket t may enter once t < left + limit.
    private var issued = 0, left = 0

    public init(limit: Int) {
        self.limit = max(limit, 1)
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        turns = .allocate(capacity: Self.slots)
        for i in 0..<Self.slots {
            (turns + i).initialize(to: pthread_cond_t())
            pthread_cond_init(turns + i, nil)
        }
    }

    deinit {
        for i in 0..<Self.slots { pthread_cond_destroy(turns + i) }
        pthread_mutex_destroy(mutex)
        turns.deallocate()
        mutex.deallocate()
    }

    /// Runs `body` once admitted.
    public func run<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        let ticket = issued
        issued += 1
        // Differences, not sums: `left + limit` overflows for an unbounded limit (Int.max).
        while ticket - left >= limit { pthread_cond_wait(turns + ticket % Self.slots, mutex) }
        pthread_mutex_unlock(mutex)
        defer {
            pthread_mutex_lock(mutex)
            left += 1
            // The ticket this departure admits (left + limit - 1), if anyone holds it yet.
            if issued - left > limit - 1 { pthread_cond_broadcast(turns + (left + (limit - 1) % Self.slots) % Self.slots) }
            pthread_mutex_unlock(mutex)
        }
        return try body()
    }
}
