/// The one error type of KianaAI: a stable, extensible code and an optional cause.
///
/// The module's features arrive with their issues (see docs/architecture.md); the error type
/// is here from the start so the layering and the HTTP error mapping have their final shape.
public struct KianaAIError: Error, Sendable, CustomStringConvertible {
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

extension KianaAIError.Code {
    /// A model file is not where it should be.
    public static let modelMissing = Self("modelMissing")
    /// A model file exists but is damaged or of the wrong kind.
    public static let modelCorrupt = Self("modelCorrupt")
    /// The caller passed something unusable (empty query, bad option, unreadable path).
    public static let invalidInput = Self("invalidInput")
    /// A file could not be read or converted to text for ingestion.
    public static let ingest = Self("ingest")
    /// The vector index file is damaged or does not match the store.
    public static let index = Self("index")
    /// A needed external tool (such as pdftotext) is not installed.
    public static let toolMissing = Self("toolMissing")
    /// A prompt does not fit the model's context window.
    public static let contextFull = Self("contextFull")
    /// A language model backend (Ollama, an OpenAI-compatible server) failed or cannot be reached.
    public static let backend = Self("backend")
}
