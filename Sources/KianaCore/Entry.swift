/// What an entry does; a string so new kinds can be added without breaking the encoding.
public struct EntryKind: Hashable, Sendable, CustomStringConvertible, ExpressibleByStringLiteral {
    public let rawValue: String
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public init(stringLiteral value: String) { self.rawValue = value }
    public var description: String { rawValue }

    public static let knowledgePut: EntryKind = "knowledge.put"
    public static let knowledgeDelete: EntryKind = "knowledge.delete"
    /// A membership vote (payload: `Vote`).
    public static let authorityVote: EntryKind = "authority.vote"

    /// Kinds this version validates and applies. Unknown kinds are rejected, not skipped.
    public static let known: Set<EntryKind> = [.knowledgePut, .knowledgeDelete, .authorityVote]
}

/// Size limits for untrusted ledger data.
public enum LedgerLimits {
    public static let maxEntryBytes = 1 << 20
    public static let maxEntriesPerBlock = 10_000
    public static let maxHeaderBytes = 64 * 1024
    /// A whole encoded block (decision 113): what a device seals stays far below it (at most
    /// 1 MiB of entries and a header), and every valid block fits one sync batch and one link
    /// message, so no block an authority can sign is one that peers cannot pass on.
    public static let maxBlockBytes = 2 << 20
    /// How far in the future (ms) a block or entry timestamp may be before it is absurd.
    public static let maxClockDrift: UInt64 = 10 * 60 * 1000
}

/// The unit of change in the ledger, signed by its author.
///
/// Entry ID = SHA-256 of the canonical CBOR of the entry *without* its signature; the author
/// signs `"KIANA-ENTRY-V1" ‖ ID`. Applying the same entry twice is therefore a no-op.
public struct Entry: Hashable, Sendable {
    public static let version: UInt64 = 1
    /// Prefix of the signed message (domain separation).
    public static let domain = Array("KIANA-ENTRY-V1".utf8)

    public let network: [UInt8]
    public let author: [UInt8]
    public let sequence: UInt64
    public let hlc: HLC
    public let kind: EntryKind
    public let payload: CBOR
    public let signature: [UInt8]
    /// Content address (32 bytes).
    public let id: [UInt8]

    /// Creates and signs an entry.
    public init(signedBy identity: DeviceIdentity, network: [UInt8], sequence: UInt64, hlc: HLC, kind: EntryKind, payload: CBOR) {
        self.network = network
        self.author = identity.publicKey
        self.sequence = sequence
        self.hlc = hlc
        self.kind = kind
        self.payload = payload
        let id = SHA.hash(Entry.unsignedCBOR(network: network, author: author, sequence: sequence, hlc: hlc, kind: kind, payload: payload).encoded)
        self.id = id
        self.signature = identity.sign(Entry.domain + id)
    }

    static func unsignedCBOR(network: [UInt8], author: [UInt8], sequence: UInt64, hlc: HLC, kind: EntryKind, payload: CBOR) -> CBOR {
        .map([
            "v": .unsigned(version),
            "net": .bytes(network),
            "author": .bytes(author),
            "seq": .unsigned(sequence),
            "hlc": hlc.cbor,
            "kind": .text(kind.rawValue),
            "payload": payload,
        ])
    }

    /// The signed form, as stored and sent.
    public var cbor: CBOR {
        guard case .map(var m) = Entry.unsignedCBOR(network: network, author: author, sequence: sequence, hlc: hlc, kind: kind, payload: payload) else {
            fatalError("unreachable")
        }
        m["sig"] = .bytes(signature)
        return .map(m)
    }

    public var encoded: [UInt8] { cbor.encoded }

    /// Decodes a signed entry from untrusted bytes (structure only; call `verifySignature`).
    public init(decoding bytes: [UInt8]) throws(KianaCoreError) {
        guard bytes.count <= LedgerLimits.maxEntryBytes else {
            throw KianaCoreError(.malformedEncoding, "entry of \(bytes.count) bytes exceeds \(LedgerLimits.maxEntryBytes)")
        }
        try self.init(cbor: CBOR.decode(bytes))
    }

    public init(cbor: CBOR) throws(KianaCoreError) {
        var m = try cbor.mapValue("entry")
        try m.onlyKeys(KeySets.entry, in: "entry")
        guard try m.required("v", in: "entry").uintValue("entry version") == Entry.version else {
            throw KianaCoreError(.invalidStructure, "unsupported entry version")
        }
        network = try m.required("net", in: "entry").bytesValue("entry net", count: 32)
        author = try m.required("author", in: "entry").bytesValue("entry author", count: 32)
        sequence = try m.required("seq", in: "entry").uintValue("entry seq")
        hlc = try HLC(cbor: m.required("hlc", in: "entry"))
        kind = EntryKind(try m.required("kind", in: "entry").textValue("entry kind"))
        payload = try m.required("payload", in: "entry")
        signature = try m.required("sig", in: "entry").bytesValue("entry sig", count: 64)
        m["sig"] = nil
        let unsigned = CBOR.map(m).encoded
        // The whole entry's size, from the bytes hashed for its ID: the signature adds its key
        // ("sig", 4 bytes), a 2-byte head and 64 bytes. Checked here, where every entry is
        // decoded (a block from the wire or an export, the store): an entry the store would
        // refuse to read back must not get in, or a device holding it could not start.
        guard unsigned.count + 70 <= LedgerLimits.maxEntryBytes else {
            throw KianaCoreError(.malformedEncoding, "entry of \(unsigned.count + 70) bytes exceeds \(LedgerLimits.maxEntryBytes)")
        }
        id = SHA.hash(unsigned)
    }

    /// Checks the author's Ed25519 signature over the entry ID.
    public func verifySignature() -> Bool {
        Signature.verify(signature, message: Entry.domain + id, publicKey: author)
    }

    public var authorID: DeviceID { DeviceID(publicKey: author) }
    public var idHex: String { Hex.encode(id) }
}

/// Allowed map keys, built once.
extension KeySets {
    static let entry: Set<String> = ["v", "net", "author", "seq", "hlc", "kind", "payload", "sig"]
}
