import Foundation
import KianaCore
import KianaStore
#if canImport(Glibc)
    import Glibc
#endif

/// The node's data directory: keys (0600), the SQLite database, later models and config.
/// Resolved from `--data-dir`, else `KIANA_DATA_DIR`, else `~/.kiana`.
public struct DataDirectory: Sendable {
    public let path: String

    public init(path: String) {
        self.path = (path as NSString).expandingTildeInPath
    }

    /// `--data-dir` (which must not be empty), else `KIANA_DATA_DIR` (empty means unset), else `~/.kiana`.
    public static func resolve(_ flag: String?, environment: [String: String] = ProcessInfo.processInfo.environment) throws(KianaNodeError) -> DataDirectory {
        if let flag {
            guard !flag.trimmingCharacters(in: .whitespaces).isEmpty else {
                throw KianaNodeError(.invalidInput, "--data-dir is empty: give a directory, or leave the option out for $KIANA_DATA_DIR or ~/.kiana")
            }
            return DataDirectory(path: flag)
        }
        if let env = environment["KIANA_DATA_DIR"], !env.isEmpty { return DataDirectory(path: env) }
        let home = environment["HOME"] ?? NSHomeDirectory()
        return DataDirectory(path: home + "/.kiana")
    }

    /// Names of the files a data directory holds besides its database and keys (output never
    /// replaces them, `OutputFile`).
    static let ownFileNames: Set<String> = [
        "rotation.confirmed", "rotation.lock", "control.token", "node.json", "node.lock", "ledger.damaged", "init.pending", "api.token",
        "config.json", "ingest.lock",
    ]
    public var identityKeyPath: String { path + "/identity.key" }
    public var transportKeyPath: String { path + "/transport.key" }
    /// During a key rotation (`KeyRotation`): the keys waiting to replace the current ones
    /// (identity ‖ transport, 64 bytes, 0600), the mark that another device holds the rotation,
    /// and the lock one `kiana device rotate` at a time holds.
    public var nextKeysPath: String { path + "/rotation.next.key" }
    public var rotationConfirmedPath: String { path + "/rotation.confirmed" }
    public var rotationLockPath: String { path + "/rotation.lock" }
    public var databasePath: String { path + "/kiana.sqlite" }

    /// The control token of the running node (0600), for the local CLI.
    public var controlTokenPath: String { path + "/control.token" }
    /// Where the running node says how to reach it.
    public var runtimePath: String { path + "/node.json" }

    /// Held (flock) by the serving node for its whole life; holds its PID.
    public var lockPath: String { path + "/node.lock" }
    /// Present while the ledger is known to be damaged: what failed (writes are refused).
    public var damagePath: String { path + "/ledger.damaged" }
    /// Present from the start of an `init` (also the one `kiana serve` makes on a new directory)
    /// until its first block is stored: keys without a ledger beside it are an init to finish,
    /// not a `kiana join` that was cut off.
    public var initPendingPath: String { path + "/init.pending" }
    /// The ledger a running `kiana join` receives, put in place as `kiana.sqlite` once complete:
    /// beside the ledger's file (the target, when `kiana.sqlite` is a link).
    public var joinIncomingPath: String { FilePlacement.resolved(databasePath) + ".join-incoming" }

    /// The API token clients off loopback must send as `Authorization: Bearer <token>` (0600).
    public var apiTokenPath: String { path + "/api.token" }

    /// The API token (64 hex characters), created on first use.
    public func apiToken() throws(KianaNodeError) -> String {
        if FileManager.default.fileExists(atPath: apiTokenPath) { return Hex.encode(try Self.readSecret(apiTokenPath)) }
        try create()
        var bytes = [UInt8](repeating: 0, count: 32)
        var g = SystemRandomNumberGenerator()
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255, using: &g) }
        try Self.writeSecret(bytes, to: apiTokenPath)
        return Hex.encode(bytes)
    }

    public var hasIdentity: Bool { FileManager.default.fileExists(atPath: identityKeyPath) }

    /// Creates the directory (0700) if needed.
    public func create() throws(KianaNodeError) {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir) {
            guard isDir.boolValue else { throw KianaNodeError(.dataDirectory, "\(path) exists and is not a directory") }
            closeIfEmpty()
            return
        }
        // Foundation's error here is "NSCocoaErrorDomain error 512": the cause in words instead.
        var above = (path as NSString).deletingLastPathComponent
        while !above.isEmpty, above != "/", !FileManager.default.fileExists(atPath: above) { above = (above as NSString).deletingLastPathComponent }
        if !above.isEmpty, FileManager.default.fileExists(atPath: above, isDirectory: &isDir), !isDir.boolValue {
            throw KianaNodeError(.dataDirectory, "cannot create data directory \(path): \(above) is a file, not a folder")
        }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            let reason = access(above.isEmpty ? "." : above, W_OK) == 0 ? error.localizedDescription : "\(above) is not writable here"
            throw KianaNodeError(.dataDirectory, "cannot create data directory \(path): \(reason)")
        }
    }

    /// An empty folder made beforehand (`mkdir`, a volume mount) becomes the node's: closed to
    /// others (0700) as a folder made here is. A folder with files in it is left as it is.
    func closeIfEmpty() {
        var st = stat()
        if stat(path, &st) == 0, st.st_mode & S_IFMT == S_IFDIR, st.st_uid == geteuid(), st.st_mode & 0o077 != 0,
            (try? FileManager.default.contentsOfDirectory(atPath: path).isEmpty) == true
        {
            _ = chmod(path, 0o700)
        }
    }

    /// Generates and stores a new identity; refuses to overwrite existing keys.
    public func createIdentity() throws(KianaNodeError) -> DeviceIdentity {
        guard !hasIdentity else { throw KianaNodeError(.alreadyInitialized, "\(identityKeyPath) already exists") }
        try create()
        let id = DeviceIdentity.generate()
        try Self.writeSecret(Array(id.transportKey.rawRepresentation), to: transportKeyPath)
        // The identity key is written last: its presence means the identity is complete.
        try Self.writeSecret(Array(id.signingKey.rawRepresentation), to: identityKeyPath)
        return id
    }

    /// Stores an identity generated elsewhere (a device that joined by pairing).
    public func save(identity id: DeviceIdentity) throws(KianaNodeError) {
        guard !hasIdentity else { throw KianaNodeError(.alreadyInitialized, "\(identityKeyPath) already exists") }
        try create()
        try Self.writeSecret(Array(id.transportKey.rawRepresentation), to: transportKeyPath)
        try Self.writeSecret(Array(id.signingKey.rawRepresentation), to: identityKeyPath)
    }

    /// Writes a fresh random control token (0600) and returns it.
    func writeControlToken() throws(KianaNodeError) -> String {
        var bytes = [UInt8](repeating: 0, count: 32)
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255) }
        try Self.writeSecret(bytes, to: controlTokenPath)
        return Hex.encode(bytes)
    }

    func readControlToken() throws(KianaNodeError) -> String {
        Hex.encode(try Self.readSecret(controlTokenPath))
    }

    /// Whether a node recorded itself here (node.json, possibly from one that is gone).
    public var hasRuntimeRecord: Bool { readRuntime() != nil }

    func writeRuntime(_ r: NodeRuntime) {
        guard let data = try? JSONEncoder().encode(r) else { return }
        _ = FileManager.default.createFile(atPath: runtimePath, contents: data, attributes: [.posixPermissions: 0o600])
    }

    func readRuntime() -> NodeRuntime? {
        FileManager.default.contents(atPath: runtimePath).flatMap { try? JSONDecoder().decode(NodeRuntime.self, from: $0) }
    }

    func removeRuntime() {
        unlink(runtimePath)
    }

    public func loadIdentity() throws(KianaNodeError) -> DeviceIdentity {
        guard hasIdentity else {
            throw KianaNodeError(.notInitialized, "no identity in \(path): run `kiana init` first")
        }
        let s = try Self.readSecret(identityKeyPath)
        let t = try Self.readSecret(transportKeyPath)
        do throws(KianaCoreError) {
            return try DeviceIdentity(signingKeyRaw: s, transportKeyRaw: t)
        } catch {
            throw KianaNodeError(.keyFile, "key files in \(path) are damaged: \(error.message)")
        }
    }

    /// Writes a key file atomically with mode 0600 (created with that mode, never wider).
    static func writeSecret(_ bytes: [UInt8], to path: String) throws(KianaNodeError) {
        let tmp = path + ".tmp"
        unlink(tmp)
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw KianaNodeError(.keyFile, "cannot create \(tmp): \(String(cString: strerror(errno)))") }
        // Run as root on a directory another user owns (the systemd service's, `sudo kiana …`):
        // the key belongs to that user, or the node could not read it. Given before the rename,
        // so a kill cannot leave a key in place that only root can read.
        var owner = stat()
        if geteuid() == 0, stat((path as NSString).deletingLastPathComponent, &owner) == 0, owner.st_uid != 0 {
            _ = fchown(fd, owner.st_uid, owner.st_gid)
        }
        let ok = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == bytes.count && fsync(fd) == 0
        close(fd)
        guard ok, rename(tmp, path) == 0 else {
            unlink(tmp)
            throw KianaNodeError(.keyFile, "cannot write \(path): \(String(cString: strerror(errno)))")
        }
        FilePlacement.syncFolder((path as NSString).deletingLastPathComponent)
    }

    static func readSecret(_ path: String, count: Int = 32) throws(KianaNodeError) -> [UInt8] {
        var st = stat()
        guard stat(path, &st) == 0 else { throw KianaNodeError(.keyFile, "cannot read \(path): \(String(cString: strerror(errno)))") }
        guard st.st_mode & 0o077 == 0 else {
            throw KianaNodeError(.keyFile, "\(path) is readable by other users (mode \(String(st.st_mode & 0o777, radix: 8))): run chmod 600 \(path)")
        }
        guard access(path, R_OK) == 0 else {
            throw KianaNodeError(
                .keyFile, "cannot read \(path): \(String(cString: strerror(errno))) (owned by uid \(st.st_uid); this process runs as uid \(geteuid()))")
        }
        guard let data = FileManager.default.contents(atPath: path), data.count == count else {
            throw KianaNodeError(.keyFile, "\(path) does not hold a \(count)-byte key")
        }
        return [UInt8](data)
    }
}

extension DataDirectory {
    /// Takes the data directory for one serving node: an exclusive lock on `node.lock` that the
    /// kernel releases when the process ends however it ends (even kill -9). A second node on
    /// the same directory is refused with the PID of the one running.
    public func lockForServing() throws(KianaNodeError) -> DirectoryLock {
        try create()
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            let err = errno
            let reason = String(cString: strerror(err))
            if err == EROFS || err == EACCES {
                throw KianaNodeError(.readOnly, "\(path) cannot be written (\(reason)): a node needs a writable data directory; read commands still work here")
            }
            throw KianaNodeError(.dataDirectory, "cannot open \(lockPath): \(reason)")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let err = errno
            let busy = err == EWOULDBLOCK
            var buf = [UInt8](repeating: 0, count: 32)
            let n = pread(fd, &buf, buf.count, 0)
            close(fd)
            let pid = n > 0 ? String(decoding: buf[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : "?"
            guard busy else { throw KianaNodeError(.dataDirectory, "cannot lock \(lockPath): \(String(cString: strerror(err)))") }
            // `kiana join`, `init` and `restore` hold it too while they set the directory up
            // (their subcommand is the first argument).
            // The holder writes its PID just after it takes the lock: not there yet, it is starting.
            guard Int32(pid) != nil else {
                throw KianaNodeError(.locked, "another kiana process is just starting in \(path) (a node, or an init, join or restore); try again in a moment")
            }
            let args = Self.commandLine(pid: pid)
            let command = args.count > 1 && ["init", "join", "restore"].contains(args[1]) ? args[1] : "serve"
            switch command {
            case "join": throw joinInProgress(pid: pid)
            case "serve": throw KianaNodeError(.locked, "another node (PID \(pid)) is already serving \(path); stop it first, or give this one its own --data-dir")
            default: throw KianaNodeError(.locked, "a `kiana \(command)` (PID \(pid)) is using \(path); let it finish first")
            }
        }
        let text = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pwrite(fd, text, text.count, 0)
        return DirectoryLock(fd: fd)
    }

    /// The PID of a `kiana join` holding this directory's `node.lock` (named in it), if any.
    /// Read from the file and /proc, not by probing the lock.
    var joiningPID: String? {
        guard let text = FileManager.default.contents(atPath: lockPath).map({ String(decoding: $0, as: UTF8.self) }),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0, pid != getpid(), kill(pid, 0) == 0,
            Self.isJoin(pid: String(pid))
        else { return nil }
        return String(pid)
    }

    /// Whether process `pid` is a `kiana join`.
    static func isJoin(pid: String) -> Bool {
        let args = commandLine(pid: pid)
        return args.count > 1 && args[0].hasSuffix("kiana") && args[1] == "join"
    }

    /// Refusal while a `kiana join` (process `pid`) sets this directory up.
    func joinInProgress(pid: String) -> KianaNodeError {
        KianaNodeError(.locked, "a `kiana join` (PID \(pid)) is setting up \(path); let it finish (or stop it) first")
    }

    /// The arguments of process `pid` (from /proc), empty if it cannot be read.
    static func commandLine(pid: String) -> [String] {
        FileManager.default.contents(atPath: "/proc/\(pid)/cmdline").map { $0.split(separator: 0).map { String(decoding: $0, as: UTF8.self) } } ?? []
    }

    /// The PID of a `kiana serve` that holds this directory but has not written `node.json` yet
    /// (it checks the ledger before it listens): the PID in `node.lock`, if that process is alive
    /// and is a `kiana serve`. Only for messages: it takes no lock.
    public var startingNodePID: Int32? {
        guard let text = FileManager.default.contents(atPath: lockPath).map({ String(decoding: $0, as: UTF8.self) }),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0, kill(pid, 0) == 0 || errno == EPERM
        else { return nil }
        let args = Self.commandLine(pid: String(pid))
        guard args.contains("serve"), args.contains(where: { $0.hasSuffix("kiana") }) else { return nil }
        // It holds this directory's lock file open (a copied directory names a PID that serves
        // another one). Read from /proc: probing the lock itself could make that node's start fail.
        guard let lock = realpath(lockPath, nil).map({ p in defer { free(p) }; return String(cString: p) }),
            let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")
        else { return nil }
        let holds = fds.contains { fd in
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)")) == lock
        }
        return holds ? pid : nil
    }

    /// What made the ledger fail verification, if it is marked damaged.
    public var damage: String? {
        FileManager.default.contents(atPath: damagePath).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Marks the ledger damaged (best effort: a damaged disk may refuse this too).
    func markDamaged(_ reason: String) {
        _ = FileManager.default.createFile(atPath: damagePath, contents: Data(reason.utf8), attributes: [.posixPermissions: 0o600])
    }

    func clearDamage() {
        unlink(damagePath)
    }

    /// Removes temporary files a killed command left here, called by the serving node, which
    /// holds `node.lock` (as `join` does while it runs): the ledger a killed `join` was
    /// receiving, and, once they are a minute old (a command running now may still be writing
    /// one), a key or token written under `NAME.tmp`, `config.json` from `join --name`, a new
    /// database's `kiana.sqlite.new-PID` file.
    func removeStaleTemporaries(now: Date = Date()) {
        for suffix in ["", "-wal", "-shm", "-journal"] { unlink(joinIncomingPath + suffix) }
        let names = ["identity.key", "transport.key", "api.token", "control.token", "init.pending", "rotation.confirmed", "rotation.next.key"].map { $0 + ".tmp" }
            + ["config.json.tmp", "config.json.tmp.tmp"]
        let present = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        for name in names + present.filter({ $0.hasPrefix("kiana.sqlite.new-") }) {
            let file = path + "/" + name
            guard let changed = (try? FileManager.default.attributesOfItem(atPath: file))?[.modificationDate] as? Date, now.timeIntervalSince(changed) > 60
            else { continue }
            unlink(file)
        }
    }

    /// Whether an `init` began here and has not stored its first block.
    var initPending: Bool { FileManager.default.fileExists(atPath: initPendingPath) }

    func markInitPending() throws(KianaNodeError) {
        try Self.writeSecret([], to: initPendingPath)
    }

    func clearInitPending() {
        guard unlink(initPendingPath) == 0 else { return }
        FilePlacement.syncFolder(path)  // a power cut must not bring it back
    }

    /// True when the database has a write-ahead log with frames in it (a node still running, or
    /// one that was killed): a read-only open must then read the log too, not open `immutable`.
    public var hasWAL: Bool {
        ((try? FileManager.default.attributesOfItem(atPath: databasePath + "-wal"))?[.size] as? Int ?? 0) > 0
    }

    /// True when files can be created here (false on a read-only mount or without permission).
    public var isWritable: Bool {
        access(path, W_OK) == 0 && (access(databasePath, F_OK) != 0 || access(databasePath, W_OK) == 0)
    }
}

/// The serving node's hold on its data directory; released when this is freed or the process ends.
public final class DirectoryLock: Sendable {
    let fd: Int32
    init(fd: Int32) { self.fd = fd }
    deinit { close(fd) }
}

/// What a running node writes to `node.json` in its data directory.
struct NodeRuntime: Codable, Sendable {
    var http: String
    var p2pHost: String
    var p2pPort: Int
    var pid: Int
}
