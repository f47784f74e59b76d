import Foundation
import GRDB
import KianaCore

/// One complete subtree of the history tree (see `HistoryTree`).
struct HistoryNodeRecord: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "historyNode"
    var level: Int64
    var idx: Int64
    var hash: Data
}

/// The history tree's size and root: what heads carry so peers can compare whole chains with
/// one hash and prove that one extends the other.
public struct HistoryHead: Sendable, Hashable {
    public var size: UInt64
    public var root: [UInt8]
    public init(size: UInt64, root: [UInt8]) {
        self.size = size
        self.root = root
    }
}

/// A consistency proof from an older tree size to the current head, with both roots.
public struct HistoryConsistency: Sendable {
    public var head: HistoryHead
    /// The hash of the head block (the tree's last leaf).
    public var headHash: [UInt8]
    public var oldRoot: [UInt8]
    public var proof: [[UInt8]]
}

/// The RFC 6962 history tree over the canonical chain, kept as its complete subtrees in the
/// `historyNode` table and changed in the same transaction as the `chain` table: appending a
/// block adds at most log2(n) nodes, a reorg removes the nodes that cover the abandoned heights.
/// Heads and proofs then cost O(log n) lookups; nothing is rebuilt from genesis.
enum HistoryIndex {
    static func lookup(_ db: Database) -> HistoryTree.Lookup {
        { level, index in
            let query = try db.cachedStatement(sql: "SELECT hash FROM historyNode WHERE level = ? AND idx = ?")
            guard let h = try Data.fetchOne(query, arguments: [level, Int64(index)]) else {
                throw KianaStoreError(.corrupt, "the history tree misses node \(level)/\(index): run `kiana ledger verify`")
            }
            return h.bytes
        }
    }

    /// Adds leaf `height` (a block now canonical at that height) and the nodes it completes.
    static func append(height: Int64, hash: Data, _ db: Database) throws {
        for n in try HistoryTree.completed(leafIndex: UInt64(height), leafHash: Merkle.leafHash(hash.bytes), lookup: lookup(db)) {
            try db.cachedStatement(sql: "INSERT OR REPLACE INTO historyNode (level, idx, hash) VALUES (?, ?, ?)")
                .execute(arguments: [Int64(n.level), Int64(n.index), Data(n.hash)])
        }
    }

    /// Cuts the tree back to `size` leaves (heights below `size` stay canonical).
    static func truncate(to size: Int64, _ db: Database) throws {
        // Node (l, i) survives iff i < size >> l.
        let delete = try db.cachedStatement(sql: "DELETE FROM historyNode WHERE level = ? AND idx >= ?")
        for level in 0..<64 {
            try delete.execute(arguments: [level, size >> Int64(level)])
            if size >> Int64(level) == 0 { break }
        }
    }

    static func size(_ db: Database) throws -> UInt64 {
        UInt64(try Int64.fetchOne(db, sql: "SELECT COUNT(*) FROM historyNode WHERE level = 0") ?? 0)
    }

    static func head(_ db: Database) throws -> HistoryHead {
        let n = try size(db)
        return HistoryHead(size: n, root: try HistoryTree.root(size: n, lookup: lookup(db)))
    }

    /// Builds the tree for a chain stored before the history tree existed (migration).
    static func backfill(_ db: Database) throws {
        var tree = MemoryHistoryTree()
        let cursor = try Data.fetchCursor(db, sql: "SELECT hash FROM chain ORDER BY height")
        while let h = try cursor.next() { tree.append(blockHash: h.bytes) }
        for (level, nodes) in tree.levels.enumerated() {
            for (i, hash) in nodes.enumerated() {
                try HistoryNodeRecord(level: Int64(level), idx: Int64(i), hash: Data(hash)).insert(db)
            }
        }
    }
}

extension LedgerStore {
    /// The history tree's size (the chain's block count) and root.
    public func historyHead() throws(KianaStoreError) -> HistoryHead {
        try run("reading the history tree") { try writer.read { db in try HistoryIndex.head(db) } }
    }

    /// The head block and the history tree in one read (nil before genesis).
    public func headAndHistory() throws(KianaStoreError) -> (LedgerHead, HistoryHead)? {
        try run("reading the history tree") {
            try writer.read { db in
                guard let h = try Self.head(db) else { return nil }
                return (h, try HistoryIndex.head(db))
            }
        }
    }

    /// The root of the first `size` leaves of our history tree (nil if the chain is shorter).
    public func historyRoot(size: UInt64) throws(KianaStoreError) -> [UInt8]? {
        try run("reading the history tree") {
            try writer.read { db in
                guard size <= (try HistoryIndex.size(db)) else { return nil }
                return try HistoryTree.root(size: size, lookup: HistoryIndex.lookup(db))
            }
        }
    }

    /// Our head, our root over the first `oldSize` blocks and the RFC 9162 consistency proof
    /// from there to the head, read in one snapshot; nil when `oldSize` is 0 or beyond our tree.
    public func consistency(from oldSize: UInt64) throws(KianaStoreError) -> HistoryConsistency? {
        try run("proving consistency") {
            try writer.read { db in
                let head = try HistoryIndex.head(db)
                guard oldSize >= 1, oldSize <= head.size else { return nil }
                let lookup = HistoryIndex.lookup(db)
                return HistoryConsistency(
                    head: head, headHash: try Self.head(db)?.hash ?? [], oldRoot: try HistoryTree.root(size: oldSize, lookup: lookup),
                    proof: try HistoryTree.consistencyProof(oldSize: oldSize, size: head.size, lookup: lookup))
            }
        }
    }

    /// Canonical block hashes at the given heights (nil where the chain is shorter).
    public func canonicalHashes(at heights: [UInt64]) throws(KianaStoreError) -> [[UInt8]?] {
        try run("reading block hashes") {
            try writer.read { db in
                try heights.map { h in
                    guard h <= UInt64(Int64.max) else { return nil }
                    return try Data.fetchOne(db, sql: "SELECT hash FROM chain WHERE height = ?", arguments: [Int64(h)])?.bytes
                }
            }
        }
    }
}

/// A running watch on the canonical chain; it stops when this object goes away.
public final class ChainWatch: Sendable {
    let cancellable: AnyDatabaseCancellable
    init(_ c: AnyDatabaseCancellable) { cancellable = c }
    deinit { cancellable.cancel() }
}

extension LedgerStore {
    /// Calls `onChange` after every transaction of this process that changed the canonical
    /// chain (a write, a seal, an import). Writes by other processes are not seen: poll for those.
    public func watchChain(_ onChange: @escaping @Sendable () -> Void) -> ChainWatch {
        ChainWatch(DatabaseRegionObservation(tracking: Table("chain")).start(in: writer, onError: { _ in }, onChange: { _ in onChange() }))
    }
}
