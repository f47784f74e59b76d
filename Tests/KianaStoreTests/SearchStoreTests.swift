import Foundation
import KianaCore
@testable import KianaStore
import Testing

@Suite struct SearchStoreTests {
    func setUp() throws -> (LedgerStore, SearchStore, DeviceIdentity) {
        let db = try KianaDatabase()
        let ledger = LedgerStore(database: db)
        let id = DeviceIdentity.generate()
        try ledger.initialize(genesis: Block.genesis(identity: id, time: 1_800_000_000_000, name: "t"), now: 1_800_000_000_000)
        return (ledger, SearchStore(database: db), id)
    }

    @Test func fullTextFollowsEveryChange() throws {
        let (ledger, search, me) = try setUp()
        let a = ItemID.random()
        let b = ItemID.random()
        _ = try ledger.write(
            [
                .put(a, KnowledgeFields(title: "Router", text: "The guest wifi password is Sunflower42.", tags: ["home"], source: "/notes/router.md#0")),
                .put(b, KnowledgeFields(text: "Boil pasta for nine minutes.", tags: ["food"])),
            ], identity: me, now: 1_800_000_000_001)
        #expect(try search.keywordSearch("sunflower42", limit: 5).map(\.0) == [a])
        #expect(try search.keywordSearch("passwords", limit: 5).map(\.0) == [a])  // porter stemming
        #expect(try search.keywordSearch("pasta", limit: 5, filter: SearchFilter(tag: "home")).isEmpty)
        #expect(try search.keywordSearch("wifi", limit: 5, filter: SearchFilter(sourcePrefix: "/notes/")).map(\.0) == [a])
        // A file name, or a path's tail, finds the file wherever it lies; tags ignore case.
        for tail in ["router.md", "notes/router", "rout"] {
            #expect(try search.keywordSearch("wifi", limit: 5, filter: SearchFilter(sourcePrefix: tail)).map(\.0) == [a], "\(tail)")
        }
        #expect(try search.keywordSearch("wifi", limit: 5, filter: SearchFilter(sourcePrefix: "outer.md")).isEmpty)
        #expect(try search.keywordSearch("wifi", limit: 5, filter: SearchFilter(sourcePrefix: "/router.md")).isEmpty)
        #expect(try search.keywordSearch("wifi", limit: 5, filter: SearchFilter(tag: "HOME")).map(\.0) == [a])
        // an edit replaces the indexed text; a delete removes it
        _ = try ledger.write([.put(a, KnowledgeFields(text: "The guest wifi password is Tulip7."))], identity: me, now: 1_800_000_000_002)
        #expect(try search.keywordSearch("sunflower42", limit: 5).isEmpty)
        #expect(try search.keywordSearch("tulip7", limit: 5).map(\.0) == [a])
        _ = try ledger.write([.delete(a)], identity: me, now: 1_800_000_000_003)
        #expect(try search.keywordSearch("tulip7", limit: 5).isEmpty)
        // operators and quotes in user text are plain words, never FTS syntax errors
        #expect(try search.keywordSearch("pasta\" OR NEAR(* -", limit: 5).map(\.0) == [b])
        #expect(try search.keywordSearch("!!!", limit: 5).isEmpty)
        // The index the store keeps (no triggers, decision 94) is consistent in itself (deleted
        // items are left out of it on purpose, so it is not compared row for row with `item`).
        try ledger.database.writer.write { db in try db.execute(sql: "INSERT INTO itemSearch(itemSearch) VALUES ('integrity-check')") }
    }

    /// An edit that only changes the Unicode normalization is a change of the stored text, so
    /// the index follows it (Swift's `==` calls NFC and NFD equal; the bytes differ).
    @Test func anEditToAnotherNormalizationIsIndexed() throws {
        let (ledger, search, me) = try setUp()
        let a = ItemID.random()
        let nfc = "회의실 번호 alphahangul"
        let nfd = nfc.decomposedStringWithCanonicalMapping
        #expect(nfc == nfd && Array(nfc.utf8) != Array(nfd.utf8))
        _ = try ledger.write([.put(a, KnowledgeFields(text: nfc))], identity: me, now: 1_800_000_000_001)
        _ = try ledger.write([.put(a, KnowledgeFields(text: nfd))], identity: me, now: 1_800_000_000_002)
        _ = try ledger.write([.put(a, KnowledgeFields(text: "nothing korean here bravohangul"))], identity: me, now: 1_800_000_000_003)
        #expect(try search.keywordSearch("회의실", limit: 5).isEmpty)
        #expect(try search.keywordSearch(nfd, limit: 5).isEmpty)
        #expect(try search.keywordSearch("bravohangul", limit: 5).map(\.0) == [a])
        try ledger.database.writer.write { db in try db.execute(sql: "INSERT INTO itemSearch(itemSearch) VALUES ('integrity-check')") }
    }

    @Test func vectorsAreDroppedWhenTheTextChanges() throws {
        let (ledger, search, me) = try setUp()
        let a = ItemID.random()
        _ = try ledger.write([.put(a, KnowledgeFields(text: "first"))], identity: me, now: 1_800_000_000_001)
        let todo = try search.itemsNeedingVectors(model: "m", limit: 10)
        #expect(todo.map(\.id) == [a])
        #expect(try search.saveVectors([(todo[0], [1, 2, 3])], model: "m") == 1)
        #expect(try search.countNeedingVectors(model: "m") == 0)
        #expect(try search.allVectors(model: "m").first?.2 == [1, 2, 3])
        // tags only: the vector stays
        _ = try ledger.write([.put(a, KnowledgeFields(tags: ["x"]))], identity: me, now: 1_800_000_000_002)
        #expect(try search.countNeedingVectors(model: "m") == 0)
        // new text: the vector goes, and a vector computed from the old text is refused
        _ = try ledger.write([.put(a, KnowledgeFields(text: "second"))], identity: me, now: 1_800_000_000_003)
        #expect(try search.countNeedingVectors(model: "m") == 1)
        #expect(try search.saveVectors([(todo[0], [1, 2, 3])], model: "m") == 0)
        _ = try ledger.write([.delete(a)], identity: me, now: 1_800_000_000_004)
        #expect(try search.countNeedingVectors(model: "m") == 0)
        #expect(try search.vectorCount(model: "m") == 0)
    }
}
