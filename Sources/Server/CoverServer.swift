import CoverGenre
import Hummingbird
import HTTPTypes
import Kernels
import Logging
import ModelFormat
import NIOCore
import Prometheus
import Service
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

/// The routes: each reads like docs/openapi.json, answers with a `Codable` type from `Service`
/// and throws `ServiceError`, which Hummingbird turns into the JSON error response
/// (`HTTPResponseError`, below).
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
        router.post("/v1/classify") { request, context in
            try await compute(request, context) { images, model in
                let topK = try query(request, "top_k", default: 3, range: 1...model.model.classCount)
                return { service.classify(images, model: model, topK: topK) }
            }
        }
        router.post("/v1/embed") { request, context in
            try await compute(request, context) { images, model in
                { service.embed(images, model: model) }
            }
        }
        router.post("/v1/similar") { request, context in
            try await compute(request, context) { images, model in
                let k = try query(request, "k", default: 5, range: 1...configuration.maxSimilar)
                guard model.name == service.models[0].name else {
                    throw ServiceError(.badRequest, "invalid_argument", "the index was built with model \"\(service.models[0].name)\"; omit ?model= or name that one")
                }
                return { try service.similar(images, k: k) }
            }
        }
        router.get("/v1/models") { _, _ in service.modelsResponse }
        router.get("/v1/index/{id}") { _, context in
            guard let id = context.parameters.get("id", as: Int.self) else { throw ServiceError(.notFound, "not_found", "no such index entry") }
            let file = try service.indexFile(id)
            return Response(status: .ok, headers: [.contentType: file.mediaType, .cacheControl: "max-age=3600"],
                            body: .init(byteBuffer: ByteBuffer(bytes: file.bytes)))
        }
        router.get("/healthz") { _, _ in Health() }
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
    /// each image's result (a `ResultsResponse`), or, when every image failed, the same body with
    /// the failure's status.
    func compute(_ request: Request, _ context: BasicRequestContext,
                 prepare: ([CoverService.Image], CoverService.LoadedModel) throws -> @Sendable () throws -> [ImageResult])
        async throws -> EditedResponse<ResultsResponse> {
        guard inFlight.enter() else {
            metrics.rejected.increment()
            throw ServiceError(.busy, "busy", "the server is serving \(inFlight.limit) requests; try again shortly", retryAfter: 1)
        }
        defer { inFlight.leave() }
        let model = try service.model(named: request.uri.queryParameters["model"].map(String.init))
        let images = try service.images(body: try await body(request), contentType: request.headers[.contentType] ?? "")
        let work = try prepare(images, model)
        let queued = Clock.seconds, timeout = configuration.timeoutSeconds
        let outcome: Result<[ImageResult], ServiceError> = await lanes.run {
            guard Clock.seconds - queued <= timeout else {
                return .failure(ServiceError(.busy, "timeout", "the request waited \(Int(timeout)) s for a compute thread", retryAfter: 1))
            }
            do { return .success(try work()) } catch let e as ServiceError { return .failure(e) } catch {
                return .failure(ServiceError(.internal, "internal", "\(error)"))
            }
        }
        let results = try outcome.get()
        metrics.images.increment(by: Int64(images.count))
        let (response, failure) = CoverService.response(model: model.name, results: results)
        return EditedResponse(status: failure?.status ?? .ok, response: response)
    }

    /// The request body, within --max-body-bytes.
    func body(_ request: Request) async throws -> [UInt8] {
        var request = request
        do {
            return Array(try await request.collectBody(upTo: configuration.maxBodyBytes).readableBytesView)
        } catch let e as HTTPResponseError where e.status == .contentTooLarge {
            throw ServiceError(.tooLarge, "limit_exceeded", "the body is larger than \(configuration.maxBodyBytes) bytes (--max-body-bytes)")
        }
    }

    /// An integer query parameter in `range`, or `fallback` when absent.
    func query(_ request: Request, _ key: String, default fallback: Int, range: ClosedRange<Int>) throws(ServiceError) -> Int {
        guard let text = request.uri.queryParameters[Substring(key)] else { return fallback }
        guard let value = Int(text), range.contains(value) else {
            throw ServiceError(.badRequest, "invalid_argument", "\(key) must be an integer from \(range.lowerBound) to \(range.upperBound), not \"\(text)\"")
        }
        return value
    }
}

// The service's types as Hummingbird responses: encoded by the context's JSON encoder.
extension ResultsResponse: ResponseEncodable {}
extension ModelsResponse: ResponseEncodable {}
extension Health: ResponseEncodable {}

/// `{"error": {...}}`, the body of every failed request.
struct ErrorResponse: ResponseEncodable {
    let error: ErrorBody

    /// Encoded by the context's encoder, with the failure's status.
    func response(status: HTTPResponse.Status, from request: Request, context: some RequestContext) throws -> Response {
        var response = try response(from: request, context: context)
        response.status = status
        return response
    }
}

/// A `ServiceError` thrown by a route becomes its JSON error response with the status its kind
/// maps to (and Retry-After when it has one): Hummingbird writes it, no route catches by hand.
extension ServiceError: HTTPResponseError {
    public var status: HTTPResponse.Status {
        switch kind {
        case .badRequest: return .badRequest
        case .notFound: return .notFound
        case .tooLarge: return .contentTooLarge
        case .unsupportedMediaType: return .unsupportedMediaType
        case .unprocessable: return .unprocessableContent
        case .busy: return .serviceUnavailable
        case .internal: return .internalServerError
        }
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = try ErrorResponse(error: body).response(status: status, from: request, context: context)
        if let retryAfter { response.headers[.retryAfter] = String(retryAfter) }
        return response
    }
}

/// Hummingbird's own refusals (no such route, wrong method) with the API's error body.
struct RoutingError: HTTPResponseError {
    let status: HTTPResponse.Status
    let body: ErrorBody

    func response(from request: Request, context: some RequestContext) throws -> Response {
        try ErrorResponse(error: body).response(status: status, from: request, context: context)
    }
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
        } catch let e as ServiceError {
            status = e.status
            throw e
        } catch let e as HTTPResponseError {
            // Hummingbird's own errors (unknown route, wrong method) as the API's JSON errors.
            status = e.status
            let code = e.status == .notFound ? "not_found" : e.status == .methodNotAllowed ? "method_not_allowed" : "http_error"
            throw RoutingError(status: e.status, body: ErrorBody(code: code, message: e.status == .notFound ? "no route \(request.method) \(request.uri.path)" : "\(e.status)"))
        }
    }
}
