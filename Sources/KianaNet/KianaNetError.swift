#if canImport(KianaCore)
    import KianaCore
#endif

/// The one error type of KianaNet: a code from the closed set all modules share
/// (`ErrorCode`), a message for people and an optional cause.
public struct KianaNetError: KianaError {
    public typealias Code = ErrorCode

    public var code: ErrorCode
    public var message: String
    public var cause: (any Error & Sendable)?
    /// True when the peer reported the error (its code came over the link).
    public var remote: Bool

    public init(_ code: ErrorCode, _ message: String, remote: Bool = false, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.remote = remote
        self.cause = cause
    }

    public var description: String { cause.map { "\(message) (\($0))" } ?? message }
}
