import KianaCore

/// The one error type of KianaLearn: a code from the closed set all modules share
/// (`ErrorCode`), a message for people and an optional cause.
public struct KianaLearnError: KianaError {
    public typealias Code = ErrorCode

    public var code: ErrorCode
    public var message: String
    public var cause: (any Error & Sendable)?

    public init(_ code: ErrorCode, _ message: String, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String { cause.map { "\(message) (\($0))" } ?? message }
}
