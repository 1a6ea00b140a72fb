import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The server's compute threads: a fixed number (one per core), fed by one queue. Model calls
/// block for milliseconds of arithmetic; run on Swift's cooperative pool or on the event loops
/// they would stall every other connection, and on Dispatch they would make it start more
/// threads as callers grow. Here the thread count is fixed at start, whatever the load.
final class ComputeLanes: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var jobs: [() -> Void] = []
    private var head = 0
    private var stopping = false
    private var threads: [pthread_t] = []

    init(count: Int) {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wake, nil)
        for _ in 0..<max(count, 1) {
            var thread = pthread_t()
            let box = Unmanaged.passRetained(self).toOpaque()
            pthread_create(&thread, nil, { argument in
                let lanes = Unmanaged<ComputeLanes>.fromOpaque(argument!).takeRetainedValue()
                lanes.work()
                return nil
            }, box)
            threads.append(thread)
        }
    }

    /// Runs `body` on a compute thread and returns its result to the awaiting task.
    func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { (continuation: CheckedContinuation<T, Never>) in
            submit { continuation.resume(returning: body()) }
        }
    }

    private func submit(_ job: @escaping () -> Void) {
        pthread_mutex_lock(mutex)
        jobs.append(job)
        pthread_cond_signal(wake)
        pthread_mutex_unlock(mutex)
    }

    private func work() {
        while true {
            pthread_mutex_lock(mutex)
            while head == jobs.count && !stopping { pthread_cond_wait(wake, mutex) }
            if head == jobs.count && stopping {
                pthread_mutex_unlock(mutex)
                return
            }
            let job = jobs[head]
            head += 1
            // Compact now and then so the queue's memory does not grow with the requests served.
            if head > 1024 && head * 2 > jobs.count {
                jobs.removeFirst(head)
                head = 0
            }
            pthread_mutex_unlock(mutex)
            job()
        }
    }

    /// Finishes the queued jobs, then stops the threads.
    func shutdown() {
        pthread_mutex_lock(mutex)
        stopping = true
        pthread_cond_broadcast(wake)
        pthread_mutex_unlock(mutex)
        for thread in threads { pthread_join(thread, nil) }
        threads = []
    }
}

/// Requests being served at once, bounded: one more is refused (503) instead of queued, so a
/// burst cannot hold an unbounded number of bodies in memory.
final class InFlight: Sendable {
    let limit: Int
    private let count = Atomic<Int>(0)

    init(limit: Int) { self.limit = limit }

    /// Takes a place if one is free.
    func enter() -> Bool {
        if count.wrappingAdd(1, ordering: .acquiring).newValue <= limit { return true }
        count.wrappingSubtract(1, ordering: .releasing)
        return false
    }

    func leave() { count.wrappingSubtract(1, ordering: .releasing) }

    var current: Int { count.load(ordering: .relaxed) }
}
