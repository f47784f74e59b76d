import Foundation
import GRDB
import KianaCore

/// Writes caught by a reused sequence number (decision 111).
///
/// A device whose data directory was restored from an older copy (a backup, a disk image) does
/// not know the sequence numbers it used after that copy was made, so its next writes reuse
/// them. Once the chain carries the other entries with those numbers, the new writes can never
/// be sealed: each author's sequence must rise along the chain. Without help they would wait in
/// the pending pool for ever, acknowledged but never replicated. Their author signs them again
/// under fresh sequence numbers, keeping clock, kind and payload, so they land where a
/// last-writer-wins merge would have put them; every device then retires the old copies.
extension LedgerStore {
    /// The highest sequence number of `author` on the canonical chain (0: none). Walks the
    /// author's entries from the newest down to the first canonical one (index `entry_author_seq`).
    static func canonicalSequence(of author: [UInt8], _ db: Database) throws -> UInt64 {
        let query = try db.cachedStatement(
            sql: """
                SELECT entry.seq FROM entry WHERE entry.author = ?
                AND EXISTS (SELECT 1 FROM blockEntry JOIN chain ON chain.hash = blockEntry.blockHash WHERE blockEntry.entryId = entry.id)
                ORDER BY entry.seq DESC LIMIT 1
                """)
        return UInt64(try Int64.fetchOne(query, arguments: [Data(author)]) ?? 0)
    }

    /// Pending entries that can never be sealed as they are (their author's sequence number is
    /// at or below the canonical chain's last one for that author), oldest first by clock.
    static func stuckPending(_ db: Database, author: [UInt8]? = nil) throws -> [Entry] {
        // Only one author's rows are decoded when one is asked for (members ask after every
        // pull and push: `stuckEntries`).
        let raws = try Data.fetchAll(
            db,
            sql: """
                SELECT entry.raw FROM pending CROSS JOIN entry ON entry.id = pending.entryId
                WHERE ? IS NULL OR entry.author = ?
                ORDER BY entry.hlcWall, entry.hlcLogical, entry.author, entry.seq
                """, arguments: [author.map { Data($0) }, author.map { Data($0) }])
        var last: [[UInt8]: UInt64] = [:]
        var out: [Entry] = []
        for raw in raws {
            let e = try Entry(decoding: raw.bytes)
            let top = try last[e.author] ?? canonicalSequence(of: e.author, db)
            last[e.author] = top
            if e.sequence <= top { out.append(e) }
        }
        return out
    }

    /// `author`'s entries that lost a sequence number to another of its entries on the canonical
    /// chain and wait nowhere: received in a block of a side branch only, so neither applied nor
    /// pending (the fork choice kept the other entry). Only the author can help them.
    static func lostEntries(of author: [UInt8], _ db: Database) throws -> [Entry] {
        let raws = try Data.fetchAll(
            db,
            sql: """
                SELECT entry.raw FROM conflict CROSS JOIN entry ON entry.id = conflict.entryId
                WHERE conflict.author = ?
                  AND NOT EXISTS (SELECT 1 FROM blockEntry JOIN chain ON chain.hash = blockEntry.blockHash WHERE blockEntry.entryId = entry.id)
                  AND NOT EXISTS (SELECT 1 FROM superseded WHERE superseded.entryId = entry.id)
                  AND NOT EXISTS (SELECT 1 FROM pending WHERE pending.entryId = entry.id)
                """, arguments: [Data(author)])
        guard !raws.isEmpty else { return [] }
        let top = try canonicalSequence(of: author, db)
        return try raws.map { try Entry(decoding: $0.bytes) }.filter { $0.sequence <= top }
    }

    /// The canonical entry carrying `e`'s content (same author, clock, kind and payload) under
    /// a higher sequence number, if there is one: a copy signed again (which always takes a
    /// number above every one its author had stored). With `searched`, only the author's
    /// entries above the number last looked at are read (an entry that waits for its author
    /// costs nothing until that author writes again).
    static func landedCopy(of e: Entry, searched: LandedSearch? = nil, _ db: Database) throws -> [UInt8]? {
        let from = max(e.sequence, searched?.get(e.id) ?? 0)
        let top = try canonicalSequence(of: e.author, db)
        guard top > from else { return nil }
        let raws = try Data.fetchAll(
            try db.cachedStatement(
                sql: """
                    SELECT entry.raw FROM entry
                    WHERE entry.author = ? AND entry.seq > ? AND entry.hlcWall = ? AND entry.hlcLogical = ? AND entry.kind = ?
                      AND EXISTS (SELECT 1 FROM blockEntry JOIN chain ON chain.hash = blockEntry.blockHash WHERE blockEntry.entryId = entry.id)
                    """),
            arguments: [Data(e.author), Int64(from), Int64(e.hlc.wall), Int64(e.hlc.logical), e.kind.rawValue])
        let payload = e.payload.encoded
        for raw in raws {
            let other = try Entry(decoding: raw.bytes)
            if other.payload.encoded == payload { return other.id }
        }
        // Nothing up to `top`: the next look starts above it (a fact about the chain as read,
        // whatever becomes of this transaction).
        searched?.set(e.id, top)
        return nil
    }

    /// Takes `e` out of the pending pool as superseded by `by` (the same content under another
    /// ID). The knowledge state then names `by` wherever it named `e` — the same clock, author
    /// and value, so nothing else changes — and equals what the chain and the pending pool imply.
    static func supersede(_ e: Entry, by: [UInt8], now: UInt64, _ db: Database) throws {
        try db.execute(sql: "DELETE FROM pending WHERE entryId = ?", arguments: [Data(e.id)])
        try SupersededRecord(entryId: Data(e.id), by: Data(by), at: Int64(now)).insert(db, onConflict: .replace)
        try renameStamps(of: e, to: by, db)
    }

    /// Rewrites the stamps of `e` in the state of the item it changes to name `to` instead.
    static func renameStamps(of e: Entry, to new: [UInt8], _ db: Database) throws {
        guard let op = try? KnowledgeOp(kind: e.kind, payload: e.payload),
            let record = try ItemRecord.fetchOne(db, key: Data(op.itemID.bytes))
        else { return }
        let state = try ItemState(cbor: CBOR.decode(record.state.bytes))
        let renamed = state.renamingEntry(e.id, to: new)
        guard renamed != state else { return }
        try db.execute(sql: "UPDATE item SET state = ? WHERE id = ?", arguments: [Data(renamed.cbor.encoded), record.id])
    }

    /// What `resignStuck` did.
    public struct ResignRun: Sendable, Equatable {
        /// Entries of `identity` signed again under fresh sequence numbers.
        public var resigned = 0
        /// Stuck entries (of any author) whose content is already on the chain: retired.
        public var retired = 0
        public init(resigned: Int = 0, retired: Int = 0) {
            self.resigned = resigned
            self.retired = retired
        }
    }

    /// Retires stuck pending entries whose content already landed under another sequence
    /// number, and, when `identity` may seal, signs its own stuck writes again under fresh
    /// ones: those pending and those lost on a side branch (`lostEntries`). Its own pending
    /// entries younger (by clock) than the oldest signed again go with them, so sequence
    /// numbers keep following the clock. A stuck vote is not signed again: a vote counts in
    /// chain order, not by clock, so a late one could undo a later decision; it stays stuck
    /// and `stuckReport` reports it.
    static func resignStuck(
        _ db: Database, identity: DeviceIdentity?, now: UInt64, searched: LandedSearch? = nil
    ) throws -> ResignRun {
        try dropCanonicalFromPending(db)
        var run = ResignRun()
        try restoreOriginals(now: now, db)
        var mine: [Entry] = []
        var stuckHere = Set<[UInt8]>()
        for e in try stuckPending(db) {
            stuckHere.insert(e.id)
            if let landed = try landedCopy(of: e, searched: searched, db) {
                try supersede(e, by: landed, now: now, db)
                run.retired += 1
            } else if e.author == identity?.publicKey, e.kind != .authorityVote {
                mine.append(e)
            }
        }
        guard let identity, try authorities(db).contains(identity.publicKey) else { return run }
        let pendingMine = Set(mine.map(\.id))
        for e in try lostEntries(of: identity.publicKey, db) where !pendingMine.contains(e.id) && e.kind != .authorityVote {
            if let landed = try landedCopy(of: e, db) {
                // Never applied here, nothing to rename: only remembered as landed.
                try SupersededRecord(entryId: Data(e.id), by: Data(landed), at: Int64(now)).insert(db, onConflict: .replace)
                run.retired += 1
            } else {
                mine.append(e)
            }
        }
        mine.sort { ($0.hlc, $0.sequence) < ($1.hlc, $1.sequence) }
        guard let first = mine.first else { return run }
        guard let net = try setting(db, "network")?.bytes else {
            throw KianaStoreError(.notInitialized, "no ledger here yet: run `kiana init` first")
        }
        // Younger pending entries of this key that are not stuck go along, votes too: a vote
        // not yet sealed keeps its place in line (left behind, it would be stranded below the
        // new numbers). Stuck votes stay where they are.
        let younger = try Data.fetchAll(
            db,
            sql: """
                SELECT entry.raw FROM pending CROSS JOIN entry ON entry.id = pending.entryId
                WHERE entry.author = ? AND (entry.hlcWall > ? OR (entry.hlcWall = ? AND entry.hlcLogical > ?))
                """, arguments: [Data(identity.publicKey), Int64(first.hlc.wall), Int64(first.hlc.wall), Int64(first.hlc.logical)]
        ).map { try Entry(decoding: $0.bytes) }.filter { !stuckHere.contains($0.id) }
        let all = (mine + younger).sorted { ($0.hlc, $0.sequence) < ($1.hlc, $1.sequence) }
        var seq = UInt64(try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM entry WHERE author = ?", arguments: [Data(identity.publicKey)]) ?? 0)
        for e in all {
            seq += 1
            let again = Entry(signedBy: identity, network: net, sequence: seq, hlc: e.hlc, kind: e.kind, payload: e.payload)
            try insert(entry: again, db)
            try PendingRecord(entryId: Data(again.id), addedAt: Int64(now)).insert(db)
            // Applied first, so a lost entry (never applied) gets its effect; then the old one's
            // stamps are renamed: the state is as if only the new entry had ever been written.
            try apply([again], db)
            try supersede(e, by: again.id, now: now, db)
            run.resigned += 1
        }
        return run
    }

    /// A superseded entry that a reorg made canonical after all (its block won somewhere): the
    /// copy signed for it, if still pending, is superseded by it instead, so the write does not
    /// land twice.
    static func restoreOriginals(now: UInt64, _ db: Database) throws {
        let rows = try Row.fetchAll(
            db,
            sql: """
                SELECT superseded.entryId, superseded.by FROM superseded
                WHERE EXISTS (SELECT 1 FROM blockEntry JOIN chain ON chain.hash = blockEntry.blockHash WHERE blockEntry.entryId = superseded.entryId)
                """)
        for r in rows {
            let original: Data = r["entryId"]
            let copy: Data = r["by"]
            try db.execute(sql: "DELETE FROM superseded WHERE entryId = ?", arguments: [original])
            guard try Bool.fetchOne(db, sql: "SELECT EXISTS(SELECT 1 FROM pending WHERE entryId = ?)", arguments: [copy]) == true,
                let raw = try Data.fetchOne(db, sql: "SELECT raw FROM entry WHERE id = ?", arguments: [copy])
            else { continue }
            try supersede(try Entry(decoding: raw.bytes), by: original.bytes, now: now, db)
        }
    }

    /// Retires stuck pending entries whose content landed elsewhere and signs `identity`'s
    /// own stuck writes again (see `resignStuck`); one transaction.
    public func resignStuck(identity: DeviceIdentity?, now: UInt64) throws(KianaStoreError) -> ResignRun {
        defer { database.keepWritesIfWALLost() }
        return try run("signing stuck entries again") {
            try writer.write { db in try Self.resignStuck(db, identity: identity, now: now, searched: database.landedSearch) }
        }
    }

    /// True when `author` has entries lost on a side branch that it should sign again (cheap:
    /// the conflict table is empty unless some key reused a sequence number).
    public func hasLostEntries(of author: [UInt8]) throws(KianaStoreError) -> Bool {
        try run("looking for lost entries") {
            try writer.read { db in try Self.lostEntries(of: author, db).contains { $0.kind != .authorityVote } }
        }
    }

    /// The encodings of `author`'s entries this device holds that only `author` can help: stuck
    /// in the pending pool, or lost on a side branch; votes left out. At most `limit` entries
    /// and `maxBytes`, oldest first. A member's device offers them to that member, whose own
    /// copy may not know them (it was restored from an older copy).
    public func stuckEntries(of author: [UInt8], limit: Int = 256, maxBytes: Int = 512 * 1024) throws(KianaStoreError) -> [[UInt8]] {
        try run("listing stuck entries") {
            try writer.read { db in
                let all = try Self.stuckPending(db, author: author) + Self.lostEntries(of: author, db)
                var out: [[UInt8]] = []
                var bytes = 0
                for e in all where e.kind != .authorityVote {
                    let raw = e.encoded
                    guard out.count < limit, bytes + raw.count <= maxBytes else { break }
                    out.append(raw)
                    bytes += raw.count
                }
                return out
            }
        }
    }

    /// Takes entries signed by `identity`'s own key that this device has never seen (offered by
    /// a member that holds them stuck): each checked (decoding, network, author, signature),
    /// stored, put in the pending pool and applied, so the next seal signs them again where
    /// their sequence numbers are taken, or seals them as they are. Entries already known,
    /// votes, and anything not signed by this key are ignored. Returns how many were taken.
    public func adoptOwnEntries(_ raws: [[UInt8]], identity: DeviceIdentity, now: UInt64) throws(KianaStoreError) -> Int {
        defer { database.keepWritesIfWALLost() }
        return try run("taking back this device's entries") {
            try writer.write { db in
                guard let net = try Self.setting(db, "network")?.bytes else { return 0 }
                var taken = 0
                for raw in raws {
                    // The cheap checks first; the signature only for an entry not seen here.
                    guard let e = try? Entry(decoding: raw), e.author == identity.publicKey, e.network == net, e.kind != .authorityVote,
                        e.hlc.wall <= now &+ LedgerLimits.maxClockDrift, try !Self.entryExists(e.id, db), e.verifySignature()
                    else { continue }
                    try Self.insert(entry: e, db)
                    try Self.recordEquivocations([e], db)
                    try PendingRecord(entryId: Data(e.id), addedAt: Int64(now)).insert(db)
                    try Self.apply([e], db)
                    taken += 1
                }
                return taken
            }
        }
    }

    static func entryExists(_ id: [UInt8], _ db: Database) throws -> Bool {
        try Bool.fetchOne(try db.cachedStatement(sql: "SELECT EXISTS(SELECT 1 FROM entry WHERE id = ?)"), arguments: [Data(id)]) ?? false
    }

    /// Stuck pending entries of one author: writes (which that author signs again when it
    /// runs) and votes (which it must cast again).
    public struct Stuck: Sendable, Equatable {
        public var author: [UInt8]
        public var writes: Int
        public var votes: Int
        public init(author: [UInt8], writes: Int, votes: Int) {
            self.author = author
            self.writes = writes
            self.votes = votes
        }
    }

    /// What waits and why: this key's writes signed again (superseded rows of its own entries),
    /// and stuck entries per author that only their author can help.
    public func stuckReport(identity key: [UInt8]) throws(KianaStoreError) -> (signedAgain: Int, stuck: [Stuck]) {
        try run("reporting stuck entries") {
            try writer.read { db in
                let again =
                    try Int.fetchOne(
                        db, sql: "SELECT COUNT(*) FROM superseded JOIN entry ON entry.id = superseded.entryId WHERE entry.author = ?",
                        arguments: [Data(key)]) ?? 0
                var counts: [[UInt8]: Stuck] = [:]
                for e in try Self.stuckPending(db) {
                    let vote = e.kind == .authorityVote
                    counts[e.author, default: Stuck(author: e.author, writes: 0, votes: 0)].writes += vote ? 0 : 1
                    counts[e.author, default: Stuck(author: e.author, writes: 0, votes: 0)].votes += vote ? 1 : 0
                }
                return (again, counts.values.sorted { $0.author.lexicographicallyPrecedes($1.author) })
            }
        }
    }
}
