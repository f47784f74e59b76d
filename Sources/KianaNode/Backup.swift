import Foundation
import KianaCore
import KianaStore
import Synchronization

/// `kiana backup` and `kiana restore`: the data directory (keys, API token, config, a consistent
/// copy of the database) in one file sealed with a passphrase (`BackupSeal`, decision 96).
public enum DataBackup {
    /// What a backup holds, as reported after making or restoring it.
    public struct Summary: Codable, Sendable {
        public var file: String
        public var bytes: Int
        public var height: UInt64
        public var entries: Int
        public var created: UInt64
        /// Where a restore moved the node that was in the target (`--force`); nil otherwise.
        public var movedAside: String?
    }

    /// Shortest passphrase accepted for a new backup.
    public static let minPassphrase = 8

    /// Writes a sealed backup of `directory` to `file` (refused if it exists), while a node may
    /// be serving the directory. `progress` gets (phase, done, total) in bytes.
    public static func make(
        directory: DataDirectory, to file: String, passphrase: [UInt8], parameters: BackupSeal.Parameters = .standard,
        progress: (String, Int, Int) -> Void = { _, _, _ in }
    ) throws -> Summary {
        guard directory.hasIdentity, FileManager.default.fileExists(atPath: directory.databasePath) else {
            throw KianaNodeError(.notInitialized, "\(directory.path) holds no node to back up (run `kiana init`, or give --data-dir)")
        }
        guard passphrase.count >= minPassphrase else {
            throw KianaNodeError(.invalidInput, "the passphrase must have at least \(minPassphrase) characters")
        }
        guard !file.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw KianaNodeError(.invalidInput, "an empty backup file name: give the file to write") }
        guard !FileManager.default.fileExists(atPath: file) else { throw KianaNodeError(.conflict, "\(file) exists; choose another name") }
        // The folder it goes in, checked before the copy and the sealing (minutes for a big ledger).
        let folder = (file as NSString).deletingLastPathComponent.isEmpty ? "." : (file as NSString).deletingLastPathComponent
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isFolder) else {
            throw KianaNodeError(.notFound, "cannot write \(file): there is no folder \(folder)")
        }
        guard isFolder.boolValue else { throw KianaNodeError(.invalidInput, "cannot write \(file): \(folder) is a file, not a folder") }
        guard access(folder, W_OK) == 0 else { throw KianaNodeError(.io, "cannot write \(file): the folder \(folder) is not writable") }
        // What an interrupted earlier run left (a process that no longer exists): removed first.
        // Work folders of any backup in this folder, not only this name's: they hold an
        // unencrypted copy of the database, and nightly backups are named by date. A partial
        // file (sealed) only for this name.
        Leftovers.sweepWorkFolders(beside: file)
        Leftovers.sweep(beside: file, prefix: (file as NSString).lastPathComponent + ".partial-")
        let work = file + ".kiana-work-\(getpid())"
        let partial = file + ".partial-\(getpid())"
        let cleanup = TemporaryPaths.register([work, partial])
        defer { cleanup.remove() }
        do {
            try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        } catch {
            throw KianaNodeError(.io, "cannot write beside \(file): \(error.localizedDescription)")
        }
        // Held for the whole run: another backup's sweep leaves this folder alone.
        guard let held = Leftovers.hold(work) else {
            throw KianaNodeError(.io, "cannot lock \(work), where the backup is made: \(String(cString: strerror(errno)))")
        }
        defer { close(held) }
        // A consistent copy of the database first (one read transaction; writers go on).
        progress("copying", 0, 1)
        let copy = work + "/kiana.sqlite"
        try KianaDatabase(path: directory.databasePath).backup(to: copy)
        let (height, entries) = try Self.ledgerFacts(copy)
        progress("copying", 1, 1)
        // What restore checks, checked now: a backup restore would refuse is not written (a
        // nightly job would otherwise rotate good backups out for files nobody can restore).
        progress("verifying", 0, 1)
        do {
            _ = try LedgerStore(database: KianaDatabase(path: copy)).verify(now: currentMillis())
        } catch {
            throw Node.unverifiable(directory, error.message, copy: "a backup of it could not be restored", cause: error)
        }
        progress("verifying", 1, 1)

        var files: [(name: String, path: String)] = [
            ("identity.key", directory.identityKeyPath), ("transport.key", directory.transportKeyPath),
        ]
        if FileManager.default.fileExists(atPath: directory.apiTokenPath) { files.append(("api.token", directory.apiTokenPath)) }
        let config = directory.path + "/config.json"
        if FileManager.default.fileExists(atPath: config) { files.append(("config.json", config)) }
        files.append(("kiana.sqlite", copy))

        let created = currentMillis()
        var sealer = try BackupSeal.Sealer(passphrase: passphrase, parameters: parameters, created: created)
        guard FileManager.default.createFile(atPath: partial, contents: nil, attributes: [.posixPermissions: 0o600]),
            let out = FileHandle(forWritingAtPath: partial)
        else { throw KianaNodeError(.io, "cannot create \(partial)") }
        _ = flock(out.fileDescriptor, LOCK_EX | LOCK_NB)  // another run's sweep leaves it alone
        defer { try? out.close() }
        let total = try files.reduce(0) { $0 + (try Self.size($1.path)) }
        var done = 0
        var plain: [UInt8] = []
        plain.reserveCapacity(BackupSeal.chunk)
        func flush(last: Bool) throws {
            while plain.count >= BackupSeal.chunk || (last && !plain.isEmpty) {
                let n = min(plain.count, BackupSeal.chunk)
                let isLast = last && n == plain.count
                try out.write(contentsOf: try sealer.seal(Array(plain.prefix(n)), last: isLast))
                plain.removeFirst(n)
                if isLast { return }
            }
            if last { try out.write(contentsOf: try sealer.seal([], last: true)) }
        }
        do {
            try out.write(contentsOf: sealer.header.prefix)
            for f in files {
                guard let input = FileHandle(forReadingAtPath: f.path) else { throw KianaNodeError(.io, "cannot read \(f.path)") }
                defer { try? input.close() }
                let size = try Self.size(f.path)
                plain += BackupFiles.entryHeader(name: f.name, size: UInt64(size))
                var left = size
                while left > 0 {
                    let piece = try input.read(upToCount: min(left, BackupSeal.chunk)) ?? Data()
                    guard !piece.isEmpty else { throw KianaNodeError(.io, "\(f.path) shrank while it was read") }
                    plain += piece
                    left -= piece.count
                    done += piece.count
                    try flush(last: false)
                    progress("sealing", done, total)
                }
            }
            plain += BackupFiles.end
            try flush(last: true)
            try out.synchronize()
            try out.close()
        } catch let e as KianaNodeError {
            throw e
        } catch let e as KianaCoreError {
            throw KianaNodeError(e.code, e.message, cause: e)
        } catch {
            throw KianaNodeError(.io, "cannot write \(partial): \(error.localizedDescription)")
        }
        // link(2) fails if `file` appeared meanwhile (another backup, another program): never overwritten.
        let placed = FilePlacement.placeWithoutReplacing(partial, at: file)
        guard placed == 0 else {
            if placed == EEXIST { throw KianaNodeError(.conflict, "\(file) appeared while the backup was made; it was left alone") }
            throw KianaNodeError(.io, "cannot move the backup into place at \(file): \(String(cString: strerror(placed)))")
        }
        FilePlacement.syncFolder((file as NSString).deletingLastPathComponent)
        return Summary(file: file, bytes: try Self.size(file), height: height, entries: entries, created: created)
    }

    /// Restores `file` into `directory`: decrypts into a directory beside it, verifies the whole
    /// ledger there, and only then makes it the data directory. Refuses a directory a node is
    /// serving; an existing node there is moved aside (to `<dir>.before-restore-<time>`) only
    /// with `force`.
    public static func restore(
        from file: String, to directory: DataDirectory, passphrase: [UInt8], force: Bool = false,
        progress: (String, Int, Int) -> Void = { _, _, _ in }
    ) throws -> Summary {
        guard !file.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw KianaNodeError(.invalidInput, "an empty backup file name: give the file `kiana backup` wrote") }
        var isFolder: ObjCBool = false
        if FileManager.default.fileExists(atPath: file, isDirectory: &isFolder), isFolder.boolValue {
            throw KianaNodeError(.invalidInput, "\(file) is a folder: give the backup file `kiana backup` wrote")
        }
        guard let input = FileHandle(forReadingAtPath: file) else { throw KianaNodeError(.notFound, "cannot read \(file)") }
        defer { try? input.close() }
        let fileSize = try Self.size(file)
        // The target as an absolute path with symlinks resolved ("." and "dir/" and a link to a
        // node all name the directory itself), checked before any work.
        let target = URL(fileURLWithPath: directory.path).standardizedFileURL.resolvingSymlinksInPath().path
        guard target != "/" else { throw KianaNodeError(.invalidInput, "restore into / is refused") }
        let dir = DataDirectory(path: target)
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        if fm.fileExists(atPath: target, isDirectory: &isDirectory), !isDirectory.boolValue {
            throw KianaNodeError(.invalidInput, "\(target) is not a directory")
        }
        // Never a live node, never an existing one unless asked. The directory's serving lock is
        // taken now and held until the restored data is in place, so no node starts meanwhile.
        let existedBefore = fm.fileExists(atPath: target)
        let lockExisted = fm.fileExists(atPath: dir.lockPath)
        let lock = try dir.lockForServing()  // throws .locked while a node serves it (creates the directory)
        defer { withExtendedLifetime(lock) {} }
        // A directory this restore created goes again if the restore does not finish.
        let made = TemporaryPaths.register(existedBefore ? [] : [target])
        var finished = false
        defer { if finished { made.forget() } else { made.remove() } }
        let existing = dir.hasIdentity || fm.fileExists(atPath: dir.databasePath)
        if existing && !force {
            throw KianaNodeError(.conflict, "\(target) already holds a node; --force moves it aside (to \(target).before-restore-…) first")
        }
        let contents = (try? fm.contentsOfDirectory(atPath: target)) ?? []
        if !existing && !contents.filter({ $0 != "node.lock" }).isEmpty {
            if !lockExisted { unlink(dir.lockPath) }  // the owner's folder is left as it was
            throw KianaNodeError(.conflict, "\(target) exists and holds other files; restore into a new or empty directory")
        }
        // Header and passphrase.
        func read(_ n: Int, _ what: String) throws -> [UInt8] {
            let d = try input.read(upToCount: n) ?? Data()
            guard d.count == n else { throw KianaNodeError(.corrupt, "\(file) ends inside the \(what): it is not a whole KI_ana backup") }
            return [UInt8](d)
        }
        guard try read(8, "header") == BackupSeal.magic else { throw KianaNodeError(.invalidInput, "\(file) is not a KI_ana backup") }
        let headerLength = try read(4, "header").reduce(0) { $0 << 8 | Int($1) }
        guard headerLength <= 4096 else { throw KianaNodeError(.corrupt, "\(file) has a damaged header") }
        let header: BackupSeal.Header
        do { header = try BackupSeal.Header(decoding: try read(headerLength, "header")) } catch let e as KianaCoreError {
            throw KianaNodeError(.corrupt, "\(file) has a damaged header: \(e.message)", cause: e)
        }
        progress("unlocking", 0, 1)
        var opener: BackupSeal.Opener
        do { opener = try BackupSeal.Opener(header: header, passphrase: passphrase) } catch {
            throw KianaNodeError(.unauthorized, "wrong passphrase for \(file)")
        }

        let parent = (target as NSString).deletingLastPathComponent
        let name = (target as NSString).lastPathComponent
        Leftovers.sweep(beside: target, prefix: "." + name + ".restoring-")
        let staging = parent + "/." + name + ".restoring-\(getpid())"
        let cleanup = TemporaryPaths.register([staging])
        do {
            try fm.createDirectory(atPath: staging, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw KianaNodeError(.io, "cannot create \(staging): \(error.localizedDescription)")
        }
        // Locked while this restore runs: another run's sweep leaves it alone.
        let held = Leftovers.hold(staging)
        defer { if let held { close(held) } }
        var keep = false
        defer { if !keep { cleanup.remove() } else { cleanup.forget() } }
        var reader = BackupFiles.Reader()
        var current: FileHandle?
        var written: Set<String> = []
        var done = 12 + headerLength
        do {
            while !opener.finished {
                let length = try read(4, "backup").reduce(0) { $0 << 8 | Int($1) }
                guard length <= BackupSeal.Opener.maxFrame else { throw KianaNodeError(.corrupt, "\(file) is damaged (a frame of \(length) bytes)") }
                let plain = try opener.open(try read(length, "backup"))
                done += 4 + length
                progress("restoring", done, fileSize)
                for event in try reader.feed(plain) {
                    switch event {
                    case .begin(let name, _):
                        try current?.close()
                        let path = staging + "/" + name
                        guard fm.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]),
                            let h = FileHandle(forWritingAtPath: path)
                        else { throw KianaNodeError(.io, "cannot create \(path)") }
                        current = h
                        written.insert(name)
                    case .bytes(let b):
                        try current?.write(contentsOf: b)
                    case .end:
                        try current?.synchronize()
                        try current?.close()
                        current = nil
                    }
                }
            }
            guard reader.ended else { throw KianaNodeError(.corrupt, "\(file) ends before its last file") }
            guard try input.read(upToCount: 1)?.isEmpty ?? true else { throw KianaNodeError(.corrupt, "\(file) has data after its end") }
        } catch let e as KianaCoreError {
            throw KianaNodeError(.corrupt, "\(file) is damaged: \(e.message)", cause: e)
        }
        for needed in ["identity.key", "transport.key", "kiana.sqlite"] where !written.contains(needed) {
            throw KianaNodeError(.corrupt, "\(file) lacks \(needed)")
        }
        // The whole ledger verified where it stands, before it becomes the data directory.
        progress("verifying", 0, 1)
        let (height, entries) = try {
            // Closed before the directory moves.
            let node = try Node.open(directory: DataDirectory(path: staging))
            _ = try node.verify()
            return (try node.store.head()?.height ?? 0, try node.store.counts().entries)
        }()
        progress("verifying", 1, 1)
        var movedAside: String?
        if existing {
            let aside = target + ".before-restore-\(currentMillis())"
            movedAside = aside
            guard rename(target, aside) == 0 else {
                throw KianaNodeError(.io, "cannot move \(target) aside: \(String(cString: strerror(errno)))")
            }
        } else {
            // Empty but for the lock file this restore holds (checked above).
            unlink(dir.lockPath)
            guard rmdir(target) == 0 else { throw KianaNodeError(.io, "cannot replace \(target): \(String(cString: strerror(errno)))") }
        }
        guard rename(staging, target) == 0 else {
            throw KianaNodeError(.io, "cannot move the restored data into \(target): \(String(cString: strerror(errno)))")
        }
        keep = true
        finished = true
        FilePlacement.syncFolder((target as NSString).deletingLastPathComponent)
        return Summary(file: file, bytes: fileSize, height: height, entries: entries, created: header.created, movedAside: movedAside)
    }

    static func ledgerFacts(_ path: String) throws -> (UInt64, Int) {
        let store = LedgerStore(database: try KianaDatabase(readOnlyPath: path, immutable: false))
        return (try store.head()?.height ?? 0, try store.counts().entries)
    }

    static func size(_ path: String) throws -> Int {
        guard let s = try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int else {
            throw KianaNodeError(.io, "cannot read the size of \(path)")
        }
        return s
    }
}

/// Temporary files and directories removed on every way out the process controls: normal
/// return, a thrown error, and SIGINT/SIGTERM (the CLI calls `removeAllAndExit` from its signal
/// handler). What kill -9 leaves is swept by the next run (`DataBackup.sweep`).
public final class TemporaryPaths: Sendable {
    static let all = Mutex<[ObjectIdentifier: [String]]>([:])
    let paths: [String]

    init(_ paths: [String]) { self.paths = paths }

    static func register(_ paths: [String]) -> TemporaryPaths {
        let t = TemporaryPaths(paths)
        all.withLock { $0[ObjectIdentifier(t)] = paths }
        return t
    }

    /// Removes the paths now.
    func remove() {
        for p in paths { try? FileManager.default.removeItem(atPath: p) }
        forget()
    }

    /// Keeps the paths (they became the result).
    func forget() { _ = Self.all.withLock { $0.removeValue(forKey: ObjectIdentifier(self)) } }

    /// Removes every registered path (from a signal handler, then exits with `status`).
    public static func removeAllAndExit(_ status: Int32) -> Never {
        let paths = all.withLock { $0.values.flatMap { $0 } }
        for p in paths { try? FileManager.default.removeItem(atPath: p) }
        exit(status)
    }
}
