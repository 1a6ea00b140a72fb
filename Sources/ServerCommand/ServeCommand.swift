import ArgumentParser
import CoverGenre
import Server
import Service

#if canImport(Glibc)
import Glibc
#endif

/// `covergenre-server`, also run as `covergenre serve`: the HTTP server is a program of its own so
/// that the command-line tool (and everything that only classifies) never builds SwiftNIO.
@main
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "covergenre serve",
        abstract: "Serve the models over HTTP: a JSON API (docs/http-api.md) and a web page for tagging covers.",
        discussion: """
        Every model is loaded once and shared by all requests. Binds to 127.0.0.1 unless --host says otherwise. \
        Stops on Ctrl-C or SIGTERM. The same program is `covergenre-server`.
        """,
        version: CoverGenreVersion.string)

    @Option(name: .shortAndLong, help: "Model file (.cgm), as PATH or NAME=PATH; repeat for several (the first is the default). Default: covergenre-default=models/covergenre-default-int8.cgm.")
    var model: [String] = []
    @Option(help: "Address to listen on (0.0.0.0: every interface).") var host = "127.0.0.1"
    @Option(help: "Port (0: any free port; the chosen one is printed).") var port = 8080
    @Option(help: "Folder of covers for /v1/similar, embedded once at start with the default model.") var index: String?
    @Option(help: "Threads per model call (0 = every core).") var threads = 0
    @Option(help: "Average each cover with its mirror image: model (as each model file says), on, or off (half the work per cover).")
    var mirror: ModelOptions.MirrorChoice = .model
    @Option(help: "Largest request body in bytes.") var maxBodyBytes = 32 << 20
    @Option(help: "Images per request.") var maxImages = 16
    @Option(help: "Requests served at once; beyond, 503 with Retry-After.") var maxInFlight = 64
    @Option(help: "Seconds a request may wait for a compute thread, and an idle connection stays open.") var timeout = 30.0

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port is 0 to 65535.") }
        guard maxBodyBytes >= 1, maxImages >= 1, maxInFlight >= 1 else {
            throw ValidationError("--max-body-bytes, --max-images and --max-in-flight must be at least 1.")
        }
        guard timeout > 0, timeout.isFinite else { throw ValidationError("--timeout must be positive.") }
        guard (0...Model.maxThreads).contains(threads) else { throw ValidationError("--threads is 0 (every core) to \(Model.maxThreads).") }
    }

    func run() async throws {
        var c = ServerConfiguration()
        // Named as before the int8 file became the default, so clients asking for it by name still find it.
        c.models = (model.isEmpty ? ["covergenre-default=models/covergenre-default-int8.cgm"] : model).map(ServerConfiguration.modelArgument)
        c.host = host
        c.port = port
        c.index = index
        c.threads = threads
        c.mirrorView = mirror.mirrorView
        c.maxBodyBytes = maxBodyBytes
        c.maxImages = maxImages
        c.maxInFlight = maxInFlight
        c.timeoutSeconds = timeout
        try await CoverServer.run(c, log: { line in fputs(line + "\n", stderr) })
    }
}

extension ModelOptions.MirrorChoice: ExpressibleByArgument {}
