import Foundation
import GRDB
import KianaCore

/// Narrows a search to items carrying a tag and/or whose source starts with a prefix.
public struct SearchFilter: Sendable, Equatable {
    public var tag: String?
    public var sourcePrefix: String?
    public init(tag: String? = nil, sourcePrefix: String? = nil) {
        self.tag = tag
        self.sourcePrefix = sourcePrefix
    }
    public var isEmpty: Bool { tag == nil && sourcePrefix == nil }

    /// SQL condition on `item` and its arguments.
    var sql: (String, StatementArguments) {
        var parts = ["item.deleted = 0"]
        var args: StatementArguments = []
        if let tag {
            // "Home" and "home" are one tag to the owner (ASCII letters; SQLite's lower()).
            parts.append("EXISTS (SELECT 1 FROM json_each(item.tags) WHERE lower(json_each.value) = lower(?))")
            args += [tag]
        }
        if let p = sourcePrefix {
            if p.hasPrefix("/") {
                parts.append("substr(item.source, 1, ?) = ?")
                args += [p.unicodeScalars.count, p]
            } else {
                // Not a path from the root ("notes.md", "uploads/notes.md", "chat"): a source
                // that starts with it, or a path with a component that does (an upload is
                // filed under the node's own folder, which its owner need not know).
                parts.append("(substr(item.source, 1, ?) = ? OR instr(item.source, ?) > 0)")
                args += [p.unicodeScalars.count, p, "/" + p]
            }
        }
        return (parts.joined(separator: " AND "), args)
    }
}

/// A live item's text to embed.
public struct TextToEmbed: Sendable {
    public var id: ItemID
    public var text: String
}

/// Full-text (FTS5 BM25) search and the stored embeddings, on the same database as the ledger.
/// The FTS table and the vector invalidation are kept in step by triggers on `item`, so every
/// way an item changes (local write, sync, import) reaches them in the same transaction.
public struct SearchStore: Sendable {
    public let database: KianaDatabase
    var writer: any DatabaseWriter { database.writer }

    public init(database: KianaDatabase) { self.database = database }

    /// FTS5 query for free text: every word becomes a quoted term, OR-ed (BM25 ranks by how
    /// many and how rare). Nil when the text has no searchable word.
    public static func matchExpression(_ text: String) -> String? {
        var terms: [String] = []
        var seen = Set<String>()
        var current = ""
        func flush() {
            if !current.isEmpty, seen.insert(current.lowercased()).inserted { terms.append("\"\(current)\"") }
            current = ""
        }
        for ch in text {
            if ch.isLetter || ch.isNumber { current.append(ch) } else { flush() }
            if terms.count >= 64 { break }
        }
        flush()
        return terms.isEmpty ? nil : terms.joined(separator: " OR ")
    }

    /// Best BM25 matches, best first; the score is FTS5's bm25 negated (higher is better).
    public func keywordSearch(_ query: String, limit: Int, filter: SearchFilter = SearchFilter()) throws(KianaStoreError) -> [(ItemID, Double)] {
        guard let match = Self.matchExpression(query), limit > 0 else { return [] }
        let (cond, args) = filter.sql
        return try database.run("keyword search") {
            try writer.read { db in
                let rows = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT item.id AS id, -bm25(itemSearch, 2.0, 1.0) AS score
                        FROM itemSearch JOIN item ON item.rowid = itemSearch.rowid
                        WHERE itemSearch MATCH ? AND \(cond)
                        ORDER BY bm25(itemSearch, 2.0, 1.0) LIMIT ?
                        """, arguments: [match] + args + [limit])
                return try rows.map { r in (try ItemID(bytes: [UInt8](r["id"] as Data)), r["score"] as Double) }
            }
        }
    }

    /// The words (lower-case letters and digits) that occur in no live item, even inflected:
    /// neither the word (stemmed as the index stems) nor a prefix of it (all but its last three
    /// letters, at least five) is in the full-text index, and it is not a compound of two known
    /// words ("Telefonnummer" when "Telefon" and "Nummer" occur). A question naming such a word
    /// asks about something nobody taught.
    public func unknownTerms(_ words: [String]) throws(KianaStoreError) -> [String] {
        let clean = words.filter { !$0.isEmpty && $0.allSatisfy { $0.isLetter || $0.isNumber } }.prefix(64)
        guard !clean.isEmpty else { return [] }
        return try database.run("looking up terms") {
            try writer.read { db in
                func known(_ w: String) throws -> Bool {
                    let prefix = String(w.prefix(max(5, w.count - 3)))
                    let match = w.count >= 5 ? "\"\(w)\" OR \"\(prefix)\"*" : "\"\(w)\""
                    return try Int.fetchOne(db, sql: "SELECT 1 FROM itemSearch WHERE itemSearch MATCH ? LIMIT 1", arguments: [match]) != nil
                }
                return try clean.filter { w in
                    if try known(w) { return false }
                    // a German participle: "geleert" from "leeren"
                    if w.hasPrefix("ge"), w.count >= 7, try known(String(w.dropFirst(2).dropLast())) { return false }
                    let chars = Array(w)
                    // Compounds are split at every cut, two lookups each: only for words of a
                    // compound's length (a 64 KiB "word" in a question would cost minutes).
                    guard (9...Self.longestCompound).contains(chars.count) else { return true }
                    for cut in 4...(chars.count - 4) where try known(String(chars[..<cut])) && known(String(chars[cut...])) { return false }
                    return true
                }
            }
        }
    }

    /// The longest word looked at as a compound of two known words ("Donaudampfschifffahrts-
    /// gesellschaftskapitän" has 42 letters).
    static let longestCompound = 64

    /// IDs of live items passing the filter (for filtering vector candidates).
    public func itemIDs(matching filter: SearchFilter) throws(KianaStoreError) -> Set<ItemID> {
        let (cond, args) = filter.sql
        return try database.run("filtering items") {
            try writer.read { db in
                Set(try Data.fetchAll(db, sql: "SELECT id FROM item WHERE \(cond)", arguments: args).map { try ItemID(bytes: [UInt8]($0)) })
            }
        }
    }

    /// The text embedded for an item: its title and text.
    static func embeddingText(title: String?, text: String?) -> String {
        [title, text].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: "\n")
    }

    /// Live items that have no embedding for `model` yet, oldest first.
    /// Items without a vector of `model`, oldest first (`newestFirst`: the latest written first).
    public func itemsNeedingVectors(model: String, limit: Int, newestFirst: Bool = false) throws(KianaStoreError) -> [TextToEmbed] {
        try database.run("finding items to embed") {
            try writer.read { db in
                try Row.fetchAll(
                    db,
                    sql: """
                        SELECT item.id, item.title, item.text FROM item
                        WHERE item.deleted = 0 AND NOT EXISTS (SELECT 1 FROM itemVector v WHERE v.itemId = item.id AND v.model = ?)
                        ORDER BY item.rowid \(newestFirst ? "DESC" : "ASC") LIMIT ?
                        """, arguments: [model, limit]
                ).map { r in
                    TextToEmbed(
                        id: try ItemID(bytes: [UInt8](r["id"] as Data)),
                        text: Self.embeddingText(title: r["title"], text: r["text"]))
                }
            }
        }
    }

    public func countNeedingVectors(model: String) throws(KianaStoreError) -> Int {
        try database.run("counting items to embed") {
            try writer.read { db in
                try Int.fetchOne(
                    db,
                    sql: """
                        SELECT count(*) FROM item WHERE deleted = 0
                        AND NOT EXISTS (SELECT 1 FROM itemVector v WHERE v.itemId = item.id AND v.model = ?)
                        """, arguments: [model]) ?? 0
            }
        }
    }

    /// Stores embeddings computed from `texts`; an item whose text changed meanwhile (or that
    /// was deleted) is skipped, so a stale vector is never stored.
    @discardableResult
    public func saveVectors(_ items: [(TextToEmbed, [Float])], model: String) throws(KianaStoreError) -> Int {
        try database.run("saving vectors") {
            try writer.write { db in
                var saved = 0
                for (t, v) in items {
                    guard let r = try Row.fetchOne(db, sql: "SELECT title, text, deleted FROM item WHERE id = ?", arguments: [Data(t.id.bytes)]),
                        !(r["deleted"] as Bool),
                        Self.embeddingText(title: r["title"], text: r["text"]) == t.text
                    else { continue }
                    try db.execute(
                        sql: "INSERT OR REPLACE INTO itemVector(itemId, model, vector) VALUES (?, ?, ?)",
                        arguments: [Data(t.id.bytes), model, Self.encode(v)])
                    saved += 1
                }
                return saved
            }
        }
    }

    /// Every stored vector of `model` with its version (the row's rowid, new on every re-embedding).
    public func allVectors(model: String) throws(KianaStoreError) -> [(ItemID, Int64, [Float])] {
        try database.run("loading vectors") {
            try writer.read { db in
                try Row.fetchAll(db, sql: "SELECT itemId, rowid AS version, vector FROM itemVector WHERE model = ? ORDER BY rowid", arguments: [model]).map {
                    r in
                    (try ItemID(bytes: [UInt8](r["itemId"] as Data)), r["version"] as Int64, Self.decode(r["vector"]))
                }
            }
        }
    }

    /// The vectors of the given items (those that have one).
    public func vectors(model: String, ids: [ItemID]) throws(KianaStoreError) -> [(ItemID, Int64, [Float])] {
        try database.run("loading vectors") {
            try writer.read { db in
                try ids.compactMap { id in
                    try Row.fetchOne(
                        db, sql: "SELECT rowid AS version, vector FROM itemVector WHERE model = ? AND itemId = ?",
                        arguments: [model, Data(id.bytes)]
                    ).map { r in (id, r["version"] as Int64, Self.decode(r["vector"])) }
                }
            }
        }
    }

    /// Item → vector version, without the vectors (to reconcile a persisted index cheaply).
    public func vectorVersions(model: String) throws(KianaStoreError) -> [ItemID: Int64] {
        try database.run("listing vectors") {
            try writer.read { db in
                var out: [ItemID: Int64] = [:]
                for r in try Row.fetchAll(db, sql: "SELECT itemId, rowid AS version FROM itemVector WHERE model = ?", arguments: [model]) {
                    out[try ItemID(bytes: [UInt8](r["itemId"] as Data))] = r["version"]
                }
                return out
            }
        }
    }

    /// How many items have a vector of `model`.
    public func vectorCount(model: String) throws(KianaStoreError) -> Int {
        try database.run("counting vectors") {
            try writer.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM itemVector WHERE model = ?", arguments: [model]) ?? 0 }
        }
    }

    /// Changes whenever the knowledge state or its vectors change: the ledger head, the number of
    /// vectors and the newest vector's row (vectors are only removed when their item changes,
    /// which moves the head). Lets a long-lived process reuse a vector index until then.
    public func fingerprint(model: String) throws(KianaStoreError) -> String {
        try database.run("reading the index fingerprint") {
            try writer.read { db in
                try String.fetchOne(
                    db,
                    sql: """
                        SELECT coalesce((SELECT hex(hash) FROM chain ORDER BY height DESC LIMIT 1), '') || ':' ||
                               (SELECT count(*) FROM itemVector WHERE model = ?) || ':' ||
                               (SELECT coalesce(max(rowid), 0) FROM itemVector) || ':' || (SELECT count(*) FROM item)
                        """, arguments: [model]) ?? ""
            }
        }
    }

    /// The full-text index checked against the items it indexes (FTS5's `integrity-check` with
    /// rank 1, forgotten items set aside), in a transaction that is rolled back: nil if it is
    /// sound, else SQLite's words.
    /// SQLite's own `integrity_check` does not read it. Needs a writable connection.
    public func fullTextProblem() throws(KianaStoreError) -> String? {
        try database.run("checking the full-text index") {
            var problem: String?
            try writer.writeWithoutTransaction { db in
                try db.inTransaction {
                    // Forgotten items are kept as rows but not indexed: out of the comparison (the
                    // store keeps the index itself; no trigger follows this delete). Damage met
                    // here is the item table's, not the index's: it is thrown as it is.
                    try db.execute(sql: "DELETE FROM item WHERE deleted = 1")
                    do {
                        try db.execute(sql: "INSERT INTO itemSearch(itemSearch, rank) VALUES ('integrity-check', 1)")
                    } catch let e as DatabaseError where e.resultCode == .SQLITE_CORRUPT {
                        problem = e.message ?? "damaged"
                    }
                    return .rollback
                }
            }
            return problem
        }
    }

    /// Drops every vector (of all models) and rebuilds the full-text index.
    public func resetIndexes() throws(KianaStoreError) {
        try database.run("resetting indexes") {
            try writer.write { db in
                try db.execute(sql: "DELETE FROM itemVector")
                try db.execute(sql: "INSERT INTO itemSearch(itemSearch) VALUES ('rebuild')")
            }
        }
    }

    /// Title, text, source and tags of the given items (for printing results).
    public func items(_ ids: [ItemID]) throws(KianaStoreError) -> [ItemID: StoredItem] {
        try database.run("reading items") {
            try writer.read { db in
                var out: [ItemID: StoredItem] = [:]
                for id in ids {
                    if let r = try ItemRecord.fetchOne(db, key: Data(id.bytes)) { out[id] = try LedgerStore.item(r) }
                }
                return out
            }
        }
    }

    /// Whether some live item's source starts with `prefix`.
    public func hasItems(sourcePrefix prefix: String) throws(KianaStoreError) -> Bool {
        try database.run("reading items by source") {
            try writer.read { db in
                try Bool.fetchOne(
                    db, sql: "SELECT EXISTS (SELECT 1 FROM item WHERE deleted = 0 AND substr(source, 1, ?) = ?)",
                    arguments: [prefix.unicodeScalars.count, prefix]) ?? false
            }
        }
    }

    /// Live items whose source starts with `prefix` (ingested files: "path#chunk").
    public func items(sourcePrefix prefix: String, includingForgotten: Bool = false) throws(KianaStoreError) -> [StoredItem] {
        try database.run("reading items by source") {
            try writer.read { db in
                try ItemRecord.fetchAll(
                    db, sql: "SELECT * FROM item WHERE (deleted = 0 OR ?) AND substr(source, 1, ?) = ?",
                    arguments: [includingForgotten, prefix.unicodeScalars.count, prefix]
                ).map(LedgerStore.item)
            }
        }
    }

    static func encode(_ v: [Float]) -> Data {
        var d = Data(count: v.count * 4)
        d.withUnsafeMutableBytes { b in
            for (i, x) in v.enumerated() { b.storeBytes(of: x.bitPattern.littleEndian, toByteOffset: i * 4, as: UInt32.self) }
        }
        return d
    }

    static func decode(_ d: Data) -> [Float] {
        d.withUnsafeBytes { b in
            (0..<(d.count / 4)).map { Float(bitPattern: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        }
    }
}
