import KianaServer

/// The one error type of KianaNode (configuration, data directory, command input).
public struct KianaNodeError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public init(_ name: String) { self.name = name }
        public var description: String { name }

        public static let invalidInput = Code("invalid-input")
        public static let dataDirectory = Code("data-directory")
        public static let keyFile = Code("key-file")
        public static let notInitialized = Code("not-initialized")
        public static let alreadyInitialized = Code("already-initialized")
        public static let verificationFailed = Code("verification-failed")
        public static let io = Code("io")
        public static let notRunning = Code("not-running")
        public static let network = Code("network")
        /// Too many requests wait for the language model.
        public static let busy = Code("busy")
        /// The request conflicts with work in progress (another ingestion).
        public static let conflict = Code("conflict")
    }

    public var code: Code
    public var message: String
    public var cause: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String { message }
}

extension KianaNodeError: CodedError { public var codeName: String { code.name } }
