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
    /// How long the announcer waits for one head's sends before it goes on to the next head; a
    /// member still not sent to is skipped until its send went out (it pulls the rest).
    public var announceWait: Duration = .milliseconds(500)
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

/// A join request waiting for the owner's confirmation.
public struct PairingRequest: Sendable, Codable, Equatable {
    public var device: String
    public var key: String
    public var name: String?
    public var address: String
    public var code: String
}

/// The node's peer-to-peer side, put together from its parts: the `LinkRegistry` (live links),
/// `Admission` (the P2P port's pools), the `DialPlan` (targets, backoff), `ChainSync` and the
/// `PeerBook` (sync against a `SyncStore`, PeerSync.swift), the `PairingWindow`; and its
/// long-running services (`LinkListener`, `Dialer`, `HeadAnnouncer`, `PeerDiscovery`), which run
/// in the node's ServiceGroup. It signs nothing:
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
    public let counters: SyncCounters
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
    /// What was offered to and taken from members of their own stuck entries (decision 111).
    let stuckOffers = StuckOffers()

    public init(
        store: any SyncStore, identity: DeviceIdentity, config: NetworkConfig, logger: Logger, hooks: Hooks = Hooks(),
        counters: SyncCounters = SyncCounters(), group: MultiThreadedEventLoopGroup = .singleton
    ) {
        self.counters = counters
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
    /// Looks at the head now (the announcer also looks every `headInterval`).
    public func wake() { wakeup.yield() }

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
    /// Member links up now (inbound and dialled).
    public var connectedLinks: Int { get async { await registry.all.count } }

    // MARK: links

    func context() async -> LinkContext {
        let network = try? await store.networkID()
        return LinkContext(
            identity: identity, network: network, config: config.link, logger: logger,
            helloInfo: { [self] in await self.helloInfo() },
            admit: { [self] c in await self.admit(c) },
            onRequest: { [self] link, m in await self.handle(link, m) },
            onNotify: { [self] link, m in await self.notified(link, m) },
            refusals: refusals, pingInfo: { [self] in (try? await self.sync.head())?.cbor ?? .map([:]) },
            onClose: { [self] link in if link.mode == .pairing { await self.pairing.ended(link.remoteKey) } })
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
            await pairing.ended(link.remoteKey)  // also when the link ended (onClose did it first)
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
        var failure: String?
        do {
            try await connect(address, mode: .member) { link in
                await self.plan.reached(address, device: link.deviceID.description)
                await self.serve(link)
            }
        } catch {
            failure = Self.dialFailure(error)
            logger.debug("dial failed", metadata: ["address": .string(address), "reason": .string(failure ?? "")])
        }
        await plan.finished(address, failure: failure)
    }

    /// Why a dial failed, in words for `kiana peers` (not NIO's type dumps).
    static func dialFailure(_ error: any Error) -> String {
        if let e = error as? any KianaError {
            // A listener closes without a word on a device it does not admit.
            return e.code == .closed
                ? "the other side closed the link during the handshake: it does not let this device in (not a device of its network, or no longer one), "
                    + "it cannot serve now (its log says why), or it is not a KI_ana device-link port"
                : e.message
        }
        if let e = error as? NIOConnectionError {
            if let first = e.connectionErrors.first { return dialFailure(first.error) }
            if e.dnsAError != nil || e.dnsAAAAError != nil { return "the host name \(e.host) does not resolve" }
            return "cannot connect to \(e.host):\(e.port)"
        }
        if let e = error as? IOError { return String(cString: strerror(e.errnoCode)).lowercased() }
        if let e = error as? ChannelError {
            if case .connectTimeout = e { return "no answer (timed out)" }
            return e == .eof || e == .ioOnClosedChannel ? "the other side closed the connection" : "\(e)"
        }
        return "\(type(of: error))"
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
            throw KianaNetError(.invalidInput, "\(address) is not HOST:PORT with a port 1-65535 (for example 192.168.1.20:8470, or [fe80::1]:8470)")
        }
        host = host[..<colon]
        var bracketed = false
        if host.hasPrefix("["), host.hasSuffix("]") {
            host = host.dropFirst().dropLast()
            bracketed = true
        }
        guard !host.isEmpty else { throw KianaNetError(.invalidInput, "\(address) has no host") }
        guard host.utf8.count <= 253 else { throw KianaNetError(.invalidInput, "the host in \(address.prefix(40))… is longer than 253 characters") }
        // An IPv6 address in brackets (with a zone: fe80::1%eth0), or an IPv4 address or host
        // name: labels of letters, digits, '-' and '_' (mDNS names), 1-63 each.
        // (An IPv6 address without brackets is split at its last colon, as it always was.)
        let valid: Bool
        if bracketed || host.contains(":") {
            // An IPv6 address (inet_pton's reading), with an optional zone of letters, digits, '-', '_' or '.'.
            let parts = host.split(separator: "%", maxSplits: 1, omittingEmptySubsequences: false)
            var address = in6_addr()
            let zoneOK = parts.count == 1 || (!parts[1].isEmpty && parts[1].allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) })
            valid = zoneOK && inet_pton(AF_INET6, String(parts[0]), &address) == 1
        } else {
            let name = host.hasSuffix(".") ? host.dropLast() : host  // a fully qualified name's root dot
            let labels = name.split(separator: ".", omittingEmptySubsequences: false)
            // Labels of digits (or C's 0x hex, which the resolver also reads as numbers) are an
            // IPv4 address, and must be one in the usual dotted-decimal form, without a root dot:
            // 10.0.0.300, 10.1, 0x7f.1 or "10.0.0.1." would otherwise be dialled as names, or
            // reach another address than the one shown.
            func numeric(_ label: Substring) -> Bool {
                // "0x" alone counts too: the resolver reads it as 0.
                if label.lowercased().hasPrefix("0x") { return label.dropFirst(2).allSatisfy { $0.isASCII && $0.isHexDigit } }
                return !label.isEmpty && label.allSatisfy { $0.isASCII && $0.isNumber }
            }
            if labels.allSatisfy(numeric) {
                var v4 = in_addr()
                valid = !host.hasSuffix(".") && inet_pton(AF_INET, String(name), &v4) == 1
            } else {
                valid = labels.allSatisfy { label in
                    (1...63).contains(label.count) && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }
                        && !label.hasPrefix("-") && !label.hasSuffix("-")
                }
            }
        }
        guard valid else {
            throw KianaNetError(.invalidInput, "\(address) does not name a host (a name like kitchen.local, an address like 192.168.1.20, or [fe80::1])")
        }
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
                    // The joiner's progress: about how many blocks will come.
                    "height": .unsigned((try? await store.chainHead())??.height ?? 0),
                ])
            }
        default:
            return nil
        }
    }
}
