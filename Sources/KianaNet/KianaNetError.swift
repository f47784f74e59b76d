/// The one error type of KianaNet: a stable, extensible code and an optional cause.
///
/// The module's features arrive with their issues (see docs/architecture.md); the error type
/// is here from the start so the layering and the HTTP error mapping have their final shape.
public struct KianaNetError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public init(_ name: String) { self.name = name }
        public var description: String { name }
    }

    public var code: Code
    public var message: String
    public var cause: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String { cause.map { "\(message) (\($0))" } ?? message }
}
