import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import CBLAS

/// Splits loops across threads.
///
/// CoverGenre owns parallelism on every call path: a single-image call splits each layer's work
/// here, a batch call gives each thread whole images and runs layers with `threads: 1`. OpenBLAS
/// is therefore kept single-threaded (its own pool would multiply with ours), see `BLAS`.
public enum Parallel {
    /// Runs `body(i)` for i in 0..<count, on up to `threads` threads, in contiguous blocks.
    /// The blocks are fixed by (count, threads), so results never depend on scheduling.
    @inlinable
    public static func forEach(_ count: Int, threads: Int, _ body: (Int) -> Void) {
        let workers = min(max(threads, 1), count)
        if workers <= 1 {
            for i in 0..<count { body(i) }
            return
        }
        spread(workers) { worker in
            let lo = worker * count / workers, hi = (worker + 1) * count / workers
            for i in lo..<hi { body(i) }
        }
    }

    /// body(worker) for worker in 0..<workers: on the calling thread's Scheduler (a model's
    /// threads) when it has one, else on Dispatch's (training, which owns its threads that way).
    @usableFromInline
    static func spread(_ workers: Int, _ body: (Int) -> Void) {
        if let scheduler = Scheduler.current {
            scheduler.fork(workers, maxThreads: workers, body)
            return
        }
        withoutActuallyEscaping(body) { body in DispatchQueue.concurrentPerform(iterations: workers, execute: body) }
    }

    /// Runs `body(worker, range)` once per worker over contiguous, nearly equal ranges of 0..<count.
    @inlinable
    public static func forRanges(_ count: Int, threads: Int, _ body: (Int, Range<Int>) -> Void) {
        let workers = min(max(threads, 1), count)
        if workers <= 1 {
            if count > 0 { body(0, 0..<count) }
            return
        }
        spread(workers) { worker in body(worker, (worker * count / workers)..<((worker + 1) * count / workers)) }
    }

    /// The number of CPUs online.
    public static var availableCores: Int {
        max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }
}

/// OpenBLAS configuration, done once per process.
public enum BLAS {
    private static let singleThreaded: Bool = {
        openblas_set_num_threads(1)
        return true
    }()

    /// Makes OpenBLAS run each GEMM on the calling thread. CoverGenre calls this before its first
    /// GEMM; it is OpenBLAS's process-wide setting, documented in the C header.
    @inlinable public static func ensureSingleThreaded() { _ = isConfigured }

    @usableFromInline static var isConfigured: Bool { singleThreaded }
}
