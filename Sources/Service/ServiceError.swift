import CoverGenre

/// A request's failure as the service reports it: what kind of failure (the HTTP layer maps each
/// kind to a status), a stable code for programs and a message for people. The message is the
/// library's own when the library refused the input.
public struct ServiceError: Error, Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// The request itself is wrong (a parameter out of range, a malformed body).
        case badRequest
        /// What the request names does not exist (a model, an index entry).
        case notFound
        /// The body, or the number of images in it, is over a limit.
        case tooLarge
        /// The body is neither an image nor multipart/form-data.
        case unsupportedMediaType
        /// The input was read but the library could not use it (a corrupt image, say).
        case unprocessable
        /// The server is at a limit (requests in flight, waiting time); retry later.
        case busy
        /// A failure of the server or library, not of the request.
        case `internal`
    }

    public let kind: Kind
    public let code: String
    public let message: String
    /// Seconds before trying again (`busy`).
    public var retryAfter: Int?

    public init(_ kind: Kind, _ code: String, _ message: String, retryAfter: Int? = nil) {
        self.kind = kind
        self.code = code
        self.message = message
        self.retryAfter = retryAfter
    }

    /// The library's error for one image: the input's fault unless the library itself failed.
    public init(_ error: CoverGenreError) {
        let kind: Kind
        switch error.code {
        case .outOfMemory, .internal: kind = .internal
        case .limitExceeded, .imageTooLarge: kind = .tooLarge
        default: kind = .unprocessable
        }
        self.init(kind, error.code.name, error.message)
    }

    /// The `{"code", "message"}` body of this error.
    public var body: ErrorBody { ErrorBody(code: code, message: message) }
}
