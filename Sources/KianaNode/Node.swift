import Foundation
import KianaCore
import KianaStore

/// An opened node: its data directory, identity and ledger store. Each method is one user
/// action; the CLI only parses arguments and prints what these return.
public struct Node: Sendable {
    /// This build's version (`kiana --version`; the OpenAPI document states the same).
    public static let version = "0.7.1"

    public let directory: DataDirectory
    public let identity: DeviceIdentity
    public let store: LedgerStore
    /// True when the data directory could only be opened for reading (every write is refused).
    public var readOnly = false

    init(directory: DataDirectory, identity: DeviceIdentity, store: LedgerStore, readOnly: Bool = false) {
        self.directory = directory
        self.identity = identity
        self.store = store
        self.readOnly = readOnly
    }

    /// Creates a new network in `directory`: identity keys (unless present) and a genesis
    /// block naming this device as the only authority.
    @discardableResult
    /// The name goes into the genesis block's header (at most 64 KiB with the rest): bounded
    /// as a name a person reads, checked before anything is made.
    public static func checkNetworkName(_ name: String?) throws {
        guard let name else { return }
        guard !name.trimmingCharacters(in: .whitespaces).isEmpty, name.count <= 100,
            !name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control || $0.properties.generalCategory == .format })
        else {
            throw KianaNodeError(.invalidInput, "a network name is 1 to 100 characters without control or invisible formatting characters")
        }
    }

    public static func initialize(directory: DataDirectory, name: String? = nil, now: UInt64 = currentMillis()) throws -> Node {
        try checkNetworkName(name)
        try directory.create()
        try refuseLostLedgerOrKey(directory)
        // Until the first block is stored, keys here without a ledger are this init's, so a run
        // cut off in between (kill, power loss, a container stopped) is finished by the next
        // `init` or `serve` instead of being refused as a cut-off join.
        // Only where no ledger is: a database that cannot be read (damaged, newer, busy) is not
        // marked, so that moving it aside cannot make the directory look like an init to finish.
        var existing: LedgerStore?
        if databaseBytes(directory) != nil {
            let store = try LedgerStore(database: KianaDatabase(path: directory.databasePath))
            if let net = try store.network() {
                directory.clearInitPending()
                throw KianaNodeError(.alreadyInitialized, "\(directory.path) is already initialized (network \(Hex.encode(net)))")
            }
            existing = store
        }
        try directory.markInitPending()
        let identity: DeviceIdentity
        if directory.hasIdentity { identity = try directory.loadIdentity() } else { identity = try directory.createIdentity() }
        let store = try existing ?? LedgerStore(database: KianaDatabase(path: directory.databasePath))
        // A mark left by a ledger that is gone (an emptied file, removed) is not this one's.
        directory.clearDamage()
        try store.initialize(genesis: Block.genesis(identity: identity, time: now, name: name), now: now)
        directory.clearInitPending()
        _ = try directory.apiToken()
        return Node(directory: directory, identity: identity, store: store)
    }

    /// Opens an initialized node. With `forReading` (the read commands) the database is opened
    /// read-only, so reading never changes the file, and a directory this process cannot write
    /// (a read-only mount) still serves `list`, `show`, `status` and `ledger verify`. A ledger
    /// marked damaged is opened read-only whatever the caller asked for.
    public static func open(directory: DataDirectory, forReading: Bool = false) throws -> Node {
        guard directory.hasIdentity else {
            var isFolder: ObjCBool = false
            if FileManager.default.fileExists(atPath: directory.path, isDirectory: &isFolder), !isFolder.boolValue {
                throw KianaNodeError(.invalidInput, "\(directory.path) is a file, not a data directory: give a folder with --data-dir")
            }
            throw lostIdentity(directory) ?? KianaNodeError(.notInitialized, "no KI_ana data in \(directory.path): run `kiana init` first")
        }
        let identity = try directory.loadIdentity()
        // Keys and no ledger: a join cut off after its code was shown (or a deleted file). Said
        // plainly, and no empty database is left behind by the attempt.
        guard let size = databaseBytes(directory) else { throw keysWithoutLedger(directory) }
        // An emptied file (truncated, a copy that failed) is a lost ledger, not a new one: said,
        // and left as it is (no schema written into it).
        guard size > 0 else { throw emptied(directory) }
        guard forReading || directory.isWritable else {
            throw KianaNodeError(.readOnly, "\(directory.path) is read-only here: reading works, writing does not")
        }
        // Even opening a writer touches the file, so a damaged ledger is only opened for reading.
        let readOnly = forReading || directory.damage != nil
        // A file from an older version is brought up to date first: the one write a read
        // command may make, and only where the directory can be written and nothing is damaged.
        if readOnly, directory.damage == nil, directory.isWritable, try KianaDatabase.migrationsPending(path: directory.databasePath) {
            _ = try KianaDatabase(path: directory.databasePath)
        }
        let database =
            readOnly
            ? try KianaDatabase(readOnlyPath: directory.databasePath, immutable: !directory.isWritable && !directory.hasWAL)
            : try KianaDatabase(path: directory.databasePath)
        let store = LedgerStore(database: database)
        // A database with its schema and no block: an init, import or join cut off.
        guard try store.isInitialized() else { throw keysWithoutLedger(directory) }
        // An init mark beside a ledger (an init cut off just after its first block) is stale:
        // removed, so that it cannot make a later lost ledger look like an init to finish.
        if directory.initPending, directory.isWritable { directory.clearInitPending() }
        return Node(directory: directory, identity: identity, store: store, readOnly: readOnly)
    }

    /// Throws unless this node may sign and store: not opened read-only, ledger not marked damaged.
    public func requireWritable() throws(KianaNodeError) {
        if let damage = directory.damage {
            throw KianaNodeError(
                .readOnly,
                "the ledger in \(directory.path) failed verification (\(damage)); nothing is written on top of it. "
                    + Self.recoveryAdvice)
        }
        if readOnly {
            throw KianaNodeError(.readOnly, "\(directory.path) is read-only here: reading works, writing does not")
        }
    }

    /// How to get out of a damaged ledger.
    public static let recoveryAdvice =
        "To recover: restore the data directory from a backup (`kiana restore`), or move its kiana.sqlite (with "
        + "kiana.sqlite-wal and -shm) aside, keep the keys, and `kiana import` an export from another device of the network "
        + "(or re-sync from a member); `kiana ledger verify` clears this once the ledger verifies again."

    /// Opens the node, creating a new network first if the directory holds no device key yet
    /// (`kiana serve` on a new directory). Keys without a ledger are a `kiana join` (or import)
    /// that was cut off: that device may already have been voted in, so it is not quietly made
    /// the only authority of a network of its own; `kiana init` does that when asked.
    public static func openOrInitialize(directory: DataDirectory) throws -> (Node, created: Bool) {
        guard directory.hasIdentity else { return (try initialize(directory: directory), true) }
        if directory.initPending, databaseBytes(directory) == nil { return (try initialize(directory: directory), true) }
        guard let size = databaseBytes(directory), size > 0 else {
            return (try open(directory: directory), false)  // says what is missing or emptied
        }
        let store = try LedgerStore(database: KianaDatabase(path: directory.databasePath))
        if try store.isInitialized() {
            directory.clearInitPending()  // an init cut off after its first block
            return (try open(directory: directory), false)
        }
        if directory.initPending { return (try initialize(directory: directory), true) }
        throw keysWithoutLedger(directory)
    }

    /// Before keys or a ledger are made here (`init`, `import`): nothing is written (no new keys
    /// beside it) where a ledger lost its device key, and no ledger into a database that was emptied.
    /// Nor while a `kiana join` sets the directory up (it holds `node.lock`).
    static func refuseLostLedgerOrKey(_ directory: DataDirectory) throws {
        if let pid = directory.joiningPID { throw directory.joinInProgress(pid: pid) }
        if let lost = lostIdentity(directory) { throw lost }
        if directory.hasIdentity, databaseBytes(directory) == 0 { throw emptied(directory) }
    }

    /// A ledger whose device key is gone (identity.key deleted or not copied): the error that
    /// says so, nil if the directory holds no ledger of a network. Read-only; writes nothing.
    static func lostIdentity(_ directory: DataDirectory) -> KianaNodeError? {
        guard !directory.hasIdentity, let size = databaseBytes(directory) else { return nil }
        // Keys are written before any database (init, join), so a database without them, even
        // an emptied one, is a directory that lost its key.
        if size == 0 {
            return KianaNodeError(
                .keyFile,
                "\(directory.path) holds an emptied database and no identity.key: its ledger and its key are gone. "
                    + "Restore the directory from a backup (`kiana restore`), or remove both to start afresh")
        }
        // A file that cannot be read counts as a ledger: better a refusal than keys beside it.
        let network = (try? KianaDatabase(readOnlyPath: directory.databasePath, immutable: false)).map { try? LedgerStore(database: $0).network() }
        if case .some(.none) = network { return nil }  // read, and no network in it
        let which = (network ?? nil).map { "the ledger of network \(Hex.encode($0.prefix(8)))…" } ?? "a ledger"
        return KianaNodeError(
            .keyFile,
            "\(directory.identityKeyPath) is missing, but \(directory.path) holds \(which): "
                + "put the key back (from a backup: `kiana restore`). A new key would not be an authority of this ledger, so none is made")
    }

    /// The database file's size, nil if there is none (also a link to a file that is not
    /// there: a disk not mounted).
    static func databaseBytes(_ directory: DataDirectory) -> Int? {
        var st = stat()
        guard stat(directory.databasePath, &st) == 0 else { return nil }
        return Int(st.st_size)
    }

    /// A ledger that does not verify, refused as the source of a copy that its reader would
    /// refuse too (`backup`, `export`).
    static func unverifiable(_ directory: DataDirectory, _ why: String, copy: String, cause: any Error) -> KianaNodeError {
        KianaNodeError(
            .verificationFailed, "the ledger in \(directory.path) does not verify (\(why)): \(copy), so none was written. " + recoveryAdvice, cause: cause)
    }

    /// An emptied database file (0 bytes) beside the device key.
    static func emptied(_ directory: DataDirectory) -> KianaNodeError {
        KianaNodeError(
            .corrupt,
            "\(directory.databasePath) is empty (0 bytes): the ledger it held is gone. " + recoveryAdvice
                + " To start a new network with this key instead, remove the empty file and run `kiana init`.")
    }

    /// A device key and no ledger: what happened and the ways on.
    static func keysWithoutLedger(_ directory: DataDirectory) -> KianaNodeError {
        if directory.initPending {
            return KianaNodeError(
                .notInitialized,
                "no ledger in \(directory.path) yet: a `kiana init` here was cut off before its first block. "
                    + "Run `kiana init --data-dir \(directory.path)` (or `kiana serve`) to finish it")
        }
        return KianaNodeError(
            .notInitialized,
            "no ledger in \(directory.path), only a device key. If a `kiana join` or `kiana import` was cut off, run it again to finish it; "
                + "if the ledger file was lost, restore the directory from a backup (`kiana restore`); "
                + "`kiana init --data-dir \(directory.path)` starts a new network with this key")
    }

    // MARK: knowledge

    public func remember(text: String, title: String? = nil, tags: [String] = [], source: String? = nil, now: UInt64 = currentMillis()) throws -> (
        ItemID, WriteReceipt
    ) {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty else { throw KianaNodeError(.invalidInput, "nothing to remember: the text is empty") }
        try requireWritable()
        let id = ItemID.random()
        // A blank title is no title (a list would show an empty line for the item).
        let title = title?.trimmingCharacters(in: .whitespacesAndNewlines)
        let fields = KnowledgeFields(title: title?.isEmpty == false ? title : nil, text: trimmed, tags: tags.isEmpty ? nil : tags, source: source)
        let receipt = try store.write([.put(id, fields)], identity: identity, now: now)
        return (id, receipt)
    }

    /// Changes the given fields of an item (nil leaves a field as it is). With `basedOn` (the
    /// hex ID of the entry the caller last saw change the item), a change made meanwhile
    /// (another tab, device or process) is refused instead of overwritten.
    public func update(
        idPrefix: String, text: String? = nil, title: String? = nil, tags: [String]? = nil, basedOn: [String]? = nil,
        now: UInt64 = currentMillis()
    ) throws -> (ItemID, WriteReceipt?) {
        try requireWritable()
        let item = try store.item(idPrefix: idPrefix)
        // Checked before the forgotten-item rule (a stale edit of an item forgotten meanwhile is
        // `changed`), and again in the write's transaction (a change can land in between).
        if let basedOn { try LedgerStore.require(item, isOneOf: basedOn) }
        guard !item.deleted else { throw KianaNodeError(.invalidInput, "item \(item.id) is forgotten; add it again instead") }
        let trimmed = text?.trimmingCharacters(in: .whitespacesAndNewlines)
        guard trimmed.map({ !$0.isEmpty }) ?? true else { throw KianaNodeError(.invalidInput, "the text cannot be empty (forget the item instead)") }
        // A blank title clears the title ("" is how it is cleared).
        let title = title?.trimmingCharacters(in: .whitespacesAndNewlines)
        guard trimmed != nil || title != nil || tags != nil else { throw KianaNodeError(.invalidInput, "nothing to change: give text, title or tags") }
        // Every field given already holds that value: nothing is written (no new entry, the
        // version stays, so another tab's edit based on it is not refused for nothing).
        if trimmed.map({ $0 == item.text }) ?? true, title.map({ $0 == (item.title ?? "") }) ?? true, tags.map({ $0 == item.tags }) ?? true {
            return (item.id, nil)
        }
        let receipt = try store.write(
            [.put(item.id, KnowledgeFields(title: title, text: trimmed, tags: tags))], identity: identity, now: now,
            onlyIf: basedOn.map { (item.id, $0) })
        return (item.id, receipt)
    }

    public func forget(idPrefix: String, now: UInt64 = currentMillis()) throws -> (StoredItem, WriteReceipt) {
        try requireWritable()
        let item = try store.item(idPrefix: idPrefix)
        guard !item.deleted else { throw KianaNodeError(.invalidInput, "item \(item.id) is already forgotten") }
        // An ingested chunk is marked as forgotten by its owner, so re-ingesting its file
        // leaves it forgotten (decision 112); one write, the delete after the mark.
        if let marked = item.source.flatMap(ChunkSource.forgotten) {
            return (item, try store.write([.put(item.id, KnowledgeFields(source: marked)), .delete(item.id)], identity: identity, now: now))
        }
        return (item, try store.write([.delete(item.id)], identity: identity, now: now))
    }

    // MARK: ledger

    /// An inclusion proof of an entry in its block and of the block in the history tree.
    public struct EntryProof: Sendable {
        public var entry: Entry
        public var height: UInt64
        public var position: Int
        public var blockEntryCount: Int
        public var entryRoot: [UInt8]
        public var entryPath: [[UInt8]]
        public var treeSize: Int
        public var historyRoot: [UInt8]
        public var historyPath: [[UInt8]]
        public var blockHash: [UInt8]

        /// Verifies both proofs; throws `.invalidProof` if either fails.
        public func verify() throws(KianaCoreError) {
            try Merkle.verifyInclusion(
                index: UInt64(position), treeSize: UInt64(blockEntryCount), leafHash: Merkle.leafHash(entry.id),
                proof: entryPath, root: entryRoot)
            try Merkle.verifyInclusion(
                index: height, treeSize: UInt64(treeSize), leafHash: Merkle.leafHash(blockHash),
                proof: historyPath, root: historyRoot)
        }
    }

    /// The inclusion proof of a knowledge item's latest entry or of a ledger entry: `id` (or a
    /// unique prefix) is looked up as an item first, then as an entry. `item` names the item.
    public func proof(itemOrEntry id: String) throws -> (proof: EntryProof, item: String?) {
        let found: StoredItem?
        do throws(KianaStoreError) {
            found = try store.item(idPrefix: id)
        } catch {
            // A prefix of several items is said as such; not an item at all: an entry, perhaps.
            if error.code == .ambiguous { throw error }
            found = nil
        }
        if let found, let last = found.lastEntry {
            // The prefix may also start an entry's ID that is not this item's latest: which one
            // is meant cannot be told, and is said instead of guessed.
            if let entry = try? store.findEntry(idPrefix: id).entry, entry.id != last {
                throw KianaStoreError(
                    .ambiguous, "\(id) starts both item \(found.id) and entry \(entry.idHex.prefix(16))…: give more characters")
            }
            return (try proof(entryIDPrefix: Hex.encode(last)), found.id.description)
        }
        do { return (try proof(entryIDPrefix: id), nil) } catch let e as KianaStoreError where e.code == .notFound {
            throw KianaStoreError(.notFound, "no knowledge item or ledger entry \(id)")
        }
    }

    public func proof(entryIDPrefix: String) throws -> EntryProof {
        let (entry, height, position) = try store.findEntry(idPrefix: entryIDPrefix)
        guard let block = try store.blocks(from: height, through: height).first else {
            throw KianaNodeError(.io, "block \(height) vanished while building the proof")
        }
        let hashes = try store.blockHashes()
        let leaves = block.entries.map { Merkle.leafHash($0.id) }
        let historyLeaves = hashes.map(Merkle.leafHash)
        return EntryProof(
            entry: entry, height: height, position: position, blockEntryCount: block.entries.count,
            entryRoot: block.header.entryRoot, entryPath: Merkle.inclusionProof(index: position, leafHashes: leaves),
            treeSize: hashes.count, historyRoot: Merkle.root(leafHashes: historyLeaves),
            historyPath: Merkle.inclusionProof(index: Int(height), leafHashes: historyLeaves), blockHash: block.hash)
    }

    /// Seals entries waiting in the pending pool (returned by a reorg, or written while this
    /// device was not yet an authority) into a block, if this device may sign, after signing
    /// again this device's writes caught by a reused sequence number (decision 111); a device
    /// that may not sign still retires stuck entries whose content landed. `resign: false`
    /// skips that step (the server runs it only when the head or the pending pool changed).
    /// Nothing happens when nothing waits or the ledger is marked damaged.
    @discardableResult
    public func sealPendingIfAuthority(now: UInt64 = currentMillis(), resign: Bool = true) throws -> LedgerStore.SealRun {
        // Runs on every head tick (twice a second): only the cheap checks first.
        guard directory.damage == nil, !readOnly else { return LedgerStore.SealRun() }
        let pending = try store.pendingCount()
        guard try store.authorities().contains(identity.publicKey) else {
            guard resign, pending > 0 else { return LedgerStore.SealRun() }
            let r = try store.resignStuck(identity: nil, now: now)
            return LedgerStore.SealRun(retired: r.retired)
        }
        guard try pending > 0 || (resign && store.hasLostEntries(of: identity.publicKey)) else { return LedgerStore.SealRun() }
        // Blocks are bounded (`LedgerStore.sealLimits`): seal until nothing more can be.
        return try store.sealAllPending(identity: identity, now: now, resign: resign)
    }

    /// Verifies the whole ledger (and the database file). A failure marks the ledger damaged,
    /// so nothing is signed on top of it and `serve` refuses to start; success clears the mark.
    public func verify(now: UInt64 = currentMillis()) throws -> LedgerState {
        do throws(KianaStoreError) {
            let (state, mark) = try store.verifyMarking(now: now)
            if directory.isWritable {
                directory.clearDamage()
                // Opened read-only for the check; the record of what passed needs a writer.
                if readOnly { try? LedgerStore(database: KianaDatabase(path: directory.databasePath)).recordVerified(mark) }
            }
            return state
        } catch {
            guard error.code == .corrupt else { throw error }
            if directory.isWritable { directory.markDamaged(error.message) }
            throw KianaNodeError(.verificationFailed, "ledger verification failed: \(error.message)", cause: error)
        }
    }

    /// The refusal to serve a ledger already marked damaged, if it is.
    public static func damageRefusal(_ directory: DataDirectory) -> KianaNodeError? {
        directory.damage.map { damage in
            KianaNodeError(
                .verificationFailed,
                "the ledger in \(directory.path) failed verification earlier (\(damage)); the node does not serve it. " + recoveryAdvice)
        }
    }

    /// The check `serve` runs before anything listens (`LedgerStore.startupCheck`: the database
    /// file, the chain with signatures verified above the last verified height, the knowledge
    /// table). A failure marks the ledger damaged and is a `.verificationFailed` error that says
    /// how to recover.
    public func startupCheck(now: UInt64 = currentMillis()) throws -> StartupCheck {
        if let refusal = Self.damageRefusal(directory) { throw refusal }
        do throws(KianaStoreError) {
            return try store.startupCheck(now: now)
        } catch {
            guard error.code == .corrupt else { throw error }
            directory.markDamaged(error.message)
            throw KianaNodeError(
                .verificationFailed,
                "the ledger in \(directory.path) is damaged (\(error.message)); the node does not serve it. "
                    + Self.recoveryAdvice, cause: error)
        }
    }
}
