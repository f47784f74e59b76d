import Foundation
#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif
import KianaCore
import KianaNet
import KianaServer
import KianaStore
import Logging
import Synchronization
#if canImport(Glibc)
    import Glibc
#endif

/// The CLI's handle on a running node (`kiana pair`, `kiana peers`): it finds the node through
/// `node.json` in the data directory and authenticates with the control token there.
public struct NodeControl: Sendable {
    let host: String
    let port: Int
    let token: String
    /// The node's process, as node.json names it.
    var pid: Int?

    public static func connect(_ directory: DataDirectory) throws(KianaNodeError) -> NodeControl {
        let starting = {
            directory.startingNodePID.map {
                KianaNodeError(
                    .busy, "the node in \(directory.path) is starting (PID \($0)): it checks the ledger before it answers; try again in a moment")
            }
        }
        guard let runtime = directory.readRuntime(), let url = URLComponents(string: runtime.http),
            let host = url.host, let port = url.port
        else {
            throw starting() ?? KianaNodeError(.notRunning, "the node in \(directory.path) is not running: start it with `kiana serve`")
        }
        guard kill(pid_t(runtime.pid), 0) == 0 || errno == EPERM else {
            throw starting()
                ?? KianaNodeError(.notRunning, "the node in \(directory.path) is not running (stale node.json): start it with `kiana serve`")
        }
        // An IPv6 address comes bracketed from the URL ("[::1]"); the socket wants it bare.
        let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        return NodeControl(
            host: bare, port: port, token: try directory.readControlToken(), pid: runtime.pid, p2pHost: runtime.p2pHost, p2pPort: runtime.p2pPort)
    }

    /// Where the node's link listener is bound.
    public let p2pHost: String
    public let p2pPort: Int

    struct Reply {
        var status: Int
        var body: Data
    }

    /// One HTTP exchange with the node (`LocalHTTP`), waiting at most `timeout` seconds in all.
    func exchange(_ method: String, _ path: String, body: Data? = nil, timeout: Double = 30) throws(KianaNodeError) -> Reply {
        var headers = [(ControlSurfaceHeader.name, token)]
        if body != nil { headers.append(("Content-Type", "application/json")) }
        do {
            let r = try LocalHTTP.exchange(host: host, port: port, method: method, path: path, headers: headers, body: body, timeout: timeout)
            return Reply(status: r.status, body: r.body)
        } catch {
            switch error {
            case .unreachable(let why):
                throw KianaNodeError(.notRunning, "the node is not answering on \(host):\(port): start it with `kiana serve` (\(why))")
            case .timedOut:
                throw KianaNodeError(
                    .timeout,
                    "the node on \(host):\(port)\(pid.map { " (PID \($0))" } ?? "") is running but did not answer within \(Self.seconds(timeout)): "
                        + "it may be stopped or overloaded (`kiana serve` logs say more)")
            case .malformed(let why):
                throw KianaNodeError(.network, "the node on \(host):\(port) sent an answer this command cannot read: \(why)")
            }
        }
    }

    /// The HTTP status of `GET /ready` at an address (a node not recorded in a data directory),
    /// waiting at most `timeout` seconds.
    public static func readyStatus(host: String, port: Int, token: String?, timeout: Double) throws(KianaNodeError) -> Int {
        let headers = token.map { [("Authorization", "Bearer \($0)")] } ?? []
        do {
            return try LocalHTTP.exchange(host: host, port: port, method: "GET", path: "/ready", headers: headers, body: nil, timeout: timeout).status
        } catch {
            switch error {
            case .unreachable(let why): throw KianaNodeError(.unreachable, "no node answers at http://\(host):\(port)/ready: \(why)")
            case .timedOut: throw KianaNodeError(.timeout, "the node at http://\(host):\(port) did not answer within \(seconds(timeout))")
            case .malformed(let why): throw KianaNodeError(.network, "the answer at http://\(host):\(port)/ready cannot be read: \(why)")
            }
        }
    }

    static func seconds(_ t: Double) -> String { t == t.rounded() ? "\(Int(t)) s" : String(format: "%.1f s", t) }

    struct NoBody: Encodable {}

    func call<T: Decodable>(_ method: String, _ path: String, as: T.Type) throws(KianaNodeError) -> T {
        try call(method, path, body: Optional<NoBody>.none, as: T.self)
    }

    /// A JSON exchange; a non-2xx answer becomes the node's own error (its code and message).
    func call<T: Decodable, B: Encodable>(_ method: String, _ path: String, body: B?, as: T.Type) throws(KianaNodeError) -> T {
        let data = body.flatMap { try? JSONEncoder().encode($0) }
        let r = try exchange(method, path, body: data)
        guard (200..<300).contains(r.status) else {
            if let e = try? JSONDecoder().decode(ErrorBodyDTO.self, from: r.body) {
                throw KianaNodeError(ErrorCode(rawValue: e.error.code) ?? .network, e.error.message)
            }
            throw KianaNodeError(.network, "the node answered \(r.status)")
        }
        do { return try JSONDecoder().decode(T.self, from: r.body.isEmpty ? Data("{}".utf8) : r.body) } catch {
            throw KianaNodeError(.io, "the node sent an unexpected answer to \(path)")
        }
    }

    /// Whether the node is ready (its store open, its models loaded), waiting at most `timeout`
    /// seconds; the node's HTTP address is returned for messages.
    public func readiness(timeout: Double) throws(KianaNodeError) -> (ready: Bool, store: Bool, model: Bool, address: String) {
        struct R: Decodable {
            var ready: Bool
            var store: Bool
            var model: Bool
        }
        let r = try exchange("GET", "/control/ready", timeout: timeout)
        guard [200, 503].contains(r.status), let body = try? JSONDecoder().decode(R.self, from: r.body) else {
            throw KianaNodeError(.network, "the node at \(host):\(port) answered \(r.status) to a readiness check")
        }
        return (body.ready, body.store, body.model, "http://\(host.contains(":") ? "[\(host)]" : host):\(port)")
    }

    public func peers() throws(KianaNodeError) -> [PeerStatus] {
        struct P: Decodable { var peers: [PeerStatus] }
        return try call("GET", "/control/peers", as: P.self).peers
    }

    /// A peer as `kiana peers` shows it.
    public typealias Peer = PeerStatus

    /// The running node's connections by listener and its descriptors against the budget.
    public func connections() throws(KianaNodeError) -> ConnectionsDTO {
        try call("GET", "/control/connections", as: ConnectionsDTO.self)
    }

    public func syncStatus() throws(KianaNodeError) -> SyncStatus {
        struct S: Decodable { var sync: SyncStatus }
        return try call("GET", "/control/sync", as: S.self).sync
    }

    public func addPeer(_ address: String) throws(KianaNodeError) -> Bool {
        struct A: Decodable { var added: Bool }
        struct Body: Encodable { var address: String }
        return try call("POST", "/control/peers", body: Body(address: address), as: A.self).added
    }

    public func openPairing(seconds: Int) throws(KianaNodeError) -> Int? {
        struct O: Decodable { var port: Int? }
        struct Body: Encodable { var seconds: Int }
        return try call("POST", "/control/pair/open", body: Body(seconds: seconds), as: O.self).port
    }

    public func pendingPairings() throws(KianaNodeError) -> (open: Bool, requests: [PairingRequest]) {
        struct P: Decodable {
            var open: Bool
            var requests: [PairingRequest]
        }
        let p = try call("GET", "/control/pair/pending", as: P.self)
        return (p.open, p.requests)
    }

    public struct Confirmation: Decodable, Sendable {
        public var accepted: Bool
        public var device: String
        public var key: String
        public var member: Bool
        public var authorities: Int
        public var votesFor: Int
        /// False when no vote was written (the device was in already, or voted for before);
        /// absent from a node of an older version, which always wrote one.
        public var voted: Bool?
    }

    public func confirmPairing(device: String?, code: String) throws(KianaNodeError) -> Confirmation {
        struct Body: Encodable {
            var code: String
            var device: String?
        }
        return try call("POST", "/control/pair/confirm", body: Body(code: code, device: device), as: Confirmation.self)
    }

    /// Tells the node serving `directory`, if one runs, that this process changed its ledger,
    /// so members hear of it at once (best effort: the node also looks every half second).
    public static func tellLedgerChanged(_ directory: DataDirectory) {
        guard let control = try? connect(directory) else { return }
        _ = try? control.exchange("POST", "/control/changed", timeout: 2)
    }

    public func closePairing() {
        _ = try? exchange("POST", "/control/pair/close")
    }
}


/// The ledger a joining device receives, in a database file of its own until it is complete.
final class IncomingLedger: Sendable {
    let path: String
    let store = Mutex<LedgerStore?>(nil)
    init(path: String) { self.path = path }

    /// Validates and stores one batch (the first creates the file, starting from genesis).
    func add(_ batch: [Block]) async throws {
        let path = self.path
        let store = try self.store.withLock { s in
            if s == nil { s = LedgerStore(database: try KianaDatabase(path: path)) }
            return s!
        }
        let result = try await blocking { try store.importBatch(batch, now: currentMillis()) }
        if let refused = result.refused {
            throw KianaNodeError(.network, "the authority sent a ledger this device refuses: block \(refused.height): \(refused.error.message)")
        }
    }

    /// Keeps `address` as a peer in the received ledger's database before it is moved into
    /// place, so a join cut off right after the move still dials the authority.
    func keepPeer(_ address: String) {
        store.withLock { s in _ = try? s?.addPeerAddress(address, now: currentMillis()) }
    }

    func close() throws {
        try store.withLock { s in try s?.database.close() }
    }

    /// Removes the file and its companions unless it was moved into place.
    func discard() {
        store.withLock { $0 = nil }
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
    }
}

enum ControlSurfaceHeader {
    static let name = "X-Kiana-Control-Token"
}

extension Node {
    /// `node.lock` for a join: a directory a node serves has a ledger already, which is said so.
    static func lockForJoin(_ directory: DataDirectory) throws(KianaNodeError) -> DirectoryLock {
        do {
            return try directory.lockForServing()
        } catch where error.code == .locked && directory.joiningPID == nil {
            throw KianaNodeError(
                .locked, "a node is serving \(directory.path), so it has a ledger already: to join another network, use a new --data-dir", cause: error)
        }
    }

    /// Joins the network of the authority at `address` (`kiana join`). Nothing but the lock
    /// file (`node.lock`, held while the join runs) is written to `directory` before a code is
    /// shown; a join that fails before the owner confirms removes the key again. An existing
    /// identity in the directory is reused.
    public static func join(
        directory: DataDirectory, address: String, name: String?, wait: Duration, logger: Logger,
        onCode: @escaping @Sendable (String, DeviceID) -> Void,
        progress: @escaping @Sendable (_ received: Int, _ expected: Int?) -> Void = { _, _ in }
    ) async throws -> (Node, Pairing.Joined, nameKept: Bool) {
        let identity: DeviceIdentity
        let fresh: Bool
        let fm = FileManager.default
        let createdDirectory = !fm.fileExists(atPath: directory.path)
        // Held for the whole join, as a serving node holds it: no `serve` starts on the directory
        // meanwhile (it would make or open a ledger that the received one then meets).
        let lock = try lockForJoin(directory)
        defer { withExtendedLifetime(lock) {} }
        // The ledger arrives batch by batch into a database beside where the ledger goes (the
        // data directory, or the target of a kiana.sqlite link), each block validated as it is
        // stored; only a complete, valid ledger is then put in place by one link within one
        // folder: never a half-copied file, also when the data directory is a mount point of its
        // own, and never over a ledger that is there. One name, so what a killed join left
        // behind is removed by the next (and by `serve`).
        let target = FilePlacement.resolved(directory.databasePath)
        // Where the ledger goes must be usable before any vote is spent on this device.
        if target != directory.databasePath {
            var isDir: ObjCBool = false
            let folder = (target as NSString).deletingLastPathComponent
            guard fm.fileExists(atPath: folder, isDirectory: &isDir), isDir.boolValue else {
                throw KianaNodeError(
                    .dataDirectory, "\(directory.databasePath) links to \(target), whose folder is not there (a disk not mounted?): nothing was done")
            }
        }
        var st = stat()
        if stat(target, &st) == 0, st.st_mode & S_IFMT == S_IFDIR {
            throw KianaNodeError(.dataDirectory, "\(target) is a folder, not a ledger file: move it aside and run the join again")
        }
        let temp = directory.joinIncomingPath
        let incoming = IncomingLedger(path: temp)
        incoming.discard()
        defer { incoming.discard() }
        if directory.hasIdentity {
            // Ours from before: a join that was cut off after the code (the authority may have
            // voted for this key already), or `kiana init --identity-only`-like setups.
            identity = try directory.loadIdentity()
            if fm.fileExists(atPath: directory.databasePath) {
                let db = try KianaDatabase(path: directory.databasePath)
                let existing = LedgerStore(database: db)
                if let net = try existing.network() {
                    // Joined already: an authority, or voted for and waiting on the other authorities.
                    let membership = try existing.membership()
                    if membership.authorities.contains(identity.publicKey) || membership.tally[identity.publicKey]?.authorize == true {
                        throw KianaNodeError(
                            .alreadyInitialized,
                            "\(directory.path) has already joined network \(Hex.encode(net.prefix(8)))…: "
                                + "start it with `kiana serve --data-dir \(directory.path)`. To join another network, use a new data directory")
                    }
                    throw KianaNodeError(
                        .alreadyInitialized, "\(directory.path) already belongs to network \(Hex.encode(net.prefix(8)))…; join with a new data directory")
                }
                // An empty ledger file (no genesis): the received one takes its place.
                try db.close()
                for suffix in ["", "-wal", "-shm"] { try? fm.removeItem(atPath: target + suffix) }
            }
            fresh = false
        } else {
            if fm.fileExists(atPath: directory.databasePath) {
                throw KianaNodeError(.dataDirectory, "\(directory.path) holds a database but no identity: use a new data directory")
            }
            identity = DeviceIdentity.generate()
            fresh = true
        }
        // A new identity is stored as soon as the code is shown: once the owner confirms it, the
        // authority has voted for this key, and a join cut off after that (killed, power lost)
        // must be able to finish with the same key (run the same `kiana join` again) instead of
        // leaving an authority no device holds. A join that fails cleanly removes it again.
        let showCode: @Sendable (String, DeviceID) -> Void = { code, authority in
            // From here the authority may vote for this key: an init mark left here (a cut-off
            // init) must not let the next `serve` make these keys a network of their own.
            directory.clearInitPending()
            if fresh, !directory.hasIdentity { try? directory.save(identity: identity) }
            onCode(code, authority)
        }
        let confirmed = OnceFlag()
        let onProgress: @Sendable (Int, Int?) -> Void = { received, expected in
            confirmed.set()
            progress(received, expected)
        }
        func forgetIdentity() {
            guard fresh, !confirmed.isSet else { return }
            if createdDirectory {
                try? fm.removeItem(atPath: directory.path)
            } else {
                for key in [directory.identityKeyPath, directory.transportKeyPath] { try? fm.removeItem(atPath: key) }
            }
        }
        let joined: Pairing.Joined
        do {
            joined = try await Pairing.join(
                address: address, identity: identity, name: name, wait: wait, logger: logger, onCode: showCode, progress: onProgress
            ) { batch in
                try await incoming.add(batch)
            }
        } catch {
            forgetIdentity()
            let message = (error as? KianaNetError)?.message ?? (error as? KianaNodeError)?.message ?? "\(error)"
            let again =
                confirmed.isSet
                ? "; the authority has already voted for this device, which keeps its key: when the authority has a pairing window open again (`kiana pair` there), run the same `kiana join` with --data-dir \(directory.path) to receive the ledger"
                : ""
            throw KianaNodeError(.network, message + again, cause: error)
        }
        // The authority is the first peer this device knows; the node dials it when it starts.
        incoming.keepPeer(address)
        try incoming.close()
        if fresh, !directory.hasIdentity { try directory.save(identity: identity) }
        // The name the authority saw is the one peers see from now on; kept before the ledger
        // is in place, so a kill right after cannot lose it (a join run again stops at "joined").
        var nameKept = false
        if let name, !name.isEmpty { nameKept = (try? KianaConfig.keepDeviceName(name, directory: directory)) ?? false }
        let placed = FilePlacement.placeWithoutReplacing(temp, at: target)
        guard placed == 0 else {
            let why = placed == EEXIST ? "a ledger appeared there meanwhile, which was left alone" : String(cString: strerror(placed))
            throw KianaNodeError(
                .io, "cannot put the received ledger in place at \(target): \(why). This device keeps its key; run the same `kiana join` again to receive the ledger")
        }
        FilePlacement.syncFolder((target as NSString).deletingLastPathComponent)
        let store = try LedgerStore(database: KianaDatabase(path: directory.databasePath))
        return (Node(directory: directory, identity: identity, store: store), joined, nameKept)
    }
}
