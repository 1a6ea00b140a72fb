import Dispatch
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import ImageIO
import SystemIO
import ToolSupport

/// Downloads the covers of a manifest (`id,genre,url[,split]`) into `<out>/<genre>/<id>.<ext>`.
///
/// Reliable by construction: concurrent requests with a per-request timeout; bounded retries with
/// exponential backoff on 5xx, 429, 408, timeouts and connection errors, none on other 4xx;
/// every body is decoded before it is kept (HTML error pages served as image/jpeg and truncated
/// files are rejected), stored with the extension of its real format, and written atomically
/// (temporary file, fsync, rename), so the folder never holds half an image. Files already present
/// and valid are skipped, so after a kill or Ctrl-C the same command finishes the job.
public struct DownloadOptions: Sendable {
    public var jobs = 8
    public var timeout: Double = 20
    public var retries = 3
    public var backoff: Double = 0.5
    public var limits = ImageLimits()

    public init() {}
}

public struct DownloadSummary: Sendable {
    public var downloaded = 0
    public var skipped = 0
    public var failed: [(id: String, genre: String, url: String, reason: String, attempts: Int)] = []
    public var interrupted = false
}

public final class Downloader: @unchecked Sendable {
    struct Item {
        let id: String
        let genre: String
        let url: String
        let directory: String
        let stem: String
    }

    let options: DownloadOptions
    let session: URLSession
    private let stop = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var interrupted = false

    public init(options: DownloadOptions) {
        self.options = options
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = options.timeout
        configuration.timeoutIntervalForResource = options.timeout * 3
        configuration.httpMaximumConnectionsPerHost = max(options.jobs, 1)
        configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
        session = URLSession(configuration: configuration)
    }

    /// Stops scheduling new downloads (Ctrl-C); those in flight finish or fail normally.
    public func interrupt() {
        lock.lock()
        interrupted = true
        lock.unlock()
    }

    var isInterrupted: Bool {
        lock.lock()
        defer { lock.unlock() }
        return interrupted
    }

    public func run(manifest: String, output: String, report: String) async throws -> DownloadSummary {
        let table = try CSV.readTable(manifest)
        for column in ["id", "genre", "url"] where !table.header.contains(column) {
            throw CoverGenreError(.invalidArgument, "\(manifest): no \"\(column)\" column (expected id,genre,url[,split])")
        }
        var items: [Item] = []
        var seen = Set<String>()
        for row in table.rows {
            let genre = Files.safeComponent(row["genre"]!), stem = Files.safeComponent(row["id"]!)
            guard seen.insert(genre + "/" + stem).inserted else { continue }
            items.append(Item(id: row["id"]!, genre: row["genre"]!, url: row["url"]!, directory: Files.join(output, genre), stem: stem))
        }
        for directory in Set(items.map(\.directory)) {
            try Files.makeDirectories(directory)
            // Temporary files of a killed run: never complete images, safe to delete.
            for name in try Files.list(directory) where name.hasPrefix(".") && name.contains(".tmp-") {
                Files.remove(Files.join(directory, name))
            }
        }
        var summary = DownloadSummary()
        let bar = ProgressBar(total: items.count, label: "download")
        var next = 0
        try await withThrowingTaskGroup(of: (Int, Result<Bool, DownloadFailure>).self) { group in
            func schedule() {
                guard next < items.count, !isInterrupted else { return }
                let index = next
                next += 1
                group.addTask { (index, await self.fetch(items[index])) }
            }
            for _ in 0..<max(options.jobs, 1) { schedule() }
            while let (index, result) = try await group.next() {
                switch result {
                case .success(let fetched): if fetched { summary.downloaded += 1 } else { summary.skipped += 1 }
                case .failure(let f):
                    let item = items[index]
                    summary.failed.append((item.id, item.genre, item.url, f.reason, f.attempts))
                }
                let done = summary.downloaded + summary.skipped + summary.failed.count
                bar.update(done, detail: "ok \(summary.downloaded) skipped \(summary.skipped) failed \(summary.failed.count)")
                schedule()
            }
        }
        bar.finish("ok \(summary.downloaded) skipped \(summary.skipped) failed \(summary.failed.count)")
        summary.interrupted = isInterrupted
        try CSV.write(report, [["id", "genre", "url", "reason", "attempts"]]
            + summary.failed.sorted { $0.id < $1.id }.map { [$0.id, $0.genre, $0.url, $0.reason, String($0.attempts)] })
        return summary
    }

    struct DownloadFailure: Error {
        let reason: String
        let attempts: Int
    }

    /// Ok(true) downloaded, Ok(false) already present and valid.
    func fetch(_ item: Item) async -> Result<Bool, DownloadFailure> {
        for ext in ["jpg", "png", "webp"] {
            let path = Files.join(item.directory, "\(item.stem).\(ext)")
            guard Files.isRegularFile(path) else { continue }
            if (try? ImageDecoder.decode(path: path, limits: options.limits)) != nil { return .success(false) }
            Files.remove(path) // damaged by something else: fetch again
        }
        guard let url = URL(string: item.url), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https" else {
            return .failure(DownloadFailure(reason: "not an http(s) URL", attempts: 0))
        }
        var attempt = 0
        while true {
            attempt += 1
            let outcome = await attemptOnce(url, item)
            switch outcome {
            case .stored: return .success(true)
            case .permanent(let reason): return .failure(DownloadFailure(reason: reason, attempts: attempt))
            case .transient(let reason, let retryAfter):
                if attempt > options.retries || isInterrupted { return .failure(DownloadFailure(reason: reason, attempts: attempt)) }
                let delay = retryAfter.map { min($0, 30) } ?? options.backoff * pow(2, Double(attempt - 1)) * Double.random(in: 0.8...1.2)
                try? await Task.sleep(nanoseconds: UInt64(delay * 1e9))
            }
        }
    }

    enum Outcome {
        case stored
        case permanent(String)
        case transient(String, retryAfter: Double?)
    }

    func attemptOnce(_ url: URL, _ item: Item) async -> Outcome {
        var request = URLRequest(url: url, timeoutInterval: options.timeout)
        request.setValue("covergenre/0.1", forHTTPHeaderField: "User-Agent")
        let data: Data, response: URLResponse
        do {
            (data, response) = try await session.data(for: request)
        } catch let error as URLError {
            let permanent: Set<URLError.Code> = [.unsupportedURL, .badURL, .fileDoesNotExist, .httpTooManyRedirects]
            let reason = error.code == .timedOut ? "timed out after \(options.timeout) s" : "network error: \(error.localizedDescription)"
            return permanent.contains(error.code) ? .permanent(reason) : .transient(reason, retryAfter: nil)
        } catch {
            return .transient("network error: \(error)", retryAfter: nil)
        }
        guard let http = response as? HTTPURLResponse else { return .permanent("not an HTTP response") }
        switch http.statusCode {
        case 200..<300: break
        case 408, 429, 500..<600:
            let retryAfter = http.value(forHTTPHeaderField: "Retry-After").flatMap(Double.init)
            return .transient("HTTP \(http.statusCode)", retryAfter: retryAfter)
        default:
            return .permanent("HTTP \(http.statusCode)")
        }
        guard data.count <= options.limits.maxFileBytes else { return .permanent("response of \(data.count) bytes exceeds the image size limit") }
        let bytes = [UInt8](data)
        let image: RGBImage
        do {
            image = try ImageDecoder.decode(bytes, limits: options.limits)
        } catch {
            let type = http.value(forHTTPHeaderField: "Content-Type") ?? "no content type"
            return .permanent("not a usable image (\(type), \(data.count) bytes): \(error)")
        }
        let ext = image.format?.fileExtension ?? "jpg"
        do {
            try Files.writeAtomically(Files.join(item.directory, "\(item.stem).\(ext)"), bytes)
        } catch {
            return .permanent("cannot store: \(error)")
        }
        return .stored
    }
}
