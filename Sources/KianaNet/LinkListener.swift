import Foundation
import KianaCore
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Accepts device links on the P2P port until graceful shutdown; each accepted link runs until
/// it closes. Admission (`PeerNetwork.admission`, sized by `LinkConfig`) keeps handshakes in a
/// bounded pool with a share per source address, closing connections beyond it on arrival
/// before any handshake work, and moves a connection to the member pool once its handshake has
/// proved an admitted key; refusals are logged through the node's `RefusalLog`.
public struct LinkListener: Service, CustomStringConvertible {
    /// The name ServiceLifecycle logs (not the default dump of every stored property).
    public var description: String { "LinkListener" }

    let network: PeerNetwork
    let ready: @Sendable (Int) -> Void

    /// An accepted connection: refused on arrival, or holding a pending slot. An admitted one is
    /// handed over as a plain channel that does not read yet; its task wraps it for the link
    /// runner. (An async channel made here and still buffered when the listener stops would trap
    /// in NIO, swift-nio#2813; a plain channel is only a socket left open at exit.)
    enum Accepted: Sendable {
        case refused
        case admitted(any Channel, Admission.Ticket)
    }

    public func run() async throws {
        try await cancelWhenGracefulShutdown {
            try await listen()
        }
    }

    func listen() async throws {
        let config = network.config
        let logger = network.logger
        let admission = network.admission
        let refusals = network.refusals
        admission.setLimits(AdmissionLimits(config.link))
        let server: NIOAsyncChannel<Accepted, Never>
        do {
            server = try await ServerBootstrap(group: network.group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelOption(.autoRead, value: false)
                .bind(host: config.host, port: config.port) { channel in
                    channel.eventLoop.makeSucceededFuture(Self.accept(channel, admission: admission, refusals: refusals, logger: logger))
                }
        } catch let e as IOError where e.errnoCode == EADDRINUSE {
            throw KianaNetError(
                .listen, "cannot listen for peers on \(config.host):\(config.port): the port is already in use (choose one with --p2p-port)", cause: e)
        } catch {
            throw KianaNetError(.listen, "cannot listen for peers on \(config.host):\(config.port): \(error)")
        }
        let port = server.channel.localAddress?.port ?? config.port
        await network.registry.setListening(port)
        ready(port)
        logger.info("link listener ready", metadata: ["host": .string(config.host), "port": .stringConvertible(port)])
        let network = self.network
        do {
            try await withTaskCancellationHandler {
                try await server.executeThenClose { inbound in
                    try await withThrowingDiscardingTaskGroup { group in
                        for try await accepted in inbound {
                            guard case .admitted(let channel, let ticket) = accepted else { continue }
                            group.addTask {
                                await Self.serve(channel, ticket: ticket, network: network)
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

    /// Runs on the new connection's event loop, before anything is read from it: a pending slot,
    /// or the connection is reset at once (no handshake work, no lingering socket) and the
    /// refusal counted and logged within the rate limit.
    static func accept(_ channel: any Channel, admission: Admission, refusals: RefusalLog, logger: Logger) -> Accepted {
        let source = Admission.source(of: channel.remoteAddress)
        switch admission.open(source: source) {
        case .admitted(let ticket):
            return .admitted(channel, ticket)
        case .refused(let refusal):
            refusals.log(
                logger, source: source,
                metadata: ["peer": .string(source), "reason": .string(refusal.description)])
            resetConnection(channel)
            return .refused
        }
    }

    /// Runs one admitted connection: its handshake (admission moves it to the member or pairing
    /// pool once the key is admitted), then the link; gives the slot back when it ends.
    static func serve(_ channel: any Channel, ticket: Admission.Ticket, network: PeerNetwork) async {
        let admission = network.admission
        // On the channel's event loop: a connection already closed (reset by a scanner) has no
        // pipeline to wrap (reading an option throws on a closed channel); an open one gets the
        // async handlers, then starts reading.
        let wrapped = try? await channel.eventLoop.submit { () throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer>? in
            guard (try? channel.syncOptions?.getOption(.autoRead)) != nil else { return nil }
            let conn = try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            channel.setOption(.autoRead, value: true).whenFailure { _ in channel.close(promise: nil) }
            return conn
        }.get()
        guard let conn = wrapped ?? nil else {
            channel.close(promise: nil)
            admission.close(ticket, outcome: .failed)
            return
        }
        var context = await network.context()
        let admit = context.admit
        context.admit = { candidate in
            if let reason = await admit(candidate) { return reason }
            // The pairing check before any cryptography has no key yet: nothing to move.
            if candidate.identityKey.isEmpty { return nil }
            return admission.promote(ticket, to: candidate.mode)?.description
        }
        let up = OnceFlag()
        var outcome = Admission.Outcome.failed
        do {
            _ = try await Link.run(conn, dial: nil, context: context) { link in
                up.set()
                await network.serve(link)
            }
        } catch let e as KianaNetError where e.code == .timeout && !up.isSet {
            outcome = .timedOut
        } catch {}
        if up.isSet { outcome = .completed }
        admission.close(ticket, outcome: outcome)
    }
}

/// Multicast DNS: announces this device and feeds same-network devices to the dialer, until
/// graceful shutdown (then a goodbye). Without a usable interface it says so once and ends;
/// the node goes on with peers added by address.
public struct PeerDiscovery: Service, CustomStringConvertible {
    public var description: String { "PeerDiscovery" }

    let network: PeerNetwork
    let interface: String?
    let name: String?

    public func run() async throws {
        let logger = network.logger
        // The SRV record needs the link listener's port.
        var port: Int?
        for _ in 0..<200 {
            port = await network.listeningPort
            if port != nil || Task.isCancelled { break }
            try? await Task.sleep(for: .milliseconds(25))
        }
        guard let port else { return }
        let mdns = MDNSDiscovery(interface: interface, logger: logger)
        let ipv4: [[UInt8]]
        let ipv6: [[UInt8]]
        do throws(KianaNetError) {
            let a = try mdns.addresses()
            ipv4 = a.ipv4
            ipv6 = a.ipv6
        } catch {
            logger.warning("multicast discovery unavailable; add peers by address", metadata: ["reason": .string(error.message)])
            return
        }
        let identity = network.identity
        let compact = identity.deviceID.compact.lowercased()
        var txt: [(String, String)] = [("v", "1"), ("id", identity.deviceID.description)]
        if let net = try? await network.store.networkID() { txt.append(("net", Hex.encode(LinkPreamble.tag(net)))) }
        if let name { txt.append(("name", String(name.prefix(63)))) }
        let label = "kiana-" + String(compact.prefix(12))
        let info = MDNSServiceInfo(instance: label, hostLabel: label, port: UInt16(port), txt: txt, ipv4: ipv4, ipv6: ipv6)
        let me = identity.deviceID.description
        let found = InstanceAddresses()
        let network = self.network
        do {
            try await cancelWhenGracefulShutdown {
                try await mdns.run(announce: info) { event in
                    switch event {
                    case .resolved(let s):
                        guard let id = s.txt["id"], id != me, let ip = s.addresses.first(where: { !$0.contains(":") }) else { return }
                        let address = "\(ip):\(s.port)"
                        found.set(s.instance, address)
                        await network.discoveredDevice(address: address, device: id, networkTag: s.txt["net"], name: s.txt["name"])
                    case .removed(let instance):
                        if let address = found.remove(instance) { await network.lostDevice(address: address) }
                    }
                }
            }
        } catch {
            logger.warning("multicast discovery stopped; add peers by address", metadata: ["reason": .string("\(error)")])
        }
    }
}

/// Instance name → address, for removals.
final class InstanceAddresses: Sendable {
    private let map = Mutex<[String: String]>([:])
    func set(_ k: String, _ v: String) { map.withLock { $0[k] = v } }
    func remove(_ k: String) -> String? { map.withLock { $0.removeValue(forKey: k) } }
}

/// Closes an accepted connection with a reset (SO_LINGER 0): its descriptor is free at once and
/// no TIME_WAIT is left on this side. Both listeners refuse connections this way.
public func resetConnection(_ channel: any Channel) {
    if let options = channel as? any SocketOptionProvider {
        options.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in channel.close(promise: nil) }
    } else {
        channel.close(promise: nil)
    }
}
