import Foundation
import Logging
import NIOCore
import NIOPosix
#if canImport(Glibc)
    import Glibc
#endif

/// What the browser reports.
public enum MDNSEvent: Sendable, Equatable {
    case resolved(MDNSResolved)
    case removed(instance: String)
}

/// Multicast DNS on SwiftNIO: probes, announces and defends one service, answers queries,
/// browses and resolves `_kiana._tcp`, and says goodbye when cancelled. The socket is bound to
/// 0.0.0.0:5353 with SO_REUSEADDR and SO_REUSEPORT, so it shares the port with avahi-daemon.
public struct MDNSDiscovery: Sendable {
    public var interface: String?
    public var logger: Logger
    public var group: MultiThreadedEventLoopGroup

    public init(interface: String?, logger: Logger, group: MultiThreadedEventLoopGroup = .singleton) {
        self.interface = interface
        self.logger = logger
        self.group = group
    }

    /// The IPv4 (and IPv6) addresses of the interfaces discovery uses.
    public func addresses() throws(KianaNetError) -> (devices: [NIONetworkDevice], ipv4: [[UInt8]], ipv6: [[UInt8]]) {
        let all: [NIONetworkDevice]
        do { all = try System.enumerateDevices() } catch {
            throw KianaNetError(.discovery, "cannot list network interfaces", cause: error)
        }
        let chosen = all.filter { d in
            if let interface { return d.name == interface }
            guard d.multicastSupported, d.name != "lo" else { return false }
            return true
        }
        var v4: [NIONetworkDevice] = []
        var ipv4: [[UInt8]] = []
        var ipv6: [[UInt8]] = []
        for d in chosen {
            guard let addr = d.address else { continue }
            switch addr {
            case .v4:
                if let text = addr.ipAddress, let b = Self.parseIPv4(text), b[0] != 127 {
                    v4.append(d)
                    ipv4.append(b)
                }
            case .v6:
                if let text = addr.ipAddress, let b = Self.parseIPv6(text), !(b[0] == 0xfe && b[1] & 0xc0 == 0x80) { ipv6.append(b) }
            default: break
            }
        }
        guard !v4.isEmpty else {
            throw KianaNetError(
                .discovery, interface.map { "interface \($0) has no IPv4 address for multicast DNS" } ?? "no multicast-capable IPv4 interface found")
        }
        return (v4, ipv4, ipv6)
    }

    static func parseIPv4(_ s: String) -> [UInt8]? {
        let parts = s.split(separator: ".").compactMap { UInt8($0) }
        return parts.count == 4 ? parts : nil
    }

    static func parseIPv6(_ s: String) -> [UInt8]? {
        var a = in6_addr()
        guard inet_pton(AF_INET6, s, &a) == 1 else { return nil }
        return withUnsafeBytes(of: &a) { Array($0) }
    }

    typealias Datagram = AddressedEnvelope<ByteBuffer>

    /// Runs until cancelled. `announce` is the service to publish (nil: browse only);
    /// `service` is updated with the final name after conflicts. Events go to `onEvent`.
    public func run(
        announce: MDNSServiceInfo?, browse: Bool = true,
        onEvent: @escaping @Sendable (MDNSEvent) async -> Void
    ) async throws {
        let (devices, _, _) = try addresses()
        let groupAddress = try SocketAddress(ipAddress: MDNS.groupV4, port: MDNS.port)
        let channel = try await DatagramBootstrap(group: group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.socket(SocketOptionLevel(SOL_SOCKET), SocketOptionName(SO_REUSEPORT)), value: 1)
            .bind(host: "0.0.0.0", port: MDNS.port) { ch in
                ch.eventLoop.makeCompletedFuture { try NIOAsyncChannel<Datagram, Datagram>(wrappingChannelSynchronously: ch) }
            }
        let raw = channel.channel
        do {
            for d in devices { try await (raw as! MulticastChannel).joinGroup(groupAddress, device: d).get() }
            if let provider = raw as? SocketOptionProvider {
                try await provider.setIPMulticastTTL(255).get()
                try await provider.setIPMulticastLoop(1).get()
                if interface != nil, let text = devices[0].address?.ipAddress {
                    var a = in_addr()
                    inet_pton(AF_INET, text, &a)
                    try await provider.setIPMulticastIF(a).get()
                }
            }
        } catch {
            try? await raw.close()
            throw KianaNetError(.discovery, "cannot join the multicast DNS group", cause: error)
        }
        let state = MDNSState(responder: announce.map { MDNSResponder(info: $0) })
        let logger = self.logger
        logger.info(
            "mDNS socket ready",
            metadata: [
                "interfaces": .string(devices.map(\.name).joined(separator: ",")),
                "epochMs": "\(Int64(Date().timeIntervalSince1970 * 1000))",
            ])
        try await channel.executeThenClose { inbound, outbound in
            @Sendable func send(_ m: DNSMessage, to: SocketAddress = groupAddress) async {
                guard let bytes = try? m.encoded() else { return }
                try? await outbound.write(Datagram(remoteAddress: to, data: ByteBuffer(bytes: bytes)))
            }
            await withTaskGroup(of: Void.self) { tasks in
                if announce != nil {
                    tasks.addTask { await Self.probeAndAnnounce(state: state, send: { await send($0) }, logger: logger) }
                }
                if browse {
                    tasks.addTask { await Self.query(state: state, send: { await send($0) }, onEvent: onEvent) }
                }
                tasks.addTask {
                    do {
                        for try await datagram in inbound {
                            var buf = datagram.data
                            guard buf.readableBytes <= DNSMessage.maxSize, let bytes = buf.readBytes(length: buf.readableBytes),
                                let message = try? DNSMessage(decoding: bytes)
                            else { continue }
                            let from = datagram.remoteAddress
                            logger.trace(
                                "mDNS datagram",
                                metadata: [
                                    "from": "\(from)", "response": "\(message.isResponse)",
                                    "questions": "\(message.questions.count)", "answers": "\(message.answers.count)",
                                ])
                            if message.isResponse {
                                await state.received(message, now: Self.now())
                                if browse { await Self.report(state: state, onEvent: onEvent) }
                            } else if let reply = await state.reply(to: message, fromPort: from.port ?? 0) {
                                if reply.legacy {
                                    await send(reply.message, to: from)
                                } else if reply.shared {
                                    try? await Task.sleep(for: .milliseconds(Int.random(in: 20...120)))
                                    await send(reply.message)
                                } else {
                                    await send(reply.message)
                                }
                            }
                        }
                    } catch {}
                }
                // The first child to end (cancellation or a closed socket) ends them all.
                await tasks.next()
                tasks.cancelAll()
            }
            if let bye = await state.goodbye() {
                // The socket is still open: say goodbye so browsers drop us at once (§10.1).
                if let bytes = try? bye.encoded() {
                    try? await raw.writeAndFlush(Datagram(remoteAddress: groupAddress, data: ByteBuffer(bytes: bytes))).get()
                }
            }
        }
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Probing (three probes 250 ms apart after a random 0-150 ms wait, renaming on conflict),
    /// then two announcements one second apart (§8).
    static func probeAndAnnounce(state: MDNSState, send: @Sendable (DNSMessage) async -> Void, logger: Logger) async {
        do {
            var probes = 0
            var jitter = 0
            for _ in 0..<16 {
                // §8.1 suggests 0-250 ms; 0-150 still de-synchronises devices that power up together
                // and keeps a new device visible within a second (docs/decisions.md).
                jitter = Int.random(in: 0...150)
                try await Task.sleep(for: .milliseconds(jitter))
                var clean = true
                for _ in 0..<3 {
                    guard let p = await state.startProbe() else { return }
                    await send(p)
                    probes += 1
                    try await Task.sleep(for: .milliseconds(250))
                    if await state.takeConflict() {
                        clean = false
                        break
                    }
                }
                if clean { break }
                let name = await state.rename()
                logger.notice("mDNS name conflict, renamed", metadata: ["instance": .string(name)])
                try await Task.sleep(for: .seconds(1))
            }
            guard let a = await state.announce() else { return }
            await send(a)
            logger.info(
                "mDNS service announced",
                metadata: [
                    "instance": .string(a.answers.first?.name.description ?? ""), "probes": "\(probes)", "jitterMs": "\(jitter)",
                    "epochMs": "\(Int64(Date().timeIntervalSince1970 * 1000))",
                ])
            try await Task.sleep(for: .seconds(1))
            await send(a)
            // Defend the name: a later conflict restarts probing with a new name.
            while true {
                try await Task.sleep(for: .milliseconds(250))
                if await state.takeConflict() {
                    let name = await state.rename()
                    logger.notice("mDNS name conflict, renamed", metadata: ["instance": .string(name)])
                    await probeAndAnnounce(state: state, send: send, logger: logger)
                    return
                }
            }
        } catch {}
    }

    /// Browsing: queries at 0, 1, 2, 4 … s (capped at one hour, §5.2) with known answers,
    /// re-queries records at 80 % of their TTL, asks for missing SRV/TXT/addresses, and
    /// reports expiries.
    static func query(
        state: MDNSState, send: @Sendable (DNSMessage) async -> Void,
        onEvent: @Sendable (MDNSEvent) async -> Void
    ) async {
        var interval = 1.0
        // §5.2: the first query goes out after a random 20-120 ms.
        var nextQuery = now() + Double.random(in: 0.02...0.12)
        // No QU bit (§5.4) on the first query: with several mDNS sockets on port 5353 on one host
        // (avahi, the node, `kiana discover`) the kernel hands a unicast answer to only one of
        // them (§15), so multicast answers are the only ones every browser sees.
        while !Task.isCancelled {
            let t = now()
            if t >= nextQuery {
                await send(await state.browseQuery(now: t))
                nextQuery = t + interval
                interval = min(interval * 2, 3600)
            }
            let refresh = await state.refreshQuestions(now: t)
            if !refresh.isEmpty { await send(DNSMessage(questions: refresh)) }
            await report(state: state, onEvent: onEvent)
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    static func report(state: MDNSState, onEvent: @Sendable (MDNSEvent) async -> Void) async {
        for e in await state.changes(now: now()) { await onEvent(e) }
    }
}

/// Shared state of one mDNS run.
actor MDNSState {
    var responder: MDNSResponder?
    enum Phase { case probing, announced, stopped }
    var phase: Phase = .probing
    var conflict = false
    var cache = MDNSCache()
    var reported: [String: MDNSResolved] = [:]
    var asked: [DNSQuestion: Double] = [:]

    init(responder: MDNSResponder?) { self.responder = responder }

    func startProbe() -> DNSMessage? {
        guard let responder, phase != .stopped else { return nil }
        phase = .probing
        return responder.probe()
    }

    func takeConflict() -> Bool {
        defer { conflict = false }
        return conflict
    }

    func rename() -> String {
        guard var r = responder else { return "" }
        r.info.instance = MDNSResponder.renamed(r.info.instance)
        r.info.hostLabel = MDNSResponder.renamed(r.info.hostLabel)
        responder = r
        return r.info.instance
    }

    func announce() -> DNSMessage? {
        guard let responder, phase != .stopped else { return nil }
        phase = .announced
        return responder.announcement()
    }

    func goodbye() -> DNSMessage? {
        defer { phase = .stopped }
        guard let responder, phase == .announced else { return nil }
        return responder.announcement(goodbye: true)
    }

    func received(_ m: DNSMessage, now: Double) {
        if let responder, responder.conflicts(with: m) { conflict = true }
        cache.add(m, now: now)
    }

    /// Our answer to a query, if any. A probe for our names with other data is a conflict
    /// while we probe (simultaneous probing, resolved here by both sides renaming).
    func reply(to q: DNSMessage, fromPort: Int) -> (message: DNSMessage, shared: Bool, legacy: Bool)? {
        guard let responder else { return nil }
        if phase == .probing {
            if !q.authorities.isEmpty && responder.conflicts(with: q) { conflict = true }
            return nil
        }
        guard phase == .announced else { return nil }
        if fromPort != MDNS.port {
            return responder.legacyAnswer(q).map { ($0, false, true) }
        }
        return responder.answer(q).map { ($0.message, $0.shared, false) }
    }

    func browseQuery(now: Double) -> DNSMessage {
        // Known-answer suppression: list the PTRs we hold with more than half their TTL left.
        let known = cache.items.values.filter {
            $0.record.name == MDNS.serviceType && $0.record.type == DNSType.ptr && $0.expires - now > Double($0.record.ttl) / 2
        }.map { r -> DNSRecord in
            var rec = r.record
            rec.ttl = UInt32(max(0, r.expires - now))
            return rec
        }
        return DNSMessage(questions: [DNSQuestion(name: MDNS.serviceType, type: DNSType.ptr)], answers: known)
    }

    func refreshQuestions(now: Double) -> [DNSQuestion] {
        var qs = cache.dueForRefresh(now: now)
        for q in cache.services(MDNS.serviceType, now: now).missing {
            if let last = asked[q], now - last < 1 { continue }
            asked[q] = now
            qs.append(q)
        }
        return qs
    }

    /// Services that appeared, changed or went away since the last call.
    func changes(now: Double) -> [MDNSEvent] {
        cache.expire(now: now)
        let current = cache.services(MDNS.serviceType, now: now).resolved
        var events: [MDNSEvent] = []
        var names: Set<String> = []
        for s in current {
            names.insert(s.instance)
            if reported[s.instance] != s {
                reported[s.instance] = s
                events.append(.resolved(s))
            }
        }
        for name in reported.keys where !names.contains(name) {
            reported[name] = nil
            events.append(.removed(instance: name))
        }
        return events
    }
}
