import Foundation
import GRDB
import KianaCore

/// Writes caught by a reused sequence number (decision 111).
///
/// A device whose data directory was restored from an older copy (a backup, a disk image) does
/// not know the sequence numbers it used after that copy was made, so its next writes reuse
/// them. Once the chain carries the other entries with those numbers, the new writes can never
/// be sealed: each author's sequence must rise along the chain. Without help they would wait in
/// the pending pool for ever, acknowledged but never replicated. Their author re-signs them
/// under fresh sequence numbers, keeping clock, kind and payload, so they land where a
/// last-writer-wins merge would have put them; every device then retires the old copies.
extension LedgerStore {
    /// Pending entries that can never be sealed as they are (their author's sequence number is
    /// at or below the canonical chain's last one for that author), oldest first by clock.
    static func stuckPending(_ db: Database) throws -> [Entry] {
        try Data.fetchAll(
            db,
            sql: """
                SELECT entry.raw FROM pending JOIN entry ON entry.id = pending.entryId
                WHERE EXISTS (
                  SELECT 1 FROM entry other JOIN blockEntry ON blockEntry.entryId = other.id
                  JOIN chain ON chain.hash = blockEntry.blockHash
                  WHERE other.author = entry.author AND other.seq >= entry.seq)
                ORDER BY entry.hlcWall, entry.hlcLogical, entry.author, entry.seq
                """
        ).map { try Entry(decoding: $0.bytes) }
    }

    /// `author`'s entries that lost a sequence number to another of its entries on the canonical
    /// chain and wait nowhere: received in a block of a side branch only, so neither applied nor
    /// pending (the fork choice kept the other entry). Only the author can help them.
    static func lostEntries(of author: [UInt8], _ db: Database) throws -> [Entry] {
        try Data.fetchAll(
            db,
            sql: """
                SELECT entry.raw FROM conflict JOIN entry ON entry.id = conflict.entryId
                WHERE conflict.author = ?
                  AND NOT EXISTS (SELECT 1 FROM blockEntry JOIN chain ON chain.hash = blockEntry.blockHash WHERE blockEntry.entryId = entry.id)
                  AND NOT EXISTS (SELECT 1 FROM superseded WHERE superseded.entryId = entry.id)
                  AND NOT EXISTS (SELECT 1 FROM pending WHERE pending.entryId = entry.id)
                  AND EXISTS (
                    SELECT 1 FROM entry other JOIN blockEntry ON blockEntry.entryId = other.id
                    JOIN chain ON chain.hash = blockEntry.blockHash
                    WHERE other.author = entry.author AND other.seq >= entry.seq)
                """, arguments: [Data(author)]
        ).map { try Entry(decoding: $0.bytes) }
    }

    /// The canonical entry carrying `e`'s content (same author, clock, kind and payload) under
    /// another ID, if there is one.
    static func landedCopy(of e: Entry, _ db: Database) throws -> [UInt8]? {
        let raws = try Data.fetchAll(
            db,
            sql: """
                SELECT entry.raw FROM entry JOIN blockEntry ON blockEntry.entryId = entry.id
                JOIN chain ON chain.hash = blockEntry.blockHash
                WHERE entry.author = ? AND entry.hlcWall = ? AND entry.hlcLogical = ? AND entry.kind = ? AND entry.id <> ?
                """, arguments: [Data(e.author), Int64(e.hlc.wall), Int64(e.hlc.logical), e.kind.rawValue, Data(e.id)])
        let payload = e.payload.encoded
        for raw in raws {
            let other = try Entry(decoding: raw.bytes)
            if other.payload.encoded == payload { return other.id }
        }
        return nil
    }

    /// Moves `e` (pending, or lost on a side branch) to the superseded entries. Its effect on
    /// the knowledge state stays, or is added (the same content as `by`, so only which entry ID
    /// a field names can change), and `checkKnowledge` counts it.
    static func supersede(_ e: Entry, by: [UInt8], now: UInt64, _ db: Database) throws {
        try db.execute(sql: "DELETE FROM pending WHERE entryId = ?", arguments: [Data(e.id)])
        try SupersededRecord(entryId: Data(e.id), by: Data(by), at: Int64(now)).insert(db, onConflict: .ignore)
        try apply([e], db)
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
    /// number, and, when `identity` may seal, re-signs its own stuck entries under fresh ones:
    /// those pending and those lost on a side branch (`lostEntries`).
    /// Its own pending entries younger (by clock) than the oldest re-signed one are re-signed
    /// too, so sequence numbers keep following the clock and the seal takes them all in order.
    static func resignStuck(_ db: Database, identity: DeviceIdentity?, now: UInt64) throws -> ResignRun {
        try dropCanonicalFromPending(db)
        var run = ResignRun()
        var mine: [Entry] = []
        for e in try stuckPending(db) {
            if let landed = try landedCopy(of: e, db) {
                try supersede(e, by: landed, now: now, db)
                run.retired += 1
            } else if e.author == identity?.publicKey {
                mine.append(e)
            }
        }
        guard let identity, try authorities(db).contains(identity.publicKey) else { return run }
        let pendingMine = Set(mine.map(\.id))
        for e in try lostEntries(of: identity.publicKey, db) where !pendingMine.contains(e.id) {
            if let landed = try landedCopy(of: e, db) {
                try supersede(e, by: landed, now: now, db)
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
        let stuck = Set(mine.map(\.id))
        let younger = try Data.fetchAll(
            db,
            sql: """
                SELECT entry.raw FROM pending JOIN entry ON entry.id = pending.entryId
                WHERE entry.author = ? AND (entry.hlcWall > ? OR (entry.hlcWall = ? AND entry.hlcLogical > ?))
                """, arguments: [Data(identity.publicKey), Int64(first.hlc.wall), Int64(first.hlc.wall), Int64(first.hlc.logical)]
        ).map { try Entry(decoding: $0.bytes) }.filter { !stuck.contains($0.id) }
        let all = (mine + younger).sorted { ($0.hlc, $0.sequence) < ($1.hlc, $1.sequence) }
        var seq = UInt64(try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM entry WHERE author = ?", arguments: [Data(identity.publicKey)]) ?? 0)
        for e in all {
            seq += 1
            let again = Entry(signedBy: identity, network: net, sequence: seq, hlc: e.hlc, kind: e.kind, payload: e.payload)
            try insert(entry: again, db)
            try PendingRecord(entryId: Data(again.id), addedAt: Int64(now)).insert(db)
            try supersede(e, by: again.id, now: now, db)
            // Same clock, kind and payload: the state changes only in which entry ID it names.
            try apply([again], db)
            run.resigned += 1
        }
        return run
    }

    /// Retires stuck pending entries whose content landed elsewhere and re-signs `identity`'s
    /// own stuck writes (see `resignStuck`); one transaction.
    public func resignStuck(identity: DeviceIdentity?, now: UInt64) throws(KianaStoreError) -> ResignRun {
        defer { database.keepWritesIfWALLost() }
        return try run("re-signing stuck entries") {
            try writer.write { db in try Self.resignStuck(db, identity: identity, now: now) }
        }
    }

    /// True when `author` has entries lost on a side branch that it should sign again (cheap:
    /// the conflict table is empty unless some key reused a sequence number).
    public func hasLostEntries(of author: [UInt8]) throws(KianaStoreError) -> Bool {
        try run("looking for lost entries") {
            try writer.read { db in
                guard try Bool.fetchOne(db, sql: "SELECT EXISTS(SELECT 1 FROM conflict WHERE author = ?)", arguments: [Data(author)]) == true else {
                    return false
                }
                return try !Self.lostEntries(of: author, db).isEmpty
            }
        }
    }

    /// Entries retired from the pending pool because their content landed under another ID.
    public func supersededCount() throws(KianaStoreError) -> Int {
        try run("counting superseded entries") { try writer.read { db in try SupersededRecord.fetchCount(db) } }
    }
}
