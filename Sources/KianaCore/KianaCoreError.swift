/// The one error type of KianaCore: a stable, extensible `code`, a human message,
/// optional location (block height) and an optional underlying cause.
public struct KianaCoreError: KianaError, Equatable {
    /// The code, from the closed set all modules share.
    public typealias Code = ErrorCode

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
