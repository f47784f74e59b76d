// Dependency-free (no imports): the fuzz targets compile it alone with the files they test.

/// What went wrong, as one closed set of codes shared by every KI_ana module. The raw value is
/// the kebab-case spelling used on the wire (HTTP error bodies, link error messages), in logs
/// and in `--json` output. HTTP statuses and CLI lines are chosen from the code alone, each in
/// one place (KianaServer's `ErrorCode.httpStatus`, KianaNode's `ErrorLine`).
public enum ErrorCode: String, Sendable, Hashable, CaseIterable, Codable, CustomStringConvertible {
    // The request or input
    /// Input that is malformed or out of range (empty text, bad option, bad ID form).
    case invalidInput = "invalid-input"
    /// Input over a size limit (a body, a field, an entry).
    case tooLarge = "too-large"
    /// An ID prefix that matches more than one thing.
    case ambiguous
    /// The thing asked for does not exist.
    case notFound = "not-found"
    /// The request conflicts with the current state or with work in progress.
    case conflict
    /// The thing changed since the version the request was based on (HTTP If-Match, 412).
    case changed
    /// Something of that name exists already with other content (an upload; resend to replace it).
    case exists
    /// The data directory already holds a network.
    case alreadyInitialized = "already-initialized"
    /// The data directory holds no network yet.
    case notInitialized = "not-initialized"
    /// This device may not sign for the network.
    case notAuthority = "not-authority"
    /// A token or key that was required is missing or wrong.
    case unauthorized
    /// Too much work is waiting; try again shortly.
    case busy
    /// The data cannot be written here (read-only directory or a degraded ledger).
    case readOnly = "read-only"
    /// A request body of a type this surface does not take (HTTP 415).
    case unsupportedMediaType = "unsupported-media-type"
    /// A request addressed to a host name this node does not answer for (HTTP 421).
    case misdirected
    /// A method the route does not have (HTTP 405).
    case methodNotAllowed = "method-not-allowed"

    // Encoded and signed data
    /// Bytes that are not valid deterministic CBOR, UTF-8 or another wire format.
    case malformedEncoding = "malformed-encoding"
    /// A well-formed value with the wrong shape (missing field, wrong type).
    case invalidStructure = "invalid-structure"
    /// A block that breaks a ledger rule.
    case invalidBlock = "invalid-block"
    /// An entry that fails its own checks (signature, author…).
    case invalidEntry = "invalid-entry"
    /// A Merkle proof that does not verify.
    case invalidProof = "invalid-proof"
    /// A device ID whose form or check character is wrong.
    case invalidDeviceID = "invalid-device-id"
    /// Key material of the wrong size or form.
    case invalidKey = "invalid-key"
    /// Stored data that no longer decodes or verifies.
    case corrupt
    /// Ledger verification failed.
    case verificationFailed = "verification-failed"

    // The machine
    /// The database could not be opened, read or written.
    case database
    /// A file could not be read or written.
    case io
    /// The data directory is missing, unusable or not a directory.
    case dataDirectory = "data-directory"
    /// A key file is missing, damaged or readable by others.
    case keyFile = "key-file"
    /// Another node process holds this data directory.
    case locked
    /// No node is running on this data directory.
    case notRunning = "not-running"
    /// A bug or an unexpected failure.
    case `internal`

    // Local AI
    /// A model file is not where it should be.
    case modelMissing = "model-missing"
    /// A model file is damaged or of the wrong kind.
    case modelCorrupt = "model-corrupt"
    /// A needed external tool (such as pdftotext) is not installed.
    case toolMissing = "tool-missing"
    /// A prompt does not fit the model's context window.
    case contextFull = "context-full"
    /// A language-model backend (Ollama, an OpenAI-compatible server) failed.
    case backend
    /// The vector index is damaged or does not match the store.
    case index
    /// A file could not be read or converted to text for ingestion.
    case ingest

    // Devices and links
    /// A network operation failed (no more specific code applies).
    case network
    /// A peer could not be reached.
    case unreachable
    /// A listener could not be opened.
    case listen
    /// Multicast DNS is unavailable.
    case discovery
    /// The encrypted handshake or the peer's identity failed.
    case handshake
    /// A peer broke the link protocol.
    case protocolViolation = "protocol-violation"
    /// The peer speaks no common protocol version.
    case version
    /// A link was refused (not a member, another network, connected to itself).
    case refused
    /// A link closed before the operation finished.
    case closed
    /// A peer did not answer in time.
    case timeout
    /// The pairing could not go ahead.
    case pairing
    /// The pairing code was not confirmed (yet).
    case notConfirmed = "not-confirmed"
    /// The owner rejected the pairing.
    case rejected
    /// A link request type this device does not know.
    case unknownType = "unknown-type"
    /// A link message kind this device does not know.
    case unknownKind = "unknown-kind"

    public var description: String { rawValue }
}

/// The error protocol every module's one error struct conforms to: a code from the closed
/// set, a message for people, and (in the struct) the cause.
public protocol KianaError: Error, Sendable, CustomStringConvertible {
    var code: ErrorCode { get }
    var message: String { get }
}
