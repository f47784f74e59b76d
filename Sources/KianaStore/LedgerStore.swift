import Foundation
import GRDB
import KianaCore

/// A knowledge item as the user sees it.
public struct StoredItem: Sendable, Hashable {
    public var id: ItemID
    public var title: String?
    public var text: String?
    public var tags: [String]
    public var source: String?
    public var created: HLC?
    public var updated: HLC?
    public var deleted: Bool
    /// The ledger entry that last put or deleted the item (its proof is the item's proof).
    public var lastEntry: [UInt8]? = nil
}

/// Where the chain ends.
public struct LedgerHead: Sendable, Hashable {
    public var height: UInt64
    public var hash: [UInt8]
    public init(height: UInt64, hash: [UInt8]) {
        self.height = height
        self.hash = hash
    }
}

public struct StoreCounts: Sendable, Hashable {
    public var blocks: Int
    public var entries: Int
    public var items: Int
    public var deletedItems: Int
    public var pending: Int
    public init(blocks: Int, entries: Int, items: Int, deletedItems: Int, pending: Int) {
        self.blocks = blocks
        self.entries = entries
        self.items = items
        self.deletedItems = deletedItems
        self.pending = pending
    }
}

/// What a write produced: its entries and the block that sealed them.
public struct WriteReceipt: Sendable {
    public var entries: [Entry]
    public var block: Block
}

/// The ledger and the knowledge state it materializes, on one `KianaDatabase`.
/// Every public write is one SQLite transaction: it happens completely or not at all.
public struct LedgerStore: Sendable {
    public let database: KianaDatabase
    var writer: any DatabaseWriter { database.writer }

    public init(database: KianaDatabase) { self.database = database }

    func run<T>(_ what: String, _ body: () throws -> T) throws(KianaStoreError) -> T {
        try database.run(what, body)
    }

    // MARK: initialization and head

    public func isInitialized() throws(KianaStoreError) -> Bool {
        try network() != nil
    }

    /// The network ID (genesis hash), or nil before `initialize`.
    public func network() throws(KianaStoreError) -> [UInt8]? {
        try run("reading network") { try writer.read { db in try Self.setting(db, "network")?.bytes } }
    }

    /// Stores the genesis block of a new network.
    public func initialize(genesis: Block, now: UInt64) throws(KianaStoreError) {
        let state: LedgerState
        do throws(KianaCoreError) { state = try LedgerState(genesis: genesis, now: now) } catch {
            throw KianaStoreError(.invalidInput, "genesis block is invalid: \(error.description)", cause: error)
        }
        try run("storing genesis") {
            try writer.write { db in
                guard try Self.setting(db, "network") == nil else {
                    throw KianaStoreError(
                        .alreadyInitialized, "this data directory already holds network \(Hex.encode(try Self.setting(db, "network")!.bytes))")
                }
                try Self.insert(block: genesis, db)
                try SettingRecord(key: "network", value: Data(state.network)).insert(db)
                try Self.setVerifiedMark(VerifiedMark(height: 0, hash: genesis.hash, digest: Self.chainDigest(Self.digestBeforeGenesis, genesis)), db)
            }
        }
    }

    public func head() throws(KianaStoreError) -> LedgerHead? {
        try run("reading head") { try writer.read { db in try Self.head(db) } }
    }

    static func head(_ db: Database) throws -> LedgerHead? {
        guard let row = try Row.fetchOne(try db.cachedStatement(sql: "SELECT height, hash FROM chain ORDER BY height DESC LIMIT 1")) else { return nil }
        return LedgerHead(height: UInt64(row[0] as Int64), hash: (row[1] as Data).bytes)
    }

    static func setting(_ db: Database, _ key: String) throws -> Data? {
        try SettingRecord.fetchOne(db, key: key)?.value
    }

    static func genesisHeader(_ db: Database) throws -> BlockHeader {
        guard let c = try ChainRecord.fetchOne(db, key: 0) else {
            throw KianaStoreError(.notInitialized, "no ledger here yet: run `kiana init` first")
        }
        guard let b = try BlockRecord.fetchOne(db, key: c.hash) else {
            throw KianaStoreError(.corrupt, "the genesis block is listed in the chain but cannot be read (a damaged database file?)")
        }
        return try Block(signedHeaderBytes: b.signedHeader.bytes, entryBytes: []).header
    }

    /// The devices allowed to sign blocks and entries.
    public func authorities() throws(KianaStoreError) -> Set<[UInt8]> {
        try membership().authorities
    }

    /// Authorities and pending votes at the head of the canonical chain.
    public func membership() throws(KianaStoreError) -> Membership {
        try run("reading membership") { try writer.read { db in try Self.membership(db) } }
    }

    static func authorities(_ db: Database) throws -> Set<[UInt8]> {
        try membership(db).authorities
    }

    /// Replays the vote entries of the canonical chain (votes are rare, so this stays cheap).
    static func membership(_ db: Database) throws -> Membership {
        try membership(db, through: try head(db).map { Int64($0.height) } ?? 0)
    }

    /// Membership after canonical block `height`.
    static func membership(_ db: Database, through height: Int64) throws -> Membership {
        let genesis = try genesisHeader(db)
        let rows = try Row.fetchAll(
            db,
            sql: """
                SELECT chain.height, entry.raw FROM chain
                JOIN blockEntry ON blockEntry.blockHash = chain.hash JOIN entry ON entry.id = blockEntry.entryId
                WHERE entry.kind = ? AND chain.height <= ? ORDER BY chain.height, blockEntry.position
                """, arguments: [EntryKind.authorityVote.rawValue, height])
        let votes = try rows.map { r -> (height: UInt64, signer: [UInt8], vote: Vote) in
            let e = try Entry(decoding: (r["raw"] as Data).bytes)
            return (UInt64(r["height"] as Int64), e.author, try Vote(payload: e.payload))
        }
        return Membership.replay(genesisAuthorities: genesis.authorities ?? [], votes: votes, tipHeight: UInt64(height))
    }

    // MARK: writing

    /// Signs one entry per operation, seals all pending entries into a new block on the
    /// head, and applies them to the knowledge state, in one transaction.
    /// With `onlyIf`, the write happens only while the item's last entry is one of the given
    /// versions (checked in the same transaction; `changed` otherwise): an edit based on an
    /// older version (If-Match) never overwrites a change made meanwhile.
    public func write(
        _ ops: [KnowledgeOp], identity: DeviceIdentity, now: UInt64, onlyIf: (item: ItemID, versions: [String])? = nil
    ) throws(KianaStoreError) -> WriteReceipt {
        guard !ops.isEmpty else { throw KianaStoreError(.invalidInput, "nothing to write") }
        for op in ops {
            if case .put(_, let f) = op {
                do throws(KianaCoreError) { try f.validateInput() } catch {
                    throw KianaStoreError(error.code, error.message, cause: error)
                }
            }
        }
        return try write(entries: ops.map { ($0.kind, $0.payload) }, identity: identity, now: now) { db in
            guard let onlyIf else { return }
            guard let current = try ItemRecord.fetchOne(db, key: Data(onlyIf.item.bytes)).map(Self.item) else {
                throw KianaStoreError(.notFound, "no knowledge item \(onlyIf.item)")
            }
            try Self.require(current, isOneOf: onlyIf.versions)
        }
    }

    /// Throws `changed` unless `item`'s last entry (hex) is one of `versions` (If-Match).
    public static func require(_ item: StoredItem, isOneOf versions: [String]) throws(KianaStoreError) {
        guard !versions.contains(item.lastEntry.map(Hex.encode) ?? "") else { return }
        throw KianaStoreError(
            .changed,
            item.deleted ? "item \(item.id) was forgotten meanwhile" : "item \(item.id) was changed meanwhile (elsewhere): load it again, then make your change")
    }

    /// Casts a membership vote (an `authority.vote` entry, sealed like any write).
    public func write(vote: Vote, identity: DeviceIdentity, now: UInt64) throws(KianaStoreError) -> WriteReceipt {
        try write(entries: [(EntryKind.authorityVote, vote.payload)], identity: identity, now: now)
    }

    func write(
        entries ops: [(kind: EntryKind, payload: CBOR)], identity: DeviceIdentity, now: UInt64,
        precondition: (Database) throws -> Void = { _ in }
    ) throws(KianaStoreError) -> WriteReceipt {
        defer { database.keepWritesIfWALLost() }
        return try run("writing to the ledger") {
            try writer.write { db in
                try precondition(db)
                guard let net = try Self.setting(db, "network")?.bytes else {
                    throw KianaStoreError(.notInitialized, "no ledger here yet: run `kiana init` first")
                }
                guard try Self.authorities(db).contains(identity.publicKey) else {
                    throw KianaStoreError(.notAuthority, "this device (\(identity.deviceID)) is not an authority of network \(Hex.encode(net.prefix(8)))…")
                }
                var clock = HybridClock(last: try Self.lastHLC(db))
                var seq = UInt64(try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM entry WHERE author = ?", arguments: [Data(identity.publicKey)]) ?? 0)
                var entries: [Entry] = []
                for op in ops {
                    seq += 1
                    let e = Entry(signedBy: identity, network: net, sequence: seq, hlc: clock.tick(now: now), kind: op.kind, payload: op.payload)
                    try Self.insert(entry: e, db)
                    try PendingRecord(entryId: Data(e.id), addedAt: Int64(now)).insert(db)
                    entries.append(e)
                }
                try Self.saveHLC(clock.last, db)
                // Sealed in blocks of bounded size (older pending entries first, by HLC): the
                // last block holds the newest of these entries.
                guard var block = try Self.sealPending(db, identity: identity, now: now) else {
                    throw KianaStoreError(.conflict, "the new entries could not be sealed")
                }
                while let next = try Self.sealPending(db, identity: identity, now: now) { block = next }
                return WriteReceipt(entries: entries, block: block)
            }
        }
    }

    static func lastHLC(_ db: Database) throws -> HLC {
        guard let d = try Data.fetchOne(try db.cachedStatement(sql: "SELECT value FROM setting WHERE key = 'hlc'")) else { return .zero }
        guard case .array(let a) = try CBOR.decode(d.bytes), a.count == 2,
            case .unsigned(let w) = a[0], case .unsigned(let l) = a[1], l <= UInt64(UInt32.max)
        else {
            throw KianaStoreError(.corrupt, "stored clock is unreadable")
        }
        return HLC(wall: w, logical: UInt32(l))
    }

    static func saveHLC(_ h: HLC, _ db: Database) throws {
        try db.cachedStatement(sql: "INSERT OR REPLACE INTO setting (key, value) VALUES ('hlc', ?)")
            .execute(arguments: [Data(CBOR.array([.unsigned(h.wall), .unsigned(UInt64(h.logical))]).encoded)])
    }

    /// Entries and encoded bytes one sealed block holds at most (at least one entry): every peer
    /// accepts it whole in one sync batch (decision 89), and it stays under the entry limit.
    public static let sealLimits = (entries: 1000, bytes: 1 << 20)

    /// Seals the pending entries that can go on the head into one block signed by `identity`
    /// and applies them (at most `sealLimits`; call again for the rest); nil if none can. Entries already canonical leave the pool; entries whose
    /// author is not an authority, or whose sequence number the chain already passed (an
    /// equivocation), stay pending and are reported by `status`. Order is by HLC, which keeps
    /// each author's sequence increasing.
    static func sealPending(_ db: Database, identity: DeviceIdentity, now: UInt64) throws -> Block? {
        try dropCanonicalFromPending(db)
        let raws = try Data.fetchAll(
            db,
            sql: """
                SELECT entry.raw FROM pending CROSS JOIN entry ON entry.id = pending.entryId
                ORDER BY entry.hlcWall, entry.hlcLogical, entry.author, entry.seq
                """)
        let authorities = try authorities(db)
        // A block just sealed may have moved this key's seat (a rotation): it signs no more.
        guard authorities.contains(identity.publicKey) else { return nil }
        var lastSeq: [[UInt8]: UInt64] = [:]
        var entries: [Entry] = []
        var bytes = 0
        for raw in raws {
            let e = try Entry(decoding: raw.bytes)
            guard authorities.contains(e.author) else { continue }
            let last = try lastSeq[e.author] ?? canonicalSequence(of: e.author, db)
            guard e.sequence > last else { continue }
            if !entries.isEmpty, entries.count >= sealLimits.entries || bytes + e.encoded.count > sealLimits.bytes { break }
            lastSeq[e.author] = e.sequence
            entries.append(e)
            bytes += e.encoded.count
        }
        guard !entries.isEmpty else { return nil }
        guard let head = try head(db), let parentRecord = try BlockRecord.fetchOne(db, key: Data(head.hash)) else {
            throw KianaStoreError(.notInitialized, "no ledger here yet: run `kiana init` first")
        }
        let parent = try Block(signedHeaderBytes: parentRecord.signedHeader.bytes, entryBytes: []).header
        let block = Block.seal(entries: entries, parent: parent, parentHash: head.hash, time: now, identity: identity)
        try insert(block: block, db)
        for e in entries { try db.execute(sql: "DELETE FROM pending WHERE entryId = ?", arguments: [Data(e.id)]) }
        try apply(entries, db)
        return block
    }

    static func insert(entry e: Entry, _ db: Database) throws {
        try insert(entry: e, raw: e.encoded, db)
    }

    /// `raw`: `e.encoded`, when the caller has it already.
    static func insert(entry e: Entry, raw: [UInt8], _ db: Database) throws {
        try db.cachedStatement(sql: "INSERT OR IGNORE INTO entry (id, author, seq, kind, hlcWall, hlcLogical, raw) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .execute(arguments: [
                Data(e.id), Data(e.author), Int64(e.sequence), e.kind.rawValue, Int64(e.hlc.wall), Int64(e.hlc.logical), Data(raw),
            ])
    }

    /// Stores a block on top of the current head (entries too) and makes it canonical.
    static func insert(block b: Block, _ db: Database) throws {
        try insertBlockOnly(b, db)
        try insertChain(height: Int64(b.height), hash: Data(b.hash), db)
    }

    /// Folds entries into the materialized knowledge state, and keeps the full-text index and
    /// the embeddings in step: a changed title or text replaces the item's search row and drops
    /// its vectors. Done here rather than by triggers (decision 94): a trigger makes every item
    /// write a multi-row statement, whose statement savepoint flushes FTS5's pending terms to
    /// disk once per item; written one row at a time, the terms of a whole transaction are
    /// flushed once, at commit.
    static func apply(_ entries: [Entry], _ db: Database) throws {
        for e in entries {
            guard let op = try? KnowledgeOp(kind: e.kind, payload: e.payload) else { continue }
            let key = Data(op.itemID.bytes)
            let old = try Row.fetchOne(try db.cachedStatement(sql: "SELECT rowid, title, text, deleted, state FROM item WHERE id = ?"), arguments: [key])
            var state = try old.map { try ItemState(cbor: CBOR.decode(($0[4] as Data).bytes)) } ?? ItemState(id: op.itemID)
            state.apply(op, stamp: Stamp(e))
            let r = try record(for: state)
            let values: StatementArguments = [r.title, r.text, r.tags, r.source, r.createdWall, r.updatedWall, r.deleted, r.state, r.id]
            guard let old else {
                try db.cachedStatement(
                    sql: "INSERT INTO item (title, text, tags, source, createdWall, updatedWall, deleted, state, id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ).execute(arguments: values)
                if !r.deleted { try indexForSearch(rowid: db.lastInsertedRowID, title: r.title, text: r.text, db) }
                continue
            }
            try db.cachedStatement(
                sql: "UPDATE item SET title = ?, text = ?, tags = ?, source = ?, createdWall = ?, updatedWall = ?, deleted = ?, state = ? WHERE id = ?"
            ).execute(arguments: values)
            let rowid: Int64 = old[0]
            let (oldTitle, oldText, oldDeleted): (String?, String?, Bool) = (old[1], old[2], old[3])
            // Bytes, not Swift's `==`, which calls canonically equivalent texts (NFC and NFD)
            // equal: the index must follow every stored change (as SQLite's `IS NOT` did).
            guard !Self.sameBytes(oldTitle, r.title) || !Self.sameBytes(oldText, r.text) || oldDeleted != r.deleted else { continue }
            if !oldDeleted {
                try db.cachedStatement(sql: "INSERT INTO itemSearch (itemSearch, rowid, title, text) VALUES ('delete', ?, ?, ?)")
                    .execute(arguments: [rowid, oldTitle, oldText])
            }
            if !r.deleted { try indexForSearch(rowid: rowid, title: r.title, text: r.text, db) }
            // The embedded text changed (or the item is gone): "no row" means "needs embedding".
            if try Bool.fetchOne(try db.cachedStatement(sql: "SELECT EXISTS(SELECT 1 FROM itemVector WHERE itemId = ?)"), arguments: [key]) == true {
                try db.cachedStatement(sql: "DELETE FROM itemVector WHERE itemId = ?").execute(arguments: [key])
            }
        }
    }

    static func sameBytes(_ a: String?, _ b: String?) -> Bool {
        switch (a, b) {
        case (nil, nil): true
        case (let x?, let y?): x.utf8.elementsEqual(y.utf8)
        default: false
        }
    }

    static func indexForSearch(rowid: Int64, title: String?, text: String?, _ db: Database) throws {
        try db.cachedStatement(sql: "INSERT INTO itemSearch (rowid, title, text) VALUES (?, ?, ?)").execute(arguments: [rowid, title, text])
    }

    /// The `item` row of a state. `json` encodes the tags (one encoder for many rows).
    static func record(for s: ItemState, json: JSONEncoder = JSONEncoder()) throws -> ItemRecord {
        let tags = try s.tags.map { String(decoding: try json.encode($0.value), as: UTF8.self) }
        return ItemRecord(
            id: Data(s.id.bytes), title: s.title?.value, text: s.text?.value, tags: tags, source: s.source?.value,
            createdWall: s.created.map { Int64($0.wall) }, updatedWall: s.updated.map { Int64($0.wall) },
            deleted: s.isDeleted, state: Data(s.encoded))
    }

    // MARK: reading

    /// The canonical chain as stored: signed header bytes and entry bytes per height.
    public struct RawBlock: Sendable {
        public var height: UInt64
        public var hash: [UInt8]
        public var signedHeader: [UInt8]
        public var entries: [(id: [UInt8], raw: [UInt8])]
        /// The block row's copies of header fields (indexed; checked against `signedHeader`).
        public var parent: [UInt8] = []
        public var signer: [UInt8] = []
        public var time: UInt64 = 0
        public var rowHeight: UInt64 = 0
        /// Whether the block row's columns hold the schema's storage classes (a blob compared
        /// with text, or text with a blob, never matches in SQL).
        public var rowTyped = true
        /// The entry rows' copies of entry fields, in entry order (checked against their bytes).
        public var entryRows: [EntryRow] = []
    }

    /// The indexed copies of an entry's fields in its `entry` row (membership, sequence numbers
    /// and clocks are read from them).
    public struct EntryRow: Sendable, Equatable {
        public var author: [UInt8]
        public var sequence: UInt64
        public var kind: String
        public var wall: UInt64
        public var logical: UInt64
        /// Whether the row's columns hold the schema's storage classes: `kind` stored as a blob
        /// reads back as the same string, but `WHERE kind = ?` (membership) no longer finds it.
        public var typed: Bool
    }

    /// SQL true when a canonical block's `block` and `chain` rows hold the schema's storage classes.
    static let blockTyped = """
        (typeof(chain.hash) = 'blob' AND typeof(block.hash) = 'blob' AND typeof(block.height) = 'integer' AND typeof(block.parent) = 'blob'
          AND typeof(block.signer) = 'blob' AND typeof(block.time) = 'integer' AND typeof(block.signedHeader) = 'blob')
        """

    /// SQL true when an `entry` row's columns hold the schema's storage classes.
    static let entryTyped = """
        (typeof(entry.id) = 'blob' AND typeof(entry.author) = 'blob' AND typeof(entry.seq) = 'integer' AND typeof(entry.kind) = 'text'
          AND typeof(entry.hlcWall) = 'integer' AND typeof(entry.hlcLogical) = 'integer' AND typeof(entry.raw) = 'blob')
        """

    /// A column of a chain row, of the type the schema gives it; a value of another type (a
    /// row changed on disk) is damage, named, not a crash.
    static func stored<Value: DatabaseValueConvertible>(_ row: Row, _ index: Int, in what: String = "a stored chain row") throws -> Value {
        do { return try row.decode(Value.self, atIndex: index) } catch {
            throw KianaStoreError(.corrupt, "\(what) is damaged: column \(Array(row.columnNames)[index]) holds \(row[index] as DatabaseValue)")
        }
    }

    /// The canonical chain's stored bytes from `from` through `through`. `rowColumns`: also the
    /// block rows' indexed copies of header fields (for the integrity check).
    public func rawChain(from: UInt64 = 0, through: UInt64 = .max, rowColumns: Bool = false) throws(KianaStoreError) -> [RawBlock] {
        try run("reading the chain") {
            try writer.read { db in
                let hi = Int64(clamping: through)
                var blocks: [RawBlock] = []
                var index: [Data: Int] = [:]
                let rows = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT chain.height, chain.hash, block.signedHeader\(rowColumns ? ", block.parent, block.signer, block.time, block.height, " + Self.blockTyped : "")
                        FROM chain JOIN block ON block.hash = chain.hash
                        WHERE chain.height BETWEEN ? AND ? ORDER BY chain.height
                        """, arguments: [Int64(clamping: from), hi])
                for r in rows {
                    let height = UInt64(bitPattern: try Self.stored(r, 0))
                    let name = "the stored row of block \(height)"
                    let h: Data = try Self.stored(r, 1, in: name)
                    index[h] = blocks.count
                    var raw = RawBlock(height: height, hash: h.bytes, signedHeader: (try Self.stored(r, 2, in: name) as Data).bytes, entries: [])
                    if rowColumns {
                        raw.parent = (try Self.stored(r, 3, in: name) as Data).bytes
                        raw.signer = (try Self.stored(r, 4, in: name) as Data).bytes
                        raw.time = UInt64(bitPattern: try Self.stored(r, 5, in: name))
                        raw.rowHeight = UInt64(bitPattern: try Self.stored(r, 6, in: name))
                        raw.rowTyped = try Self.stored(r, 7, in: name)
                    }
                    blocks.append(raw)
                }
                let erows = try Row.fetchCursor(
                    db,
                    sql: """
                        SELECT blockEntry.blockHash, entry.id, entry.raw\(rowColumns ? ", entry.author, entry.seq, entry.kind, entry.hlcWall, entry.hlcLogical, " + Self.entryTyped : "") FROM chain
                        JOIN blockEntry ON blockEntry.blockHash = chain.hash
                        JOIN entry ON entry.id = blockEntry.entryId
                        WHERE chain.height BETWEEN ? AND ? ORDER BY chain.height, blockEntry.position
                        """, arguments: [Int64(clamping: from), hi])
                while let r = try erows.next() {
                    let bh: Data = try Self.stored(r, 0)
                    if let i = index[bh] {
                        let name = "the stored row of entry \(blocks[i].entries.count) of block \(blocks[i].height)"
                        blocks[i].entries.append((id: (try Self.stored(r, 1, in: name) as Data).bytes, raw: (try Self.stored(r, 2, in: name) as Data).bytes))
                        if rowColumns {
                            blocks[i].entryRows.append(
                                EntryRow(
                                    author: (try Self.stored(r, 3, in: name) as Data).bytes, sequence: UInt64(bitPattern: try Self.stored(r, 4, in: name)),
                                    kind: try Self.stored(r, 5, in: name), wall: UInt64(bitPattern: try Self.stored(r, 6, in: name)),
                                    logical: UInt64(bitPattern: try Self.stored(r, 7, in: name)), typed: try Self.stored(r, 8, in: name)))
                        }
                    }
                }
                return blocks
            }
        }
    }

    /// Decoded blocks of the canonical chain (structure checked, not validated).
    public func blocks(from: UInt64 = 0, through: UInt64 = .max) throws(KianaStoreError) -> [Block] {
        try rawChain(from: from, through: through).map { (r: RawBlock) throws(KianaStoreError) -> Block in
            do throws(KianaCoreError) {
                return try Block(signedHeaderBytes: r.signedHeader, entryBytes: r.entries.map(\.raw))
            } catch {
                throw KianaStoreError(.corrupt, "block \(r.height) does not decode: \(error.message)", height: r.height, cause: error)
            }
        }
    }

    /// Re-validates the whole stored chain from its stored bytes, checks that stored index
    /// columns agree with those bytes, and that the materialized knowledge equals the
    /// state recomputed from the ledger. SQLite's own `integrity_check` runs first, so a damaged
    /// b-tree or index (which can hide rows from every query) is named instead of trusted.
    /// Errors name the block. On success the head is recorded as verified.
    public func verify(now: UInt64) throws(KianaStoreError) -> LedgerState {
        try verifyMarking(now: now).state
    }

    /// `verify`, also returning the verified mark it recorded (or could not record: a read-only
    /// data directory can still be verified, it just keeps no record).
    public func verifyMarking(now: UInt64) throws(KianaStoreError) -> (state: LedgerState, mark: VerifiedMark) {
        let checked = try besideFileCheck { () throws(KianaStoreError) in try validateStoredChain(now: now) }
        let mark = VerifiedMark(height: checked.state.height, hash: checked.state.tipHash, digest: checked.digest)
        try? recordVerified(mark)
        return (checked.state, mark)
    }

    /// The materialized knowledge (`item`) must be exactly what the ledger (`chain`, the state
    /// of the canonical chain's entries) plus the pending pool implies: item for item, field for
    /// field (an entry superseded by a copy of it is renamed in the state, decision 111).
    func checkKnowledge(expected chain: KnowledgeState, batchSize: Int = itemBatch) throws(KianaStoreError) {
        // Pending entries shape what is served too (and are sealed into the next block): each is
        // checked as the chain's entries are, signature and payload, and against its stored ID.
        let pending = try run("reading pending entries") {
            try writer.read { db in
                try Row.fetchAll(
                    db,
                    sql: "SELECT entry.id, entry.raw, entry.author, entry.seq, entry.kind, entry.hlcWall, entry.hlcLogical, \(Self.entryTyped) FROM pending CROSS JOIN entry ON entry.id = pending.entryId"
                ).map { row in
                    let id: Data = try Self.stored(row, 0, in: "a stored pending entry row")
                    let e = try Entry(decoding: (try Self.stored(row, 1, in: "a stored pending entry row") as Data).bytes)
                    let name = "pending entry \(Hex.encode(Array(id.bytes.prefix(8))))"
                    guard e.id == id.bytes else { throw KianaStoreError(.corrupt, "\(name): [entry-id] does not match its stored bytes") }
                    guard e.verifySignature() else { throw KianaStoreError(.corrupt, "\(name): [entry-signature] signature does not verify") }
                    if let problem = LedgerState.payloadProblem(e) { throw KianaStoreError(.corrupt, "\(name): [payload] \(problem)") }
                    let stored = EntryRow(
                        author: (try Self.stored(row, 2, in: "a stored pending entry row") as Data).bytes, sequence: UInt64(bitPattern: try Self.stored(row, 3, in: "a stored pending entry row")),
                        kind: try Self.stored(row, 4, in: "a stored pending entry row"), wall: UInt64(bitPattern: try Self.stored(row, 5, in: "a stored pending entry row")),
                        logical: UInt64(bitPattern: try Self.stored(row, 6, in: "a stored pending entry row")),
                        typed: try Self.stored(row, 7, in: "a stored pending entry row"))
                    guard stored == EntryRow(author: e.author, sequence: e.sequence, kind: e.kind.rawValue, wall: e.hlc.wall, logical: UInt64(e.hlc.logical), typed: true) else {
                        throw KianaStoreError(.corrupt, "\(name): [entry-row] stored author, sequence, kind or clock does not match its bytes")
                    }
                    return e
                }
            }
        }
        var expected = chain
        for e in pending { expected.apply(e) }

        try run("checking knowledge state") {
            try writer.read { db in
                let count = try ItemRecord.fetchCount(db)
                guard count == expected.items.count else {
                    throw KianaStoreError(.corrupt, "knowledge table has \(count) items, ledger implies \(expected.items.count)")
                }
                // Every item is read at every start: columns by index from a cursor (no Codable,
                // no array of all rows), compared in batches on all cores, the stored state as
                // bytes with the expected state's encoding (decoded only when the bytes differ).
                // Storage classes too: the same bytes as a blob, a fraction in a wall clock or a 2 in
                // `deleted` read back equal but answer SQL's comparisons differently.
                let rows = try Row.fetchCursor(
                    db,
                    sql: """
                        SELECT id, title, text, tags, source, createdWall, updatedWall, deleted, state,
                          typeof(id) = 'blob' AND typeof(state) = 'blob' AND typeof(title) IN ('text', 'null') AND typeof(text) IN ('text', 'null')
                          AND typeof(tags) IN ('text', 'null') AND typeof(source) IN ('text', 'null') AND typeof(createdWall) IN ('integer', 'null')
                          AND typeof(updatedWall) IN ('integer', 'null') AND typeof(deleted) = 'integer' AND deleted IN (0, 1)
                        FROM item
                        """)
                var seen = Set<Data>()
                seen.reserveCapacity(count)
                var batch: [ItemRecord] = []
                batch.reserveCapacity(batchSize)
                var done = false
                while !done {
                    if let r = try rows.next() {
                        let id: Data = try Self.stored(r, 0, in: "a stored knowledge row")
                        let name = "knowledge item \(Hex.encode(id.bytes))"
                        guard try Self.stored(r, 9, in: "a stored knowledge row") as Bool else {
                            throw KianaStoreError(.corrupt, "\(name) is damaged: a column holds a value of another type than the table's")
                        }
                        guard seen.insert(id).inserted else { throw KianaStoreError(.corrupt, "\(name) is stored twice") }
                        batch.append(
                            ItemRecord(
                                id: id, title: try Self.stored(r, 1, in: name), text: try Self.stored(r, 2, in: name), tags: try Self.stored(r, 3, in: name),
                                source: try Self.stored(r, 4, in: name), createdWall: try Self.stored(r, 5, in: name),
                                updatedWall: try Self.stored(r, 6, in: name), deleted: try Self.stored(r, 7, in: name), state: try Self.stored(r, 8, in: name)))
                    } else {
                        done = true
                    }
                    guard batch.count == batchSize || (done && !batch.isEmpty) else { continue }
                    if let bad = Self.firstDiffering(batch, expected) {
                        let id = Hex.encode(batch[bad].id.bytes)
                        let known = (try? ItemID(bytes: batch[bad].id.bytes)).flatMap { expected.items[$0] } != nil
                        throw KianaStoreError(.corrupt, known ? "knowledge item \(id) differs from the ledger" : "knowledge item \(id) is not in the ledger")
                    }
                    batch.removeAll(keepingCapacity: true)
                }
            }
        }
    }

    /// Rows of `item` compared per batch.
    static let itemBatch = 8192

    /// The index of the first stored row that is not what `expected` implies (nil: all are).
    static func firstDiffering(_ rows: [ItemRecord], _ expected: KnowledgeState) -> Int? {
        var bad = [Bool](repeating: false, count: rows.count)
        bad.withUnsafeMutableBufferPointer { buffer in
            nonisolated(unsafe) let out = buffer
            ChainValidator.parallelChunks(count: rows.count) { range in
                let json = JSONEncoder()
                for i in range { out[i] = !matches(rows[i], expected, json) }
            }
        }
        return bad.firstIndex(of: true)
    }

    /// Whether a stored `item` row is exactly the row of the state `expected` implies for it.
    /// Text columns compare as bytes (Swift's `==` calls NFC and NFD spellings equal).
    static func matches(_ r: ItemRecord, _ expected: KnowledgeState, _ json: JSONEncoder) -> Bool {
        guard let key = try? ItemID(bytes: r.id.bytes), let want = expected.items[key], let e = try? record(for: want, json: json) else { return false }
        guard r.state == e.state || (try? ItemState(cbor: CBOR.decode(r.state.bytes))) == want else { return false }
        return sameBytes(r.title, e.title) && sameBytes(r.text, e.text) && sameBytes(r.tags, e.tags) && sameBytes(r.source, e.source)
            && r.createdWall == e.createdWall && r.updatedWall == e.updatedWall && r.deleted == e.deleted
    }

    /// Finds an entry by ID or unique hex prefix, with its block height and position.
    public func findEntry(idPrefix: String) throws(KianaStoreError) -> (entry: Entry, height: UInt64, position: Int) {
        let prefix = idPrefix.lowercased()
        guard (4...64).contains(prefix.count), prefix.allSatisfy(\.isHexDigit) else {
            throw KianaStoreError(.invalidInput, "an entry ID (or a prefix of one) is 4 to 64 hex characters (0-9, a-f), not \"\(idPrefix.prefix(80))\"")
        }
        return try run("finding entry") {
            try writer.read { db in
                let rows = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT entry.raw, chain.height, blockEntry.position FROM entry
                        JOIN blockEntry ON blockEntry.entryId = entry.id JOIN chain ON chain.hash = blockEntry.blockHash
                        WHERE hex(entry.id) LIKE ? LIMIT 2
                        """, arguments: [prefix.uppercased() + "%"])
                guard let r = rows.first else { throw KianaStoreError(.notFound, "no entry \(idPrefix) in the ledger") }
                guard rows.count == 1 else { throw KianaStoreError(.ambiguous, "entry prefix \(idPrefix) is ambiguous: give more characters") }
                return (try Entry(decoding: (r["raw"] as Data).bytes), UInt64(r["height"] as Int64), Int(r["position"] as Int64))
            }
        }
    }

    public func items(includeDeleted: Bool = false) throws(KianaStoreError) -> [StoredItem] {
        try run("listing items") {
            try writer.read { db in
                let all = ItemRecord.all()
                return try (includeDeleted ? all : all.filter(Column("deleted") == false))
                    .order(Column("updatedWall").desc, Column("id")).fetchAll(db).map(Self.item)
            }
        }
    }

    /// A live item with exactly this text from this source, if there is one (a full scan: for
    /// rare writes such as "remember that …", not for hot paths).
    public func liveItem(text: String, source: String) throws(KianaStoreError) -> StoredItem? {
        try run("finding item") {
            try writer.read { db in
                try ItemRecord.fetchOne(db, sql: "SELECT * FROM item WHERE deleted = 0 AND source = ? AND text = ? LIMIT 1", arguments: [source, text])
                    .map(Self.item)
            }
        }
    }

    /// One item by ID or unique hex prefix (at least 4 characters).
    public func item(idPrefix: String) throws(KianaStoreError) -> StoredItem {
        let prefix = idPrefix.lowercased()
        guard (4...32).contains(prefix.count), prefix.allSatisfy(\.isHexDigit) else {
            throw KianaStoreError(.invalidInput, "an item ID (or a prefix of one) is 4 to 32 hex characters (0-9, a-f), not \"\(idPrefix.prefix(80))\"")
        }
        return try run("finding item") {
            try writer.read { db in
                let rows = try ItemRecord.fetchAll(db, sql: "SELECT * FROM item WHERE hex(id) LIKE ? LIMIT 2", arguments: [prefix.uppercased() + "%"])
                guard let r = rows.first else { throw KianaStoreError(.notFound, "no knowledge item \(idPrefix)") }
                guard rows.count == 1 else { throw KianaStoreError(.ambiguous, "item prefix \(idPrefix) is ambiguous: give more characters") }
                return try Self.item(r)
            }
        }
    }

    static func item(_ r: ItemRecord) throws -> StoredItem {
        let s = try ItemState(cbor: CBOR.decode(r.state.bytes))
        return StoredItem(
            id: s.id, title: s.title?.value, text: s.text?.value, tags: s.tags?.value ?? [], source: s.source?.value,
            created: s.created, updated: s.updated, deleted: s.isDeleted,
            lastEntry: [s.lastPut, s.lastDelete].compactMap { $0 }.max()?.entryID)
    }

    /// Entries waiting in the pending pool (one cheap query; `counts` also counts the chain).
    public func pendingCount() throws(KianaStoreError) -> Int {
        try run("counting pending entries") { try writer.read { db in try PendingRecord.fetchCount(db) } }
    }

    public func counts() throws(KianaStoreError) -> StoreCounts {
        try run("counting") {
            try writer.read { db in
                StoreCounts(
                    blocks: try ChainRecord.fetchCount(db),
                    entries: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM blockEntry JOIN chain ON chain.hash = blockEntry.blockHash") ?? 0,
                    items: try ItemRecord.filter(Column("deleted") == false).fetchCount(db),
                    deletedItems: try ItemRecord.filter(Column("deleted") == true).fetchCount(db),
                    pending: try PendingRecord.fetchCount(db))
            }
        }
    }

    /// Hashes of the canonical chain in height order: the history tree's leaves.
    public func blockHashes() throws(KianaStoreError) -> [[UInt8]] {
        try run("reading block hashes") {
            try writer.read { db in try Data.fetchAll(db, sql: "SELECT hash FROM chain ORDER BY height").map(\.bytes) }
        }
    }
}
