import Foundation
import KianaNet
import Logging

// Finding KI_ana devices on the local network (`kiana discover`, `kiana join`) and checking
// peer addresses (`kiana peers add`).

/// A KI_ana service seen on the local network (`kiana discover`).
public struct DiscoveredService: Codable, Sendable {
    public var instance: String
    public var host: String
    public var port: UInt16
    public var addresses: [String]
    /// The TXT record: `id` is the device ID, `name` its name.
    public var txt: [String: String]
}

/// What browsing reports, with the milliseconds since browsing started.
public enum DiscoveryEvent: Sendable {
    case resolved(DiscoveredService, ms: Double)
    case removed(instance: String, ms: Double)
}

/// A device `kiana join` found by its device ID (or as the only one).
public struct FoundDevice: Codable, Sendable {
    public var id: String
    /// IPv4 HOST:PORT of its device link listener.
    public var address: String
    public var name: String?
}

/// Multicast DNS discovery (_kiana._tcp) and peer addresses.
public enum Discovery {
    /// Checks that `address` is HOST:PORT (`.invalidInput` says what is wrong).
    public static func checkPeerAddress(_ address: String) throws(KianaNodeError) {
        do throws(KianaNetError) { _ = try PeerNetwork.parse(address) } catch { throw KianaNodeError(.invalidInput, error.message) }
    }

    /// HOST and PORT of a peer address, nil if it is not one.
    public static func hostAndPort(_ address: String) -> (host: String, port: Int)? {
        (try? PeerNetwork.parse(address)).map { (host: $0.0, port: $0.1) }
    }

    /// True when `address` is HOST:PORT.
    public static func isPeerAddress(_ address: String) -> Bool {
        (try? PeerNetwork.parse(address)) != nil
    }

    /// Browses for `seconds` on `interface` (nil: every multicast interface), reporting each
    /// service resolved or removed.
    public static func browse(
        interface: String?, seconds: Double, logger: Logger,
        onEvent: @escaping @Sendable (DiscoveryEvent) async -> Void
    ) async throws {
        let mdns = MDNSDiscovery(interface: interface, logger: logger)
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await mdns.run(announce: nil) { event in
                    let ms = (ContinuousClock.now - start) / .milliseconds(1)
                    switch event {
                    case .resolved(let s):
                        await onEvent(
                            .resolved(DiscoveredService(instance: s.instance, host: s.host, port: s.port, addresses: s.addresses, txt: s.txt), ms: ms))
                    case .removed(let instance):
                        await onEvent(.removed(instance: instance, ms: ms))
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
            group.cancelAll()
        }
    }

    /// Canonical form for matching device IDs: upper case, no dashes.
    static func squash(_ s: String) -> String { s.uppercased().filter { $0 != "-" } }

    /// Browses mDNS until exactly one device matches `target` (a device ID, a prefix of at least
    /// four characters of one, or an instance name; nil matches any device) and returns it with
    /// its IPv4 HOST:PORT. Returns early on a full device ID match. `onSearch` runs once the
    /// target is accepted, before browsing starts. No device, or several, is an error that says
    /// what to give instead.
    public static func findDevice(
        _ target: String?, interface: String?, seconds: Double, logger: Logger,
        onSearch: () -> Void = {}
    ) async throws -> FoundDevice {
        if let target, squash(target).count < 4 {
            throw KianaNodeError(.invalidInput, "\(target) is neither HOST:PORT nor a device ID (give at least 4 characters)")
        }
        let wanted = target.map(squash)
        let found = FoundDevices()
        let mdns = MDNSDiscovery(interface: interface, logger: logger)
        onSearch()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await mdns.run(announce: nil) { event in
                    guard case .resolved(let s) = event, let id = s.txt["id"],
                        let ip = s.addresses.first(where: { !$0.contains(":") })
                    else { return }
                    if let wanted, !(squash(id).hasPrefix(wanted) || s.instance.lowercased() == target?.lowercased()) { return }
                    await found.add(FoundDevice(id: id, address: "\(ip):\(s.port)", name: s.txt["name"]))
                }
            }
            group.addTask {
                let end = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
                while ContinuousClock.now < end {
                    // A full device ID is unique: no need to wait for the rest.
                    if let wanted, wanted.count == 16, await found.count == 1 { return }
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
            _ = try await group.next()
            group.cancelAll()
        }
        let devices = await found.all
        switch devices.count {
        case 1:
            return devices[0]
        case 0:
            throw KianaNodeError(
                .network,
                (target.map { "no KI_ana device matching \($0)" } ?? "no KI_ana device")
                    + " was found on the local network in \(Int(seconds)) s; give the HOST:PORT that `kiana pair` prints")
        default:
            let list = devices.map { "\($0.id) at \($0.address)\($0.name.map { " (\($0))" } ?? "")" }.joined(separator: "; ")
            throw KianaNodeError(.invalidInput, "several KI_ana devices match: \(list); name one by its device ID or HOST:PORT")
        }
    }
}

/// Devices seen while `findDevice` searches, one per device ID.
actor FoundDevices {
    private var byID: [String: FoundDevice] = [:]
    func add(_ d: FoundDevice) { byID[d.id] = d }
    var count: Int { byID.count }
    var all: [FoundDevice] { byID.values.sorted { $0.id < $1.id } }
}
