import Foundation
import GRDB
import KianaCore

/// What importing one block did.
public enum ImportOutcome: Sendable, Equatable {
    /// Already stored; nothing changed.
    case duplicate
    /// Parent unknown: held (bounded) until the parent arrives.
    case orphan
    /// Valid, stored on a side branch; the head did not change.
    case sideBranch
    /// Valid and now the head (directly on top of the old head, or after a reorg).
    case newHead(reorganized: Bool)
}

/// What importing a batch of blocks did.
public struct BatchImport: Sendable {
    /// The first block a ledger rule refused; the blocks before it were kept.
    public struct Refusal: Sendable {
        public var index: Int
        public var height: UInt64
        public var hash: [UInt8]
        public var error: KianaStoreError
        /// The ledger rule that failed (e.g. "blockSignature"), when one was named.
        public var rule: String? { (error.cause as? KianaCoreError)?.rule?.rawValue }
    }
    public var outcomes: [ImportOutcome] = []
    public var refused: Refusal?
    public var headChanged = false
    public var reorganized = false
    /// Blocks stored by this batch (not duplicates).
    public var stored: Int { outcomes.filter { $0 != .duplicate }.count }
    public init() {}
}

/// An entry that reuses an author's sequence number with different content.
public struct Equivocation: Sendable, Hashable {
    public var author: [UInt8]
    public var sequence: UInt64
    public var entryIDs: [[UInt8]]
}

/// A side branch: a stored block that is not canonical and has no stored child.
public struct SideBranch: Sendable, Hashable {
    public var tipHeight: UInt64
    public var tipHash: [UInt8]
    /// Height of the last block shared with the canonical chain.
    public var forkHeight: UInt64
}

struct OrphanRecord: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "orphan"
    var hash: Data
    var parent: Data
    var receivedAt: Int64
    var block: Data
}

struct ConflictRecord: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "conflict"
    var author: Data
    var seq: Int64
    var entryId: Data
}

extension LedgerStore {
    /// Orphans kept at most; the oldest is dropped beyond this.
    public static let maxOrphans = 256

    /// Imports a block received from elsewhere. It is fully validated against the state at its
    /// parent before anything is stored; a valid block that beats the head (longer, or equal
    /// and lower hash) becomes the head, switching the canonical chain atomically. Entries of
    /// abandoned blocks that are not on the new chain return to the pending pool. Idempotent.
    public func importBlock(_ block: Block, now: UInt64) throws(KianaStoreError) -> ImportOutcome {
        try run("importing block") {
            try writer.write { db in try Self.importBlock(block, now: now, cache: database.states, db) }
        }
    }

    /// Imports many blocks in one transaction (all or nothing), each as `importBlock` would;
    /// a missing data directory's ledger is started from the chain's genesis.
    public func importBlocks(_ blocks: [Block], now: UInt64) throws(KianaStoreError) -> [ImportOutcome] {
        try run("importing blocks") {
            try writer.write { db in
                try Self.startIfEmpty(genesis: blocks.first(where: { $0.height == 0 }), now: now, db)
                return try blocks.map { try Self.importBlock($0, now: now, cache: database.states, db) }
            }
        }
    }

    /// Puts the entries of `blocks` that the canonical chain does not carry (blocks an import
    /// left on a side branch) into the pending pool, as a reorg does with abandoned ones, so
    /// they are sealed here: an export carried one way holds writes its author's device will
    /// not bring (live sync does, by reorganizing there). Entries already pending, or retired
    /// as superseded (decision 111), are left as they are. Returns how many were added.
    public func adoptSideBranchEntries(of blocks: [Block], now: UInt64) throws(KianaStoreError) -> Int {
        try run("taking side-branch entries") {
            try writer.write { db in
                var added = 0
                for block in blocks where block.height > 0 {
                    for e in block.entries {
                        let id = Data(e.id)
                        guard try !Self.isCanonical(id, db),
                            try !(Bool.fetchOne(db, sql: "SELECT EXISTS(SELECT 1 FROM superseded WHERE entryId = ?)", arguments: [id]) ?? false),
                            try PendingRecord.fetchOne(db, key: id) == nil
                        else { continue }
                        try PendingRecord(entryId: id, addedAt: Int64(now)).insert(db)
                        added += 1
                    }
                }
                return added
            }
        }
    }

    /// Imports a batch from a peer block by block, each in its own savepoint within one
    /// transaction: the valid prefix is kept, and the first block refused by a ledger rule stops
    /// the batch (named in `refused`); nothing after it is tried. A database failure still
    /// rolls the whole batch back.
    /// `prechecked`: the caller's `ChainValidator.precheck` of `blocks` (sync checks the next
    /// batch's signatures while this one is stored); computed here when nil. It must be exactly
    /// that: blocks it calls checked are stored as verified, and move the verified mark.
    public func importBatch(_ blocks: [Block], now: UInt64, prechecked: [Bool]? = nil) throws(KianaStoreError) -> BatchImport {
        try run("importing blocks") {
            try writer.write { db in
                var report = BatchImport()
                try Self.startIfEmpty(genesis: blocks.first, now: now, db)
                // Signatures, roots and payloads of the whole batch on all cores first.
                let checked = prechecked?.count == blocks.count ? prechecked! : ChainValidator.precheck(blocks)
                let start = try Self.extendHead(with: blocks, prechecked: checked, now: now, cache: database.states, into: &report, db)
                if report.refused != nil { return report }
                for (i, block) in blocks.enumerated() where i >= start {
                    var outcome = ImportOutcome.duplicate
                    do {
                        try db.inSavepoint {
                            outcome = try Self.importBlock(block, now: now, cache: database.states, db, prechecked: checked[i])
                            return .commit
                        }
                    } catch let e as KianaStoreError where e.code == .invalidInput {
                        report.refused = BatchImport.Refusal(index: i, height: block.height, hash: block.hash, error: e)
                        break
                    }
                    report.outcomes.append(outcome)
                    if case .newHead(let r) = outcome {
                        report.headChanged = true
                        if r { report.reorganized = true }
                    }
                }
                return report
            }
        }
    }

    /// The fast path of a batch: the leading blocks that extend the head in one line (initial
    /// sync, catching up, gossip) are validated in memory against one ledger state and then
    /// stored together, without a savepoint per block. Stops at the first block that does not
    /// continue the line (the caller's per-block path takes the rest) or that a rule refuses
    /// (named in `report.refused`; the blocks before it are stored). Returns how many blocks
    /// it took.
    static func extendHead(
        with blocks: [Block], prechecked: [Bool], now: UInt64, cache: StateCache, into report: inout BatchImport, _ db: Database
    ) throws -> Int {
        // Blocks already stored (a batch from genesis starts with it) are duplicates.
        var skip = 0
        while skip < blocks.count, try blockExists(blocks[skip].hash, db) {
            report.outcomes.append(.duplicate)
            skip += 1
        }
        guard let head = try head(db), skip < blocks.count, blocks[skip].header.parent == head.hash,
            blocks[skip].height == head.height + 1
        else { return skip }
        var state = try cache.get(head.hash) ?? stateAt(head.hash, now: now, db)
        var line: [Block] = []
        var parent = head.hash
        for (i, block) in blocks.enumerated() where i >= skip {
            guard block.header.parent == parent else { break }
            do throws(KianaCoreError) {
                try state.append(block, now: now, precheckedSignatures: prechecked[i])
            } catch {
                let e = KianaStoreError(.invalidInput, "block rejected: \(error.description)", height: block.height, cause: error)
                report.refused = BatchImport.Refusal(index: i, height: block.height, hash: block.hash, error: e)
                break
            }
            line.append(block)
            parent = block.hash
        }
        guard let last = line.last else { return skip }
        // Every block of the line was validated above (signatures in `prechecked`, checked on all
        // cores by the caller or by `importBatch`): when all below the head had been, the
        // verified mark moves to the line's end in the same transaction, its digest extended by
        // the bytes stored here.
        var digest: [UInt8]?
        if let mark = try verifiedMark(db), mark.hash == head.hash { digest = mark.digest }
        let pending = try Bool.fetchOne(db, sql: "SELECT EXISTS(SELECT 1 FROM pending)") ?? false
        var newest = HLC.zero
        for block in line {
            digest = try insertBlockOnly(block, db, extending: digest)
            try recordEquivocations(block.entries, db)
            try extendHead(with: block, pendingMayHold: pending, db)
            for e in block.entries where newest < e.hlc { newest = e.hlc }
            report.outcomes.append(.newHead(reorganized: false))
        }
        report.headChanged = true
        if let digest { try setVerifiedMark(VerifiedMark(height: last.height, hash: last.hash, digest: digest), db) }
        // Local clock stays ahead of everything seen.
        var clock = HybridClock(last: try lastHLC(db))
        _ = clock.receive(newest, now: now)
        try saveHLC(clock.last, db)
        cache.put(last.hash, state)
        // Orphans that were waiting for one of these blocks can now be tried.
        if try Bool.fetchOne(db, sql: "SELECT EXISTS(SELECT 1 FROM orphan)") == true {
            for block in line { try adoptOrphans(of: block.hash, now: now, cache: cache, db) }
        }
        return skip + line.count
    }

    /// Starts an empty store's ledger from `genesis` (validated first); does nothing when the
    /// store already has a ledger.
    static func startIfEmpty(genesis: Block?, now: UInt64, _ db: Database) throws {
        guard try head(db) == nil else { return }
        guard let g = genesis, g.height == 0 else { throw KianaStoreError(.invalidInput, "chain has no genesis") }
        do throws(KianaCoreError) { _ = try LedgerState(genesis: g, now: now) } catch {
            throw KianaStoreError(.invalidInput, "genesis block is invalid: \(error.description)", cause: error)
        }
        try insert(block: g, db)
        try SettingRecord(key: "network", value: Data(g.hash)).insert(db)
        // Validated just now: a device that joins starts its verified mark here, and sync's fast
        // path moves it along (so a restart does not verify the synced ledger again).
        try setVerifiedMark(VerifiedMark(height: 0, hash: g.hash, digest: chainDigest(digestBeforeGenesis, g)), db)
    }

    static func importBlock(_ block: Block, now: UInt64, cache: StateCache, _ db: Database, prechecked: Bool = false) throws -> ImportOutcome {
        if try blockExists(block.hash, db) { return .duplicate }
        guard try blockExists(block.header.parent, db) else {
            // Hold it, but only if it is at least self-consistent; never as a valid block.
            guard block.verifySignature(), Block.entryRoot(block.entries) == block.header.entryRoot else {
                throw KianaStoreError(.invalidInput, "block rejected: orphan with a bad signature or Merkle root")
            }
            if try !OrphanRecord.exists(db, key: Data(block.hash)) {
                if try OrphanRecord.fetchCount(db) >= maxOrphans {
                    try db.execute(sql: "DELETE FROM orphan WHERE hash IN (SELECT hash FROM orphan ORDER BY receivedAt LIMIT 1)")
                }
                try OrphanRecord(hash: Data(block.hash), parent: Data(block.header.parent), receivedAt: Int64(now), block: Data(block.encoded)).insert(db)
            }
            return .orphan
        }
        var state = try cache.get(block.header.parent) ?? stateAt(block.header.parent, now: now, db)
        do throws(KianaCoreError) {
            try state.append(block, now: now, precheckedSignatures: prechecked)
        } catch {
            throw KianaStoreError(.invalidInput, "block rejected: \(error.description)", height: block.height, cause: error)
        }
        cache.put(block.hash, state)
        try insertBlockOnly(block, db)
        try recordEquivocations(block.entries, db)
        // Local clock stays ahead of everything seen.
        if let newest = block.entries.map(\.hlc).max() {
            var clock = HybridClock(last: try lastHLC(db))
            _ = clock.receive(newest, now: now)
            try saveHLC(clock.last, db)
        }
        var outcome = ImportOutcome.sideBranch
        if let head = try head(db), ForkChoice.prefers(height: block.height, hash: block.hash, over: head.height, head.hash) {
            if head.hash == block.header.parent {
                try extendHead(with: block, db)
                outcome = .newHead(reorganized: false)
            } else {
                try switchHead(to: block.hash, now: now, db)
                outcome = .newHead(reorganized: true)
            }
        }
        if try adoptOrphans(of: block.hash, now: now, cache: cache, db) { outcome = .newHead(reorganized: true) }
        return outcome
    }

    /// Tries the orphans that were waiting for the stored block `hash`; true if one of them
    /// moved the head.
    @discardableResult
    static func adoptOrphans(of hash: [UInt8], now: UInt64, cache: StateCache, _ db: Database) throws -> Bool {
        let waiting = try Bool.fetchOne(try db.cachedStatement(sql: "SELECT EXISTS(SELECT 1 FROM orphan WHERE parent = ?)"), arguments: [Data(hash)])
        var moved = false
        for o in waiting == true ? try OrphanRecord.filter(Column("parent") == Data(hash)).fetchAll(db) : [] {
            try o.delete(db)
            if let child = try? Block(decoding: o.block.bytes) {
                let r = try? importBlock(child, now: now, cache: cache, db)
                if case .newHead? = r { moved = true }
            }
        }
        return moved
    }

    /// The validated ledger state after the stored block `hash`: resumed at the canonical block
    /// its branch forks from, then the branch's own blocks applied (they were validated when
    /// stored, so signatures are not checked again). Costs O(branch), not O(chain) (decision 88).
    static func stateAt(_ hash: [UInt8], now: UInt64, _ db: Database) throws -> LedgerState {
        var branch: [[UInt8]] = []
        var cur = hash
        var forkHeight: Int64 = 0
        while true {
            guard let r = try BlockRecord.fetchOne(db, key: Data(cur)) else {
                throw KianaStoreError(.corrupt, "stored block \(Hex.encode(cur.prefix(8))) is missing its ancestry")
            }
            if try ChainRecord.fetchOne(db, key: r.height)?.hash == Data(cur) {
                forkHeight = r.height
                break
            }
            guard r.height > 0 else { throw KianaStoreError(.corrupt, "a stored branch does not start from this chain's genesis") }
            branch.append(cur)
            cur = r.parent.bytes
        }
        var state = try canonicalState(at: forkHeight, db)
        for h in branch.reversed() { try state.append(try loadBlock(h, db), now: UInt64.max / 2, precheckedSignatures: true) }
        return state
    }

    /// The state after canonical block `height`, from the tables: its header, the membership
    /// the votes up to it give, and each author's last sequence number up to it (one indexed
    /// lookup per author).
    static func canonicalState(at height: Int64, _ db: Database) throws -> LedgerState {
        let genesis = try genesisHeader(db)
        guard let c = try ChainRecord.fetchOne(db, key: height), let b = try BlockRecord.fetchOne(db, key: c.hash),
            let g = try ChainRecord.fetchOne(db, key: 0)
        else {
            throw KianaStoreError(.corrupt, "canonical block \(height) cannot be read")
        }
        let tip = try Block(signedHeaderBytes: b.signedHeader.bytes, entryBytes: []).header
        var last: [[UInt8]: UInt64] = [:]
        for author in try Data.fetchAll(db, sql: "SELECT DISTINCT author FROM entry") {
            let seq = try Int64.fetchOne(
                db,
                sql: """
                    SELECT e.seq FROM entry e JOIN blockEntry be ON be.entryId = e.id JOIN chain c ON c.hash = be.blockHash
                    WHERE e.author = ? AND c.height <= ? ORDER BY e.seq DESC LIMIT 1
                    """, arguments: [author, height])
            if let seq { last[author.bytes] = UInt64(seq) }
        }
        return LedgerState(
            resumingAt: tip, tipHash: c.hash.bytes, genesis: genesis, network: g.hash.bytes, membership: try membership(db, through: height),
            lastSequence: last)
    }

    static func loadBlock(_ hash: [UInt8], _ db: Database) throws -> Block {
        guard let r = try BlockRecord.fetchOne(db, key: Data(hash)) else {
            throw KianaStoreError(.notFound, "no block \(Hex.encode(hash.prefix(8)))")
        }
        let raws = try Data.fetchAll(
            db,
            sql: """
                SELECT entry.raw FROM blockEntry JOIN entry ON entry.id = blockEntry.entryId
                WHERE blockEntry.blockHash = ? ORDER BY blockEntry.position
                """, arguments: [Data(hash)])
        return try Block(signedHeaderBytes: r.signedHeader.bytes, entryBytes: raws.map(\.bytes))
    }

    static func blockExists(_ hash: [UInt8], _ db: Database) throws -> Bool {
        try Bool.fetchOne(try db.cachedStatement(sql: "SELECT EXISTS(SELECT 1 FROM block WHERE hash = ?)"), arguments: [Data(hash)]) ?? false
    }

    /// Stores a block and its entries without touching the canonical chain.
    static func insertBlockOnly(_ b: Block, _ db: Database) throws {
        _ = try insertBlockOnly(b, db, extending: nil)
    }

    /// Stores `b` and returns `chainDigest(digest, b)` of the bytes stored, or nil when `digest`
    /// is nil or an entry's row was there already with other bytes (the insert keeps those: they
    /// are not the ones just validated).
    static func insertBlockOnly(_ b: Block, _ db: Database, extending digest: [UInt8]?) throws -> [UInt8]? {
        let header = b.signedHeaderCBOR.encoded
        try db.cachedStatement(sql: "INSERT INTO block (hash, height, parent, signer, time, signedHeader) VALUES (?, ?, ?, ?, ?, ?)")
            .execute(arguments: [
                Data(b.hash), Int64(b.height), Data(b.header.parent), Data(b.header.signer), Int64(b.header.time), Data(header),
            ])
        let link = try db.cachedStatement(sql: "INSERT INTO blockEntry (blockHash, position, entryId) VALUES (?, ?, ?)")
        var hasher = digest.map { BlockDigest($0, signedHeader: header) }
        for (i, e) in b.entries.enumerated() {
            let raw = e.encoded
            try insert(entry: e, raw: raw, db)
            if hasher != nil {
                // Kept from before (a pending write, a side branch): the same bytes, or not.
                if db.changesCount == 0, try Data.fetchOne(db, sql: "SELECT raw FROM entry WHERE id = ?", arguments: [Data(e.id)])?.bytes != raw {
                    hasher = nil
                } else {
                    hasher?.add(entry: raw)
                }
            }
            try link.execute(arguments: [Data(b.hash), Int64(i), Data(e.id)])
        }
        return hasher?.finish()
    }

    /// Makes canonical a stored block whose parent is the head: the common case of sync and
    /// gossip, without the general reorg walk.
    /// `pendingMayHold: false` when the pending pool is known to be empty (nothing to drop).
    static func extendHead(with block: Block, pendingMayHold: Bool = true, _ db: Database) throws {
        try insertChain(height: Int64(block.height), hash: Data(block.hash), db)
        try apply(block.entries, db)
        guard pendingMayHold else { return }
        let drop = try db.cachedStatement(sql: "DELETE FROM pending WHERE entryId = ?")
        for e in block.entries { try drop.execute(arguments: [Data(e.id)]) }
    }

    /// Adds one height to the canonical chain and its history tree.
    static func insertChain(height: Int64, hash: Data, _ db: Database) throws {
        try db.cachedStatement(sql: "INSERT INTO chain (height, hash) VALUES (?, ?)").execute(arguments: [height, hash])
        try HistoryIndex.append(height: height, hash: hash, db)
    }

    static func recordEquivocations(_ entries: [Entry], _ db: Database) throws {
        let query = try db.cachedStatement(sql: "SELECT id FROM entry WHERE author = ? AND seq = ? AND id != ?")
        for e in entries {
            let others = try Data.fetchAll(query, arguments: [Data(e.author), Int64(e.sequence), Data(e.id)])
            guard !others.isEmpty else { continue }
            for id in others + [Data(e.id)] {
                try ConflictRecord(author: Data(e.author), seq: Int64(e.sequence), entryId: id).insert(db, onConflict: .ignore)
            }
        }
    }

    /// Makes `tip` the head: rewrites the canonical chain from the common ancestor, applies the
    /// newly canonical entries to the knowledge state, and returns abandoned entries to pending.
    static func switchHead(to tip: [UInt8], now: UInt64, _ db: Database) throws {
        var newPath: [(height: Int64, hash: Data)] = []
        var cur = Data(tip)
        while let r = try BlockRecord.fetchOne(db, key: cur) {
            if let c = try ChainRecord.fetchOne(db, key: r.height), c.hash == cur { break }
            newPath.append((r.height, cur))
            if r.height == 0 { break }
            cur = r.parent
        }
        newPath.reverse()
        guard let forkAt = newPath.first?.height else { return }
        let abandoned = try Data.fetchAll(
            db,
            sql: """
                SELECT blockEntry.entryId FROM chain JOIN blockEntry ON blockEntry.blockHash = chain.hash
                WHERE chain.height >= ? ORDER BY chain.height, blockEntry.position
                """, arguments: [forkAt])
        try db.execute(sql: "DELETE FROM chain WHERE height >= ?", arguments: [forkAt])
        try HistoryIndex.truncate(to: forkAt, db)
        var newEntries: [Entry] = []
        for p in newPath {
            try insertChain(height: p.height, hash: p.hash, db)
            newEntries += try loadBlock(p.hash.bytes, db).entries
        }
        try apply(newEntries, db)
        // Pending keeps only what is not canonical now; abandoned entries not on the new chain return.
        try dropCanonicalFromPending(db)
        for id in abandoned where try !isCanonical(id, db) {
            try PendingRecord(entryId: id, addedAt: Int64(now)).insert(db, onConflict: .ignore)
        }
    }

    /// Removes from the pending pool every entry the canonical chain now carries.
    static func dropCanonicalFromPending(_ db: Database) throws {
        try db.execute(
            sql: """
                DELETE FROM pending WHERE EXISTS
                  (SELECT 1 FROM blockEntry JOIN chain ON chain.hash = blockEntry.blockHash WHERE blockEntry.entryId = pending.entryId)
                """)
    }

    static func isCanonical(_ entryID: Data, _ db: Database) throws -> Bool {
        try Bool.fetchOne(
            db,
            sql: """
                SELECT EXISTS(SELECT 1 FROM blockEntry JOIN chain ON chain.hash = blockEntry.blockHash WHERE blockEntry.entryId = ?)
                """, arguments: [entryID]) ?? false
    }

    /// Seals the pending pool into a block signed by `identity`, if anything can be sealed.
    public func sealPending(identity: DeviceIdentity, now: UInt64) throws(KianaStoreError) -> Block? {
        defer { database.keepWritesIfWALLost() }
        return try run("sealing pending entries") {
            try writer.write { db in
                guard try Self.authorities(db).contains(identity.publicKey) else {
                    throw KianaStoreError(.notAuthority, "this device (\(identity.deviceID)) is not an authority")
                }
                return try Self.sealPending(db, identity: identity, now: now)
            }
        }
    }

    /// What `sealAllPending` did: blocks sealed, the entries in them, seal attempts made, and
    /// stuck entries re-signed or retired first (`resignStuck`).
    public struct SealRun: Sendable, Equatable {
        public var blocks = 0
        public var entries = 0
        public var attempts = 0
        public var resigned = 0
        public var retired = 0
        public init(blocks: Int = 0, entries: Int = 0, attempts: Int = 0, resigned: Int = 0, retired: Int = 0) {
            self.blocks = blocks
            self.entries = entries
            self.attempts = attempts
            self.resigned = resigned
            self.retired = retired
        }
    }

    /// Seals the pending pool block by block (each bounded by `sealLimits`) until a seal finds
    /// nothing it may include, or `maxBlocks` are sealed. First, `identity`'s own writes caught
    /// by a reused sequence number are signed again and stuck copies whose content landed are
    /// retired (`resignStuck`). Entries that still cannot be sealed on this chain (a dropped
    /// author's, another author's reused sequence number) stay pending and cost one attempt,
    /// not one per block allowed.
    /// `resign: false` skips that first step (the node runs it only when something changed).
    public func sealAllPending(identity: DeviceIdentity, now: UInt64, maxBlocks: Int = 10_000, resign: Bool = true) throws(KianaStoreError) -> SealRun {
        let r = resign ? try resignStuck(identity: identity, now: now) : ResignRun()
        var run = SealRun(resigned: r.resigned, retired: r.retired)
        while run.blocks < maxBlocks {
            run.attempts += 1
            guard let block = try sealPending(identity: identity, now: now) else { break }
            run.blocks += 1
            run.entries += block.entries.count
        }
        return run
    }

    /// Side branches: stored tips that are not on the canonical chain.
    public func sideBranches() throws(KianaStoreError) -> [SideBranch] {
        try run("listing forks") {
            try writer.read { db in
                let tips = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT b.hash, b.height FROM block b
                        WHERE NOT EXISTS (SELECT 1 FROM block c WHERE c.parent = b.hash)
                          AND NOT EXISTS (SELECT 1 FROM chain WHERE chain.hash = b.hash)
                        ORDER BY b.height DESC, b.hash
                        """)
                return try tips.map { r in
                    var cur: Data = r["hash"]
                    var fork: Int64 = 0
                    while let rec = try BlockRecord.fetchOne(db, key: cur) {
                        if try ChainRecord.fetchOne(db, key: rec.height)?.hash == cur {
                            fork = rec.height
                            break
                        }
                        cur = rec.parent
                    }
                    return SideBranch(tipHeight: UInt64(r["height"] as Int64), tipHash: (r["hash"] as Data).bytes, forkHeight: UInt64(fork))
                }
            }
        }
    }

    /// Authors seen using one sequence number for different entries.
    public func equivocations() throws(KianaStoreError) -> [Equivocation] {
        try run("listing equivocations") {
            try writer.read { db in
                let rows = try ConflictRecord.order(Column("author"), Column("seq")).fetchAll(db)
                var out: [Equivocation] = []
                for r in rows {
                    if let last = out.last, last.author == r.author.bytes, last.sequence == UInt64(r.seq) {
                        out[out.count - 1].entryIDs.append(r.entryId.bytes)
                    } else {
                        out.append(Equivocation(author: r.author.bytes, sequence: UInt64(r.seq), entryIDs: [r.entryId.bytes]))
                    }
                }
                return out
            }
        }
    }

    /// Sequence numbers missing from the canonical chain, per author: entries that exist (or
    /// existed) on some device but have not reached this chain yet.
    public func sequenceGaps() throws(KianaStoreError) -> [(author: [UInt8], missing: [UInt64])] {
        try run("finding sequence gaps") {
            try writer.read { db in
                let rows = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT entry.author, entry.seq FROM chain JOIN blockEntry ON blockEntry.blockHash = chain.hash
                        JOIN entry ON entry.id = blockEntry.entryId ORDER BY entry.author, entry.seq
                        """)
                var out: [(author: [UInt8], missing: [UInt64])] = []
                var author: Data?
                var expected: UInt64 = 1
                var missing: [UInt64] = []
                func flush() { if let a = author, !missing.isEmpty { out.append((a.bytes, missing)) } }
                for r in rows {
                    let a: Data = r["author"]
                    let seq = UInt64(r["seq"] as Int64)
                    if a != author {
                        flush()
                        author = a
                        expected = 1
                        missing = []
                    }
                    if seq > expected { missing += Array(expected..<min(seq, expected + 1000)) }
                    expected = seq + 1
                }
                flush()
                return out
            }
        }
    }

    public func orphanCount() throws(KianaStoreError) -> Int {
        try run("counting orphans") { try writer.read { db in try OrphanRecord.fetchCount(db) } }
    }

    /// Every stored block, canonical or not, parents before children (for tests and sync).
    public func allBlocks() throws(KianaStoreError) -> [Block] {
        try run("reading all blocks") {
            try writer.read { db in
                try Data.fetchAll(db, sql: "SELECT hash FROM block ORDER BY height, hash").map { try Self.loadBlock($0.bytes, db) }
            }
        }
    }
}
