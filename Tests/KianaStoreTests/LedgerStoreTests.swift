import Foundation
import GRDB
import KianaCore
@testable import KianaStore
import Testing

@Suite struct LedgerStoreTests {
    let identity = DeviceIdentity.generate()
    let t0: UInt64 = 1_764_288_000_000

    func makeStore(writes: Int = 3) throws -> LedgerStore {
        let store = LedgerStore(database: try KianaDatabase())
        try store.initialize(genesis: Block.genesis(identity: identity, time: t0), now: t0)
        for i in 0..<writes {
            _ = try store.write(
                [.put(ItemID.random(), KnowledgeFields(title: "t\(i)", text: "fact \(i)", tags: ["n\(i)"]))], identity: identity, now: t0 + UInt64(i) * 1000)
        }
        return store
    }

    @Test func writesSealOneBlockEachAndMaterializeState() throws {
        let store = try makeStore(writes: 3)
        #expect(try store.head()?.height == 3)
        let c = try store.counts()
        #expect(c.blocks == 4 && c.entries == 3 && c.items == 3 && c.pending == 0)
        let items = try store.items()
        #expect(items.map(\.text) == ["fact 2", "fact 1", "fact 0"])
        let victim = items[1]
        let r = try store.write([.delete(victim.id)], identity: identity, now: t0 + 10_000)
        #expect(r.block.height == 4)
        #expect(try store.items().count == 2)
        #expect(try store.items(includeDeleted: true).count == 3)
        #expect(try store.item(idPrefix: String(victim.id.description.prefix(8))).deleted)
        let s = try store.verify(now: t0 + 20_000)
        #expect(s.height == 4 && s.entryCount == 4)
    }

    @Test func sequenceAndClockContinueAcrossWrites() throws {
        let store = try makeStore(writes: 0)
        // The wall clock going backwards must not make sequence or HLC go backwards.
        let a = try store.write([.put(ItemID.random(), KnowledgeFields(text: "a"))], identity: identity, now: t0 + 5000)
        let b = try store.write(
            [.put(ItemID.random(), KnowledgeFields(text: "b")), .put(ItemID.random(), KnowledgeFields(text: "c"))], identity: identity, now: t0 + 1000)
        #expect(a.entries[0].sequence == 1)
        #expect(b.entries.map(\.sequence) == [2, 3])
        #expect(b.entries[0].hlc > a.entries[0].hlc)
        #expect(b.block.header.time >= a.block.header.time)
        _ = try store.verify(now: t0 + 10_000)
    }

    @Test func nonAuthorityCannotWrite() throws {
        let store = try makeStore(writes: 0)
        #expect {
            _ = try store.write([.put(ItemID.random(), KnowledgeFields(text: "x"))], identity: DeviceIdentity.generate(), now: t0)
        } throws: { ($0 as? KianaStoreError)?.code == .notAuthority }
        #expect(try store.counts().entries == 0)
    }

    @Test func invalidInputWritesNothing() throws {
        let store = try makeStore(writes: 1)
        let huge = String(repeating: "x", count: KnowledgeOp.maxTextBytes + 1)
        #expect(throws: KianaStoreError.self) {
            _ = try store.write([.put(ItemID.random(), KnowledgeFields(text: huge))], identity: identity, now: t0)
        }
        #expect(throws: KianaStoreError.self) { _ = try store.write([], identity: identity, now: t0) }
        #expect(try store.counts().entries == 1)
        #expect(try store.head()?.height == 1)
    }

    @Test func reinitializingIsRefused() throws {
        let store = try makeStore(writes: 0)
        #expect(throws: KianaStoreError.self) {
            try store.initialize(genesis: Block.genesis(identity: identity, time: t0 + 1), now: t0 + 1)
        }
    }

    /// Flip every byte of every stored block header and entry: verify must fail and name the block.
    @Test func everyStoredByteFlipIsDetectedAndNamesTheBlock() throws {
        let store = try makeStore(writes: 3)
        let now = t0 + 100_000
        let blocks = try flipEveryByte(
            store, now: now, table: "block", column: "signedHeader", key: "hash",
            rows: "SELECT hash AS key, height, signedHeader AS bytes FROM block")
        let entries = try flipEveryByte(
            store, now: now, table: "entry", column: "raw", key: "id",
            rows: """
                SELECT entry.id AS key, chain.height, entry.raw AS bytes FROM entry
                JOIN blockEntry ON blockEntry.entryId = entry.id JOIN chain ON chain.hash = blockEntry.blockHash
                """)
        #expect(blocks > 500 && entries > 500)
        _ = try store.verify(now: now)
    }

    /// Flips each byte of `column` in each row in turn, expects `verify` to fail naming the row's
    /// block height, restores the row; returns how many flips were checked.
    func flipEveryByte(_ store: LedgerStore, now: UInt64, table: String, column: String, key: String, rows: String) throws -> Int {
        let writer = store.database.writer
        var checked = 0
        for row in try writer.read({ db in try Row.fetchAll(db, sql: rows) }) {
            let k: Data = row["key"]
            let height: Int64 = row["height"]
            let original: Data = row["bytes"]
            for i in 0..<original.count {
                var bad = original
                bad[i] ^= 0x20
                try writer.write { db in try db.execute(sql: "UPDATE \(table) SET \(column) = ? WHERE \(key) = ?", arguments: [bad, k]) }
                do {
                    _ = try store.verify(now: now)
                    Issue.record("flip of \(table) byte \(i) in block \(height) went unnoticed")
                } catch {
                    #expect(error.height == UInt64(height), "\(table) byte \(i) of block \(height): \(error)")
                }
                checked += 1
            }
            try writer.write { db in try db.execute(sql: "UPDATE \(table) SET \(column) = ? WHERE \(key) = ?", arguments: [original, k]) }
        }
        return checked
    }

    /// A version from before the store kept the search index cannot write to a database this
    /// version migrated, and this version refuses a database a newer one migrated.
    @Test func olderVersionsCannotWriteAndNewerDatabasesAreRefused() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kiana-versions-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("k.sqlite").path
        let db = try KianaDatabase(path: path)
        let store = LedgerStore(database: db)
        try store.initialize(genesis: Block.genesis(identity: identity, time: t0, name: "t"), now: t0)
        _ = try store.write([.put(ItemID.random(), KnowledgeFields(text: "fine"))], identity: identity, now: t0 + 1)
        try db.close()
        // What an older binary does on every write, without kiana_store_version().
        let old = try DatabaseQueue(path: path)
        #expect {
            try old.write { try $0.execute(sql: "INSERT OR REPLACE INTO setting (key, value) VALUES ('hlc', x'00')") }
        } throws: { "\($0)".contains("kiana_store_version") || "\($0)".contains("2026-12-05 or newer") }
        // A newer version's migration in the file: this one does not open it.
        try old.write { try $0.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('2099-01-01 from the future')") }
        try old.close()
        #expect {
            _ = try KianaDatabase(path: path)
        } throws: { ($0 as? KianaStoreError)?.message.contains("newer version") == true }
    }

    /// Every column of a knowledge row, and rows added or removed, checked against the ledger;
    /// in batches of 2 and of the default size (so the change falls in a first, a middle and
    /// a last, partial batch).
    @Test(arguments: [
        "UPDATE item SET text = 'forged' WHERE rowid = 3",
        "UPDATE item SET title = NULL WHERE rowid = 3",
        "UPDATE item SET tags = '[\"x\"]' WHERE rowid = 3",
        "UPDATE item SET source = 'elsewhere' WHERE rowid = 3",
        "UPDATE item SET createdWall = createdWall + 1 WHERE rowid = 3",
        "UPDATE item SET updatedWall = NULL WHERE rowid = 3",
        "UPDATE item SET deleted = 1 WHERE rowid = 3",
        "UPDATE item SET deleted = 'yes' WHERE rowid = 3",
        "UPDATE item SET state = x'00' WHERE rowid = 3",
        "UPDATE item SET state = (SELECT state FROM item WHERE rowid = 2) WHERE rowid = 3",
        "UPDATE item SET id = randomblob(16) WHERE rowid = 3",
        "UPDATE item SET id = x'00' WHERE rowid = 3",
        "UPDATE item SET text = 'Cafe' || char(769) WHERE rowid = 5",
        "UPDATE item SET text = CAST(text AS BLOB) WHERE rowid = 3",
        "UPDATE item SET createdWall = createdWall + 0.5 WHERE rowid = 3",
        "UPDATE item SET deleted = 2 WHERE rowid = 3",
        "UPDATE item SET text = 'fact 1' WHERE rowid = 1",
        "INSERT INTO item SELECT randomblob(16), title, text, tags, source, createdWall, updatedWall, deleted, state FROM item WHERE rowid = 1",
        "DELETE FROM item WHERE rowid = 1",
        "DELETE FROM item WHERE rowid = 5",
    ])
    func aChangedKnowledgeRowIsDamage(_ sql: String) throws {
        let store = try makeStore(writes: 4)
        _ = try store.write([.put(ItemID.random(), KnowledgeFields(text: "Caf\u{E9}"))], identity: identity, now: t0 + 5_000)
        let state = try store.verify(now: t0 + 10_000)
        let expected = KnowledgeState(entries: try store.blocks().flatMap(\.entries))
        for size in [2, LedgerStore.itemBatch] { try store.checkKnowledge(expected: expected, batchSize: size) }
        try store.database.writer.write { db in try db.execute(sql: sql) }
        for size in [2, LedgerStore.itemBatch] {
            #expect(throws: KianaStoreError.self) { try store.checkKnowledge(expected: expected, batchSize: size) }
        }
        #expect {
            _ = try store.verify(now: t0 + 10_000)
        } throws: { ($0 as? KianaStoreError)?.code == .corrupt && ($0 as? KianaStoreError)?.message.contains("knowledge") == true }
        #expect(state.height == 5)
    }

    /// The indexed copies of a block's and an entry's fields (membership is read by kind,
    /// sequence numbers and clocks by author) are what the bytes say.
    @Test(arguments: [
        ("UPDATE entry SET kind = 'authority.vote' WHERE rowid = 2", "[entry-row]"),
        ("UPDATE entry SET seq = seq + 1 WHERE rowid = 2", "[entry-row]"),
        ("UPDATE entry SET author = randomblob(32) WHERE rowid = 2", "[entry-row]"),
        ("UPDATE entry SET hlcWall = hlcWall + 1 WHERE rowid = 2", "[entry-row]"),
        ("UPDATE entry SET hlcLogical = hlcLogical + 1 WHERE rowid = 2", "[entry-row]"),
        ("UPDATE block SET height = height + 100000 WHERE height = 2", "[block-row]"),
        // The same bytes as another storage class: read back equal, never equal in SQL.
        ("UPDATE entry SET kind = CAST(kind AS BLOB) WHERE rowid = 2", "[entry-row]"),
        ("UPDATE entry SET author = CAST(author AS TEXT) WHERE rowid = 2", "[entry-row]"),
        ("UPDATE block SET signer = CAST(signer AS TEXT) WHERE height = 2", "[block-row]"),
    ])
    func aChangedIndexedColumnIsDamage(_ sql: String, _ rule: String) throws {
        let store = try makeStore(writes: 3)
        _ = try store.verify(now: t0 + 10_000)
        try store.database.writer.write { db in try db.execute(sql: sql) }
        #expect {
            _ = try store.verify(now: t0 + 10_000)
        } throws: { ($0 as? KianaStoreError)?.code == .corrupt && "\($0)".contains(rule) }
    }

    @Test func importBlocksIsIdempotentAndKeepsADivergentChain() throws {
        let source = try makeStore(writes: 4)
        let blocks = try source.blocks()
        let target = LedgerStore(database: try KianaDatabase())
        let now = t0 + 100_000
        #expect(try target.importBlocks(Array(blocks.prefix(3)), now: now).filter { $0 != .duplicate }.count == 2)
        #expect(try target.importBlocks(blocks, now: now).filter { $0 != .duplicate }.count == 2)
        #expect(try target.importBlocks(blocks, now: now).allSatisfy { $0 == .duplicate })
        #expect(try target.items().count == 4)
        #expect(try target.verify(now: now).tipHash == blocks.last!.hash)
        // The same authority continues on both copies: the longer chain wins, the other is kept.
        _ = try source.write([.put(ItemID.random(), KnowledgeFields(text: "more"))], identity: identity, now: t0 + 50_000)
        _ = try source.write([.put(ItemID.random(), KnowledgeFields(text: "and more"))], identity: identity, now: t0 + 50_001)
        let before = try target.head()
        #expect(try target.importBlocks(try source.blocks(), now: now).contains(.newHead(reorganized: false)))
        #expect(try target.head() != before)
        #expect(try target.head() == source.head())
    }

    @Test func fileDatabaseSurvivesReopen() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kiana-store-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("k.sqlite").path
        do {
            let s = LedgerStore(database: try KianaDatabase(path: path))
            try s.initialize(genesis: Block.genesis(identity: identity, time: t0), now: t0)
            _ = try s.write([.put(ItemID.random(), KnowledgeFields(text: "persisted"))], identity: identity, now: t0)
        }
        let s = LedgerStore(database: try KianaDatabase(path: path))
        #expect(try s.items().first?.text == "persisted")
        let mode = try writerJournalMode(s)
        #expect(mode == "wal")
    }

    /// A new file is made under a temporary name and renamed once it has its header, so a kill
    /// during creation never leaves an empty `kiana.sqlite` (which reads as a lost ledger). A
    /// leftover from such a kill is replaced.
    @Test func aNewFileIsNeverEmptyAndLeftoversAreReplaced() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kiana-store-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("k.sqlite").path
        // What a killed run left: its process is gone.
        let ended = Process()
        ended.executableURL = URL(fileURLWithPath: "/bin/true")
        try ended.run()
        ended.waitUntilExit()
        for suffix in ["", "-journal"] {
            try Data("not a database".utf8).write(to: URL(fileURLWithPath: path + ".new-\(ended.processIdentifier)" + suffix))
        }
        try KianaDatabase.createFile(at: path)
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0
        #expect(size >= 512)
        let left = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        #expect(left == ["k.sqlite"])
        let s = LedgerStore(database: try KianaDatabase(path: path))
        try s.initialize(genesis: Block.genesis(identity: identity, time: t0), now: t0)
        #expect(try writerJournalMode(s) == "wal")
        // A link to where the file should live (another disk) is kept, the file made there.
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("disk"), withIntermediateDirectories: false)
        let link = dir.appendingPathComponent("linked.sqlite").path
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "disk/real.sqlite")
        _ = try KianaDatabase(path: link)
        var st = stat()
        #expect(lstat(link, &st) == 0 && st.st_mode & S_IFMT == S_IFLNK)
        #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("disk/real.sqlite").path))
    }

    func writerJournalMode(_ s: LedgerStore) throws -> String {
        try s.database.writer.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") ?? "" }
    }
}

@Suite struct SealLimitTests {
    @Test("Sealed blocks stay within 1,000 entries and about 1 MiB, however much is pending")
    func sealedBlocksAreBounded() throws {
        let id = DeviceIdentity.generate()
        let t0: UInt64 = 1_764_288_000_000
        let store = LedgerStore(database: try KianaDatabase())
        try store.initialize(genesis: Block.genesis(identity: id, time: t0), now: t0)
        let small = (0..<2500).map { KnowledgeOp.put(ItemID.random(), KnowledgeFields(text: "small \($0)")) }
        let r1 = try store.write(small, identity: id, now: t0 + 1)
        var blocks = try store.blocks(from: 1, through: .max)
        #expect(blocks.map(\.entries.count) == [1000, 1000, 500])
        #expect(r1.block.hash == blocks.last?.hash, "the receipt names the block with the newest entries")
        let big = String(repeating: "x", count: 500_000)
        _ = try store.write((0..<5).map { _ in KnowledgeOp.put(ItemID.random(), KnowledgeFields(text: big)) }, identity: id, now: t0 + 2)
        blocks = try store.blocks(from: 4, through: .max)
        #expect(blocks.count == 3, "\(blocks.map(\.entries.count))")
        for b in blocks { #expect(b.entries.count == 1 || b.entries.reduce(0) { $0 + $1.encoded.count } <= 1 << 20) }
        #expect(try store.pendingCount() == 0)
        _ = try store.verify(now: t0 + 3)
    }
}
