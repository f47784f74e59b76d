import Foundation
import KianaCore
import KianaStore
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Settings of the peer-to-peer side of a node.
public struct NetworkConfig: Sendable {
    /// Where the link listener binds. Links are mutually authenticated and only authorities
    /// pass, so the default listens on every interface (the LAN is where the other devices are).
    public var host = "0.0.0.0"
    public var port = 8470
    public var link = LinkConfig()
    /// How often known but unconnected peers are dialled (with per-address backoff).
    public var dialInterval: Duration = .seconds(2)
    /// How often the ledger head is checked for local writes to announce.
    public var headInterval: Duration = .milliseconds(500)
    /// Multicast DNS discovery on or off, and the interface it is limited to (nil: all).
    public var discovery = true
    public var discoveryInterface: String?
    /// A device name shown to peers.
    public var name: String?

    public init() {}
}

/// A peer as `kiana peers` shows it.
public struct PeerStatus: Sendable, Codable, Equatable {
    public var device: String?
    public var address: String?
    /// "connected", "member" (an authority not connected now), "discovered", "manual", "pairing"
    public var state: String
    public var member: Bool
    public var source: String
    public var rttMillis: Double?
    public var name: String?
}

/// A join request waiting for the owner's confirmation.
public struct PairingRequest: Sendable, Codable, Equatable {
    public var device: String
    public var key: String
    public var name: String?
    public var address: String
    public var code: String
}

/// The node's peer-to-peer state: live links, known addresses, discovery results, the pairing
/// window, and the block exchange that keeps connected ledgers in step.
public actor PeerNetwork {
    public nonisolated let store: LedgerStore
    public nonisolated let identity: DeviceIdentity
    public nonisolated let config: NetworkConfig
    nonisolated let logger: Logger
    public nonisolated let group: MultiThreadedEventLoopGroup

    var links: [[UInt8]: PeerLink] = [:]
    /// Addresses found by mDNS: address → (device ID text, network tag matches).
    var discovered: [String: (device: String, sameNetwork: Bool, name: String?)] = [:]
    var backoff: [String: (next: ContinuousClock.Instant, delay: Duration)] = [:]
    var dialing: Set<String> = []
    var lastHead: LedgerHead?
    public private(set) var listeningPort: Int?

    // Pairing window
    var pairingUntil: ContinuousClock.Instant?
    var pairingRequests: [[UInt8]: (request: PairingRequest, answer: CheckedContinuation<Bool, Never>?)] = [:]
    var confirmedJoiners: Set<[UInt8]> = []

    public init(store: LedgerStore, identity: DeviceIdentity, config: NetworkConfig, logger: Logger,
                group: MultiThreadedEventLoopGroup = .singleton) {
        self.store = store
        self.identity = identity
        self.config = config
        self.logger = logger
        self.group = group
    }

    // MARK: context

    /// Rate limit for the log lines about refused inbound connections.
    nonisolated let refusals = RefusalLog()

    nonisolated func context() -> LinkContext {
        let network = try? store.network()
        return LinkContext(
            identity: identity, network: network, config: config.link, logger: logger,
            helloInfo: { [self] in await self.helloInfo() },
            admit: { [self] c in await self.admit(c) },
            onRequest: { [self] link, m in await self.handle(link, m) },
            onNotify: { [self] link, m in await self.notified(link, m) },
            refusals: refusals)
    }

    func helloInfo() -> CBOR {
        var m: [CBOR: CBOR] = ["port": .unsigned(UInt64(listeningPort ?? config.port))]
        if let name = config.name { m["name"] = .text(name) }
        if let h = try? store.head() { m["height"] = .unsigned(h.height); m["head"] = .bytes(h.hash) }
        return .map(m)
    }

    /// Member links: authorities and devices an authority has proposed (so they can follow the
    /// chain until the vote passes). Pairing links: only while the window is open.
    func admit(_ c: LinkCandidate) -> String? {
        switch c.mode {
        case .member:
            guard let m = try? store.membership() else { return "ledger unavailable" }
            if m.authorities.contains(c.identityKey) { return nil }
            if m.tally[c.identityKey]?.authorize == true { return nil }
            return "not an authority of this network"
        case .pairing:
            guard let until = pairingUntil, until > .now else { return "no pairing window is open" }
            return nil
        }
    }

    // MARK: links

    /// Registers a live link; of two links to one device the one dialled by the smaller
    /// identity key survives (both sides apply the same rule).
    func attach(_ link: PeerLink) -> Bool {
        if let old = links[link.remoteKey] {
            func dialer(_ l: PeerLink) -> [UInt8] { l.initiatedLocally ? identity.publicKey : l.remoteKey }
            if dialer(link).lexicographicallyPrecedes(dialer(old)) {
                old.close()
            } else {
                return false
            }
        }
        links[link.remoteKey] = link
        backoff[link.remoteAddress] = nil
        logger.info("peer connected", metadata: ["peer": .string(link.deviceID.description), "address": .string(link.remoteAddress)])
        return true
    }

    func detach(_ link: PeerLink) {
        if links[link.remoteKey] === link {
            links[link.remoteKey] = nil
            logger.info("peer disconnected", metadata: ["peer": .string(link.deviceID.description)])
        }
    }

    /// Runs a member link until it closes.
    nonisolated func serveMember(_ link: PeerLink) async {
        guard await attach(link) else { link.close(); return }
        await pull(from: link, peerHead: Self.head(in: link.peerHello))
        do { try await Task.sleep(for: .seconds(86400 * 365)) } catch {}
        await detach(link)
    }

    static func head(in hello: CBOR) -> [UInt8]? {
        guard case .map(let m) = hello, case .bytes(let h)? = m[.text("head")] else { return nil }
        return h
    }

    // MARK: listener

    /// Accepts links until cancelled. Calls `ready` with the bound port.
    public nonisolated func listen(ready: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        let limit = config.link.maxConnections
        let server: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
        do {
            server = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .bind(host: config.host, port: config.port) { channel in Link.wrap(channel) }
        } catch let e as IOError where e.errnoCode == EADDRINUSE {
            throw KianaNetError(.listen, "cannot listen for peers on \(config.host):\(config.port): the port is already in use (choose one with --p2p-port)", cause: e)
        } catch {
            throw KianaNetError(.listen, "cannot listen for peers on \(config.host):\(config.port): \(error)")
        }
        let port = server.channel.localAddress?.port ?? config.port
        await setListening(port)
        ready(port)
        logger.info("link listener ready", metadata: ["host": .string(config.host), "port": .stringConvertible(port)])
        let active = connections
        do {
          try await withTaskCancellationHandler {
            try await server.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await conn in inbound {
                        guard active.increment(limit: limit) else {
                            logger.warning("connection limit reached, dropping", metadata: ["limit": .stringConvertible(limit)])
                            try? await conn.channel.close()
                            continue
                        }
                        group.addTask {
                            defer { active.decrement() }
                            _ = try? await Link.run(conn, dial: nil, context: self.context()) { link in
                                await self.serve(link)
                            }
                        }
                    }
                }
            }
          } onCancel: {
            server.channel.close(promise: nil)
          }
        } catch {
            // Shutting down closes the listening socket; that is the normal way out.
            if Task.isCancelled { return }
            throw error
        }
    }

    func setListening(_ port: Int) { listeningPort = port }

    /// Inbound connections open right now (handshakes included).
    public nonisolated var openConnections: Int { connections.value }
    nonisolated let connections = Counter()

    nonisolated func serve(_ link: PeerLink) async {
        switch link.mode {
        case .member: await serveMember(link)
        case .pairing:
            // The joiner drives the exchange; keep the link until it is done or the window shuts.
            do { try await Task.sleep(for: .seconds(600)) } catch {}
            await pairingEnded(link.remoteKey)
        }
    }

    // MARK: dialer

    /// Dials known and discovered peers that are not connected, until cancelled.
    public nonisolated func dialLoop() async {
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled {
                for address in await dialTargets() {
                    group.addTask { await self.dial(address) }
                }
                try? await Task.sleep(for: config.dialInterval)
            }
            group.cancelAll()
        }
    }

    func dialTargets() -> [String] {
        var addresses = Set((try? store.peerAddresses().map(\.address)) ?? [])
        for (addr, d) in discovered where d.sameNetwork { addresses.insert(addr) }
        let connected = Set(links.values.map(\.remoteAddress))
        let connectedDevices = Set(links.keys.map { DeviceID(publicKey: $0).description })
        let now = ContinuousClock.now
        var out: [String] = []
        for a in addresses.sorted() where !dialing.contains(a) && !connected.contains(a) {
            if let d = discovered[a], connectedDevices.contains(d.device) { continue }
            if let b = backoff[a], b.next > now { continue }
            dialing.insert(a)
            out.append(a)
        }
        return out
    }

    func dialFinished(_ address: String, ok: Bool) {
        dialing.remove(address)
        if ok { backoff[address] = nil; return }
        // Exponential backoff with full jitter, 1 s to 60 s.
        let prev = backoff[address]?.delay ?? .milliseconds(500)
        let cap = min(prev * 2, .seconds(60))
        let wait = Duration.milliseconds(Int64.random(in: 0...Int64(cap / .milliseconds(1))))
        backoff[address] = (ContinuousClock.now + wait, cap)
    }

    nonisolated func dial(_ address: String) async {
        let ok: Bool
        do {
            try await connect(address, mode: .member) { link in await self.serveMember(link) }
            ok = true
        } catch {
            logger.debug("dial failed", metadata: ["address": .string(address), "reason": .string("\(error)")])
            ok = false
        }
        await dialFinished(address, ok: ok)
    }

    /// Connects to `address` ("host:port") and runs `body` on the link.
    public nonisolated func connect<T: Sendable>(_ address: String, mode: LinkPreamble.Mode,
                                                  body: @escaping @Sendable (PeerLink) async throws -> T) async throws -> T {
        let (host, port) = try PeerNetwork.parse(address)
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(.seconds(3))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: host, port: port) { channel in Link.wrap(channel) }
        let network = mode == .member ? try store.network() : nil
        return try await Link.run(channel, dial: LinkPreamble(mode: mode, network: network), context: context(), body: body)
    }

    /// Splits "host:port" (IPv6 as "[addr]:port").
    public static func parse(_ address: String) throws(KianaNetError) -> (String, Int) {
        var host = Substring(address)
        guard let colon = host.lastIndex(of: ":"), let port = Int(host[host.index(after: colon)...]), (1...65535).contains(port) else {
            throw KianaNetError(.invalidInput, "\(address) is not HOST:PORT")
        }
        host = host[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard !host.isEmpty, host.count <= 253 else { throw KianaNetError(.invalidInput, "\(address) has no host") }
        return (String(host), port)
    }

    // MARK: discovery input

    /// Records what mDNS found: a device with its address, and whether its TXT network tag
    /// matches ours (only then is it dialled).
    public func discoveredDevice(address: String, device: String, networkTag: String?, name: String?) {
        let mine = (try? store.network()).flatMap { $0 }.map { Hex.encode(LinkPreamble.tag($0)) }
        let same = mine != nil && networkTag == mine
        if discovered[address] == nil {
            logger.info("device discovered", metadata: ["device": .string(device), "address": .string(address), "sameNetwork": .stringConvertible(same)])
        }
        discovered[address] = (device, same, name)
    }

    public func lostDevice(address: String) {
        discovered[address] = nil
    }

    // MARK: ledger exchange

    nonisolated func handle(_ link: PeerLink, _ m: LinkMessage) async -> LinkReply? {
        switch m.type {
        case "blocks":
            if link.mode == .pairing, !(await isConfirmed(link.remoteKey)) {
                return .error(code: .notConfirmed, message: "pairing is not confirmed")
            }
            return blocks(after: m.body)
        case "pair.request":
            guard link.mode == .pairing else { return .error(code: .protocolViolation, message: "pairing requests need a pairing link") }
            return await pairingRequest(link, m.body)
        default:
            return nil
        }
    }

    static let blocksPerRequest = 500

    /// Canonical blocks after the newest locator hash we have on our chain (all from genesis
    /// when none matches), at most `blocksPerRequest`, as encoded blocks.
    nonisolated func blocks(after body: CBOR) -> LinkReply {
        do {
            let m = try body.mapValue("blocks request")
            let locator = try (m[.text("locator")] ?? .array([])).arrayValue("locator").prefix(64)
            var from: UInt64 = 0
            for h in locator {
                if let height = try store.canonicalHeight(of: try h.bytesValue("locator hash", count: 32)) {
                    from = height + 1
                    break
                }
            }
            let raw = try store.blocks(from: from, through: from + UInt64(Self.blocksPerRequest) - 1)
            return .stream(raw.map { .bytes($0.encoded) })
        } catch {
            return .error(code: .invalidInput, message: "\(error)")
        }
    }

    /// Pulls blocks from `link` until its chain is imported, then seals entries a reorg
    /// returned to the pending pool. Blocks are validated by the store before anything is kept.
    nonisolated func pull(from link: PeerLink, peerHead: [UInt8]?) async {
        if let peerHead, (try? store.containsBlock(peerHead)) == true { return }
        for _ in 0..<1000 {
            do {
                let hashes = try store.blockHashes()
                let locator = BlockLocator.heights(tip: UInt64(max(hashes.count - 1, 0))).compactMap { h in
                    hashes.indices.contains(Int(h)) ? CBOR.bytes(hashes[Int(h)]) : nil
                }
                let items = try await link.requestStream("blocks", .map(["locator": .array(locator)]))
                let blocks = try items.map { try Block(decoding: try $0.bytesValue("block")) }
                if blocks.isEmpty { break }
                let outcomes = try store.importBlocks(blocks, now: currentMillisNet())
                if outcomes.contains(where: { if case .newHead = $0 { return true } else { return false } }) {
                    logger.info("imported blocks from peer", metadata: ["peer": .string(link.deviceID.description), "count": .stringConvertible(blocks.count)])
                }
                if blocks.count < Self.blocksPerRequest { break }
            } catch {
                logger.warning("block exchange failed", metadata: ["peer": .string(link.deviceID.description), "reason": .string("\(error)")])
                return
            }
        }
        sealPendingIfAuthority()
        await announceHead()
    }

    nonisolated func sealPendingIfAuthority() {
        guard let counts = try? store.counts(), counts.pending > 0,
              (try? store.authorities().contains(identity.publicKey)) == true else { return }
        _ = try? store.sealPending(identity: identity, now: currentMillisNet())
    }

    nonisolated func notified(_ link: PeerLink, _ m: LinkMessage) async {
        guard m.type == "head", link.mode == .member else { return }
        guard case .map(let b) = m.body, case .bytes(let h)? = b[.text("hash")], h.count == 32 else { return }
        await pull(from: link, peerHead: h)
    }

    /// Tells every member link about a new head.
    func announceHead() async {
        guard let head = try? store.head(), head != lastHead else { return }
        lastHead = head
        let note = LinkMessage(kind: .notify, type: "head", body: .map(["height": .unsigned(head.height), "hash": .bytes(head.hash)]))
        for link in links.values where link.mode == .member {
            try? await link.send(note)
        }
    }

    /// Watches the ledger for writes made by other processes (the CLI) and announces them.
    public nonisolated func headLoop() async {
        while !Task.isCancelled {
            sealPendingIfAuthority()
            await announceHead()
            try? await Task.sleep(for: config.headInterval)
        }
    }

    // MARK: pairing (authority side)

    /// Opens the pairing window for `seconds`.
    public func openPairing(seconds: Int) {
        pairingUntil = .now + .seconds(seconds)
        logger.notice("pairing window open", metadata: ["seconds": .stringConvertible(seconds)])
    }

    /// Closes the window and turns away everyone still waiting.
    public func closePairing() {
        pairingUntil = nil
        for (key, r) in pairingRequests { r.answer?.resume(returning: false); pairingRequests[key] = nil }
    }

    public var pairingOpen: Bool { pairingUntil.map { $0 > .now } ?? false }

    public func pendingPairings() -> [PairingRequest] {
        pairingRequests.values.map(\.request).sorted { $0.device < $1.device }
    }

    /// The owner typed `code` for the device `device` (or the only waiting one): a match writes
    /// the add-authority vote and lets the joiner fetch the ledger; a mismatch turns it away.
    public func confirmPairing(device: String?, code: String) throws(KianaNetError) -> (request: PairingRequest, accepted: Bool) {
        let candidates = pairingRequests.filter { device == nil || $0.value.request.device == device || $0.value.request.key.hasPrefix(device!) }
        guard candidates.count == 1, let (key, entry) = candidates.first else {
            throw KianaNetError(.pairing, candidates.isEmpty ? "no device is waiting to pair" : "several devices are waiting: name one")
        }
        pairingRequests[key] = nil
        guard PairingCode.matches(code, entry.request.code) else {
            logger.warning("pairing code mismatch, request refused", metadata: ["device": .string(entry.request.device)])
            entry.answer?.resume(returning: false)
            return (entry.request, false)
        }
        do {
            _ = try store.write(vote: Vote(target: key, authorize: true), identity: identity, now: currentMillisNet())
        } catch {
            entry.answer?.resume(returning: false)
            throw KianaNetError(.pairing, "could not write the vote: \(error)")
        }
        confirmedJoiners.insert(key)
        entry.answer?.resume(returning: true)
        logger.notice("pairing confirmed, add-authority vote written", metadata: ["device": .string(entry.request.device)])
        return (entry.request, true)
    }

    func isConfirmed(_ key: [UInt8]) -> Bool { confirmedJoiners.contains(key) }

    func pairingEnded(_ key: [UInt8]) {
        confirmedJoiners.remove(key)
        if let r = pairingRequests.removeValue(forKey: key) { r.answer?.resume(returning: false) }
    }

    func pairingRequest(_ link: PeerLink, _ body: CBOR) async -> LinkReply {
        let name: String? = {
            guard case .map(let m) = body, case .text(let n)? = m[.text("name")] else { return nil }
            return String(n.prefix(64))
        }()
        guard pairingOpen else { return .error(code: .closed, message: "the pairing window is closed") }
        guard pairingRequests[link.remoteKey] == nil else { return .error(code: .conflict, message: "already waiting") }
        guard pairingRequests.count < 8 else { return .error(code: .busy, message: "too many devices waiting") }
        let request = PairingRequest(device: link.deviceID.description, key: Hex.encode(link.remoteKey), name: name,
                                     address: link.remoteAddress, code: PairingCode.code(handshakeHash: link.handshakeHash))
        logger.notice("device asks to join", metadata: ["device": .string(request.device), "address": .string(request.address)])
        let accepted = await withCheckedContinuation { c in
            pairingRequests[link.remoteKey] = (request, c)
        }
        guard accepted else { return .error(code: .rejected, message: "the owner did not confirm the pairing code") }
        let m = (try? store.membership())
        return .body(.map([
            "network": .bytes((try? store.network()).flatMap { $0 } ?? []),
            "member": .bool(m?.authorities.contains(link.remoteKey) ?? false),
            "authorities": .unsigned(UInt64(m?.authorities.count ?? 0)),
        ]))
    }

    // MARK: status

    /// Connected, member, discovered and manually added peers.
    public func status() -> [PeerStatus] {
        let membership = try? store.membership()
        let authorities = membership?.authorities ?? []
        var out: [PeerStatus] = []
        var seenDevices: Set<String> = []
        var seenAddresses: Set<String> = []
        for (key, link) in links {
            let name: String? = { if case .map(let m) = link.peerHello, case .text(let n)? = m[.text("name")] { return n }; return nil }()
            out.append(PeerStatus(device: link.deviceID.description, address: link.remoteAddress,
                                  state: link.mode == .pairing ? "pairing" : "connected", member: authorities.contains(key),
                                  source: link.initiatedLocally ? "dialled" : "accepted", rttMillis: nil, name: name))
            seenDevices.insert(link.deviceID.description)
            seenAddresses.insert(link.remoteAddress)
        }
        for key in authorities where key != identity.publicKey && links[key] == nil {
            let d = DeviceID(publicKey: key).description
            out.append(PeerStatus(device: d, address: nil, state: "member", member: true, source: "ledger", rttMillis: nil, name: nil))
            seenDevices.insert(d)
        }
        for (addr, d) in discovered where !seenDevices.contains(d.device) {
            out.append(PeerStatus(device: d.device, address: addr, state: "discovered", member: false, source: d.sameNetwork ? "mdns" : "mdns (other network)", rttMillis: nil, name: d.name))
            seenAddresses.insert(addr)
        }
        for a in (try? store.peerAddresses()) ?? [] where !seenAddresses.contains(a.address) {
            out.append(PeerStatus(device: nil, address: a.address, state: "manual", member: false, source: "manual", rttMillis: nil, name: nil))
        }
        return out
    }

    /// `status()` with each link's last heartbeat RTT filled in.
    public nonisolated func statusWithRTT() async -> [PeerStatus] {
        var list = await status()
        let current = await links
        for i in list.indices where list[i].state == "connected" {
            if let key = current.first(where: { $0.value.deviceID.description == list[i].device })?.value,
               let rtt = await key.rtt {
                list[i].rttMillis = Double(rtt.components.attoseconds) / 1e15 + Double(rtt.components.seconds) * 1000
            }
        }
        return list
    }

    /// Whether a link to this device is up (tests and readiness).
    public func isConnected(_ key: [UInt8]) -> Bool { links[key] != nil }
}

func currentMillisNet() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }

/// A counter shared by connection tasks.
final class Counter: Sendable {
    private let count = Mutex(0)
    var value: Int { count.withLock { $0 } }

    func increment(limit: Int) -> Bool {
        count.withLock { c in
            guard c < limit else { return false }
            c += 1
            return true
        }
    }

    func decrement() {
        count.withLock { $0 -= 1 }
    }
}
