/// The one error type of CoverGenre's core: a stable code (the C API's `cg_status`) and a
/// sentence for a human. Every failure on bad input is one of these, never a trap.
public struct CoverGenreError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Code: Int32, Sendable {
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
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
