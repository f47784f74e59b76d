import Foundation
import KianaCore
import KianaNet
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// The link listener: accepts device links on the P2P port.
struct LinkListenerService: Service {
    let network: PeerNetwork
    let ready: @Sendable (Int) -> Void

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            try await network.listen(ready: ready)
        }
    }
}

/// The dialer: keeps links to known and discovered members up, with backoff.
struct DialerService: Service {
    let network: PeerNetwork

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await network.dialLoop() }
                group.addTask { await network.headLoop() }
            }
        }
    }
}

/// Multicast DNS: announces this device and feeds discovered devices to the dialer.
struct DiscoveryService: Service {
    let network: PeerNetwork
    let interface: String?
    let name: String?
    let logger: Logger

    func run() async throws {
        // The SRV record needs the link listener's port.
        var port: Int?
        for _ in 0..<200 {
            port = await network.listeningPort
            if port != nil || Task.isCancelled { break }
            try? await Task.sleep(for: .milliseconds(25))
        }
        guard let port else { return }
        let mdns = MDNSDiscovery(interface: interface, logger: logger)
        let ipv4: [[UInt8]], ipv6: [[UInt8]]
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
        if let net = try? network.store.network() { txt.append(("net", Hex.encode(LinkPreamble.tag(net)))) }
        if let name { txt.append(("name", String(name.prefix(63)))) }
        let label = "kiana-" + String(compact.prefix(12))
        let info = MDNSServiceInfo(instance: label, hostLabel: label, port: UInt16(port), txt: txt, ipv4: ipv4, ipv6: ipv6)
        let me = identity.deviceID.description
        let found = InstanceAddresses()
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
