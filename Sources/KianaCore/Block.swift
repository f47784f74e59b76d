/// A block header: everything the signer signs. Block hash = SHA-256 of its canonical CBOR;
/// the signer signs `"KIANA-BLOCK-V1" ‖ hash`.
public struct BlockHeader: Hashable, Sendable {
    public static let version: UInt64 = 1
    public static let zeroHash = [UInt8](repeating: 0, count: 32)

    public var height: UInt64
    public var parent: [UInt8]
    /// Milliseconds since 1970.
    public var time: UInt64
    public var signer: [UInt8]
    /// RFC 6962 root over the block's entry IDs.
    public var entryRoot: [UInt8]
    public var entryCount: UInt64
    /// Genesis only: the first authorities, and an optional network name.
    public var authorities: [[UInt8]]?
    public var name: String?

    public init(
        height: UInt64, parent: [UInt8], time: UInt64, signer: [UInt8], entryRoot: [UInt8], entryCount: UInt64, authorities: [[UInt8]]? = nil,
        name: String? = nil
    ) {
        self.height = height
        self.parent = parent
        self.time = time
        self.signer = signer
        self.entryRoot = entryRoot
        self.entryCount = entryCount
        self.authorities = authorities
        self.name = name
    }

    public var cbor: CBOR {
        var m: [CBOR: CBOR] = [
            "v": .unsigned(BlockHeader.version),
            "height": .unsigned(height),
            "parent": .bytes(parent),
            "time": .unsigned(time),
            "signer": .bytes(signer),
            "root": .bytes(entryRoot),
            "count": .unsigned(entryCount),
        ]
        if let authorities { m["auth"] = .array(authorities.map { .bytes($0) }) }
        if let name { m["name"] = .text(name) }
        return .map(m)
    }

    public var hash: [UInt8] { SHA.hash(cbor.encoded) }

    public init(cbor: CBOR) throws(KianaCoreError) {
        let m = try cbor.mapValue("block header")
        try m.onlyKeys(KeySets.blockHeader, in: "block header")
        guard try m.required("v", in: "header").uintValue("header version") == BlockHeader.version else {
            throw KianaCoreError(.invalidStructure, "unsupported block version")
        }
        height = try m.required("height", in: "header").uintValue("height")
        parent = try m.required("parent", in: "header").bytesValue("parent", count: 32)
        time = try m.required("time", in: "header").uintValue("time")
        signer = try m.required("signer", in: "header").bytesValue("signer", count: 32)
        entryRoot = try m.required("root", in: "header").bytesValue("root", count: 32)
        entryCount = try m.required("count", in: "header").uintValue("count")
        if let a = m["auth"] {
            authorities = try a.arrayValue("auth").map { (x: CBOR) throws(KianaCoreError) in try x.bytesValue("authority", count: 32) }
        }
        if let n = m["name"] { name = try n.textValue("name") }
    }
}

/// A signed block with its entries.
public struct Block: Sendable, Hashable {
    /// Prefix of the signed message (domain separation).
    public static let domain = Array("KIANA-BLOCK-V1".utf8)

    public let header: BlockHeader
    public let signature: [UInt8]
    public let entries: [Entry]
    /// SHA-256 of the header's canonical encoding.
    public let hash: [UInt8]

    public var height: UInt64 { header.height }
    public var hashHex: String { Hex.encode(hash) }

    init(header: BlockHeader, signature: [UInt8], entries: [Entry], hash: [UInt8]) {
        self.header = header
        self.signature = signature
        self.entries = entries
        self.hash = hash
    }

    /// The genesis block of a new network: `identity` is its only authority.
    /// `others` are further initial authorities (for tests and provisioning); normally devices
    /// join by vote.
    public static func genesis(identity: DeviceIdentity, time: UInt64, name: String? = nil, others: [[UInt8]] = []) -> Block {
        let h = BlockHeader(
            height: 0, parent: BlockHeader.zeroHash, time: time, signer: identity.publicKey,
            entryRoot: Merkle.emptyRoot, entryCount: 0, authorities: [identity.publicKey] + others, name: name)
        return sign(h, entries: [], identity: identity)
    }

    /// Seals `entries` into a block on top of `parent`.
    public static func seal(entries: [Entry], parent: BlockHeader, parentHash: [UInt8], time: UInt64, identity: DeviceIdentity) -> Block {
        let h = BlockHeader(
            height: parent.height + 1, parent: parentHash, time: max(time, parent.time),
            signer: identity.publicKey, entryRoot: Block.entryRoot(entries), entryCount: UInt64(entries.count))
        return sign(h, entries: entries, identity: identity)
    }

    static func sign(_ h: BlockHeader, entries: [Entry], identity: DeviceIdentity) -> Block {
        let hash = h.hash
        return Block(header: h, signature: identity.sign(domain + hash), entries: entries, hash: hash)
    }

    public static func entryRoot(_ entries: [Entry]) -> [UInt8] {
        Merkle.root(leaves: entries.map(\.id))
    }

    public func verifySignature() -> Bool {
        Signature.verify(signature, message: Block.domain + hash, publicKey: header.signer)
    }

    /// Header and signature, as stored apart from the entries: `{"header", "sig"}`.
    public var signedHeaderCBOR: CBOR { .map(["header": header.cbor, "sig": .bytes(signature)]) }

    /// The whole block as sent and exported: `{"header", "sig", "entries"}`.
    public var cbor: CBOR {
        .map(["header": header.cbor, "sig": .bytes(signature), "entries": .array(entries.map(\.cbor))])
    }

    public var encoded: [UInt8] { cbor.encoded }

    /// The encoding of the block made of a stored signed header and its entries' stored
    /// encodings, spliced without decoding them (serving sync batches): equal to `encoded`,
    /// since "entries" sorts after "sig" and "header". Nil if the header is not a two-key map.
    public static func splicedEncoding(signedHeaderBytes: [UInt8], entryBytes: [[UInt8]]) -> [UInt8]? {
        guard signedHeaderBytes.first == 0xA2 else { return nil }
        var out: [UInt8] = [0xA3]
        out.reserveCapacity(signedHeaderBytes.count + 16 + entryBytes.reduce(0) { $0 + $1.count })
        out.append(contentsOf: signedHeaderBytes.dropFirst())
        CBOR.text("entries").encode(into: &out)
        CBOR.head(4, UInt64(entryBytes.count), &out)
        for e in entryBytes { out.append(contentsOf: e) }
        return out
    }

    /// Decodes a whole block from untrusted bytes (structure only; see `ChainValidator`).
    public init(decoding bytes: [UInt8]) throws(KianaCoreError) {
        guard bytes.count <= LedgerLimits.maxBlockBytes else {
            throw KianaCoreError(.tooLarge, "block of \(bytes.count) bytes, more than \(LedgerLimits.maxBlockBytes)")
        }
        let limits = CBOR.Limits(maxDepth: 32, maxItems: 64 * (LedgerLimits.maxEntriesPerBlock + 1))
        let m = try CBOR.decode(bytes, limits: limits).mapValue("block")
        try m.onlyKeys(KeySets.block, in: "block")
        let list = try m.required("entries", in: "block").arrayValue("entries")
        guard list.count <= LedgerLimits.maxEntriesPerBlock else {
            throw KianaCoreError(.malformedEncoding, "block has \(list.count) entries, more than \(LedgerLimits.maxEntriesPerBlock)")
        }
        let entries = try list.map { (e: CBOR) throws(KianaCoreError) in try Entry(cbor: e) }
        try self.init(signedHeader: .map(m.filter { $0.key != "entries" }), entries: entries)
    }

    /// Rebuilds a block from a stored signed header and its entries' stored bytes.
    public init(signedHeaderBytes: [UInt8], entryBytes: [[UInt8]]) throws(KianaCoreError) {
        guard signedHeaderBytes.count <= LedgerLimits.maxHeaderBytes else {
            throw KianaCoreError(.malformedEncoding, "block header of \(signedHeaderBytes.count) bytes is too large")
        }
        let entries = try entryBytes.map { (b: [UInt8]) throws(KianaCoreError) in try Entry(decoding: b) }
        try self.init(signedHeader: CBOR.decode(signedHeaderBytes), entries: entries)
    }

    init(signedHeader: CBOR, entries: [Entry]) throws(KianaCoreError) {
        let m = try signedHeader.mapValue("signed header")
        try m.onlyKeys(KeySets.signedHeader, in: "signed header")
        let header = try BlockHeader(cbor: m.required("header", in: "block"))
        let sig = try m.required("sig", in: "block").bytesValue("block sig", count: 64)
        self.init(header: header, signature: sig, entries: entries, hash: header.hash)
    }
}

/// Allowed map keys, built once.
extension KeySets {
    static let blockHeader: Set<String> = ["v", "height", "parent", "time", "signer", "root", "count", "auth", "name"]
    static let block: Set<String> = ["header", "sig", "entries"]
    static let signedHeader: Set<String> = ["header", "sig"]
}
