import Foundation
import KianaCore
import KianaStore

/// The JSON export of a ledger. Readable fields are for people; on import only `cbor`
/// (the canonical block bytes) is trusted, and the readable fields must agree with it.
public struct LedgerExport: Codable, Sendable {
    public static let formatName = "kiana-ledger"

    public struct ExportedEntry: Codable, Sendable {
        public var id: String
        public var author: String
        public var seq: UInt64
        public var hlc: String
        public var kind: String
    }

    public struct ExportedBlock: Codable, Sendable {
        public var height: UInt64
        public var hash: String
        public var signer: String
        public var time: UInt64
        public var entries: [ExportedEntry]
        /// Base64 of the block's canonical CBOR `{"header","sig","entries"}`.
        public var cbor: String
    }

    public var format: String
    public var version: Int
    public var network: String
    public var height: UInt64
    public var blocks: [ExportedBlock]
}

extension Node {
    /// The ledger as an export. A ledger that does not verify is not exported: `kiana import`
    /// would refuse the file, and a scheduled export would keep only files nobody can import.
    public func exportLedger() throws -> Data {
        let blocks = try store.blocks()
        guard let net = try store.network() else { throw KianaNodeError(.notInitialized, "nothing to export") }
        do throws(KianaCoreError) {
            _ = try ChainValidator.validate(encodedBlocks: blocks.map(\.encoded), now: currentMillis())
        } catch {
            throw Self.unverifiable(directory, error.description, copy: "an export of it could not be imported", cause: error)
        }
        let export = LedgerExport(
            format: LedgerExport.formatName, version: 1, network: Hex.encode(net), height: blocks.last?.height ?? 0,
            blocks: blocks.map { b in
                LedgerExport.ExportedBlock(
                    height: b.height, hash: b.hashHex, signer: DeviceID(publicKey: b.header.signer).description, time: b.header.time,
                    entries: b.entries.map {
                        .init(id: $0.idHex, author: $0.authorID.description, seq: $0.sequence, hlc: $0.hlc.description, kind: $0.kind.rawValue)
                    },
                    cbor: Data(b.encoded).base64EncodedString())
            })
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try enc.encode(export)
    }

    /// Parses and fully validates an export; returns its blocks, genesis first.
    public static func validateExport(_ data: Data, now: UInt64 = currentMillis()) throws -> (blocks: [Block], state: LedgerState) {
        let export: LedgerExport
        do {
            export = try JSONDecoder().decode(LedgerExport.self, from: data)
        } catch {
            throw KianaNodeError(.invalidInput, "not a KI_ana ledger export (JSON does not match the format)")
        }
        guard export.format == LedgerExport.formatName, export.version == 1 else {
            throw KianaNodeError(.invalidInput, "unsupported export format \(export.format) version \(export.version)")
        }
        var encoded: [[UInt8]] = []
        for (i, b) in export.blocks.enumerated() {
            guard let d = Data(base64Encoded: b.cbor) else {
                throw KianaNodeError(.invalidInput, "block \(i) of the export is not valid base64")
            }
            encoded.append([UInt8](d))
        }
        let state = try validateChain(encoded, now: now)
        var blocks: [Block] = []
        for (i, bytes) in encoded.enumerated() {
            let b = try Block(decoding: bytes)
            let x = export.blocks[i]
            try checkReadableFields(x, against: b, position: i)
            blocks.append(b)
        }
        guard export.network == Hex.encode(state.network) else {
            throw KianaNodeError(.verificationFailed, "export does not verify: its network field disagrees with its genesis block")
        }
        guard export.height == state.height else {
            throw KianaNodeError(
                .verificationFailed,
                "export does not verify: its readable height (\(export.height)) disagrees with its signed bytes (last block \(state.height))")
        }
        return (blocks, state)
    }

    /// Every readable field of an exported block must say what its signed bytes say; an export
    /// whose text was edited is refused rather than imported with a silent disagreement.
    static func checkReadableFields(_ x: LedgerExport.ExportedBlock, against b: Block, position i: Int) throws(KianaNodeError) {
        func fail(_ field: String) -> KianaNodeError {
            KianaNodeError(.verificationFailed, "export does not verify: block \(i)'s readable \(field) disagrees with its signed bytes")
        }
        guard x.height == b.height else { throw fail("height") }
        guard x.hash == b.hashHex else { throw fail("hash") }
        guard x.signer == DeviceID(publicKey: b.header.signer).description else { throw fail("signer") }
        guard x.time == b.header.time else { throw fail("time") }
        guard x.entries.count == b.entries.count else { throw fail("entry list") }
        for (j, (xe, e)) in zip(x.entries, b.entries).enumerated() {
            let field: String? =
                xe.id != e.idHex
                ? "id"
                : xe.author != e.authorID.description
                    ? "author"
                    : xe.seq != e.sequence ? "seq" : xe.hlc != e.hlc.description ? "hlc" : xe.kind != e.kind.rawValue ? "kind" : nil
            if let field { throw fail("entry \(j) \(field)") }
        }
    }

    static func validateChain(_ encoded: [[UInt8]], now: UInt64) throws(KianaNodeError) -> LedgerState {
        do throws(KianaCoreError) {
            return try ChainValidator.validate(encodedBlocks: encoded, now: now)
        } catch {
            throw KianaNodeError(.verificationFailed, "export does not verify: \(error.description)", cause: error)
        }
    }

    /// Imports a verified export into `directory`, creating the node if the directory is empty.
    /// Blocks go through the same path as blocks from peers: a diverging chain is kept as a side
    /// branch or, if it wins fork choice, becomes canonical (abandoned entries return to pending).
    /// Returns the node and what happened to the blocks.
    public static func importLedger(_ data: Data, into directory: DataDirectory, now: UInt64 = currentMillis()) throws -> (Node, outcomes: [ImportOutcome]) {
        let (blocks, state) = try validateExport(data, now: now)
        try directory.create()
        try refuseLostLedgerOrKey(directory)  // as `init`
        let identity: DeviceIdentity
        if directory.hasIdentity { identity = try directory.loadIdentity() } else { identity = try directory.createIdentity() }
        let store = try LedgerStore(database: KianaDatabase(path: directory.databasePath))
        if let net = try store.network(), net != state.network {
            throw KianaNodeError(.invalidInput, "export belongs to network \(Hex.encode(state.network)), this node to \(Hex.encode(net))")
        }
        let outcomes = try store.importBlocks(blocks, now: now)
        // What landed on a side branch here is still the owner's writing: taken into the pending
        // pool, to be sealed on this chain (nothing an export carries is left unapplied).
        if outcomes.contains(.sideBranch) { _ = try store.adoptSideBranchEntries(of: blocks, now: now) }
        return (Node(directory: directory, identity: identity, store: store), outcomes)
    }
}
