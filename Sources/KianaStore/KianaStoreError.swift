import KianaCore

/// The one error type of KianaStore: a code from the closed set all modules share
/// (`ErrorCode`), a message for people and an optional cause.
public struct KianaStoreError: KianaError {
    public typealias Code = ErrorCode

    public var code: ErrorCode
    public var message: String
    /// For `.corrupt`: the block height concerned, when known.
    public var height: UInt64?
    public var cause: (any Error & Sendable)?

    public init(_ code: ErrorCode, _ message: String, height: UInt64? = nil, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.height = height
        self.cause = cause
    }

    public var description: String { cause.map { "\(message) (\($0))" } ?? message }
}
