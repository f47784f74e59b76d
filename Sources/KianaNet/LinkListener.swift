import Foundation
import KianaCore
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Accepts device links on the P2P port until graceful shutdown: at most
/// `LinkConfig.maxConnections` connections at once (handshakes included); each accepted link
/// runs until it closes.
public struct LinkListener: Service {
    let network: PeerNetwork
    let ready: @Sendable (Int) -> Void

    public func run() async throws {
        try await cancelWhenGracefulShutdown {
            try await listen()
        }
    }

    func listen() async throws {
        let config = network.config
        let logger = network.logger
        let limit = config.link.maxConnections
        let server: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
        do {
            server = try await ServerBootstrap(group: network.group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .bind(host: config.host, port: config.port) { channel in Link.wrap(channel) }
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
        let active = network.connections
        let network = self.network
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
                                _ = try? await Link.run(conn, dial: nil, context: await network.context()) { link in
                                    await network.serve(link)
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
}

/// Multicast DNS: announces this device and feeds same-network devices to the dialer, until
/// graceful shutdown (then a goodbye). Without a usable interface it says so once and ends;
/// the node goes on with peers added by address.
public struct PeerDiscovery: Service {
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
