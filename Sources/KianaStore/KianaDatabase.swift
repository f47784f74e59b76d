import Foundation
import GRDB
import KianaCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The database: owns the one GRDB writer and the migrations. SQLite in WAL mode with
/// `synchronous = FULL`, so a committed transaction survives a crash or power loss.
public final class KianaDatabase: Sendable {
    public let writer: any DatabaseWriter
    /// Ledger states after recently seen blocks, so importing a block need not replay from genesis.
    let states = StateCache()
    /// Per stuck entry ID, its author's sequence number up to which a landed copy was looked
    /// for (`LedgerStore.resignStuck`): each look then reads only the author's newer entries.
    let landedSearch = LandedSearch()
    /// The file (nil in memory), for the WAL check after writes.
    let filePath: String?
    /// A read-only file's path and how it was opened, for a second reader (`sideReader`).
    let readOnlySource: (path: String, immutable: Bool)?
    private let walLost = Mutex(false)

    /// Opens (creating if needed) the database file at `path` and migrates it.
    public init(path: String) throws(KianaStoreError) {
        var config = Configuration()
        config.busyMode = .timeout(30)
        config.prepareDatabase { db in
            Self.prepareWriter(db)
            try db.execute(sql: "PRAGMA synchronous = FULL")
            // Page cache up to 32 MiB per connection (SQLite's default is 2 MiB): importing a
            // long chain touches random pages of several indexes keyed by hashes (decision 94).
            try db.execute(sql: "PRAGMA cache_size = -32768")
            // What is deleted or moved within a page being written anyway is overwritten with
            // zeros (no extra I/O), so a deleted conversation does not linger in copies SQLite
            // left behind while the table grew (`ConversationStore.delete` adds the rest).
            try db.execute(sql: "PRAGMA secure_delete = FAST")
        }
        filePath = path
        readOnlySource = nil
        do {
            if !FileManager.default.fileExists(atPath: path) { try Self.createFile(at: FilePlacement.resolved(path)) }
            writer = try DatabasePool(path: path, configuration: config)
            if try writer.read({ try Self.migrator.hasBeenSuperseded($0) }) {
                throw KianaStoreError(.database, "the database at \(path) was written by a newer version of KI_ana: use that version (or newer)")
            }
            // Migrate only when a migration is missing: the migrator writes to the file even when
            // it has nothing to do, and a read command should leave a (possibly damaged) file alone.
            if try !writer.read({ try Self.migrator.hasCompletedMigrations($0) }) {
                try Self.migrator.migrate(writer)
            }
        } catch {
            throw Self.storeError(error, "cannot open database at \(path)")
        }
    }

    /// Makes a new database file that is never seen empty: SQLite creates the file with 0 bytes
    /// and writes its header only when WAL mode is set, and a kill in between would leave an
    /// empty file that every command refuses as a lost ledger. So the file is made under a name
    /// of this process's own, given its header, closed, and linked into place; if another
    /// process made the file meanwhile, that one is kept.
    static func createFile(at path: String) throws {
        let folder = (path as NSString).deletingLastPathComponent
        let base = (path as NSString).lastPathComponent + ".new-"
        // What killed runs left: their process is gone, and no process (in any PID namespace)
        // holds the file's lock.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder.isEmpty ? "." : folder)) ?? [] where name.hasPrefix(base) {
            let rest = name.dropFirst(base.count).prefix { $0 != "-" }
            guard rest.allSatisfy({ $0.isASCII && $0.isNumber }), let pid = Int32(rest), pid > 0, FilePlacement.processEnded(pid) else { continue }
            let full = (folder.isEmpty ? "" : folder + "/") + name
            let main = (folder.isEmpty ? "" : folder + "/") + base + rest  // its database file holds the lock
            let fd = open(main, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
            if fd >= 0 {
                let free = flock(fd, LOCK_EX | LOCK_NB) == 0
                _ = Glibc.close(fd)
                if !free { continue }
            }
            unlink(full)
        }
        let fresh = path + ".new-\(getpid())"
        for leftover in [fresh, fresh + "-wal", fresh + "-shm", fresh + "-journal"] { unlink(leftover) }
        // Made here, not through a link, and as root in a folder another user owns (`sudo kiana
        // init` for a service's directory) given to that user, as the keys are (SQLite gives its
        // WAL the file's owner).
        let fd = open(fresh, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw KianaStoreError(.database, "cannot create \(fresh): \(String(cString: strerror(errno)))") }
        // Held open and locked until placed: another process's sweep leaves it alone, and the
        // file placed is checked to be this one (not something swapped in under its name).
        defer { _ = Glibc.close(fd) }
        _ = flock(fd, LOCK_EX | LOCK_NB)
        var owner = stat()
        if geteuid() == 0, stat(folder.isEmpty ? "." : folder, &owner) == 0, owner.st_uid != 0 {
            _ = fchown(fd, owner.st_uid, owner.st_gid)
        }
        func discard() { for leftover in [fresh, fresh + "-wal", fresh + "-shm", fresh + "-journal"] { unlink(leftover) } }
        do {
            let queue = try DatabaseQueue(path: fresh)
            try queue.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA journal_mode = WAL") }
            try queue.close()
        } catch {
            discard()
            throw error
        }
        var made = stat()
        var named = stat()
        guard fstat(fd, &made) == 0, lstat(fresh, &named) == 0, named.st_mode & S_IFMT == S_IFREG, made.st_dev == named.st_dev, made.st_ino == named.st_ino
        else {
            discard()
            throw KianaStoreError(.database, "the new database \(fresh) was replaced while it was made; nothing was put in place")
        }
        let placed = FilePlacement.placeWithoutReplacing(fresh, at: path)
        if placed == EEXIST { discard() }  // another process made it first: that one is used
        guard placed == 0 || placed == EEXIST else {
            discard()
            throw KianaStoreError(.database, "cannot put the new database in place at \(path): \(String(cString: strerror(placed)))")
        }
        FilePlacement.syncFolder(folder)
    }

    /// Opens an existing database file read-only: for read commands, which then leave the file
    /// exactly as it was (a writable pool touches the file on every open), and for a data
    /// directory this process cannot write (a read-only mount), where it is opened `immutable`
    /// so that no WAL index is created beside it. The file must have been migrated already.
    public init(readOnlyPath path: String, immutable: Bool = true) throws(KianaStoreError) {
        var config = Configuration()
        config.readonly = true
        config.busyMode = .timeout(30)
        // SQLite's URI form (the system library is built with URI support); % and ? escaped.
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove(charactersIn: "?#%")
        let uri = "file:" + (path.addingPercentEncoding(withAllowedCharacters: allowed) ?? path) + (immutable ? "?immutable=1" : "")
        let done: Bool
        do {
            filePath = nil  // read-only: nothing is written through it
            readOnlySource = (path, immutable)
            writer = try DatabaseQueue(path: uri, configuration: config)
            done = try writer.read { db in try Self.migrator.hasCompletedMigrations(db) }
        } catch {
            throw Self.storeError(error, "cannot open database at \(path) read-only")
        }
        guard done else {
            throw immutable
                ? KianaStoreError(
                    .readOnly, "the database at \(path) needs an upgrade that a read-only directory does not allow: open it once where it can be written")
                : KianaStoreError(
                    .corrupt, "the database at \(path) does not list all of its migrations as done: the file is damaged, or was written by a newer version")
        }

    }

    /// Whether the file at `path` lacks migrations this version has (it was written by an older
    /// one). Opens it read-only to look.
    public static func migrationsPending(path: String) throws(KianaStoreError) -> Bool {
        var config = Configuration()
        config.readonly = true
        do {
            let queue = try DatabaseQueue(path: path, configuration: config)
            return try queue.read { db in try !migrator.hasCompletedMigrations(db) }
        } catch {
            throw Self.storeError(error, "cannot read database at \(path)")
        }
    }

    /// A database to read at the same time as this one: this one where reads already run side
    /// by side (a pool), a second connection to a file opened read-only, nil in memory.
    func sideReader() -> KianaDatabase? {
        if writer is DatabasePool { return self }
        guard let (path, immutable) = readOnlySource else { return nil }
        return try? KianaDatabase(readOnlyPath: path, immutable: immutable)
    }

    /// A private in-memory database (tests).
    public init() throws(KianaStoreError) {
        do {
            var config = Configuration()
            config.prepareDatabase { db in Self.prepareWriter(db) }
            filePath = nil
            readOnlySource = nil
            writer = try DatabaseQueue(configuration: config)
            try Self.migrator.migrate(writer)
        } catch {
            throw KianaStoreError(.database, "cannot open in-memory database", cause: error)
        }
    }

    /// What every connection that may write needs: `kiana_store_version()`, which the guard of
    /// migration "2026-12-05 older versions may not write" asks for. Versions from before it
    /// lack the function, so their writes fail loudly instead of leaving the search index behind
    /// (they would change `item` without `itemSearch`, decision 94).
    static func prepareWriter(_ db: Database) {
        db.add(function: DatabaseFunction("kiana_store_version", argumentCount: 0, pure: true) { _ in 20_261_205 })
    }

    /// Migrations are named and never edited once shipped; add new ones at the end.
    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("2026-11-28 ledger and knowledge") { db in
            try db.create(table: "block") { t in
                t.primaryKey("hash", .blob)
                t.column("height", .integer).notNull().indexed()
                t.column("parent", .blob).notNull()
                t.column("signer", .blob).notNull()
                t.column("time", .integer).notNull()
                t.column("signedHeader", .blob).notNull()
            }
            try db.create(table: "chain") { t in
                t.primaryKey("height", .integer)
                t.column("hash", .blob).notNull().references("block")
            }
            try db.create(table: "entry") { t in
                t.primaryKey("id", .blob)
                t.column("author", .blob).notNull()
                t.column("seq", .integer).notNull()
                t.column("kind", .text).notNull()
                t.column("hlcWall", .integer).notNull()
                t.column("hlcLogical", .integer).notNull()
                t.column("raw", .blob).notNull()
            }
            try db.create(index: "entry_author_seq", on: "entry", columns: ["author", "seq"])
            try db.create(table: "blockEntry") { t in
                t.column("blockHash", .blob).notNull().references("block")
                t.column("position", .integer).notNull()
                t.column("entryId", .blob).notNull().references("entry").indexed()
                t.primaryKey(["blockHash", "position"])
            }
            try db.create(table: "pending") { t in
                t.primaryKey("entryId", .blob).references("entry")
                t.column("addedAt", .integer).notNull()
            }
            try db.create(table: "item") { t in
                t.primaryKey("id", .blob)
                t.column("title", .text)
                t.column("text", .text)
                t.column("tags", .text)
                t.column("source", .text)
                t.column("createdWall", .integer)
                t.column("updatedWall", .integer).indexed()
                t.column("deleted", .boolean).notNull()
                t.column("state", .blob).notNull()
            }
            try db.create(table: "setting") { t in
                t.primaryKey("key", .text)
                t.column("value", .blob).notNull()
            }
        }
        m.registerMigration("2026-11-28 forks, orphans and conflicts") { db in
            try db.create(table: "orphan") { t in
                t.primaryKey("hash", .blob)
                t.column("parent", .blob).notNull().indexed()
                t.column("receivedAt", .integer).notNull()
                t.column("block", .blob).notNull()
            }
            try db.create(table: "conflict") { t in
                t.column("author", .blob).notNull()
                t.column("seq", .integer).notNull()
                t.column("entryId", .blob).notNull()
                t.primaryKey(["author", "seq", "entryId"])
            }
            try db.create(index: "block_parent", on: "block", columns: ["parent"])
        }
        m.registerMigration("2026-11-28 entry kind index") { db in
            try db.create(index: "entry_kind", on: "entry", columns: ["kind"])
        }
        m.registerMigration("2026-11-28 peer addresses") { db in
            try db.create(table: "peerAddress") { t in
                t.primaryKey("address", .text)
                t.column("addedAt", .integer).notNull()
            }
            try db.create(index: "chain_hash", on: "chain", columns: ["hash"])
        }
        m.registerMigration("2026-11-28 retrieval: full-text and vectors") { db in
            // BM25 over live items (external content: the text is stored once, in `item`).
            try db.execute(
                sql: """
                    CREATE VIRTUAL TABLE itemSearch USING fts5(
                        title, text, content='item', content_rowid='rowid',
                        tokenize='porter unicode61 remove_diacritics 2');
                    INSERT INTO itemSearch(rowid, title, text) SELECT rowid, title, text FROM item WHERE deleted = 0;
                    CREATE TRIGGER itemSearchInsert AFTER INSERT ON item WHEN NEW.deleted = 0 BEGIN
                        INSERT INTO itemSearch(rowid, title, text) VALUES (NEW.rowid, NEW.title, NEW.text);
                    END;
                    CREATE TRIGGER itemSearchDelete AFTER DELETE ON item WHEN OLD.deleted = 0 BEGIN
                        INSERT INTO itemSearch(itemSearch, rowid, title, text) VALUES ('delete', OLD.rowid, OLD.title, OLD.text);
                    END;
                    CREATE TRIGGER itemSearchUpdate AFTER UPDATE ON item
                    WHEN OLD.title IS NOT NEW.title OR OLD.text IS NOT NEW.text OR OLD.deleted IS NOT NEW.deleted BEGIN
                        INSERT INTO itemSearch(itemSearch, rowid, title, text)
                            SELECT 'delete', OLD.rowid, OLD.title, OLD.text WHERE OLD.deleted = 0;
                        INSERT INTO itemSearch(rowid, title, text) SELECT NEW.rowid, NEW.title, NEW.text WHERE NEW.deleted = 0;
                    END;
                    """)
            // One embedding per live item and model; dropped whenever the embedded text changes,
            // so "no row" means "needs embedding" (also for items that arrive from other devices).
            try db.create(table: "itemVector") { t in
                t.column("itemId", .blob).notNull().references("item", onDelete: .cascade)
                t.column("model", .text).notNull()
                t.column("vector", .blob).notNull()
                t.primaryKey(["itemId", "model"])
            }
            try db.execute(
                sql: """
                    CREATE TRIGGER itemVectorStale AFTER UPDATE ON item
                    WHEN OLD.title IS NOT NEW.title OR OLD.text IS NOT NEW.text OR NEW.deleted = 1 BEGIN
                        DELETE FROM itemVector WHERE itemId = NEW.id;
                    END;
                    """)
        }
        m.registerMigration("2026-11-29 conversations") { db in
            // Chat history stays on this device (it is not knowledge and not in the ledger).
            try db.create(table: "conversation") { t in
                t.column("id", .text).primaryKey()
                t.column("title", .text).notNull()
                t.column("created", .integer).notNull()
                t.column("updated", .integer).notNull()
            }
            try db.create(table: "message") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("conversationId", .text).notNull().indexed().references("conversation", onDelete: .cascade)
                t.column("role", .text).notNull()
                t.column("content", .text).notNull()
                t.column("citations", .text).notNull().defaults(to: "[]")
                t.column("created", .integer).notNull()
            }
        }
        m.registerMigration("2026-12-04 history tree") { db in
            // The RFC 6962 tree over the canonical chain, as its complete subtrees (HistoryIndex).
            try db.create(table: "historyNode", options: [.withoutRowID]) { t in
                t.column("level", .integer).notNull()
                t.column("idx", .integer).notNull()
                t.column("hash", .blob).notNull()
                t.primaryKey(["level", "idx"])
            }
            try HistoryIndex.backfill(db)
        }
        m.registerMigration("2026-12-05 search index kept by the store") { db in
            // LedgerStore.apply keeps itemSearch and itemVector in step from now on (decision 94).
            try db.execute(
                sql: """
                    DROP TRIGGER itemSearchInsert;
                    DROP TRIGGER itemSearchDelete;
                    DROP TRIGGER itemSearchUpdate;
                    DROP TRIGGER itemVectorStale;
                    """)
        }
        m.registerMigration("2026-12-05 older versions may not write") { db in
            // Every ledger write saves the clock; a version without kiana_store_version() (one
            // that still expects the search triggers) cannot prepare that statement any more.
            try db.execute(
                sql: """
                    CREATE TRIGGER olderVersionsMayNotWrite BEFORE INSERT ON setting
                    WHEN NEW.key = 'hlc' AND kiana_store_version() IS NULL BEGIN
                        SELECT RAISE(ABORT, 'this database needs KI_ana 2026-12-05 or newer');
                    END;
                    """)
        }
        m.registerMigration("2026-12-06 what an answer showed") { db in
            // The numbered citations, supporting sentences and abstention of an answer, so a
            // reopened conversation shows it as it was shown (JSON; NULL for older turns).
            try db.alter(table: "message") { t in t.add(column: "detail", .text) }
        }
        m.registerMigration("2026-12-06 superseded entries") { db in
            // Entries that left the pending pool because their content landed under another
            // sequence number (decision 111); their effect stays in the knowledge state.
            try db.create(table: "superseded", options: [.withoutRowID]) { t in
                t.primaryKey("entryId", .blob).references("entry")
                t.column("by", .blob).notNull().references("entry")
                t.column("at", .integer).notNull()
            }
        }
        return m
    }
}

extension KianaDatabase {
    /// After a write this process acknowledges: if the WAL file was deleted under the running
    /// process (SQLite goes on writing to the unlinked file, and a crash would lose every write
    /// since), the WAL is checkpointed into the database file, synced, so the write survives.
    /// Costs one stat(2) while the file is there. `lostWAL` says it happened (shown by /health).
    public func keepWritesIfWALLost() {
        guard let filePath, access(filePath + "-wal", F_OK) != 0, errno == ENOENT else { return }
        walLost.withLock { $0 = true }
        _ = try? writer.writeWithoutTransaction { try $0.checkpoint(.full) }
    }

    /// True once the WAL file was found deleted while this process ran (until it restarts).
    public var lostWAL: Bool { walLost.withLock { $0 } }

    /// Moves everything into the main file (WAL checkpoint) and closes the file, so it can be
    /// renamed or copied whole; the database is unusable afterwards.
    public func close() throws(KianaStoreError) {
        do {
            try writer.writeWithoutTransaction { try $0.checkpoint(.truncate) }
            try (writer as? DatabasePool)?.close()
        } catch {
            throw Self.storeError(error, "closing the database")
        }
    }

    /// Runs a store operation and maps what it throws to `KianaStoreError`: store errors pass
    /// through, core decoding errors mean corrupt stored data, anything else is a database error.
    func run<T>(_ what: String, _ body: () throws -> T) throws(KianaStoreError) -> T {
        do {
            return try body()
        } catch let e as KianaStoreError {
            throw e
        } catch let e as KianaCoreError {
            // A limit is not damage: what was being written is over a size limit.
            if e.code == .tooLarge { throw KianaStoreError(.tooLarge, "\(what): \(e.message)", height: e.height, cause: e) }
            throw KianaStoreError(.corrupt, "\(what): \(e.description)", height: e.height, cause: e)
        } catch {
            throw KianaDatabase.storeError(error, what)
        }
    }

    /// What a GRDB/SQLite failure while doing `what` is: `corrupt` when SQLite itself found the
    /// file damaged (`SQLITE_CORRUPT`, `SQLITE_NOTADB`), whatever was being done; else `database`.
    static func storeError(_ error: any Error, _ what: String) -> KianaStoreError {
        if let e = error as? KianaStoreError { return e }
        if let e = error as? DatabaseError, e.resultCode == .SQLITE_CORRUPT || e.resultCode == .SQLITE_NOTADB {
            return KianaStoreError(.corrupt, "\(what): the database file is damaged (\(e.message ?? "SQLite error \(e.resultCode.rawValue)"))", cause: e)
        }
        // Said as what the owner can act on (SQLite's own text for a full disk during a backup
        // can be "not an error", from the other connection).
        if let e = error as? DatabaseError {
            switch e.resultCode {
            case .SQLITE_FULL: return KianaStoreError(.io, "\(what): the disk is full; free some space and try again", cause: e)
            case .SQLITE_READONLY: return KianaStoreError(.readOnly, "\(what): the database cannot be written here (read-only file or mount)", cause: e)
            case .SQLITE_IOERR: return KianaStoreError(.io, "\(what): the disk reported an I/O error (\(e.message ?? "SQLite error \(e.extendedResultCode.rawValue)"))", cause: e)
            default: break
            }
        }
        return KianaStoreError(.database, what, cause: error)
    }
}

/// A small cache of validated ledger states by block hash. A block hash fixes the block and its
/// whole ancestry, so an entry never goes stale, even if the transaction that computed it rolls back.
final class StateCache: Sendable {
    struct Entries {
        var states: [[UInt8]: LedgerState] = [:]
        var order: [[UInt8]] = []
    }
    private let entries = Mutex(Entries())
    let capacity = 128

    func get(_ hash: [UInt8]) -> LedgerState? {
        entries.withLock { $0.states[hash] }
    }

    func put(_ hash: [UInt8], _ state: LedgerState) {
        let capacity = self.capacity
        entries.withLock { e in
            if e.states.updateValue(state, forKey: hash) == nil { e.order.append(hash) }
            if e.order.count > capacity { e.states[e.order.removeFirst()] = nil }
        }
    }
}

/// How far a landed copy of each stuck entry was looked for (entry ID → its author's sequence
/// number), in memory: a restart looks once over everything again.
final class LandedSearch: Sendable {
    private let upTo = Mutex<[[UInt8]: UInt64]>([:])
    func get(_ id: [UInt8]) -> UInt64? { upTo.withLock { $0[id] } }
    func set(_ id: [UInt8], _ seq: UInt64) { upTo.withLock { $0[id] = seq } }
}
