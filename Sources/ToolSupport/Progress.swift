import SystemIO

#if canImport(Glibc)
import Glibc
#endif

/// Progress of a long job on standard error: a redrawn bar on a terminal, plain lines otherwise
/// (CI logs, redirected output), with throughput and estimated time left.
public final class ProgressBar {
    let total: Int
    let label: String
    let unit: String
    let terminal: Bool
    let start = Clock.seconds
    var lastDraw = 0.0
    var lastLine = -1
    var lastPrinted = -1

    public init(total: Int, label: String, unit: String = "img") {
        self.total = max(total, 1)
        self.label = label
        self.unit = unit
        terminal = isTerminal(2)
    }

    /// `done` items finished; `detail` is appended (e.g. the running loss).
    public func update(_ done: Int, detail: String = "", force: Bool = false) {
        let now = Clock.seconds
        let elapsed = now - start
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let remaining = rate > 0 ? Double(total - done) / rate : 0
        let text = "\(label) \(done)/\(total) \(Format.fixed(rate, 1)) \(unit)/s ETA \(Format.duration(remaining)) \(detail)"
        if terminal {
            guard force || now - lastDraw > 0.1 || done == total else { return }
            lastDraw = now
            let width = 24, filled = min(width, width * done / total)
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            fputs("\r[\(bar)] \(text)\u{1B}[K", stderr)
        } else {
            // Plain lines every tenth of the way, so logs stay short.
            let step = max(total / 10, 1)
            guard done != lastPrinted, force || done / step > lastLine || done == total else { return }
            lastLine = done / step
            lastPrinted = done
            fputs(text + "\n", stderr)
        }
    }

    public func finish(_ detail: String = "") {
        update(total, detail: detail, force: true)
        if terminal { fputs("\n", stderr) }
    }
}

public enum Format {
    public static func fixed(_ v: Double, _ decimals: Int) -> String {
        guard v.isFinite else { return "\(v)" }
        var buffer = [CChar](repeating: 0, count: 64)
        _ = withVaList([v]) { vsnprintf(&buffer, 64, "%.\(decimals)f", $0) }
        return String(cString: buffer)
    }

    public static func percent(_ v: Double) -> String { fixed(v * 100, 1) + "%" }

    public static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "?" }
        let s = Int(seconds.rounded())
        return s >= 3600 ? "\(s / 3600)h\(Format.two((s / 60) % 60))m" : s >= 60 ? "\(s / 60)m\(Format.two(s % 60))s" : "\(s)s"
    }

    static func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
}
