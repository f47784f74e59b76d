import Crypto
import Dispatch
import Foundation
import KianaCore
import KianaStore

/// `kiana bench ledger`: each ledger operation timed beside the raw primitive it rests on,
/// in the same run, reported as a ratio (reference time / our time; 1.0 = as fast as the primitive).
public struct LedgerBench: Sendable {
    public struct Row: Sendable {
        public var name: String
        public var seconds: Double
        public var reference: String
        public var referenceSeconds: Double
        public var ratio: Double { referenceSeconds / seconds }
    }

    public var entries: Int
    public var entriesPerBlock: Int
    public var leaves: Int
    public var repeats: Int
    public var withStore: Bool

    public init(entries: Int = 100_000, entriesPerBlock: Int = 100, leaves: Int = 100_000, repeats: Int = 3, withStore: Bool = true) {
        self.entries = entries
        self.entriesPerBlock = entriesPerBlock
        self.leaves = leaves
        self.repeats = repeats
        self.withStore = withStore
    }

    /// Best of `repeats` wall-clock timings.
    func time(_ body: () throws -> Void) rethrows -> Double {
        var best = Double.infinity
        for _ in 0..<max(1, repeats) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try body()
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        }
        return best
    }

    public func run(progress: (String) -> Void) throws -> [Row] {
        var rows: [Row] = []
        let identity = DeviceIdentity.generate()

        // 1. Merkle root over N leaves vs SHA-256 over the same bytes.
        progress("merkle: \(leaves) leaves")
        let leafData = (0..<leaves).map { i in SHA.hash(withUnsafeBytes(of: UInt64(i).bigEndian) { Array($0) }) }
        var root: [UInt8] = []
        let tMerkle = time { root = Merkle.root(leaves: leafData) }
        var leafBuf = [UInt8](repeating: 0, count: 33)
        var nodeBuf = [UInt8](repeating: 1, count: 65)
        var sink: UInt8 = 0
        let tSHA = time {
            for d in leafData {
                leafBuf.replaceSubrange(1..<33, with: d)
                sink ^= SHA256.hash(data: leafBuf).withUnsafeBytes { $0[0] }
            }
            for i in 0..<(leaves - 1) {
                nodeBuf[1] = UInt8(truncatingIfNeeded: i)
                sink ^= SHA256.hash(data: nodeBuf).withUnsafeBytes { $0[0] }
            }
        }
        rows.append(
            Row(
                name: "Merkle root, \(leaves) leaves", seconds: tMerkle,
                reference: "SHA-256 of the same \(2 * leaves - 1) inputs", referenceSeconds: tSHA))
        _ = (root, sink)

        // 2. Entry and block creation vs raw Ed25519 signing.
        progress("signing \(entries) entries")
        let network = SHA.hash(Array("bench".utf8))
        var signed: [Entry] = []
        signed.reserveCapacity(entries)
        let fields = KnowledgeFields(title: "bench", text: String(repeating: "knowledge ", count: 20))
        let ops = (0..<entries).map { _ in KnowledgeOp.put(ItemID.random(), fields) }
        let tEntries = time {
            signed.removeAll(keepingCapacity: true)
            for (i, op) in ops.enumerated() {
                signed.append(
                    Entry(
                        signedBy: identity, network: network, sequence: UInt64(i + 1),
                        hlc: HLC(wall: 1_700_000_000_000 + UInt64(i)), kind: op.kind, payload: op.payload))
            }
        }
        let msg = [UInt8](repeating: 7, count: 46)
        let tSign = time {
            for _ in 0..<entries { sink ^= identity.sign(msg)[0] }
        }
        rows.append(
            Row(
                name: "create + sign \(entries) entries", seconds: tEntries,
                reference: "Ed25519 sign ×\(entries)", referenceSeconds: tSign))

        progress("sealing blocks")
        let genesis = Block.genesis(identity: identity, time: 1_700_000_000_000)
        var chain: [Block] = []
        let blockCount = (entries + entriesPerBlock - 1) / entriesPerBlock
        let tBlocks = time {
            chain = [genesis]
            var parent = genesis
            for b in 0..<blockCount {
                let slice = Array(signed[(b * entriesPerBlock)..<min(entries, (b + 1) * entriesPerBlock)])
                let blk = Block.seal(
                    entries: slice, parent: parent.header, parentHash: parent.hash,
                    time: 1_700_000_000_000 + UInt64(b), identity: identity)
                chain.append(blk)
                parent = blk
            }
        }
        // The primitives a block rests on: one signature plus the SHA-256 calls of its entry tree.
        let tBlockSign = time {
            for _ in 0..<blockCount {
                sink ^= identity.sign(msg)[0]
                for i in 0..<(2 * entriesPerBlock - 1) {
                    nodeBuf[1] = UInt8(truncatingIfNeeded: i)
                    sink ^= SHA256.hash(data: nodeBuf).withUnsafeBytes { $0[0] }
                }
            }
        }
        rows.append(
            Row(
                name: "seal \(blockCount) blocks of \(entriesPerBlock)", seconds: tBlocks,
                reference: "Ed25519 sign + SHA-256 ×\(2 * entriesPerBlock - 1), ×\(blockCount)", referenceSeconds: tBlockSign))

        // 3. Full-chain validation vs Ed25519 verification of the same signatures on all cores.
        progress("encoding chain")
        let genesisNet = genesis.hash
        // Re-sign entries for the genesis network so the chain is valid end to end.
        let netEntries = signed.enumerated().map { i, e in
            Entry(signedBy: identity, network: genesisNet, sequence: UInt64(i + 1), hlc: e.hlc, kind: e.kind, payload: e.payload)
        }
        chain = [genesis]
        for b in 0..<blockCount {
            let slice = Array(netEntries[(b * entriesPerBlock)..<min(entries, (b + 1) * entriesPerBlock)])
            chain.append(
                Block.seal(
                    entries: slice, parent: chain.last!.header, parentHash: chain.last!.hash,
                    time: 1_700_000_000_000 + UInt64(b), identity: identity))
        }
        let encoded = chain.map(\.encoded)
        let now = currentMillis()
        progress("validating \(entries) entries")
        var state: LedgerState?
        let tValidate = try time { state = try ChainValidator.validate(encodedBlocks: encoded, now: now) }
        guard state?.entryCount == entries else { throw KianaCoreError(.invalidBlock, "bench chain did not validate fully") }
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let tDecode = try time { _ = try ChainValidator.decode(encodedBlocks: encoded) }
        let tHashBytes = time {
            ChainValidator.parallelChunks(count: encoded.count) { range in
                for i in range { _ = SHA256.hash(data: encoded[i]) }
            }
        }
        rows.append(
            Row(
                name: "decode + hash chain (\(encoded.reduce(0) { $0 + $1.count } / 1_000_000) MB, \(cores) cores)", seconds: tDecode,
                reference: "SHA-256 of the same bytes, \(cores) cores", referenceSeconds: tHashBytes))

        // The same signatures and messages, verified raw on all cores.
        var triples: [(key: Curve25519.Signing.PublicKey, msg: [UInt8], sig: [UInt8])] = []
        let key = identity.signingKey.publicKey
        for b in chain {
            triples.append((key, Array("KIANA-BLOCK-V1".utf8) + b.hash, b.signature))
            for e in b.entries { triples.append((key, Array("KIANA-ENTRY-V1".utf8) + e.id, e.signature)) }
        }
        let allTriples = triples
        progress("raw Ed25519 verify ×\(triples.count) on \(cores) cores")
        let tVerifyAll = time {
            ChainValidator.parallelChunks(count: allTriples.count) { range in
                for i in range where !allTriples[i].key.isValidSignature(allTriples[i].sig, for: allTriples[i].msg) {
                    fatalError("reference signature failed")
                }
            }
        }
        let tVerifyOne = time {
            for t in allTriples where !t.key.isValidSignature(t.sig, for: t.msg) { fatalError("reference signature failed") }
        }
        rows.append(
            Row(
                name: "validate chain, \(entries) entries (\(cores) cores)", seconds: tValidate,
                reference: "Ed25519 verify ×\(triples.count), \(cores) cores", referenceSeconds: tVerifyAll))
        rows.append(
            Row(
                name: "Ed25519 verify ×\(triples.count), 1 core", seconds: tVerifyOne,
                reference: "same, \(cores) cores (parallel speed-up⁻¹)", referenceSeconds: tVerifyAll))

        if withStore {
            progress("storing chain in a temporary SQLite database")
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kiana-bench-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: dir) }
            let store = LedgerStore(database: try KianaDatabase(path: dir.appendingPathComponent("bench.sqlite").path))
            _ = try store.importBlocks(chain, now: now)
            progress("kiana ledger verify on SQLite")
            let tStore = try time { _ = try store.verify(now: now) }
            rows.append(
                Row(
                    name: "ledger verify from SQLite, \(entries) entries", seconds: tStore,
                    reference: "Ed25519 verify ×\(triples.count), \(cores) cores", referenceSeconds: tVerifyAll))
        }
        return rows
    }

    public static func render(_ rows: [Row]) -> String {
        func fmt(_ s: Double) -> String { s >= 1 ? String(format: "%.2f s", s) : String(format: "%.1f ms", s * 1000) }
        let w = max(44, rows.map(\.name.count).max() ?? 0)
        var out = "measure".padded(to: w) + "  " + "kiana".padded(to: 10) + "  " + "reference".padded(to: 10) + "  ratio  reference is\n"
        for r in rows {
            out += r.name.padded(to: w) + "  " + fmt(r.seconds).padded(to: 10) + "  " + fmt(r.referenceSeconds).padded(to: 10)
            out += "  " + String(format: "%5.2f", r.ratio) + "  " + r.reference + "\n"
        }
        out += "ratio = reference time / kiana time (1.00 = as fast as the raw primitive)\n"
        return out
    }
}
