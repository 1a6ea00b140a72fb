#if canImport(Glibc)
import Glibc
#endif

/// Monotonic time for progress reports and benchmarks.
public enum Clock {
    public static var seconds: Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    /// Wall-clock date as YYYY-MM-DD (UTC), for reports.
    public static var date: String {
        var t = time(nil)
        var parts = tm()
        gmtime_r(&t, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))"
    }
}

/// Whether a file descriptor is a terminal (progress bars redraw; logs get plain lines).
public func isTerminal(_ fd: Int32) -> Bool { isatty(fd) != 0 }
