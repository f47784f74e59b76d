import KianaCore

/// The one error type of KianaStore.
public struct KianaStoreError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public init(_ name: String) { self.name = name }
        public var description: String { name }

        public static let notInitialized = Code("not-initialized")
        public static let alreadyInitialized = Code("already-initialized")
        public static let notFound = Code("not-found")
        public static let ambiguous = Code("ambiguous")
        public static let notAuthority = Code("not-authority")
        public static let corrupt = Code("corrupt")
        public static let conflict = Code("conflict")
        public static let invalidInput = Code("invalid-input")
        public static let database = Code("database")
    }

    public var code: Code
    public var message: String
    /// For `.corrupt`: the block height concerned, when known.
    public var height: UInt64?
    public var cause: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, height: UInt64? = nil, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.height = height
        self.cause = cause
    }

    public var description: String {
        var s = message
        if let cause { s += " (\(cause))" }
        return s
    }
}
