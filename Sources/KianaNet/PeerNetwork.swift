import Foundation
import KianaCore
import KianaStore
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
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
    /// How often the ledger head is checked for writes by other processes (the CLI on the same
    /// data directory); this process's own writes are announced at once.
    public var headInterval: Duration = .milliseconds(500)
    public var sync = SyncConfig()
    /// How long a member whose blocks our ledger refused is cut off.
    public var cutOffBackoff: Duration = .seconds(60)
    /// Blocks up to this size are pushed whole to members; larger ones are announced.
    public var pushLimit = 256 << 10
    /// Sync requests one member may make per second (and in a burst); more are answered `busy`.
    public var syncRequestRate: Double = 50
    public var syncRequestBurst: Double = 200
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
    /// Its last stated head (members), and how it stands to ours: "in step", "behind" (its head
    /// is on our chain), "ahead" (longer, not known here yet) or "forked".
    public var height: UInt64?
    public var head: String?
    public var sync: String?
    /// When a pull from it last completed (ISO 8601), and why the last one failed.
    public var lastSync: String?
    public var syncError: String?
    /// Link bytes received and sent while connected.
    public var bytesIn: Int?
    public var bytesOut: Int?
    /// Why our ledger refused its blocks (it is cut off for a while), and why it refused ours.
    public var refusedHere: String?
    public var refusedThere: String?
}

/// This device's sync state: its head and history tree, counters since start, and its peers.
public struct SyncStatus: Sendable, Codable, Equatable {
    public var height: UInt64
    public var head: String
    public var treeSize: UInt64
    public var treeRoot: String
    public var stats: SyncStats
    public var peers: [PeerStatus]
    public init(height: UInt64, head: String, treeSize: UInt64, treeRoot: String, stats: SyncStats, peers: [PeerStatus]) {
        self.height = height
        self.head = head
        self.treeSize = treeSize
        self.treeRoot = treeRoot
        self.stats = stats
        self.peers = peers
    }
}

/// A join request waiting for the owner's confirmation.
public struct PairingRequest: Sendable, Codable, Equatable {
    public var device: String
    public var key: String
    public var name: String?
    public var address: String
    public var code: String
}

/// The node's peer-to-peer side, put together from its parts: the `LinkRegistry` (live links,
/// admission), the `DialPlan` (targets, backoff), the `BlockExchange` (sync against a
/// `SyncStore`), the `PairingWindow`; and its long-running services (`LinkListener`, `Dialer`,
/// `HeadAnnouncer`, `PeerDiscovery`), which run in the node's ServiceGroup. It signs nothing:
/// ledger writes (votes, sealing entries a reorg returned to the pending pool) are the node's,
/// through `Hooks`.
public final class PeerNetwork: Sendable {
    /// What the node does for the peer layer.
    public struct Hooks: Sendable {
        /// After blocks from a peer changed the head (the node seals entries a reorg returned).
        public var afterImport: @Sendable () async -> Void
        /// Every head tick (the node seals pending entries left by other processes).
        public var tick: @Sendable () async -> Void
        public init(afterImport: @escaping @Sendable () async -> Void = {}, tick: @escaping @Sendable () async -> Void = {}) {
            self.afterImport = afterImport
            self.tick = tick
        }
    }

    public let store: any SyncStore
    public let identity: DeviceIdentity
    public let config: NetworkConfig
    let logger: Logger
    public let group: MultiThreadedEventLoopGroup
    public let registry: LinkRegistry
    public let pairing: PairingWindow
    public let exchange: BlockExchange
    public let sync: ChainSync
    /// Sync counters since start.
    public let counters = SyncCounters()
    /// Per-member sync state (heads, refusals, cut-offs).
    public let book = PeerBook()
    let plan = DialPlan()
    /// Wakes the announcer: after our own chain changed, and on its poll tick.
    let wakeups: AsyncStream<Void>
    let wakeup: AsyncStream<Void>.Continuation
    let hooks: Hooks
    /// Rate limit for the log lines about refused inbound connections.
    let refusals = RefusalLog()
    /// Inbound connections: the pending-handshake, member and pairing pools (sized from
    /// `config.link` when the listener starts) and their counters.
    let admission = Admission()

    public init(
        store: any SyncStore, identity: DeviceIdentity, config: NetworkConfig, logger: Logger, hooks: Hooks = Hooks(),
        group: MultiThreadedEventLoopGroup = .singleton
    ) {
        self.store = store
        self.identity = identity
        self.config = config
        self.logger = logger
        self.group = group
        self.hooks = hooks
        registry = LinkRegistry(identity: identity, logger: logger)
        pairing = PairingWindow(logger: logger)
        exchange = BlockExchange(store: store)
        sync = ChainSync(store: store, logger: logger, config: config.sync, counters: counters)
        (wakeups, wakeup) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Tells the announcer to look at the head now.
    func wake() { wakeup.yield() }

    // MARK: services

    /// The link listener; `ready` gets the bound port.
    public func listener(ready: @escaping @Sendable (Int) -> Void = { _ in }) -> LinkListener { LinkListener(network: self, ready: ready) }
    public var dialer: Dialer { Dialer(network: self) }
    public var announcer: HeadAnnouncer { HeadAnnouncer(network: self) }
    public func discovery(interface: String?, name: String?) -> PeerDiscovery { PeerDiscovery(network: self, interface: interface, name: name) }

    public var listeningPort: Int? { get async { await registry.listeningPort } }
    /// Inbound connections open right now (handshakes included).
    public var openConnections: Int { admission.stats.open }
    /// Inbound connections held and refused, handshakes timed out and failed, since start.
    public var admissionStats: AdmissionStats { admission.stats }
    public func isConnected(_ key: [UInt8]) async -> Bool { await registry.isConnected(key) }

    // MARK: links

    func context() async -> LinkContext {
        let network = try? await store.networkID()
        return LinkContext(
            identity: identity, network: network, config: config.link, logger: logger,
            helloInfo: { [self] in await self.helloInfo() },
            admit: { [self] c in await self.admit(c) },
            onRequest: { [self] link, m in await self.handle(link, m) },
            onNotify: { [self] link, m in await self.notified(link, m) },
            refusals: refusals)
    }

    func helloInfo() async -> CBOR {
        var m: [CBOR: CBOR] = ["port": .unsigned(UInt64(await listeningPort ?? config.port))]
        if let name = config.name { m["name"] = .text(name) }
        if let h = try? await sync.head() {
            m["height"] = .unsigned(h.height)
            m["head"] = .bytes(h.hash)
            m["hash"] = .bytes(h.hash)
            m["size"] = .unsigned(h.size)
            m["root"] = .bytes(h.root)
        }
        return .map(m)
    }

    /// Member links: authorities and devices an authority has proposed (so they can follow the
    /// chain until the vote passes). Pairing links: only while the window is open.
    func admit(_ c: LinkCandidate) async -> String? {
        switch c.mode {
        case .member:
            if let reason = await book.cutOffReason(c.identityKey) { return "cut off for a while: \(reason)" }
            guard let m = try? await store.chainMembership() else { return "ledger unavailable" }
            if m.authorities.contains(c.identityKey) { return nil }
            if m.tally[c.identityKey]?.authorize == true { return nil }
            return "not an authority of this network"
        case .pairing:
            return await pairing.isOpen ? nil : "no pairing window is open"
        }
    }

    /// Runs a link until it closes: a member link catches up and stays; a pairing link stays
    /// while the joiner fetches the ledger.
    func serve(_ link: PeerLink) async {
        switch link.mode {
        case .member:
            guard await registry.attach(link) else {
                link.close()
                return
            }
            await plan.connected(link.remoteAddress)
            let head = SyncHead(link.peerHello)
            if let head { await book.heard(link.remoteKey, head: head) }
            await pull(from: link, peerHead: head)
            do { try await Task.sleep(for: .seconds(86400 * 365)) } catch {}
            await registry.detach(link)
        case .pairing:
            do { try await Task.sleep(for: .seconds(600)) } catch {}
            await pairing.ended(link.remoteKey)
        }
    }

    // MARK: dialling

    func dialTargets() async -> [String] {
        let known = (try? await store.knownPeerAddresses()) ?? []
        return await plan.targets(
            known: known, connectedAddresses: await registry.connectedAddresses,
            connectedDevices: await registry.connectedDevices)
    }

    func dial(_ address: String) async {
        let ok: Bool
        do {
            try await connect(address, mode: .member) { link in await self.serve(link) }
            ok = true
        } catch {
            logger.debug("dial failed", metadata: ["address": .string(address), "reason": .string("\(error)")])
            ok = false
        }
        await plan.finished(address, ok: ok)
    }

    /// Connects to `address` ("host:port") and runs `body` on the link.
    public func connect<T: Sendable>(
        _ address: String, mode: LinkPreamble.Mode,
        body: @escaping @Sendable (PeerLink) async throws -> T
    ) async throws -> T {
        let (host, port) = try PeerNetwork.parse(address)
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(.seconds(3))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: host, port: port) { channel in Link.wrap(channel) }
        let network = mode == .member ? try await store.networkID() : nil
        return try await Link.run(channel, dial: LinkPreamble(mode: mode, network: network), context: await context(), body: body)
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
    public func discoveredDevice(address: String, device: String, networkTag: String?, name: String?) async {
        let mine = (try? await store.networkID()).flatMap { $0 }.map { Hex.encode(LinkPreamble.tag($0)) }
        let same = mine != nil && networkTag == mine
        if await plan.discovered(address, device: device, sameNetwork: same, name: name) {
            logger.info("device discovered", metadata: ["device": .string(device), "address": .string(address), "sameNetwork": .stringConvertible(same)])
        }
    }

    public func lostDevice(address: String) async {
        await plan.lost(address)
    }

    // MARK: requests and notifications

    func handle(_ link: PeerLink, _ m: LinkMessage) async -> LinkReply? {
        switch m.type {
        case "blocks":
            if link.mode == .pairing, !(await pairing.isAdmitted(link.remoteKey)) {
                return .error(code: .notConfirmed, message: "pairing is not confirmed")
            }
            return await exchange.answer(m.body)
        case let type where ChainSync.requestTypes.contains(type):
            guard link.mode == .member else { return .error(code: .protocolViolation, message: "sync needs a member link") }
            guard await book.allowRequest(link.remoteKey, rate: config.syncRequestRate, burst: config.syncRequestBurst) else {
                counters.update { $0.errors["rate-limited", default: 0] += 1 }
                return .error(code: .busy, message: "too many sync requests; slow down")
            }
            return await sync.answer(type, m.body)
        case "pair.request":
            guard link.mode == .pairing else { return .error(code: .protocolViolation, message: "pairing requests need a pairing link") }
            let store = self.store
            let key = link.remoteKey
            return await pairing.request(from: link, body: m.body) {
                let m = try? await store.chainMembership()
                return .map([
                    "network": .bytes((try? await store.networkID()).flatMap { $0 } ?? []),
                    "member": .bool(m?.authorities.contains(key) ?? false),
                    "authorities": .unsigned(UInt64(m?.authorities.count ?? 0)),
                ])
            }
        default:
            return nil
        }
    }

    func notified(_ link: PeerLink, _ m: LinkMessage) async {
        guard link.mode == .member else { return }
        switch m.type {
        case "head":
            guard let head = SyncHead(m.body) else { return }
            await book.heard(link.remoteKey, head: head)
            await pull(from: link, peerHead: head)
        case "block":
            await pushed(link, m.body)
        case "sync.refused":
            await refusedByPeer(link, m.body)
        default:
            break
        }
    }

    /// A block a member pushed (gossip): imported at once when we hold its parent, else pulled.
    func pushed(_ link: PeerLink, _ body: CBOR) async {
        guard case .map(let m) = body, case .bytes(let bytes)? = m[.text("block")], let block = try? Block(decoding: bytes) else { return }
        let head = m[.text("head")].flatMap(SyncHead.init) ?? SyncHead(height: block.height, hash: block.hash, size: block.height + 1, root: [])
        await book.heard(link.remoteKey, head: head)
        // Duplicate suppression: a block we hold is not imported, relayed or pulled again.
        if (try? await store.hasBlock(block.hash)) == true { return }
        guard (try? await store.hasBlock(block.header.parent)) == true else {
            await pull(from: link, peerHead: head)
            return
        }
        do {
            let result = try await store.importBatch([block], now: currentMillis(), prechecked: nil)
            counters.update {
                $0.blocksIn += result.stored
                if result.reorganized { $0.reorgs += 1 }
            }
            if let refused = result.refused {
                await refuse(link, refused)
            } else if result.headChanged {
                await imported(block.hash, from: link)
            }
        } catch {
            logger.warning("pushed block could not be stored", metadata: ["peer": .string(link.label), "reason": .string("\(error)")])
        }
    }

    /// After blocks from `link` moved our head: remember where it came from (relays skip it),
    /// let the node seal what a reorg returned, and wake the announcer.
    func imported(_ hash: [UInt8], from link: PeerLink) async {
        await book.received(hash, from: link.remoteKey)
        await hooks.afterImport()
        wake()
    }

    /// Pulls a member's chain, one pull per member at a time (a request meanwhile makes the
    /// running pull go once more). A member whose blocks our ledger refuses, or that breaks the
    /// sync protocol, is told why and cut off for `cutOffBackoff`.
    func pull(from link: PeerLink, peerHead: SyncHead?) async {
        let key = link.remoteKey
        guard await book.beginPull(key, head: peerHead) else { return }
        var head = peerHead
        while true {
            var problem: String?
            var synced = false
            do {
                let report = try await sync.pull(from: link, peerHead: head)
                synced = true
                if report.stored > 0 {
                    logger.info(
                        "imported blocks from peer",
                        metadata: [
                            "peer": .string(link.label), "count": .stringConvertible(report.stored),
                            "reorganized": .stringConvertible(report.reorganized),
                        ])
                }
                // The source is recorded by the block it sent: our own block sealed meanwhile (a
                // reorg returned entries) must still be announced to it.
                if report.headChanged, let last = report.lastBlock { await imported(last, from: link) }
                if let refused = report.refused {
                    counters.update { $0.errors["refused", default: 0] += 1 }
                    problem = Self.describe(refused)
                    await refuse(link, refused)
                }
            } catch let e as KianaNetError where !e.remote && (e.code == .protocolViolation || e.code == .tooLarge) {
                problem = e.message
                counters.update { $0.errors["protocol", default: 0] += 1 }
                await cutOff(link, reason: e.message, notify: .map(["message": .text(e.message)]))
            } catch {
                let why = (error as? KianaNetError)?.message ?? "\(error)"
                let reason: String =
                    switch (error as? KianaNetError)?.code {
                    case .timeout?: "timeout"
                    case .closed?: "closed"
                    case .busy?: "busy"
                    default: "other"
                    }
                counters.update { $0.errors[reason, default: 0] += 1 }
                problem = why
                logger.info("sync with peer failed", metadata: ["peer": .string(link.label), "reason": .string(why)])
            }
            guard let again = await book.endPull(key, synced: synced, error: problem) else { break }
            head = again
        }
    }

    static func describe(_ r: BatchImport.Refusal) -> String {
        "block \(r.height) refused (\(r.rule ?? "invalid")): \(r.error.message)"
    }

    /// Our ledger refused a member's block: tell it, log it, cut it off for a while.
    func refuse(_ link: PeerLink, _ r: BatchImport.Refusal) async {
        await cutOff(
            link, reason: Self.describe(r),
            notify: .map([
                "height": .unsigned(r.height), "hash": .bytes(r.hash), "rule": .text(r.rule ?? "invalid"), "message": .text(r.error.message),
            ]))
    }

    func cutOff(_ link: PeerLink, reason: String, notify body: CBOR) async {
        await book.refusedHere(link.remoteKey, reason: reason, backoff: config.cutOffBackoff)
        logger.warning("peer cut off", metadata: ["peer": .string(link.label), "reason": .string(reason)])
        try? await link.send(LinkMessage(kind: .notify, type: "sync.refused", body: body))
        link.close()
    }

    /// A member told us it refused our blocks: say so (once a minute per member) and show it.
    func refusedByPeer(_ link: PeerLink, _ body: CBOR) async {
        guard case .map(let m) = body else { return }
        let text: (String) -> String? = { k in if case .text(let t)? = m[.text(k)] { return String(t.prefix(300)) } else { return nil } }
        var reason = text("message") ?? "no reason given"
        if case .unsigned(let h)? = m[.text("height")] { reason = "block \(h) refused (\(text("rule") ?? "invalid")): " + reason }
        await book.refusedThere(link.remoteKey, reason: reason)
        if refusals.shouldLog(source: "sync.refused " + link.label, now: .now) != nil {
            logger.error("peer refused our blocks; run `kiana ledger verify`", metadata: ["peer": .string(link.label), "reason": .string(reason)])
        }
    }

    /// Tells members about a new head: a block this device made (or another process on its
    /// data directory) is pushed whole to every member; a block that came from a peer is
    /// announced (head only) to the members other than its source that do not have it yet,
    /// who pull it if they want it. So five devices send each new block about once per
    /// receiver, plus small announcements.
    func announce(_ head: SyncHead, previous: SyncHead?) async {
        let source = await book.source(of: head.hash)
        var push: [UInt8]?
        if source == nil, let previous, head.height == previous.height + 1,
            (try? await store.canonicalHashes(at: [previous.height]).first) == previous.hash,
            let block = try? await store.encodedBlocks(from: head.height, maxCount: 1, maxBytes: config.pushLimit).first,
            block.count <= config.pushLimit
        {
            push = block
        }
        let message =
            push.map { LinkMessage(kind: .notify, type: "block", body: .map(["block": .bytes($0), "head": head.cbor])) }
            ?? LinkMessage(kind: .notify, type: "head", body: head.cbor)
        var targets: [PeerLink] = []
        for link in await registry.all where link.mode == .member && link.remoteKey != source {
            if let known = await book.peer(link.remoteKey)?.head, known.hash == head.hash { continue }
            targets.append(link)
        }
        if push != nil { counters.update { $0.blocksOut += targets.count } }
        await withDiscardingTaskGroup { group in
            for link in targets { group.addTask { try? await link.send(message) } }
        }
    }

    // MARK: status

    /// Connected, member, discovered and manually added peers.
    public func status() async -> [PeerStatus] {
        let authorities = (try? await store.chainMembership())?.authorities ?? []
        let links = await registry.all
        let discovered = await plan.discovered
        var out: [PeerStatus] = []
        var seenDevices: Set<String> = []
        var seenAddresses: Set<String> = []
        for link in links {
            let name: String? = {
                if case .map(let m) = link.peerHello, case .text(let n)? = m[.text("name")] { return n }
                return nil
            }()
            out.append(
                PeerStatus(
                    device: link.deviceID.description, address: link.remoteAddress,
                    state: link.mode == .pairing ? "pairing" : "connected", member: authorities.contains(link.remoteKey),
                    source: link.initiatedLocally ? "dialled" : "accepted", rttMillis: nil, name: name))
            seenDevices.insert(link.deviceID.description)
            seenAddresses.insert(link.remoteAddress)
        }
        let linked = Set(links.map(\.remoteKey))
        for key in authorities where key != identity.publicKey && !linked.contains(key) {
            let d = DeviceID(publicKey: key).description
            out.append(PeerStatus(device: d, address: nil, state: "member", member: true, source: "ledger", rttMillis: nil, name: nil))
            seenDevices.insert(d)
        }
        for (key, reason) in await book.activeCutOffs() where !seenDevices.contains(DeviceID(publicKey: key).description) {
            let d = DeviceID(publicKey: key).description
            out.append(PeerStatus(device: d, address: nil, state: "cut off", member: false, source: "sync", rttMillis: nil, name: nil, refusedHere: reason))
            seenDevices.insert(d)
        }
        for i in out.indices where out[i].device != nil {
            if let key = links.first(where: { $0.deviceID.description == out[i].device })?.remoteKey ?? authorities.first(where: {
                DeviceID(publicKey: $0).description == out[i].device
            }) {
                await describeSync(&out[i], key: key, link: links.first { $0.remoteKey == key })
            }
        }
        for (addr, d) in discovered where !seenDevices.contains(d.device) {
            out.append(
                PeerStatus(
                    device: d.device, address: addr, state: "discovered", member: false, source: d.sameNetwork ? "mdns" : "mdns (other network)",
                    rttMillis: nil, name: d.name))
            seenAddresses.insert(addr)
        }
        for a in (try? await store.knownPeerAddresses()) ?? [] where !seenAddresses.contains(a) {
            out.append(PeerStatus(device: nil, address: a, state: "manual", member: false, source: "manual", rttMillis: nil, name: nil))
        }
        return out
    }

    /// Fills in a member's head, how it stands to ours, last sync, refusals and link bytes.
    func describeSync(_ p: inout PeerStatus, key: [UInt8], link: PeerLink?) async {
        if let link {
            p.bytesIn = await link.bytesIn
            p.bytesOut = await link.bytesOut
        }
        guard let info = await book.peer(key) else { return }
        p.lastSync = info.lastSync.map { $0.formatted(.iso8601) }
        p.syncError = info.lastError
        p.refusedHere = info.refusedHere
        p.refusedThere = info.refusedThere
        guard let h = info.head else { return }
        p.height = h.height
        p.head = Hex.encode(h.hash)
        p.sync = await relation(of: h)
    }

    /// How a peer's head stands to ours.
    func relation(of h: SyncHead) async -> String? {
        guard let mine = try? await store.chainHead() else { return nil }
        if h.hash == mine.hash { return "in step" }
        if (try? await store.heightOnChain(of: h.hash)) != nil { return "behind" }
        if h.root.count == 32, h.size >= 1, let r = try? await store.historyRoot(size: h.size), r == h.root { return "behind" }
        return h.height > mine.height ? "ahead" : "forked"
    }

    /// Head, history tree, counters and peers.
    public func syncStatus() async throws -> SyncStatus {
        guard let head = try await sync.head() else { throw KianaNetError(.invalidInput, "no ledger here yet") }
        return SyncStatus(
            height: head.height, head: Hex.encode(head.hash), treeSize: head.size, treeRoot: Hex.encode(head.root), stats: counters.snapshot,
            peers: await statusWithRTT().filter(\.member))
    }

    /// `status()` with each link's last heartbeat RTT filled in.
    public func statusWithRTT() async -> [PeerStatus] {
        var list = await status()
        let links = await registry.all
        for i in list.indices where list[i].state == "connected" {
            if let link = links.first(where: { $0.deviceID.description == list[i].device }), let rtt = await link.rtt {
                list[i].rttMillis = Double(rtt.components.attoseconds) / 1e15 + Double(rtt.components.seconds) * 1000
            }
        }
        return list
    }
}
