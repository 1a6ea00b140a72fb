import ArgumentParser
import CoverGenre
import Graph
import ImageIO
import ModelFormat
import SystemIO
import DataPrep
import Dispatch

#if canImport(Glibc)
import Glibc
#endif

struct DownloadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "download",
        abstract: "Download a manifest's covers into OUT/<genre>/<id>.<ext>, validated, resumable.",
        discussion: """
        Files already present and valid are skipped, so running the command again after a failure, Ctrl-C or kill \
        finishes the job. Failures are listed in OUT/failures.csv with their reason.
        """)

    @Option(help: "Manifest CSV (id,genre,url[,split]), e.g. from `covergenre prepare`.") var manifest: String
    @Option(help: "Output folder.") var out: String
    @Option(help: "Concurrent downloads.") var jobs = 8
    @Option(help: "Per-request timeout in whole seconds (at least 1).") var timeout = 20
    @Option(help: "Retries of a request after 5xx, 429, timeouts and connection errors.") var retries = 3
    @Option(help: "First retry delay in seconds (doubles each time).") var backoff = 0.5
    @Option(help: "Failure report (default: OUT/failures.csv).") var report: String?

    func validate() throws {
        guard jobs >= 1, jobs <= 256 else { throw ValidationError("--jobs is 1 to 256.") }
        // Whole seconds: Linux's URLSession truncates fractions (0.8 s would time out at once).
        guard timeout >= 1, retries >= 0, backoff >= 0 else { throw ValidationError("--timeout must be at least 1 second, --retries and --backoff not negative.") }
    }

    func run() async throws {
        var options = DownloadOptions()
        options.jobs = jobs
        options.timeout = Double(timeout)
        options.retries = retries
        options.backoff = backoff
        let downloader = Downloader(options: options)
        // Ctrl-C / SIGTERM: stop starting downloads, let the ones in flight end, write the report.
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let sources = [SIGINT, SIGTERM].map { sig -> DispatchSourceSignal in
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                printError("covergenre: stopping after the downloads in flight; run the same command again to finish")
                downloader.interrupt()
            }
            source.resume()
            return source
        }
        defer { sources.forEach { $0.cancel() } }
        let reportPath = report ?? Files.join(out, "failures.csv")
        let summary = try await downloader.run(manifest: manifest, output: out, report: reportPath)
        print("downloaded \(summary.downloaded), already present \(summary.skipped), failed \(summary.failed.count) (\(reportPath))")
        if summary.interrupted { throw ExitCode(130) }
        if !summary.failed.isEmpty { throw ExitCode(1) }
    }
}
