import Foundation
import GRDB
import KianaCore
import Synchronization

/// What the start-up check of a store found.
public struct StartupCheck: Sendable {
    /// Height and hash of the head when checked.
    public var height: UInt64
    public var hash: [UInt8]
    /// Blocks whose signatures and roots were verified now (those above the last verified height).
    public var newlyVerified: Int
    /// The height verified before this check (nil: never).
    public var previouslyVerified: UInt64?
    /// The mark to record for the head once the check passed (`recordVerified`).
    public var mark: VerifiedMark
    /// The bytes stored below the previous mark were not the bytes verified there, so the whole
    /// chain was verified again.
    public var markMismatch = false
}

/// A verified mark (decision 116): the canonical block at and below which every block passed
/// full validation on this device, and the chain digest of the stored bytes up to it.
public struct VerifiedMark: Sendable, Equatable {
    public var height: UInt64
    public var hash: [UInt8]
    /// `LedgerStore.chainDigest` over every stored block up to `height`.
    public var digest: [UInt8]
    public init(height: UInt64, hash: [UInt8], digest: [UInt8]) {
        self.height = height
        self.hash = hash
        self.digest = digest
    }
}

extension LedgerStore {
    /// SQLite's own check of the file (b-trees, free lists, and with `quick: false` that every
    /// index matches its table). Empty when the file is sound; otherwise SQLite's lines, at most 20.
    public func integrityProblems(quick: Bool) throws(KianaStoreError) -> [String] {
        do throws(KianaStoreError) {
            return try run("checking the database file") {
                try writer.read { db in
                    let lines = try String.fetchAll(db, sql: quick ? "PRAGMA quick_check(20)" : "PRAGMA integrity_check(20)")
                    return lines == ["ok"] ? [] : lines
                }
            }
        } catch {
            // A file so damaged that the check itself fails is damaged.
            guard error.code == .corrupt else { throw error }
            return [error.message]
        }
    }

    /// Runs `body` while SQLite's full check of the file runs on another connection (reads
    /// both; the check otherwise leaves a core idle while the chain is read and replayed). The
    /// file's damage, when the check finds any, is the error, whatever `body` did: a damaged
    /// b-tree can make the chain look different, and the file is what to name. In memory, or
    /// without a second reader, the check runs first.
    func besideFileCheck<T>(_ body: () throws(KianaStoreError) -> T) throws(KianaStoreError) -> T {
        guard let side = database.sideReader() else {
            let problems = try integrityProblems(quick: false)
            guard problems.isEmpty else { throw Self.damaged(problems) }
            return try body()
        }
        let other = LedgerStore(database: side)
        let found = Mutex<Result<[String], KianaStoreError>>(.success([]))
        let checked = DispatchGroup()
        DispatchQueue.global().async(group: checked) {
            let r = Result { () throws(KianaStoreError) in try other.integrityProblems(quick: false) }
            found.withLock { $0 = r }
        }
        let outcome = Result { () throws(KianaStoreError) in try body() }
        checked.wait()
        let problems = try found.withLock { $0 }.get()
        guard problems.isEmpty else { throw Self.damaged(problems) }
        return try outcome.get()
    }

    /// The error for a database file SQLite finds damaged, naming what is damaged.
    static func damaged(_ problems: [String]) -> KianaStoreError {
        // One report line can hold several ("*** in database main ***\nPage 8: …"): one line.
        let lines = problems.flatMap { $0.split(whereSeparator: \.isNewline).map(String.init) }
        let shown = lines.prefix(3).joined(separator: "; ")
        return KianaStoreError(.corrupt, "the database file is damaged (SQLite integrity check: \(shown)\(lines.count > 3 ? "; …" : ""))")
    }

    /// Blocks per window when the chain is read for verification.
    static let verifyWindow: UInt64 = 2000

    /// Reads the canonical chain window by window (never all of it at once), decoded from its
    /// stored bytes, with the stored hash, height and entry IDs checked against those bytes.
    /// Returns the chain digest of the stored bytes at the head and at `digestAt`.
    @discardableResult
    func walkCanonicalChain(
        digestAt: UInt64? = nil, _ body: ([Block]) throws(KianaStoreError) -> Void
    ) throws(KianaStoreError) -> (head: [UInt8], at: [UInt8]?) {
        let stored = try run("counting the chain") { try writer.read { db in try ChainRecord.fetchCount(db) } }
        guard stored > 0 else { throw KianaStoreError(.notInitialized, "no ledger here yet: run `kiana init` first") }
        var next: UInt64 = 0
        var digest = Self.digestBeforeGenesis
        var digestAtMark: [UInt8]?
        while next < UInt64(stored) {
            let raw = try rawChain(from: next, through: next + Self.verifyWindow - 1, rowColumns: true)
            guard !raw.isEmpty else { break }
            // Decoding is most of the walk and independent per block: spread over all cores;
            // the checks that follow the chain (heights, digest) stay in order.
            let decoded = Self.decodeWindow(raw)
            var blocks: [Block] = []
            blocks.reserveCapacity(raw.count)
            for (i, r) in raw.enumerated() {
                guard r.height == next else {
                    throw KianaStoreError(.corrupt, "block \(next): [height] chain has a gap (next stored height is \(r.height))", height: next)
                }
                let b = try decoded[i].get()
                var h = BlockDigest(digest, signedHeader: r.signedHeader)
                for e in r.entries { h.add(entry: e.raw) }
                digest = h.finish()
                if r.height == digestAt { digestAtMark = digest }
                blocks.append(b)
                next += 1
            }
            try body(blocks)
        }
        guard next == UInt64(stored) else {
            throw KianaStoreError(.corrupt, "the chain table lists \(stored) blocks but \(next) can be read with their headers")
        }
        return (digest, digestAtMark)
    }

    /// Each stored block decoded from its bytes and checked against its row: stored hash,
    /// height, indexed header columns and entry IDs. Runs on all cores.
    static func decodeWindow(_ raw: [RawBlock]) -> [Result<Block, KianaStoreError>] {
        var out = [Result<Block, KianaStoreError>](repeating: .failure(KianaStoreError(.corrupt, "not decoded")), count: raw.count)
        out.withUnsafeMutableBufferPointer { buffer in
            nonisolated(unsafe) let results = buffer
            ChainValidator.parallelChunks(count: raw.count) { range in
                for i in range { results[i] = Result { () throws(KianaStoreError) in try decodeStored(raw[i]) } }
            }
        }
        return out
    }

    static func decodeStored(_ r: RawBlock) throws(KianaStoreError) -> Block {
        let b: Block
        do throws(KianaCoreError) {
            b = try Block(signedHeaderBytes: r.signedHeader, entryBytes: r.entries.map(\.raw))
        } catch {
            throw KianaStoreError(.corrupt, "block \(r.height): [encoding] \(error.message)", height: r.height, cause: error)
        }
        guard b.hash == r.hash, b.height == r.height else {
            throw KianaStoreError(.corrupt, "block \(r.height): [block-hash] stored hash does not match the stored header", height: r.height)
        }
        // The row's indexed copies of the header (side branches are traced by `parent`).
        guard r.rowTyped, b.header.parent == r.parent, b.header.signer == r.signer, b.header.time == r.time, b.height == r.rowHeight else {
            throw KianaStoreError(.corrupt, "block \(r.height): [block-row] stored height, parent, signer or time does not match the signed header", height: r.height)
        }
        guard b.entries.count == r.entries.count else {
            throw KianaStoreError(.corrupt, "block \(r.height): [entry-count] stored entries do not match the header", height: r.height)
        }
        for (j, e) in b.entries.enumerated() where e.id != r.entries[j].id {
            throw KianaStoreError(.corrupt, "block \(r.height): [entry-id] entry \(j) does not match its stored ID", height: r.height)
        }
        // The entry rows' indexed copies (membership is read by kind, sequence numbers and
        // clocks by author): what the bytes say.
        for (j, e) in b.entries.enumerated()
        where r.entryRows[j] != EntryRow(author: e.author, sequence: e.sequence, kind: e.kind.rawValue, wall: e.hlc.wall, logical: UInt64(e.hlc.logical), typed: true) {
            throw KianaStoreError(.corrupt, "block \(r.height): [entry-row] entry \(j)'s stored author, sequence, kind or clock does not match its bytes (or is stored as another type)", height: r.height)
        }
        return b
    }

    /// The chain digest before genesis.
    static let digestBeforeGenesis = [UInt8](repeating: 0, count: 32)

    /// The chain digest after one more block: SHA-256 over the previous digest and the block's
    /// stored bytes (signed header and entries, signatures included, which no block or entry
    /// hash covers), so any stored byte that differs from what was verified changes it.
    static func chainDigest(_ previous: [UInt8], signedHeader: [UInt8], entries: [[UInt8]]) -> [UInt8] {
        var h = BlockDigest(previous, signedHeader: signedHeader)
        for e in entries { h.add(entry: e) }
        return h.finish()
    }

    /// `chainDigest` built as a block is stored, entry by entry.
    struct BlockDigest {
        var h = SHA.Framed(prefix: 0x76)
        init(_ previous: [UInt8], signedHeader: [UInt8]) {
            h.add(previous)
            h.add(signedHeader)
        }
        mutating func add(entry raw: [UInt8]) { h.add(raw) }
        func finish() -> [UInt8] { h.finish() }
    }

    /// `chainDigest` of a block as `insertBlockOnly` stores it.
    static func chainDigest(_ previous: [UInt8], _ block: Block) -> [UInt8] {
        chainDigest(previous, signedHeader: block.signedHeaderCBOR.encoded, entries: block.entries.map(\.encoded))
    }

    /// Validates the stored chain window by window (signatures, roots and payloads of blocks at
    /// `trustedBelow` and above), checks the knowledge table against the state the chain implies
    /// and the stored history tree against the chain's. Memory: one window, the item states and
    /// O(log n) hashes.
    func validateStoredChain(
        now: UInt64, trustedBelow: UInt64 = 0, digestAt: UInt64? = nil
    ) throws(KianaStoreError) -> (state: LedgerState, digest: [UInt8], digestAt: [UInt8]?) {
        var state: LedgerState?
        var expected = KnowledgeState()
        // About as many items as the table holds (a hint only: the table is what is checked).
        expected.reserveCapacity(min(try run("counting items") { try writer.read { db in try ItemRecord.fetchCount(db) } }, 1 << 24))
        let digests = try walkCanonicalChain(digestAt: digestAt) { (window: [Block]) throws(KianaStoreError) in
            let first = state.map { $0.height + 1 } ?? 0
            let trusted = trustedBelow > first ? Int(min(UInt64(window.count), trustedBelow - first)) : 0
            do throws(KianaCoreError) {
                try ChainValidator.extend(&state, with: window, now: now, trustedPrefix: trusted, tracksHistory: false)
            } catch {
                throw KianaStoreError(.corrupt, error.description, height: error.height, cause: error)
            }
            for b in window { for e in b.entries { expected.apply(e) } }
        }
        guard let state else { throw KianaStoreError(.notInitialized, "no ledger here yet: run `kiana init` first") }
        try checkKnowledge(expected: expected)
        let tree = try historyHead()
        guard tree.size == UInt64(state.blockCount), tree.root == state.historyRoot else {
            throw KianaStoreError(.corrupt, "the stored history tree (\(tree.size) blocks) does not match the chain (\(state.blockCount) blocks)")
        }
        return (state, digests.head, digests.at)
    }

    /// The last height (and its block hash) that passed verification, if any.
    public func lastVerified() throws(KianaStoreError) -> (height: UInt64, hash: [UInt8])? {
        try verifiedMark().map { ($0.height, $0.hash) }
    }

    func verifiedMark() throws(KianaStoreError) -> VerifiedMark? {
        try run("reading the verified height") { try writer.read { db in try Self.verifiedMark(db) } }
    }

    /// Records `mark` (from `startupCheck` or `verifyMarking`); start-up checks trust what lies below.
    public func recordVerified(_ mark: VerifiedMark) throws(KianaStoreError) {
        try run("recording the verified height") { try writer.write { db in try Self.setVerifiedMark(mark, db) } }
    }

    /// The verified mark (decision 116). It moves at a start-up check or `ledger verify`, and on
    /// arrival by sync (`extendHead`). The hash pins it: blocks below are bound to it by their
    /// parent hashes; the digest binds the bytes stored below it.
    static func verifiedMark(_ db: Database) throws -> VerifiedMark? {
        // An unreadable mark, or one without a digest (written before decision 116), is no mark:
        // everything is verified once more, and a new one recorded.
        guard let d = try setting(db, "verified"), case .array(let a) = try? CBOR.decode(d.bytes), a.count == 3,
            case .unsigned(let h) = a[0], case .bytes(let hash) = a[1], case .bytes(let digest) = a[2], digest.count == 32
        else { return nil }
        return VerifiedMark(height: h, hash: hash, digest: digest)
    }

    static func setVerifiedMark(_ mark: VerifiedMark, _ db: Database) throws {
        let value = CBOR.array([.unsigned(mark.height), .bytes(mark.hash), .bytes(mark.digest)])
        try SettingRecord(key: "verified", value: Data(value.encoded)).save(db)
    }

    /// The check a serving node runs at start: SQLite's `integrity_check`, then the whole chain
    /// decoded and its rules replayed, with signatures, roots and payloads verified for the
    /// blocks above the last verified height (all of them when that block is no longer on the
    /// chain), and the knowledge table compared with the state the ledger implies. A failure is a
    /// `.corrupt` error naming what is damaged. It writes nothing (it runs
    /// on a read-only connection); the caller records the verified head.
    public func startupCheck(now: UInt64) throws(KianaStoreError) -> StartupCheck {
        // The full check, not `quick_check`: only it compares every index with its table, and a
        // damaged index (a flipped byte in `block_on_height`) passes the quick one. It runs
        // beside the walk; its finding, if any, is the error.
        let walked = try besideFileCheck { () throws(KianaStoreError) in
            let previous = try verifiedMark()
            var trusted: UInt64 = 0
            if let previous, (try canonicalHashes(at: [previous.height]).first ?? nil) == previous.hash {
                trusted = previous.height + 1
            }
            // What is served is the materialized knowledge: it must be what the ledger says, or a
            // damaged row (SQLite's check does not read row contents) would be served as truth.
            return (previous, trusted, try validateStoredChain(now: now, trustedBelow: trusted, digestAt: trusted > 0 ? trusted - 1 : nil))
        }
        let previous = walked.0
        var (trusted, checked) = (walked.1, walked.2)
        // Bytes below the mark that are not those verified there (a flipped signature byte, an
        // entry rewritten with its ID): nothing below it is trusted; all is verified again.
        var mismatch = false
        if trusted > 0, let want = previous?.digest, checked.digestAt != want {
            mismatch = true
            trusted = 0
            checked = try validateStoredChain(now: now)
        }
        let state = checked.state
        return StartupCheck(
            height: state.height, hash: state.tipHash, newlyVerified: state.blockCount - Int(trusted), previouslyVerified: previous?.height,
            mark: VerifiedMark(height: state.height, hash: state.tipHash, digest: checked.digest), markMismatch: mismatch)
    }
}
