/// The one error type of CoverGenre's core: a stable code (the C API's `cg_status`) and a
/// sentence for a human. Every failure on bad input is one of these, never a trap.
public struct CoverGenreError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Code: Int32, Sendable, CaseIterable {
        case invalidArgument = 1
        case io = 2
        case modelFormat = 3
        case modelUnsupported = 4
        case checksum = 5
        case imageDecode = 6
        case imageUnsupported = 7
        case imageTooLarge = 8
        case bufferTooSmall = 9
        case outOfMemory = 10
        case `internal` = 11
        case limitExceeded = 12
        case noCover = 13
        case audioDecode = 14

        /// The status's one name, lower case: `CG_ERR_IMAGE_DECODE` is "image_decode". The C API
        /// (`cg_status_string`), the HTTP API's error codes and the CLI all use this list.
        public var name: String {
            switch self {
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
            case .noCover: return "no_cover"
            case .audioDecode: return "audio_decode"
            }
        }
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
