/// The one error type of KianaCore: a stable, extensible `code`, a human message,
/// optional location (block height) and an optional underlying cause.
public struct KianaCoreError: Error, Sendable, CustomStringConvertible, Equatable {
    /// Extensible error code; compare codes, never messages.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public init(_ name: String) { self.name = name }
        public var description: String { name }

        /// Bytes that are not valid deterministic CBOR (or exceed a limit).
        public static let malformedEncoding = Code("malformed-encoding")
        /// A well-formed value with the wrong shape (missing field, wrong type).
        public static let invalidStructure = Code("invalid-structure")
        /// A ledger rule was broken; `rule` names it.
        public static let invalidBlock = Code("invalid-block")
        /// An entry that fails its own checks (signature, author…).
        public static let invalidEntry = Code("invalid-entry")
        /// A Merkle proof that does not verify.
        public static let invalidProof = Code("invalid-proof")
        /// A device ID whose text form is wrong or whose check character does not match.
        public static let invalidDeviceID = Code("invalid-device-id")
        /// Key material of the wrong size or form.
        public static let invalidKey = Code("invalid-key")
    }

    public var code: Code
    public var message: String
    /// For `.invalidBlock`: the height of the block that broke a rule.
    public var height: UInt64?
    /// For `.invalidBlock`/`.invalidEntry`: the rule broken (see `LedgerRule`).
    public var rule: LedgerRule?
    public var cause: String?

    public init(_ code: Code, _ message: String, height: UInt64? = nil, rule: LedgerRule? = nil, cause: String? = nil) {
        self.code = code
        self.message = message
        self.height = height
        self.rule = rule
        self.cause = cause
    }

    public var description: String {
        var s = ""
        if let height { s += "block \(height): " }
        if let rule { s += "[\(rule.rawValue)] " }
        s += message
        if let cause { s += " (\(cause))" }
        return s
    }
}

/// The ledger rules a block or entry can break; each has a stable name used in errors.
public enum LedgerRule: String, Sendable, CaseIterable {
    case encoding = "encoding"
    case version = "version"
    case genesis = "genesis"
    case height = "height"
    case parentHash = "parent-hash"
    case blockSignature = "block-signature"
    case authority = "authority"
    case merkleRoot = "merkle-root"
    case entryCount = "entry-count"
    case emptyBlock = "empty-block"
    case duplicateEntry = "duplicate-entry"
    case entrySignature = "entry-signature"
    case entryAuthor = "entry-author"
    case network = "network"
    case sequence = "sequence"
    case timestamp = "timestamp"
    case payload = "payload"
}
