/// What `covergenre serve` was told: models, address, index and the safety limits.
public struct ServerConfiguration: Sendable {
    /// (name, path) per model; the first is the default. A model's name is NAME in `NAME=PATH`,
    /// else its file name without `.cgm`.
    public var models: [(name: String, path: String)] = []
    public var host = "127.0.0.1"
    public var port = 8080
    /// Folder of covers for `/v1/similar`, embedded once at start with the default model.
    public var index: String?
    /// Threads per model call (0 = every core), as `ModelOptions.threads`.
    public var threads = 0
    /// `ModelOptions.mirrorView` for every model (nil: as each model file says).
    public var mirrorView: Bool? = nil
    /// Largest request body accepted (413 beyond).
    public var maxBodyBytes = 32 << 20
    /// Images per request (413 beyond).
    public var maxImages = 16
    /// Requests served at once; one more gets 503 with Retry-After.
    public var maxInFlight = 64
    /// A request still waiting for a compute thread after this long gets 503; a connection idle
    /// for this long (a client that stopped sending) is closed.
    public var timeoutSeconds = 30.0
    /// Most covers `/v1/similar` returns per image.
    public var maxSimilar = 100

    public init() {}

    /// `NAME=PATH` or `PATH` as (name, path).
    public static func modelArgument(_ argument: String) -> (name: String, path: String) {
        if let eq = argument.firstIndex(of: "="), !argument[..<eq].contains("/") {
            return (String(argument[..<eq]), String(argument[argument.index(after: eq)...]))
        }
        var name = argument.split(separator: "/").last.map(String.init) ?? argument
        if name.hasSuffix(".cgm") { name.removeLast(4) }
        return (name, argument)
    }
}
