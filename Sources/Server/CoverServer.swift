import CoverGenre
import Hummingbird
import HTTPTypes
import Kernels
import Logging
import ModelFormat
import NIOCore
import Prometheus
import SystemIO

#if canImport(Glibc)
import Glibc
#endif

/// `covergenre serve`: the HTTP API (docs/http-api.md, docs/openapi.json) and the web page, on
/// Hummingbird. Threads: Hummingbird's event loops (one per core) parse HTTP; a fixed set of
/// compute lanes (one per core) runs the model calls; the model's own workers help a call when
/// they are idle. None of these grows with connections.
public enum CoverServer {
    /// Loads the models and the index, then serves until SIGINT or SIGTERM.
    public static func run(_ configuration: ServerConfiguration, log: @escaping @Sendable (String) -> Void) async throws {
        let service = try CoverService(configuration: configuration, log: log)
        let lanes = ComputeLanes(count: Parallel.availableCores)
        defer { lanes.shutdown() }
        let api = API(service: service, lanes: lanes, configuration: configuration)
        let router = Router()
        router.add(middleware: api.metrics)
        api.register(router)
        let idle = TimeAmount.milliseconds(Int64(configuration.timeoutSeconds * 1000))
        var logger = Logger(label: "covergenre")
        logger.logLevel = .warning
        let app = Application(
            router: router,
            server: .http1(configuration: .init(idleTimeout: idle)),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "covergenre"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? configuration.port
                log("listening on http://\(configuration.host):\(port)/ (API: /v1/classify, /v1/embed, /v1/similar, /v1/models, /healthz, /metrics)")
            },
            logger: logger)
        try await app.runService()
    }
}

/// The routes.
struct API: Sendable {
    let service: CoverService
    let lanes: ComputeLanes
    let configuration: ServerConfiguration
    let inFlight: InFlight
    let metrics: MetricsRecorder

    init(service: CoverService, lanes: ComputeLanes, configuration: ServerConfiguration) {
        self.service = service
        self.lanes = lanes
        self.configuration = configuration
        inFlight = InFlight(limit: configuration.maxInFlight)
        metrics = MetricsRecorder(inFlight: inFlight)
    }

    func register(_ router: Router<BasicRequestContext>) {
        router.post("/v1/classify") { request, _ in
            try await compute(request) { images, model in
                let topK = try query(request, "top_k", default: 3, range: 1...model.model.classCount)
                return { service.classify(images, model: model, topK: topK) }
            }
        }
        router.post("/v1/embed") { request, _ in
            try await compute(request) { images, model in
                { service.embed(images, model: model) }
            }
        }
        router.post("/v1/similar") { request, _ in
            try await compute(request) { images, model in
                let k = try query(request, "k", default: 5, range: 1...configuration.maxSimilar)
                guard model.name == service.models[0].name else {
                    throw APIError(.badRequest, "invalid_argument", "the index was built with model \"\(service.models[0].name)\"; omit ?model= or name that one")
                }
                guard service.index != nil else {
                    throw APIError(.notFound, "no_index", "this server has no index of covers: start it with --index FOLDER")
                }
                return { try service.similar(images, k: k) }
            }
        }
        router.get("/v1/models") { _, _ in json(service.modelsJSON) }
        router.get("/v1/index/{id}") { _, context in
            guard let id = context.parameters.get("id", as: Int.self) else { return error(APIError(.notFound, "not_found", "no such index entry")) }
            do {
                let file = try service.indexFile(id)
                return Response(status: .ok, headers: [.contentType: file.mediaType, .cacheControl: "max-age=3600"],
                                body: .init(byteBuffer: ByteBuffer(bytes: file.bytes)))
            } catch let e as APIError { return error(e) }
        }
        router.get("/healthz") { _, _ in json(["status": "ok"]) }
        router.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(bytes: metrics.registry.emitToBuffer())))
        }
        for (path, type, text) in [("/", "text/html", WebPage.html), ("/app.js", "text/javascript", WebPage.javascript),
                                   ("/app.css", "text/css", WebPage.css), ("/favicon.svg", "image/svg+xml", WebPage.icon),
                                   ("/favicon.ico", "image/svg+xml", WebPage.icon)] {
            router.get(RouterPath(path)) { _, _ in
                Response(status: .ok, headers: [.contentType: type + "; charset=utf-8", .contentSecurityPolicy: WebPage.contentSecurityPolicy],
                         body: .init(byteBuffer: ByteBuffer(string: text)))
            }
        }
    }

    /// A compute request: bounded in flight, body read within its limit, images split out, the
    /// model chosen, then `prepare`'s work run on a compute lane; the answer is the model's name and
    /// each image's result. Every failure is a JSON error.
    func compute(_ request: Request,
                 prepare: ([CoverService.Image], CoverService.LoadedModel) throws -> @Sendable () throws -> [CoverService.ImageResult])
        async throws -> Response {
        guard inFlight.enter() else {
            metrics.rejected.increment()
            return error(APIError(.serviceUnavailable, "busy", "the server is serving \(inFlight.limit) requests; try again shortly", retryAfter: 1))
        }
        defer { inFlight.leave() }
        do {
            let model = try service.model(named: request.uri.queryParameters["model"].map(String.init))
            let images = try await readImages(request)
            let work = try prepare(images, model)
            let queued = Clock.seconds, timeout = configuration.timeoutSeconds
            let outcome: Result<[CoverService.ImageResult], APIError> = await lanes.run {
                guard Clock.seconds - queued <= timeout else {
                    return .failure(APIError(.serviceUnavailable, "timeout", "the request waited \(Int(timeout)) s for a compute thread", retryAfter: 1))
                }
                do { return .success(try work()) } catch let e as APIError { return .failure(e) } catch {
                    return .failure(APIError(.internalServerError, "internal", "\(error)"))
                }
            }
            switch outcome {
            case .success(let results):
                metrics.images.increment(by: Int64(images.count))
                var body: [String: JSON] = ["model": .string(model.name), "results": .array(results.map(\.json))]
                // Every image failed: the request as a whole is unprocessable, with each image's error.
                let failures = results.compactMap(\.failure)
                if let first = failures.first, failures.count == results.count {
                    body["error"] = first.json
                    return json(.object(body), status: results.count == 1 ? first.status : .unprocessableContent)
                }
                return json(.object(body))
            case .failure(let e): return error(e)
            }
        } catch let e as APIError {
            return error(e)
        }
    }

    /// The request's images: the body itself (an image content type or none), or every file part
    /// of a multipart/form-data body.
    func readImages(_ request: Request) async throws -> [CoverService.Image] {
        var request = request
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: configuration.maxBodyBytes)
        } catch let e as HTTPResponseError where e.status == .contentTooLarge {
            throw APIError(.contentTooLarge, "limit_exceeded", "the body is larger than \(configuration.maxBodyBytes) bytes (--max-body-bytes)")
        }
        let bytes = Array(body.readableBytesView)
        let contentType = request.headers[.contentType] ?? ""
        let multipart: String?
        do { multipart = try Multipart.boundary(contentType: contentType) } catch {
            throw APIError(.badRequest, "invalid_argument", "\(error)")
        }
        if let boundary = multipart {
            let parts: [MultipartPart]
            do {
                parts = try Multipart.parse(bytes, boundary: boundary, maxParts: configuration.maxImages + 16)
            } catch {
                throw APIError(.badRequest, "invalid_argument", "malformed multipart body: \(error)")
            }
            let files = parts.filter { $0.filename != nil || $0.contentType?.lowercased().hasPrefix("image/") == true }
            guard !files.isEmpty else { throw APIError(.badRequest, "invalid_argument", "the multipart body has no file part") }
            guard files.count <= configuration.maxImages else {
                throw APIError(.contentTooLarge, "limit_exceeded", "\(files.count) images in one request; at most \(configuration.maxImages) (--max-images)")
            }
            return files.enumerated().map { i, part in
                CoverService.Image(name: part.filename ?? part.name ?? "image\(i + 1)", bytes: Array(part.body))
            }
        }
        let type = contentType.split(separator: ";").first.map { $0.trimmingSpaces.lowercased() } ?? ""
        guard type.isEmpty || type.hasPrefix("image/") || type == "application/octet-stream" else {
            throw APIError(.unsupportedMediaType, "unsupported_media_type",
                           "content type \"\(type)\": send the image as the body (image/jpeg, image/png, image/webp or application/octet-stream) or as multipart/form-data")
        }
        guard !bytes.isEmpty else { throw APIError(.badRequest, "invalid_argument", "the body is empty: send an image") }
        return [CoverService.Image(name: "image", bytes: bytes)]
    }

    /// An integer query parameter in `range`, or `fallback` when absent.
    func query(_ request: Request, _ key: String, default fallback: Int, range: ClosedRange<Int>) throws -> Int {
        guard let text = request.uri.queryParameters[Substring(key)] else { return fallback }
        guard let value = Int(text), range.contains(value) else {
            throw APIError(.badRequest, "invalid_argument", "\(key) must be an integer from \(range.lowerBound) to \(range.upperBound), not \"\(text)\"")
        }
        return value
    }
}

func json(_ value: JSON, status: HTTPResponse.Status = .ok) -> Response {
    Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: value.serialized + "\n")))
}

func error(_ e: APIError) -> Response {
    var response = json(["error": e.json], status: e.status)
    if let seconds = e.retryAfter { response.headers[.retryAfter] = String(seconds) }
    return response
}

/// Request counts and latencies per route and status, in-flight requests, images processed and
/// requests refused, in the Prometheus text format (swift-prometheus, one registry per server:
/// no process-global metrics state). Unknown paths are counted under one label, so a scanner
/// cannot grow the label set.
struct MetricsRecorder: RouterMiddleware {
    typealias Context = BasicRequestContext
    let registry = PrometheusCollectorRegistry()
    let images: Prometheus.Counter
    let rejected: Prometheus.Counter
    let inFlight: InFlight
    static let buckets: [Duration] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10].map { .milliseconds(Int64($0 * 1000)) }

    init(inFlight: InFlight) {
        self.inFlight = inFlight
        images = registry.makeCounter(name: "covergenre_images_total", help: "Images classified, embedded or searched.")
        rejected = registry.makeCounter(name: "covergenre_requests_rejected_total", help: "Requests refused with 503 because too many were in flight.")
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        let gauge = registry.makeGauge(name: "covergenre_requests_in_flight", help: "Compute requests being served.")
        var status = HTTPResponse.Status.internalServerError
        defer {
            let route = context.endpointPath ?? "unmatched"
            registry.makeCounter(name: "covergenre_http_requests_total", labels: [("route", route), ("status", String(status.code))],
                                 help: "HTTP requests by route and status.").increment()
            registry.makeDurationHistogram(name: "covergenre_http_request_duration_seconds", labels: [("route", route)],
                                           buckets: Self.buckets, help: "Time from request to response.").record(ContinuousClock.now - start)
            gauge.set(to: Double(inFlight.current))
        }
        do {
            let response = try await next(request, context)
            status = response.status
            return response
        } catch let e as HTTPResponseError {
            // Hummingbird's own errors (unknown route, wrong method) as the API's JSON errors.
            status = e.status
            let code = e.status == .notFound ? "not_found" : e.status == .methodNotAllowed ? "method_not_allowed" : "http_error"
            return error(APIError(e.status, code, e.status == .notFound ? "no route \(request.method) \(request.uri.path)" : "\(e.status)"))
        }
    }
}
