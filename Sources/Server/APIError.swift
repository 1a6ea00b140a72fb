import HTTPTypes
import ModelFormat
import SystemIO

/// A request's failure as the API reports it: an HTTP status and a JSON body
/// `{"error": {"code": "...", "message": "..."}}`, where the message is the library's own when
/// the library refused the input.
struct APIError: Error {
    let status: HTTPResponse.Status
    let code: String
    let message: String
    /// Seconds before trying again (503).
    var retryAfter: Int?

    init(_ status: HTTPResponse.Status, _ code: String, _ message: String, retryAfter: Int? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.retryAfter = retryAfter
    }

    /// The library's error for one image: the input's fault (422) unless the library itself failed.
    init(_ error: CoverGenreError) {
        let status: HTTPResponse.Status
        switch error.code {
        case .outOfMemory, .internal: status = .internalServerError
        case .limitExceeded, .imageTooLarge: status = .contentTooLarge
        default: status = .unprocessableContent
        }
        self.init(status, APIError.name(error.code), error.message)
    }

    var json: JSON { ["code": .string(code), "message": .string(message)] }

    /// The C API's names, lower case: `CG_ERR_IMAGE_DECODE` is "image_decode".
    static func name(_ code: CoverGenreError.Code) -> String {
        switch code {
        case .invalidArgument: return "invalid_argument"
        case .io: return "io"
        case .modelFormat: return "model_format"
        case .modelUnsupported: return "model_unsupported"
        case .checksum: return "checksum"
        case .imageDecode: return "image_decode"
        case .imageUnsupported: return "image_unsupported"
        case .imageTooLarge: return "image_too_large"
        case .bufferTooSmall: return "buffer_too_small"
        case .outOfMemory: return "out_of_memory"
        case .internal: return "internal"
        case .limitExceeded: return "limit_exceeded"
        }
    }
}
